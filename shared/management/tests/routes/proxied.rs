//! The proxy route through the handler: what passes each way, and every refusal a JSON 4xx that reaches neither
//! Atlassian nor the store.

use super::hostile::{raw, snapshot};
use super::*;

/// An OAuth connection `con_1` on one site, with tokens sealed under the deps' keys (fresh for an hour).
async fn oauth_connection(deps: &Deps<MemoryStore, MemoryStore, MemoryQueue, FakeAtlassian>) {
    let mut connection = contract::connection("tenant-1", "con_1");
    let credentials = tokens::credentials::Credentials {
        access_token: atlassian::AccessToken::new("stored-token".into()),
        refresh_token: Some(atlassian::RefreshToken::new("refresh-1".into())),
        expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    };
    connection.credentials = tokens::credentials::seal(&deps.keys, "con_1", &credentials).unwrap();
    deps.store.upsert_connection(&connection).await.unwrap();
}

#[tokio::test]
async fn a_proxied_call_gets_atlassians_answer_with_only_the_headers_that_come_back() {
    let mut deps = deps();
    deps.atlassian = FakeAtlassian::granting(&[]).answering(Ok(atlassian::Forwarded {
        status: 200,
        headers: [
            ("content-type", "application/json"),
            ("set-cookie", "atlassian.xsrf.token=secret"),
            ("ratelimit-policy", "\"global-app-quota\";q=65000;w=3600"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect(),
        body: br#"{"issues": [{"key": "ACME-1"}]}"#.to_vec(),
    }));
    oauth_connection(&deps).await;
    let mut request = raw(Method::GET, "/connections/con_1/proxy/jira/rest/api/3/search/jql", None, Vec::new());
    *request.uri_mut() = "https://connector.example/connections/con_1/proxy/jira/rest/api/3/search/jql?jql=project%20%3D%20ACME&maxResults=5"
        .parse()
        .unwrap();
    request.headers_mut().insert("cookie", "session=1".parse().unwrap());
    let response = handle(&deps, request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("set-cookie").is_none(), "Atlassian's cookies never come back");
    assert!(response.headers().get("ratelimit-policy").is_some(), "the quota headers do");
    let Body::Text(text) = response.body() else { panic!("JSON comes back as text") };
    assert_eq!(text, r#"{"issues": [{"key": "ACME-1"}]}"#);
    let sent = deps.atlassian.forwarded();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].target, "gateway:jira:11111111-2222-3333-4444-555555555555:stored-token");
    assert_eq!(sent[0].path_and_query, "/rest/api/3/search/jql?jql=project%20%3D%20ACME&maxResults=5");
    assert!(sent[0].headers.is_empty(), "neither our Authorization nor the cookie: {:?}", sent[0].headers);

    let unauthenticated = lambda_http::http::Request::builder()
        .uri("https://connector.example/connections/con_1/proxy/jira/rest/api/3/myself")
        .body(Body::Empty)
        .unwrap();
    assert_eq!(handle(&deps, unauthenticated).await.unwrap().status(), 401);
    assert_eq!(deps.atlassian.forwarded().len(), 1);
}

#[tokio::test]
async fn an_answer_that_is_not_text_comes_back_as_bytes() {
    let mut deps = deps();
    let png = vec![0x89, b'P', b'N', b'G', 0, 0xff];
    deps.atlassian = FakeAtlassian::granting(&[]).answering(Ok(atlassian::Forwarded {
        status: 200,
        headers: vec![("content-type".into(), "image/png".into())],
        body: png.clone(),
    }));
    oauth_connection(&deps).await;
    let request =
        raw(Method::GET, "/connections/con_1/proxy/confluence/wiki/download/attachments/1/a.png", None, Vec::new());
    let response = handle(&deps, request).await.unwrap();
    assert_eq!((response.status(), response.body()), (StatusCode::OK, &Body::Binary(png)));
}

/// (case, method, path, body, status, error code).
type Refusal<'a> = (&'a str, Method, String, Vec<u8>, u16, &'a str);

#[tokio::test]
async fn every_refusal_is_a_json_4xx_that_reaches_neither_atlassian_nor_the_store() {
    let deps = deps();
    oauth_connection(&deps).await;
    let before = snapshot(&deps).await;
    let base = "/connections/con_1/proxy";
    #[rustfmt::skip]
    let cases: Vec<Refusal> = vec![
        ("an unknown product", Method::GET, format!("{base}/bitbucket/2.0/repositories"), Vec::new(), 404, "unknown_product"),
        ("no path", Method::GET, format!("{base}/jira"), Vec::new(), 400, "invalid_path"),
        ("a path that climbs out", Method::GET, format!("{base}/jira/rest/../../../admin/v1/orgs"), Vec::new(), 400, "invalid_path"),
        ("an encoded climb", Method::GET, format!("{base}/jira/rest/%2e%2e/%2e%2e/x"), Vec::new(), 400, "invalid_path"),
        ("an encoded slash", Method::GET, format!("{base}/jira/rest%2F..%2Fadmin"), Vec::new(), 400, "invalid_path"),
        ("a double slash", Method::GET, format!("{base}/jira//evil.example/x"), Vec::new(), 400, "invalid_path"),
        ("a write while writes are off", Method::POST, format!("{base}/jira/rest/api/3/issue"), b"{}".to_vec(), 403, "writes_disabled"),
        ("a delete while writes are off", Method::DELETE, format!("{base}/jira/rest/api/3/issue/ACME-1"), Vec::new(), 403, "writes_disabled"),
        ("a method the proxy does not pass", Method::PATCH, format!("{base}/jira/rest/api/3/issue/ACME-1"), Vec::new(), 405, "method_not_allowed"),
        ("the Admin API on an OAuth connection", Method::GET, format!("{base}/admin/v1/orgs"), Vec::new(), 400, "product_not_available"),
        ("a site the connection does not have", Method::GET, format!("{base}/jira/rest/api/3/myself?cloud_id=other-site"), Vec::new(), 400, "unknown_site"),
        ("an unknown connection", Method::GET, "/connections/con_none/proxy/jira/rest/api/3/myself".into(), Vec::new(), 404, "connection_not_found"),
        ("a malformed connection id", Method::GET, "/connections/con%20x/proxy/jira/rest/api/3/myself".into(), Vec::new(), 400, "invalid_id"),
        ("a body past Lambda's payload", Method::PUT, format!("{base}/jira/rest/api/3/issue/ACME-1"), vec![b'x'; proxy::MAX_BODY + 1], 413, "body_too_large"),
        ("a query past the limit", Method::GET, format!("{base}/jira/rest/api/3/search/jql?jql={}", "a".repeat(proxy::MAX_QUERY + 1)), Vec::new(), 414, "query_too_long"),
    ];
    for (case, method, path, body, status, code) in cases {
        let mut request = raw(method, &path, Some("application/json"), body);
        *request.uri_mut() = format!("https://connector.example{path}").parse().unwrap();
        let (got, answer) = call(&deps, request).await;
        assert_eq!(got.as_u16(), status, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{case}: {answer}");
        assert_eq!(snapshot(&deps).await, before, "{case}: the store is as it was");
    }
    // A revoked connection is refused too.
    deps.store.revoke_connection("con_1", time::OffsetDateTime::now_utc()).await.unwrap();
    let revoked = snapshot(&deps).await;
    let (got, answer) =
        call(&deps, raw(Method::GET, &format!("{base}/jira/rest/api/3/myself"), None, Vec::new())).await;
    assert_eq!((got.as_u16(), answer["error"]["code"].as_str()), (409, Some("connection_revoked")));
    assert!(deps.atlassian.forwarded().is_empty(), "nothing reached Atlassian");
    assert_eq!(deps.atlassian.refresh_count(), 0);
    assert_eq!(snapshot(&deps).await, revoked);
    assert_ne!(before, revoked, "the snapshot sees a change");
}

#[tokio::test]
async fn a_dry_points_pool_is_a_429_with_retry_after() {
    let mut deps = deps();
    deps.proxy = proxy::Settings::new(false, proxy::QuotaConfig { points: 1, reserve: 0.0, ..Default::default() });
    oauth_connection(&deps).await;
    let path = "/connections/con_1/proxy/jira/rest/api/3/myself";
    assert_eq!(handle(&deps, raw(Method::GET, path, None, Vec::new())).await.unwrap().status(), 200);
    let response = handle(&deps, raw(Method::GET, path, None, Vec::new())).await.unwrap();
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
    assert_eq!(deps.atlassian.forwarded().len(), 1);
}
