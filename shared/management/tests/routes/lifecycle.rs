//! Disconnecting, and sync requests.

use super::*;

#[tokio::test]
async fn disconnecting_destroys_tokens_and_the_mirror() {
    use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope};
    let deps = deps();
    connected(&deps, vec![store::Product::Jira, store::Product::Confluence]).await;
    let object = MirrorObject::new(
        "g".into(),
        json!({"group_id": "g"}).as_object().unwrap().clone(),
        time::OffsetDateTime::now_utc(),
    );
    deps.mirror.write(&Scope::new("con_1", ObjectType::Groups), &[object]).await.unwrap();

    let (status, body) = call(&deps, request(Method::DELETE, "/connections/con_1", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "revoked");
    let stored = deps.store.get_connection("con_1").await.unwrap().unwrap();
    assert_eq!(stored.credentials, store::SealedCredentials::default(), "tokens destroyed");
    let scope = Scope::new("con_1", ObjectType::Groups);
    assert!(deps.mirror.list(&scope, None, 10).await.unwrap().0.is_empty(), "the mirror is cleared");
    // A sync that was writing when the connection was revoked lands a page after the clear: it is never served.
    let late = MirrorObject::new("late".into(), serde_json::Map::new(), time::OffsetDateTime::now_utc());
    deps.mirror.write(&scope, &[late]).await.unwrap();
    for path in ["/connections/con_1/objects/groups", "/connections/con_1/objects/groups/late/members"] {
        let (status, body) = call(&deps, request(Method::GET, path, Some(KEY), None)).await;
        assert_eq!((status, &body["error"]["code"]), (StatusCode::CONFLICT, &json!("connection_revoked")), "{path}");
    }
    let (status, _) = call(&deps, request(Method::DELETE, "/connections/nope", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_sync_is_queued_per_object_type() {
    use store::mirror::ObjectType;
    let deps = deps();
    connected(&deps, vec![store::Product::Jira, store::Product::Confluence]).await;
    let (status, body) = call(
        &deps,
        request(Method::POST, "/connections/con_1/sync", Some(KEY), Some(json!({"object_types": ["users", "spaces"]}))),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["enqueued"], json!(["users", "spaces"]));
    let (status, _) = call(&deps, request(Method::POST, "/connections/con_1/sync", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "no body: every type");
    let jobs = deps.queue.jobs.lock().unwrap().clone();
    let types: Vec<ObjectType> = jobs.iter().map(|j| j.object_type).collect();
    assert_eq!(
        types,
        vec![
            ObjectType::Users,
            ObjectType::Spaces,
            ObjectType::Users,
            ObjectType::Groups,
            ObjectType::Projects,
            ObjectType::Spaces
        ]
    );
    assert!(jobs.iter().all(|j| j.connection_id == "con_1"));

    for (path, body, status, code) in [
        (
            "/connections/con_1/sync",
            Some(json!({"object_types": ["widgets"]})),
            StatusCode::BAD_REQUEST,
            "unknown_object_type",
        ),
        ("/connections/con_1/sync", Some(json!({"object_types": []})), StatusCode::BAD_REQUEST, "unknown_object_type"),
        ("/connections/nope/sync", None, StatusCode::NOT_FOUND, "connection_not_found"),
    ] {
        let (got, answer) = call(&deps, request(Method::POST, path, Some(KEY), body)).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{path}");
    }
    deps.store.revoke_connection("con_1", time::OffsetDateTime::now_utc()).await.unwrap();
    let (status, answer) = call(&deps, request(Method::POST, "/connections/con_1/sync", Some(KEY), None)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("connection_not_active")));
    assert_eq!(deps.queue.jobs.lock().unwrap().len(), 6, "refused requests queue nothing");
}
