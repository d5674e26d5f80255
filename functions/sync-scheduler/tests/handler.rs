//! The scheduler queues one job per active connection for its object type.

use jobs::MemoryQueue;
use store::mirror::ObjectType;
use store::{ConnectionStore, MemoryStore, RunRecord, RunStatus, RunStore, SessionStore, contract};
use sync_scheduler::{Request, handle};

#[tokio::test]
async fn every_active_connection_gets_a_job() {
    let store = MemoryStore::new();
    for id in ["con_a", "con_b", "con_c"] {
        let session = contract::session(id);
        store.put_session(&session).await.unwrap();
        store.complete_connect(&session.id_hash, &contract::connection(id, id)).await.unwrap();
    }
    store.revoke_connection("con_b", time::OffsetDateTime::now_utc()).await.unwrap();
    // con_c's groups run is still waiting for the quota: it gets no second job; its users run ended long ago.
    let now = time::OffsetDateTime::now_utc();
    let lease = store::budget::epoch_ms(now + time::Duration::minutes(20));
    let waiting = RunRecord { status: RunStatus::Waiting, ..RunRecord::running(ObjectType::Groups, "r1", now, lease) };
    store.try_start_run("con_c", &waiting, now).await.unwrap();
    let ended = RunRecord { status: RunStatus::Succeeded, ..RunRecord::running(ObjectType::Users, "r0", now, 0) };
    store.try_start_run("con_c", &ended, now).await.unwrap();
    let queue = MemoryQueue::default();
    let response = handle(&store, &queue, Request { object_type: ObjectType::Groups }).await.unwrap();
    assert_eq!((response.enqueued, response.skipped), (1, 1));
    let jobs = queue.jobs.lock().unwrap().clone();
    assert_eq!(jobs.iter().map(|j| j.connection_id.as_str()).collect::<Vec<_>>(), vec!["con_a"]);
    let users = handle(&store, &queue, Request { object_type: ObjectType::Users }).await.unwrap();
    assert_eq!((users.enqueued, users.skipped), (2, 0));
    queue.take();
    store.save_run("con_c", &RunRecord { status: RunStatus::Succeeded, ..waiting }).await.unwrap();
    let response = handle(&store, &queue, Request { object_type: ObjectType::Groups }).await.unwrap();
    assert_eq!(response.enqueued, 2);
    let jobs = queue.jobs.lock().unwrap().clone();
    let ids: Vec<&str> = jobs.iter().map(|j| j.connection_id.as_str()).collect();
    assert_eq!(ids, vec!["con_a", "con_c"]);
    assert!(jobs.iter().all(|j| j.object_type == ObjectType::Groups));
    let request: Request = serde_json::from_str(r#"{"object_type": "spaces"}"#).unwrap();
    assert_eq!(request.object_type, ObjectType::Spaces);
}

mod properties {
    //! Whatever a schedule (or a hand) sends: a request is read only when it names one of the four types, and
    //! anything else is refused before a connection is listed.
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn payload() -> impl Strategy<Value = Value> {
        let value = prop_oneof![
            3 => prop::sample::select(vec!["users", "groups", "projects", "spaces", "Users", "sites", ""])
                .prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => ".{0,20}".prop_map(Value::from),
            1 => Just(Value::Null),
        ];
        let key = prop::sample::select(vec!["object_type", "objectType", "type"]);
        prop_oneof![
            3 => proptest::collection::btree_map(key, value, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            1 => ".{0,20}".prop_map(Value::from),
            1 => Just(json!([])),
        ]
    }

    proptest! {
        #[test]
        fn only_a_request_naming_a_type_is_read(payload in payload()) {
            let named = payload.get("object_type").and_then(Value::as_str);
            let known = named.is_some_and(|t| ["users", "groups", "projects", "spaces"].contains(&t));
            match serde_json::from_value::<Request>(payload.clone()) {
                Ok(request) => {
                    prop_assert!(known, "{payload}");
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    let queue = MemoryQueue::default();
                    let response = runtime.block_on(handle(&MemoryStore::new(), &queue, request)).unwrap();
                    prop_assert_eq!((response.enqueued, response.skipped), (0, 0));
                }
                Err(_) => prop_assert!(!known, "{payload}"),
            }
        }
    }
}
