//! The scheduler queues one job per active connection for its object type.

use store::mirror::ObjectType;
use store::{ConnectionStore, MemoryStore, SessionStore, contract};
use sync::queue::MemoryQueue;
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
    let queue = MemoryQueue::default();
    let response = handle(&store, &queue, Request { object_type: ObjectType::Groups }).await.unwrap();
    assert_eq!(response.enqueued, 2);
    let jobs = queue.jobs.lock().unwrap().clone();
    let ids: Vec<&str> = jobs.iter().map(|j| j.connection_id.as_str()).collect();
    assert_eq!(ids, vec!["con_a", "con_c"]);
    assert!(jobs.iter().all(|j| j.object_type == ObjectType::Groups));
    let request: Request = serde_json::from_str(r#"{"object_type": "spaces"}"#).unwrap();
    assert_eq!(request.object_type, ObjectType::Spaces);
}
