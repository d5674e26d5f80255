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
