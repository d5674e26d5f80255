//! Property test of the worker's input: whatever the queue delivers (any text, JSON with a job's field names and
//! arbitrary values, ids past DynamoDB's limits), the worker answers without a panic, never reports a message that
//! can never succeed back for a retry into the dead-letter queue, and only a real job touches the connection.

use atlassian::fake::FakeAtlassian;
use atlassian::{AccessToken, RefreshToken};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;
use store::{ConnectionStore, MemoryStore, SessionStore, contract};
use sync::job::Deps;
use time::{Duration, OffsetDateTime};
use tokens::credentials::{self, Credentials};
use tokens::refresh::RefreshPolicy;
use tokens::{KeyRing, scopes};

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// A field value: the ones a job has, ids near and past the limits, or anything.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(vec!["con_1", "con_missing", "users", "groups", "projects", "spaces", "m-1", ""])
            .prop_map(Value::from),
        1 => (120usize..3000).prop_map(|n| Value::from("c".repeat(n))),
        1 => text(20).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(Value::Null),
    ]
}

fn body() -> impl Strategy<Value = String> {
    let field = prop::sample::select(vec!["connection_id", "object_type", "run_id", "attempt", "extra"]);
    prop_oneof![
        4 => btree_map(field, value(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()).to_string()),
        1 => text(200),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_is_answered_and_only_real_jobs_run(bodies in vec(body(), 1..5)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = MemoryStore::new();
            let keys = KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap();
            let session = contract::session("tenant");
            store.put_session(&session).await.unwrap();
            let mut connection = contract::connection("tenant", "con_1");
            let fresh = Credentials {
                access_token: AccessToken::new("access".into()),
                refresh_token: Some(RefreshToken::new("refresh".into())),
                expires_at: OffsetDateTime::now_utc() + Duration::hours(1),
            };
            connection.credentials = credentials::seal(&keys, "con_1", &fresh).unwrap();
            store.complete_connect(&session.id_hash, &connection).await.unwrap();
            let before = format!("{:?}", store.connections());
            let atlassian = FakeAtlassian::granting(&scopes::defaults());
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
                guard: sync::engine::DeletionGuard::default(),
            };
            let mut event = SqsEvent::default();
            event.records = bodies
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    let mut message = SqsMessage::default();
                    message.message_id = Some(format!("m-{i}"));
                    message.body = Some(body.clone());
                    message
                })
                .collect();
            let response = sync_worker::handle(&deps, event, None).await;
            prop_assert!(response.batch_item_failures.is_empty(), "{:?} for {:?}", response.batch_item_failures, bodies);
            // Only a real job of the real connection may touch it (a sync refreshes its sites) or record a run.
            let real = bodies.iter().filter_map(|b| jobs::Job::parse(b)).any(|job| job.connection_id == "con_1");
            if !real {
                prop_assert_eq!(format!("{:?}", store.connections()), before);
                prop_assert!(store::RunStore::list_runs(&store, "con_1").await.unwrap().is_empty());
            }
            Ok(())
        })?;
    }
}
