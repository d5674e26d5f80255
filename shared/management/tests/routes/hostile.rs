//! Hostile input, route by route: every case is a 4xx with the JSON error shape and a code that says what is wrong,
//! and the store, the mirror and the queue are exactly as they were.

use super::*;

/// A request as a client may send it: any method, path, content type and body bytes.
pub(super) fn raw(method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Request {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut builder = lambda_http::http::Request::builder()
        .method(method)
        .uri(format!("https://connector.example{path}"))
        .header("authorization", format!("Bearer {KEY}"));
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    let body = if body.is_empty() { Body::Empty } else { Body::Binary(body) };
    let query: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    builder.body(body).unwrap().with_query_string_parameters(query)
}

/// A hostile request and the refusal it must get: (case, method, path, content type, body, status, error code).
type Case<'a> = (&'a str, Method, String, Option<&'a str>, Vec<u8>, u16, &'a str);

fn json_bytes(value: Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// Everything a refused request must leave as it was.
pub(super) async fn snapshot(deps: &Deps<MemoryStore, MemoryStore, MemoryQueue, FakeAtlassian>) -> String {
    let connections: Vec<String> = deps.store.connections().iter().map(|c| format!("{c:?}")).collect();
    let jobs = deps.queue.jobs.lock().unwrap().len();
    let mirrored =
        store::MirrorStore::list(&deps.mirror, &store::Scope::new("con_1", store::ObjectType::Users), None, 10)
            .await
            .unwrap()
            .0
            .len();
    format!("{connections:?} sessions={} jobs={jobs} mirrored={mirrored}", deps.store.session_count())
}

#[tokio::test]
async fn every_route_refuses_hostile_input_and_changes_nothing() {
    let deps = deps();
    connected(&deps, vec![store::Product::Jira, store::Product::Confluence]).await;
    let json = Some("application/json");
    let long = |n: usize| "x".repeat(n);
    let admin = |fields: Value| {
        let mut body = json!({"tenant_id": "t", "mode": "admin_api_key", "org_id": "org-1", "admin_api_key": "k"});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        json_bytes(body)
    };
    let mut invalid_utf8 = br#"{"tenant_id": "caf"#.to_vec();
    invalid_utf8.extend_from_slice(&[0xC3, 0x28]);
    invalid_utf8.extend_from_slice(br#""}"#);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // connect sessions
        ("a 3,000-character tenant", Method::POST, "/connect-sessions".into(), json, json_bytes(json!({"tenant_id": long(3000)})), 400, "invalid_tenant"),
        ("a tenant with NUL and controls", Method::POST, "/connect-sessions".into(), json, json_bytes(json!({"tenant_id": "a\u{0}b\u{7}"})), 400, "invalid_tenant"),
        ("a 10 KB return URL under an allowed path", Method::POST, "/connect-sessions".into(), json, json_bytes(json!({"tenant_id": "t", "return_url": format!("https://app.example/{}", long(10_000))})), 400, "invalid_field"),
        ("a body past the limit", Method::POST, "/connect-sessions".into(), json, json_bytes(json!({"tenant_id": "t", "return_url": long(450_000)})), 413, "body_too_large"),
        ("JSON sent as text/plain", Method::POST, "/connect-sessions".into(), Some("text/plain"), json_bytes(json!({"tenant_id": "t"})), 415, "unsupported_media_type"),
        ("JSON without a content type", Method::POST, "/connect-sessions".into(), None, json_bytes(json!({"tenant_id": "t"})), 415, "unsupported_media_type"),
        ("invalid UTF-8 inside a string", Method::POST, "/connect-sessions".into(), json, invalid_utf8, 400, "invalid_body"),
        ("malformed JSON", Method::POST, "/connect-sessions".into(), json, b"{\"tenant_id\": ".to_vec(), 400, "invalid_body"),
        // admin-key connections
        ("an admin-key tenant of 3,000 characters", Method::POST, "/connections".into(), json, admin(json!({"tenant_id": long(3000)})), 400, "invalid_tenant"),
        ("an admin-key tenant with NUL", Method::POST, "/connections".into(), json, admin(json!({"tenant_id": "a\u{0}"})), 400, "invalid_tenant"),
        ("a 100 KB admin key", Method::POST, "/connections".into(), json, admin(json!({"admin_api_key": long(100_000)})), 413, "body_too_large"),
        ("a 5,000-character admin key", Method::POST, "/connections".into(), json, admin(json!({"admin_api_key": long(5000)})), 400, "invalid_field"),
        ("CR/LF inside the admin key", Method::POST, "/connections".into(), json, admin(json!({"admin_api_key": "ATATT\r\nX-Injected: 1"})), 400, "invalid_field"),
        ("an org id with a slash", Method::POST, "/connections".into(), json, admin(json!({"org_id": "../org"})), 400, "invalid_id"),
        ("a 3,000-character site URL", Method::POST, "/connections".into(), json, admin(json!({"site_url": format!("https://{}.atlassian.net", long(3000)), "site_email": "a@b.c", "site_api_token": "t"})), 400, "invalid_field"),
        ("a site token with a line break", Method::POST, "/connections".into(), json, admin(json!({"site_url": "https://acme.atlassian.net", "site_email": "a@b.c", "site_api_token": "t\nx"})), 400, "invalid_field"),
        ("new credentials as text/plain", Method::PATCH, "/connections/con_1".into(), Some("text/plain"), json_bytes(json!({"admin_api_key": "k"})), 415, "unsupported_media_type"),
        ("a new key with CR/LF", Method::PATCH, "/connections/con_1".into(), json, json_bytes(json!({"admin_api_key": "k\r\n"})), 400, "invalid_field"),
        // ids, tenants and cursors in paths and queries
        ("a listing tenant of 3,000 characters", Method::GET, format!("/connections?tenant_id={}", long(3000)), None, Vec::new(), 400, "invalid_tenant"),
        ("a connection id past DynamoDB's key limit", Method::GET, format!("/connections/{}", long(3000)), None, Vec::new(), 400, "invalid_id"),
        ("an encoded slash in a connection id", Method::GET, "/connections/con_1%2F..".into(), None, Vec::new(), 400, "invalid_id"),
        ("deleting a malformed id", Method::DELETE, "/connections/con%00".into(), None, Vec::new(), 400, "invalid_id"),
        ("an 8 KB cursor", Method::GET, format!("/connections/con_1/objects/users?cursor={}", long(8000)), None, Vec::new(), 400, "invalid_cursor"),
        ("a cursor with control characters", Method::GET, "/connections/con_1/objects/users?cursor=a%0Ab".into(), None, Vec::new(), 400, "invalid_cursor"),
        ("a tampered cursor", Method::GET, "/connections/con_1/objects/users?cursor=forged".into(), None, Vec::new(), 400, "invalid_cursor"),
        ("a group id past the limit", Method::GET, format!("/connections/con_1/objects/groups/{}/members", long(200)), None, Vec::new(), 400, "invalid_id"),
        // sync requests
        ("a sync request as text/plain", Method::POST, "/connections/con_1/sync".into(), Some("text/plain"), json_bytes(json!({"object_types": ["users"]})), 415, "unsupported_media_type"),
        ("an unknown object type", Method::POST, "/connections/con_1/sync".into(), json, json_bytes(json!({"object_types": ["users", "widgets"]})), 400, "unknown_object_type"),
    ];
    let before = snapshot(&deps).await;
    for (case, method, path, content_type, body, status, code) in cases {
        let (got, answer) = call(&deps, raw(method, &path, content_type, body)).await;
        assert_eq!(got.as_u16(), status, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{case}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}: says what to fix");
        assert_eq!(snapshot(&deps).await, before, "{case}: nothing changed");
    }
}

#[tokio::test]
async fn a_type_named_many_times_is_queued_once() {
    let deps = deps();
    connected(&deps, vec![store::Product::Jira, store::Product::Confluence]).await;
    let body = json!({"object_types": vec!["users"; 50].into_iter().chain(["spaces"]).collect::<Vec<_>>()});
    let (status, answer) = call(&deps, request(Method::POST, "/connections/con_1/sync", Some(KEY), Some(body))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let queued: Vec<_> = deps.queue.take().into_iter().map(|(job, _)| job.object_type).collect();
    assert_eq!(queued, [store::ObjectType::Users, store::ObjectType::Spaces]);
}
