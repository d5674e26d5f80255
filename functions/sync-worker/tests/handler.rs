//! The worker's answer to its queue: finished jobs and poison messages are consumed, failed jobs come back.

use atlassian::fake::FakeAtlassian;
use atlassian::{AccessToken, OAuthError, RefreshToken};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use store::{ConnectionStore, MemoryStore, SessionStore, contract};
use sync::job::Deps;
use time::{Duration, OffsetDateTime};
use tokens::credentials::{self, Credentials};
use tokens::refresh::RefreshPolicy;
use tokens::{KeyRing, scopes};

fn message(id: &str, body: &str) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(id.into());
    message.body = Some(body.into());
    message
}

#[tokio::test]
async fn only_transient_failures_are_reported_back() {
    let store = MemoryStore::new();
    let keys = KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap();
    let session = contract::session("tenant");
    store.put_session(&session).await.unwrap();
    let mut connection = contract::connection("tenant", "con_1");
    connection.credentials = credentials::seal(
        &keys,
        "con_1",
        &Credentials {
            access_token: AccessToken::new("old".into()),
            refresh_token: Some(RefreshToken::new("refresh".into())),
            // Expired: the job must refresh, and the fake's refresh fails transiently.
            expires_at: OffsetDateTime::now_utc() - Duration::minutes(1),
        },
    )
    .unwrap();
    store.complete_connect(&session.id_hash, &connection).await.unwrap();
    let atlassian = FakeAtlassian::granting(&scopes::defaults()).then_refresh(Err(OAuthError::Protocol));
    let refresh = RefreshPolicy::default();
    let deps = Deps {
        store: &store,
        mirror: &store,
        atlassian: &atlassian,
        budget: &sync::budget::Unlimited,
        keys: &keys,
        refresh: &refresh,
        queue: &sync::queue::MemoryQueue::default(),
        pacing: sync::engine::Pacing::default(),
    };

    let mut event = SqsEvent::default();
    event.records = vec![
        message("m-1", r#"{"connection_id": "con_1", "object_type": "users"}"#),
        message("m-2", "not a job"),
        message("m-3", r#"{"connection_id": "con_1", "object_type": "groups"}"#),
        message("m-4", r#"{"connection_id": "con_missing", "object_type": "users"}"#),
    ];
    let response = sync_worker::handle(&deps, event, None).await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    // m-1 failed to refresh (transient) and comes back; m-3 then refreshed fine; m-2 is poison, m-4 has no connection.
    assert_eq!(failed, vec!["m-1"]);
    assert_eq!(atlassian.refresh_count(), 2);
}
