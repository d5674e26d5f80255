//! The worker's answer to its queue: finished, waiting and retrying jobs and poison messages are consumed; a job
//! comes back only when not even its continuation could be queued.

use atlassian::fake::FakeAtlassian;
use atlassian::{AccessToken, OAuthError, RefreshToken};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use store::mirror::ObjectType;
use store::{ConnectionStore, CredentialStore, MemoryStore, RunRecord, RunStatus, RunStore, SessionStore, contract};
use sync::job::Deps;
use sync::queue::{Job, JobQueue, QueueError};
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

/// An Atlassian whose next `n` refreshes fail transiently (each with its quick retries).
fn refreshes_failing(n: usize) -> FakeAtlassian {
    let retries = RefreshPolicy::default().lost_reply_retries as usize;
    (0..n * (1 + retries))
        .fold(FakeAtlassian::granting(&scopes::defaults()), |fake, _| fake.then_refresh(Err(OAuthError::Protocol)))
}

/// Sealed credentials whose access token has expired.
fn expired(keys: &KeyRing) -> store::SealedCredentials {
    let credentials = Credentials {
        access_token: AccessToken::new("old".into()),
        refresh_token: Some(RefreshToken::new("refresh".into())),
        expires_at: OffsetDateTime::now_utc() - Duration::minutes(1),
    };
    credentials::seal(keys, "con_1", &credentials).unwrap()
}

#[tokio::test]
async fn only_transient_failures_are_reported_back() {
    let store = MemoryStore::new();
    let keys = KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap();
    let session = contract::session("tenant");
    store.put_session(&session).await.unwrap();
    let mut connection = contract::connection("tenant", "con_1");
    // Expired: the job must refresh, and the fake's refresh fails transiently.
    connection.credentials = expired(&keys);
    store.complete_connect(&session.id_hash, &connection).await.unwrap();
    let atlassian = refreshes_failing(1);
    // The lost answer of a refresh is retried in place a few times, quickly here.
    let refresh = RefreshPolicy { lost_reply_backoff: Duration::milliseconds(1), ..RefreshPolicy::default() };
    let deps = Deps {
        store: &store,
        mirror: &store,
        atlassian: &atlassian,
        budget: &sync::budget::Unlimited,
        keys: &keys,
        refresh: &refresh,
        queue: &sync::queue::MemoryQueue::default(),
        pacing: sync::engine::Pacing::default(),
        guard: sync::engine::DeletionGuard::default(),
    };

    let mut event = SqsEvent::default();
    event.records = vec![
        message("m-1", r#"{"connection_id": "con_1", "object_type": "users"}"#),
        message("m-2", "not a job"),
        message("m-3", r#"{"connection_id": "con_1", "object_type": "groups"}"#),
        message("m-4", r#"{"connection_id": "con_missing", "object_type": "users"}"#),
    ];
    let response = sync_worker::handle(&deps, event.clone(), None).await;
    // m-1 failed to refresh (transient): it waits and retries through a delayed continuation of its own, so the
    // message is consumed; m-3 then refreshed fine; m-2 is poison, m-4 has no connection.
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    assert_eq!(atlassian.refresh_count(), 5, "four tries of m-1, then m-3's refresh");
    let queued = deps.queue.take();
    assert_eq!(queued.len(), 1);
    let (retry, delay) = &queued[0];
    assert_eq!((retry.run_id.as_deref(), retry.attempt), (Some("m-1"), 1));
    assert_eq!(*delay, sync::job::FIRST_BACKOFF);
    let run = store.get_run("con_1", ObjectType::Users).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Waiting);
    assert!(run.waiting_until.is_some() && run.error.as_deref().is_some_and(|e| e.starts_with("retrying")));
    // A code and a short message for the API's clients; the cause chain only in the logs.
    assert_eq!(run.error_code.as_deref(), Some("token_refresh_failed"), "{run:?}");
    assert_eq!(run.error.as_deref().map(|e| e.matches(": ").count()), Some(1), "no cause chain: {run:?}");

    // Only when even the continuation cannot be queued does the message go back to SQS.
    let atlassian_again = refreshes_failing(1);
    let failing = Deps {
        store: &store,
        mirror: &store,
        atlassian: &atlassian_again,
        budget: &sync::budget::Unlimited,
        keys: &keys,
        refresh: &refresh,
        queue: &Unqueueable,
        pacing: sync::engine::Pacing::default(),
        guard: sync::engine::DeletionGuard::default(),
    };
    event.records.truncate(1);
    event.records[0].message_id = Some("m-5".into());
    store.save_run("con_1", &RunRecord { status: RunStatus::Succeeded, ..run }).await.unwrap();
    let version = store.get_connection("con_1").await.unwrap().unwrap().token_version;
    store.save_credentials("con_1", version, &expired(&keys), OffsetDateTime::now_utc()).await.unwrap();
    let response = sync_worker::handle(&failing, event, None).await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, vec!["m-5"]);
}

/// A queue SQS refuses.
struct Unqueueable;

impl JobQueue for Unqueueable {
    async fn enqueue(&self, _: &[Job]) -> Result<(), QueueError> {
        Err(QueueError::Partial(1))
    }
    async fn enqueue_after(&self, _: &Job, _: std::time::Duration) -> Result<(), QueueError> {
        Err(QueueError::Partial(1))
    }
}
