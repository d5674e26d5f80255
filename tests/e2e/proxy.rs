//! The proxy end to end: the product's calls to Jira and Confluence through an OAuth connection whose access token
//! has expired (one refresh, then the calls pass), Atlassian's 429 passed back with its `Retry-After`, and every
//! refusal a 4xx that reaches neither Atlassian nor the store.

use super::*;

/// Makes the stored access token of `connection_id` expired (as an hour without use would), sealed as before.
async fn expire_access_token(stack: &Stack, connection_id: &str) {
    let item = stored_item(stack, connection_id).await;
    let credentials = item["credentials"].as_m().unwrap();
    let sealed = SealedCredentials {
        key_version: credentials["key_version"].as_s().unwrap().clone(),
        blob: credentials["blob"].as_b().unwrap().as_ref().to_vec(),
    };
    let keys = key_ring(stack).await;
    let mut opened = tokens::credentials::open(&keys, connection_id, &sealed).unwrap();
    opened.expires_at = OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let resealed = tokens::credentials::seal(&keys, connection_id, &opened).unwrap();
    let value = AttributeValue::M(HashMap::from([
        ("key_version".to_owned(), AttributeValue::S(resealed.key_version)),
        ("blob".to_owned(), AttributeValue::B(resealed.blob.into())),
    ]));
    stack
        .dynamodb()
        .update_item()
        .table_name(&stack.table)
        .key("pk", AttributeValue::S(format!("CONN#{connection_id}")))
        .key("sk", AttributeValue::S("CONN".into()))
        .update_expression("SET credentials = :c")
        .condition_expression("token_version = :v")
        .expression_attribute_values(":c", value)
        .expression_attribute_values(":v", item["token_version"].clone())
        .send()
        .await
        .unwrap();
}

async fn key_ring(stack: &Stack) -> KeyRing {
    let secret = stack.secretsmanager().get_secret_value().secret_id(&stack.token_keys_secret_id).send().await.unwrap();
    KeyRing::from_json(&secret.secret_string.unwrap()).unwrap()
}

/// A proxied call, as a product makes it: (status, headers, body as JSON or null). The connector's own `429
/// quota_exhausted` (the app's points pool is dry: `make test` gives it 1,500 points per 4 s, which the syncs of
/// other tests share) is waited out by its `Retry-After`, as a product would.
async fn proxied(
    stack: &Stack,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    for _ in 0..30 {
        let mut request = harness::client().request(method.clone(), stack.url(path)).bearer_auth(&stack.management_key);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 429 && body["error"]["code"] == "quota_exhausted" {
            let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=4).contains(&wait), "a wait within the stack's 4 s window: {wait}");
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            continue;
        }
        return (status, headers, body);
    }
    panic!("the points pool stayed dry for {path}");
}

/// A GET whose path goes out byte for byte (an HTTP client would resolve its `..` and `%2e%2e` first): the status
/// and the body.
async fn raw_get(stack: &Stack, path: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let (url, key, path) = (stack.url("/"), stack.management_key.clone(), path.to_owned());
    tokio::task::spawn_blocking(move || {
        let host = format!("{}:{}", url.host_str().unwrap(), url.port_or_known_default().unwrap());
        let mut socket = std::net::TcpStream::connect(&host).unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).unwrap();
        let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

/// The sandbox's count of the routes this test calls through the proxy (other tests run meanwhile, on others).
async fn rest_requests(stack: &Stack) -> Vec<Value> {
    let stats = sandbox_stats(stack).await;
    ["search/jql", "content", "pages"].iter().map(|route| stats["rest_requests"][route].clone()).collect()
}

#[tokio::test]
async fn proxying_jira_and_confluence_through_an_oauth_connection_end_to_end() {
    let stack = Stack::from_env();
    // An admin of its own: the sandbox keeps one grant per (app, account), and another test consenting as the same
    // account would start a new token chain under this one.
    let consent = Consent { account_id: "5b10ac8d82e05b22cc7d0002".into(), ..Consent::default() };
    let (_, c) = connect(&stack, &unique("e2e-proxy"), None, &consent).await;
    let id = c.connection_id;
    let (_, connection) = stack.api_get(&format!("/connections/{id}")).await.unwrap();
    let sites: Vec<String> =
        connection["sites"].as_array().unwrap().iter().map(|s| s["cloud_id"].as_str().unwrap().to_owned()).collect();
    assert!(sites.len() >= 2, "the sandbox org has two sites: {connection}");
    let org = harness::sandbox_org(&stack.atlassian_url).await.unwrap();
    let project = org["projects"].as_array().unwrap().iter().find(|p| p["site"] == sites[0].as_str()).unwrap();
    let key = project["key"].as_str().unwrap();

    // An expired access token: the first call refreshes it once (rotation-safely), and the call passes.
    expire_access_token(&stack, &id).await;
    let refreshes = sandbox_stats(&stack).await["refreshes"].as_u64().unwrap();
    let search = format!("/connections/{id}/proxy/jira/rest/api/3/search/jql?jql=project%20%3D%20{key}&maxResults=2");
    let (status, headers, page) =
        proxied(&stack, reqwest::Method::GET, &format!("{search}&cloud_id={}", sites[0]), &[]).await;
    assert_eq!(status, 200, "{page}");
    let keys: Vec<&str> = page["issues"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(keys, [format!("{key}-1"), format!("{key}-2")]);
    assert_eq!(page["isLast"], false);
    assert!(headers.get("set-cookie").is_none());
    // The next page, by Atlassian's own token, with the site named by header instead.
    let token = page["nextPageToken"].as_str().unwrap();
    let next =
        format!("/connections/{id}/proxy/jira/rest/api/3/search/jql?jql=project%20%3D%20{key}&nextPageToken={token}");
    let (status, _, page) = proxied(&stack, reqwest::Method::GET, &next, &[("x-atlassian-cloud-id", &sites[0])]).await;
    assert_eq!((status, page["issues"][0]["key"].as_str()), (200, Some(format!("{key}-3").as_str())), "{page}");
    assert_eq!(page["isLast"], true);

    // Confluence, on the same grant: a page listing (classic scope); the v2 listing's granular scope was not granted,
    // and Atlassian's own 401 comes back as it came.
    let content =
        format!("/connections/{id}/proxy/confluence/wiki/rest/api/content?type=page&limit=3&cloud_id={}", sites[0]);
    let (status, _, pages) = proxied(&stack, reqwest::Method::GET, &content, &[]).await;
    assert_eq!(status, 200, "{pages}");
    assert_eq!(pages["results"].as_array().unwrap().len(), 3, "{pages}");
    assert!(pages["_links"]["next"].is_string());
    let v2 = format!("/connections/{id}/proxy/confluence/wiki/api/v2/pages?cloud_id={}", sites[0]);
    let (status, _, answer) = proxied(&stack, reqwest::Method::GET, &v2, &[]).await;
    assert_eq!((status, answer["message"].as_str()), (401, Some("Unauthorized; scope does not match")));
    assert_eq!(sandbox_stats(&stack).await["refreshes"].as_u64().unwrap(), refreshes + 1, "one refresh for all calls");

    // Refusals: a JSON 4xx each, nothing sent to Atlassian, nothing stored.
    let before = (stored_item(&stack, &id).await, rest_requests(&stack).await);
    let base = format!("/connections/{id}/proxy");
    for (method, path, status, code) in [
        (reqwest::Method::GET, format!("{base}/bitbucket/2.0/repositories"), 404, "unknown_product"),
        (reqwest::Method::GET, format!("{base}/jira/rest%2Fapi%2F3%2Fmyself"), 400, "invalid_path"),
        (reqwest::Method::GET, format!("{base}/jira/rest/api/3/myself"), 400, "site_required"),
        (reqwest::Method::GET, format!("{base}/jira/rest/api/3/myself?cloud_id=not-a-site"), 400, "unknown_site"),
        (reqwest::Method::POST, format!("{base}/jira/rest/api/3/issue?cloud_id={}", sites[0]), 403, "writes_disabled"),
        (
            reqwest::Method::DELETE,
            format!("{base}/jira/rest/api/3/issue/{key}-1?cloud_id={}", sites[0]),
            403,
            "writes_disabled",
        ),
        (reqwest::Method::GET, format!("{base}/admin/v1/orgs"), 400, "product_not_available"),
    ] {
        let (got, _, answer) = proxied(&stack, method.clone(), &path, &[]).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{method} {path}: {answer}");
    }
    // Paths that climb out, sent as written: refused, and nothing reaches Atlassian (checked below). Which refusal
    // depends on who sees the path first: `cargo lambda watch` answers a bare 404 for a `..` segment and resolves
    // `%2e%2e` before the function runs (so the function sees another route); API Gateway may hand either on as
    // sent, and then the function's own `400 invalid_path` answers (`shared/management/tests/routes/proxied.rs`).
    for path in [
        format!("{base}/jira/rest/api/3/../../../admin/v1/orgs?cloud_id={}", sites[0]),
        format!("{base}/jira/rest/%2e%2e/%2e%2e/x?cloud_id={}", sites[0]),
        format!("{base}/confluence/wiki/..%2f..%2fadmin?cloud_id={}", sites[0]),
    ] {
        let (status, answer) = raw_get(&stack, &path).await;
        assert!((400..500).contains(&status), "{path}: {status} {answer}");
    }
    assert_eq!((stored_item(&stack, &id).await, rest_requests(&stack).await), before, "refusals change nothing");

    // Atlassian's 429 reaches the caller with its Retry-After (the proxy does not sleep inside API Gateway's 30 s).
    let faults = stack.atlassian_url.join("/__sandbox/faults").unwrap();
    let limited = serde_json::json!({"rate_limit_every": 1, "retry_after_secs": 7, "rate_limit_route": "search/jql"});
    harness::client().post(faults.clone()).json(&limited).send().await.unwrap();
    let (status, headers, _) =
        proxied(&stack, reqwest::Method::GET, &format!("{search}&cloud_id={}", sites[0]), &[]).await;
    harness::client().post(faults).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(headers["ratelimit-reason"], "jira-burst-based");

    // Disconnected: the proxy refuses it, and neither Atlassian nor the store sees the call.
    assert_eq!(disconnect(&stack, &id).await.0, 200);
    let disconnected = (stored_item(&stack, &id).await, rest_requests(&stack).await);
    let (status, _, answer) =
        proxied(&stack, reqwest::Method::GET, &format!("{search}&cloud_id={}", sites[0]), &[]).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("connection_revoked")), "{answer}");
    assert_eq!(
        (stored_item(&stack, &id).await, rest_requests(&stack).await),
        disconnected,
        "a refusal changes nothing"
    );

    // Every call is logged, never with a token (the refreshed ones included).
    let log = std::fs::read_to_string(&stack.function_log).unwrap_or_default();
    assert!(log.contains("proxied") && log.contains(&id), "the log capture must see the calls");
    for secret in issued_secrets(&stack).await {
        assert!(!log.contains(&secret), "a token reached the function logs");
    }
}
