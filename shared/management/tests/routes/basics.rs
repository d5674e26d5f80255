//! The key every route needs, connect sessions, connections as the API shows them, and JSON errors for what is unknown.

use super::*;

#[tokio::test]
async fn every_route_needs_the_management_key() {
    let deps = deps();
    for (method, path) in [
        (Method::POST, "/connect-sessions"),
        (Method::GET, "/connections/x"),
        (Method::GET, "/connections?tenant_id=t"),
    ] {
        for key in [None, Some("wrong"), Some("")] {
            let (status, body) = call(&deps, request(method.clone(), path, key, Some(json!({"tenant_id": "t"})))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {key:?}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
}

#[tokio::test]
async fn creates_a_connect_session() {
    let deps = deps();
    let body = json!({"tenant_id": "tenant-1", "return_url": "https://app.example/settings"});
    let (status, body) = call(&deps, request(Method::POST, "/connect-sessions", Some(KEY), Some(body))).await;
    assert_eq!(status, StatusCode::CREATED);
    let session_id = body["session_id"].as_str().unwrap();
    assert!(session_id.starts_with("cs_"));
    assert_eq!(body["connect_url"], format!("https://connector.example/connect?session={session_id}"));
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    let stored = deps.store.get_session(&tokens::ids::sha256_hex(session_id)).await.unwrap().unwrap();
    assert_eq!(stored.return_url.as_deref(), Some("https://app.example/settings"));
}

#[tokio::test]
async fn bad_session_requests_are_answered_and_store_nothing() {
    let deps = deps();
    let cases = [
        (Some(json!({"return_url": "https://app.example/"})), "invalid_body"),
        (None, "invalid_body"),
        (Some(json!({"tenant_id": "t", "return_url": "https://evil.example/"})), "return_url_not_allowed"),
        (Some(json!({"tenant_id": ""})), "invalid_tenant"),
    ];
    for (body, code) in cases {
        let (status, answer) = call(&deps, request(Method::POST, "/connect-sessions", Some(KEY), body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["error"]["code"], code);
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(deps.store.session_count(), 0);
}

#[tokio::test]
async fn shows_connections_without_their_tokens() {
    let deps = deps();
    let session = contract::session("tenant-1");
    deps.store.put_session(&session).await.unwrap();
    let connection = contract::connection("tenant-1", "con_1");
    deps.store.complete_connect(&session.id_hash, &connection).await.unwrap();

    let (status, one) = call(&deps, request(Method::GET, "/connections/con_1", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["connection_id"], "con_1");
    assert_eq!(one["tenant_id"], "tenant-1");
    assert_eq!(one["mode"], "oauth");
    assert_eq!(one["status"], "active");
    assert_eq!(one["sites"][0]["products"], json!(["jira", "confluence"]));
    assert_eq!(one["sites"][0]["cloud_id"], "11111111-2222-3333-4444-555555555555");
    assert!(one["created_at"].is_string() && one["updated_at"].is_string());
    assert!(one.get("credentials").is_none() && one.get("token_version").is_none());

    let (status, list) = call(&deps, request(Method::GET, "/connections?tenant_id=tenant-1", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], json!([one]));
    let (_, empty) = call(&deps, request(Method::GET, "/connections?tenant_id=other", Some(KEY), None)).await;
    assert_eq!(empty, json!({"items": []}));
}

#[tokio::test]
async fn unknown_things_are_json_errors() {
    let deps = deps();
    let cases = [
        (Method::GET, "/connections/nope", StatusCode::NOT_FOUND, "connection_not_found"),
        (Method::GET, "/connections", StatusCode::BAD_REQUEST, "tenant_id_required"),
        (Method::GET, "/elsewhere", StatusCode::NOT_FOUND, "not_found"),
        (Method::DELETE, "/connect-sessions", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (method, path, status, code) in cases {
        let (got, body) = call(&deps, request(method, path, Some(KEY), None)).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{path}");
    }
    assert!(deps.store.list_connections("t").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_management_key_rotates_without_downtime() {
    let deps = deps();
    let set = |value: &str| {
        let keys = management::ManagementKeys::parse(&SecretString::from(value)).unwrap();
        *deps.management_keys.write().unwrap() = keys;
    };
    let status = |key: &'static str| {
        let deps = &deps;
        async move { call(deps, request(Method::GET, "/connections?tenant_id=t", Some(key), None)).await.0 }
    };
    // Both keys while the clients move over, then the new one alone.
    set(&format!(r#"{{"current": "mk_new_key_0123456789", "previous": "{KEY}"}}"#));
    assert_eq!((status(KEY).await, status("mk_new_key_0123456789").await), (StatusCode::OK, StatusCode::OK));
    set("mk_new_key_0123456789");
    assert_eq!((status(KEY).await, status("mk_new_key_0123456789").await), (StatusCode::UNAUTHORIZED, StatusCode::OK));
}
