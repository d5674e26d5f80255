//! Rotation-safe refresh over the in-memory store and a fake Atlassian.

use atlassian::fake::{FakeAtlassian, grant};
use atlassian::{AccessToken, OAuthError, RefreshToken};
use std::sync::Arc;
use store::{ConnectionStatus, ConnectionStore, MemoryStore, SessionStore, contract};
use time::{Duration, OffsetDateTime};
use tokens::credentials::{self, Credentials};
use tokens::refresh::{self, RefreshError, RefreshPolicy};
use tokens::{KeyRing, scopes};

struct Harness {
    store: Arc<MemoryStore>,
    keys: Arc<KeyRing>,
    id: String,
}

impl Harness {
    /// A connection whose access token expires in `expires_in`.
    async fn new(expires_in: Duration) -> Self {
        let store = Arc::new(MemoryStore::new());
        let keys = Arc::new(KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap());
        let session = contract::session("tenant");
        store.put_session(&session).await.unwrap();
        let mut connection = contract::connection("tenant", "con_1");
        connection.credentials = credentials::seal(
            &keys,
            "con_1",
            &Credentials {
                access_token: AccessToken::new("access-old".into()),
                refresh_token: Some(RefreshToken::new("refresh-old".into())),
                expires_at: OffsetDateTime::now_utc() + expires_in,
            },
        )
        .unwrap();
        store.complete_connect(&session.id_hash, &connection).await.unwrap();
        Self { store, keys, id: "con_1".into() }
    }

    async fn token(&self, atlassian: &FakeAtlassian, owner: &str) -> Result<String, RefreshError> {
        let policy = RefreshPolicy {
            poll: Duration::milliseconds(5),
            lost_reply_backoff: Duration::milliseconds(1),
            ..RefreshPolicy::default()
        };
        refresh::access_token(&*self.store, atlassian, &self.keys, &policy, &self.id, owner)
            .await
            .map(|t| t.secret().clone())
    }

    async fn stored(&self) -> (store::Connection, Credentials) {
        let connection = self.store.get_connection(&self.id).await.unwrap().unwrap();
        let credentials = credentials::open(&self.keys, &self.id, &connection.credentials).unwrap();
        (connection, credentials)
    }
}

fn atlassian() -> FakeAtlassian {
    FakeAtlassian::granting(&scopes::defaults())
}

#[tokio::test]
async fn a_fresh_token_is_used_as_it_is() {
    let h = Harness::new(Duration::minutes(50)).await;
    let atlassian = atlassian();
    assert_eq!(h.token(&atlassian, "w").await.unwrap(), "access-old");
    assert_eq!(atlassian.refresh_count(), 0);
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_and_stored_before_use() {
    let h = Harness::new(Duration::minutes(5)).await;
    let (before, _) = h.stored().await;
    let atlassian = atlassian();
    assert_eq!(h.token(&atlassian, "w").await.unwrap(), "access-refreshed-1");
    let (after, credentials) = h.stored().await;
    assert_eq!(credentials.access_token.secret(), "access-refreshed-1");
    assert_eq!(credentials.refresh_token.unwrap().secret(), "refresh-rotated-1");
    assert!(credentials.expires_at > OffsetDateTime::now_utc() + Duration::minutes(59));
    assert_eq!(after.token_version, before.token_version + 1);
    // The next caller uses the stored token.
    assert_eq!(h.token(&atlassian, "w2").await.unwrap(), "access-refreshed-1");
    assert_eq!(atlassian.refresh_count(), 1);
}

#[tokio::test]
async fn a_missing_rotated_token_keeps_the_old_one() {
    let h = Harness::new(Duration::minutes(-5)).await;
    let atlassian = atlassian().then_refresh(Ok(grant(&[], false)));
    assert_eq!(h.token(&atlassian, "w").await.unwrap(), "access-123");
    let (_, credentials) = h.stored().await;
    assert_eq!(credentials.refresh_token.unwrap().secret(), "refresh-old");
}

#[tokio::test]
async fn a_token_atlassian_refused_before_it_expired_is_replaced_once_and_a_revoked_grant_shows_at_once() {
    let policy = RefreshPolicy { poll: Duration::milliseconds(5), ..RefreshPolicy::default() };
    let refused = AccessToken::new("access-old".into());
    // Refused while fresh: refreshed, and a second caller with the same refused token gets the new one.
    let h = Harness::new(Duration::minutes(50)).await;
    let fake = atlassian();
    let fresh = refresh::replace_refused(&*h.store, &fake, &h.keys, &policy, &h.id, "w", &refused).await.unwrap();
    assert_eq!(fresh.token.secret(), "access-refreshed-1");
    let again = refresh::replace_refused(&*h.store, &fake, &h.keys, &policy, &h.id, "w2", &refused).await.unwrap();
    assert_eq!((again.token.secret().as_str(), fake.refresh_count()), ("access-refreshed-1", 1));

    // The customer revoked the app: the refresh is refused too, and the connection needs re-authorising now.
    let h = Harness::new(Duration::minutes(50)).await;
    let fake = atlassian().then_refresh(Err(OAuthError::InvalidGrant { code: "invalid_grant".into() }));
    let error = refresh::replace_refused(&*h.store, &fake, &h.keys, &policy, &h.id, "w", &refused).await;
    assert!(matches!(error, Err(RefreshError::NeedsReauth { .. })), "{error:?}");
    assert_eq!(h.stored().await.0.status, ConnectionStatus::NeedsReauth);
}

#[tokio::test]
async fn a_refused_refresh_token_turns_the_connection_needs_reauth() {
    let h = Harness::new(Duration::minutes(-5)).await;
    let atlassian = atlassian().then_refresh(Err(OAuthError::InvalidGrant { code: "invalid_grant".into() }));
    let error = h.token(&atlassian, "w").await.unwrap_err();
    assert!(matches!(error, RefreshError::NeedsReauth { .. }), "{error:?}");
    assert!(!error.retryable());
    let (connection, _) = {
        let c = h.store.get_connection(&h.id).await.unwrap().unwrap();
        (c, ())
    };
    assert_eq!(connection.status, ConnectionStatus::NeedsReauth);
    assert!(connection.status_reason.unwrap().contains("Connect again"));
    // Later callers are told at once, without asking Atlassian again.
    assert!(matches!(h.token(&atlassian, "w2").await, Err(RefreshError::NeedsReauth { .. })));
    assert_eq!(atlassian.refresh_count(), 1);
}

#[tokio::test]
async fn other_failures_leave_the_connection_alone_and_free_the_lease() {
    let h = Harness::new(Duration::minutes(-5)).await;
    let mut atlassian = atlassian().then_refresh(Err(OAuthError::ClientRejected));
    for _ in 0..4 {
        // The first answer and the three quick retries of a lost one.
        atlassian = atlassian.then_refresh(Err(OAuthError::Protocol));
    }
    assert!(matches!(h.token(&atlassian, "w").await, Err(RefreshError::ClientRejected)));
    let transient = h.token(&atlassian, "w").await.unwrap_err();
    assert!(matches!(transient, RefreshError::Transient(_)) && transient.retryable());
    assert_eq!(atlassian.refresh_count(), 5);
    // The lease was released each time: a third caller refreshes straight away.
    assert_eq!(h.token(&atlassian, "w3").await.unwrap(), "access-refreshed-6");
    let (connection, _) = h.stored().await;
    assert_eq!(connection.status, ConnectionStatus::Active);
}

#[tokio::test]
async fn twenty_concurrent_callers_make_one_refresh() {
    let h = Arc::new(Harness::new(Duration::minutes(-1)).await);
    let mut atlassian = atlassian();
    atlassian.refresh_latency = std::time::Duration::from_millis(150);
    let atlassian = Arc::new(atlassian);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (h, atlassian) = (h.clone(), atlassian.clone());
            tokio::spawn(async move { h.token(&atlassian, &format!("worker-{i}")).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "access-refreshed-1");
    }
    assert_eq!(atlassian.refresh_count(), 1);
}

#[tokio::test]
async fn an_inactive_or_missing_connection_is_not_refreshed() {
    let h = Harness::new(Duration::minutes(-5)).await;
    let atlassian = atlassian();
    let missing = refresh::access_token(&*h.store, &atlassian, &h.keys, &RefreshPolicy::default(), "con_x", "w").await;
    assert!(matches!(missing, Err(RefreshError::NotFound)));
    assert_eq!(atlassian.refresh_count(), 0);
}

#[tokio::test]
async fn a_lost_refresh_answer_is_sent_again_within_seconds() {
    let h = Harness::new(Duration::minutes(-5)).await;
    // The first answer never arrives (Atlassian may have rotated the token already); the second does.
    let atlassian = atlassian().then_refresh(Err(OAuthError::Transport("connection reset".into())));
    let started = std::time::Instant::now();
    assert_eq!(h.token(&atlassian, "w").await.unwrap(), "access-refreshed-2");
    assert_eq!(atlassian.refresh_count(), 2, "sent again by the same caller, not left to a later run");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (connection, credentials) = h.stored().await;
    assert_eq!(connection.status, ConnectionStatus::Active);
    assert_eq!(credentials.access_token.secret(), "access-refreshed-2");
}

#[tokio::test]
async fn a_long_run_gets_a_token_that_outlives_it() {
    // 20 minutes left is fresh by the default 10-minute margin, but not for a run that needs 25 more.
    let h = Harness::new(Duration::minutes(20)).await;
    let atlassian = atlassian();
    let policy = RefreshPolicy::default();
    let short = refresh::access_token_for(&*h.store, &atlassian, &h.keys, &policy, &h.id, "w", Duration::minutes(5));
    assert_eq!(short.await.unwrap().token.secret(), "access-old");
    let long = refresh::access_token_for(&*h.store, &atlassian, &h.keys, &policy, &h.id, "w", Duration::minutes(25))
        .await
        .unwrap();
    assert_eq!(long.token.secret(), "access-refreshed-1");
    assert!(long.expires_at - OffsetDateTime::now_utc() > Duration::minutes(25));
}
