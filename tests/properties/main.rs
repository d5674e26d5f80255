//! Property tests of how the Atlassian client reads Atlassian's answers, against a scripted server that answers
//! whatever a case says: any status, any rate-limit and quota headers, any body. Whatever comes back, the client
//! answers without a panic and with the error the status means; pages with their fields shuffled, extra fields and
//! nulls read the same as plain ones; a `next` link never takes the token off the site's gateway.
//!
//! `browser.rs`: the same for the connect link and the OAuth callback.

mod browser;

use atlassian::rest::{ConfluenceSpace, JiraUser};
use atlassian::{AccessToken, ApiError, AtlassianClient, DirectoryApi, Endpoints, QuotaWatch, RetryPolicy};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// What the scripted server answers next, and the paths it was asked for.
#[derive(Default)]
struct Script {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    asked: Vec<String>,
}

struct Server {
    runtime: tokio::runtime::Runtime,
    script: Arc<Mutex<Script>>,
    client: AtlassianClient,
    watch: QuotaWatch,
}

/// One server and client for every case (a server per case would spend the run on sockets).
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        let serving = script.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let script = serving.clone();
            async move {
                let mut script = script.lock().unwrap();
                script.asked.push(uri.to_string());
                let mut response = axum::response::Response::new(axum::body::Body::from(script.body.clone()));
                *response.status_mut() = axum::http::StatusCode::from_u16(script.status).unwrap();
                for (name, value) in &script.headers {
                    if let (Ok(name), Ok(value)) =
                        (axum::http::HeaderName::from_bytes(name.as_bytes()), axum::http::HeaderValue::from_str(value))
                    {
                        response.headers_mut().append(name, value);
                    }
                }
                response
            }
        });
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        let watch = QuotaWatch::default();
        let client = AtlassianClient::without_oauth(
            atlassian::http_client().unwrap(),
            Endpoints { auth_base: base.clone(), api_base: base },
        )
        .with_retry(RetryPolicy { max_retries: 0, min_delay: Duration::ZERO, max_delay: Duration::ZERO })
        .with_quota_watch(watch.clone());
        Server { runtime, script, client, watch }
    })
}

/// Runs `call` against the server scripted to answer `status`, `headers`, `body`; answers what the client returned
/// and the paths the server was asked for. Cases run one at a time (the server is shared).
fn answered<T>(
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    call: impl AsyncFnOnce(&AtlassianClient) -> T,
) -> (T, Vec<String>) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let server = server();
    *server.script.lock().unwrap() = Script { status, headers, body, asked: Vec::new() };
    let result = server.runtime.block_on(call(&server.client));
    let asked = std::mem::take(&mut server.script.lock().unwrap().asked);
    (result, asked)
}

fn token() -> AccessToken {
    AccessToken::new("token".into())
}

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// Header values of the kinds Atlassian sends, garbled or not.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("-5".to_owned()),
        Just("18446744073709551616".to_owned()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        Just("\"global-app-quota\";q=65000;w=3600;r=12;t=1800, \"tenant-app-quota\";q=10000;w=3600".to_owned()),
        Just("\"global-app-quota\";r=-1;t=abc;q=;w".to_owned()),
        Just("2026-12-01T10:00Z".to_owned()),
        Just("9999-12-31T23:59:59Z".to_owned()),
        Just("true".to_owned()),
        vec(0x20u8..0x7f, 0..60).prop_map(|b| String::from_utf8(b).unwrap()),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop::sample::select(vec![
        "retry-after",
        "ratelimit",
        "beta-ratelimit",
        "ratelimit-policy",
        "beta-ratelimit-policy",
        "x-ratelimit-reset",
        "x-ratelimit-nearlimit",
        "ratelimit-reason",
        "content-type",
    ]);
    vec((name.prop_map(str::to_owned), header_value()), 0..6)
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(200u16),
        1 => prop::sample::select(vec![204u16, 400, 401, 403, 404, 409, 413, 429, 431, 500, 502, 503]),
        1 => 200u16..600,
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..200),
        Just(b"[]".to_vec()),
        Just(b"{\"values\": [], \"isLast\": false}".to_vec()),
        Just(b"<html>Service Unavailable</html>".to_vec()),
        Just(b"[{\"accountId\": \"a\"}, {\"accountId\":".to_vec()),
        text(60).prop_map(|t| json!({"values": [{"accountId": t, "groupId": t, "name": t}]}).to_string().into_bytes()),
    ]
}

/// A JSON object of `fields` in the order `order` picks, with unknown fields mixed in and absent optionals as
/// `null` or missing.
fn shuffled(fields: Vec<(&'static str, Value)>, extra: Vec<(String, Value)>, order: &[usize]) -> Value {
    let mut all: Vec<(String, Value)> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    all.extend(extra.into_iter().filter(|(k, _)| !k.chars().next().is_some_and(char::is_lowercase)));
    let n = all.len();
    let mut picked: Vec<(String, Value)> = Vec::with_capacity(n);
    let mut left = all;
    for (i, pick) in order.iter().enumerate().take(n) {
        let at = pick % (n - i);
        picked.push(left.remove(at));
    }
    picked.extend(left);
    Value::Object(picked.into_iter().collect::<Map<_, _>>())
}

fn extra_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    // Upper-case names: never one of Atlassian's own (camelCase) fields.
    vec((text(8).prop_map(|t| format!("X{t}")), prop_oneof![Just(Value::Null), text(10).prop_map(Value::from)]), 0..3)
}

fn user() -> impl Strategy<Value = (JiraUser, Value)> {
    (text(30), any::<bool>(), prop::option::of(text(20)), prop::option::of(text(20)), extra_fields(), vec(0usize..8, 8))
        .prop_map(|(id, active, name, email, extra, order)| {
            let user = JiraUser {
                account_id: format!("acc-{id}"),
                account_type: Some("atlassian".into()),
                active,
                display_name: name.clone(),
                email_address: email.clone(),
            };
            let json = shuffled(
                vec![
                    ("accountId", Value::from(user.account_id.clone())),
                    ("accountType", Value::from("atlassian")),
                    ("active", Value::from(active)),
                    ("displayName", name.map_or(Value::Null, Value::from)),
                    ("emailAddress", email.map_or(Value::Null, Value::from)),
                    ("self", Value::from("https://api.example/user")),
                ],
                extra,
                &order,
            );
            (user, json)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn any_answer_is_read_as_what_its_status_means(status in status(), headers in headers(), body in body(), which in 0..4u8) {
        let (result, _) = answered(status, headers, body, async |client| match which {
            0 => client.users_page(&token(), "site-1", 0).await.map(|_| ()),
            1 => client.groups_page(&token(), "site-1", 0).await.map(|_| ()),
            2 => client.projects_page(&token(), "site-1", 0).await.map(|_| ()),
            _ => client.spaces_page(&token(), "site-1", None).await.map(|_| ()),
        });
        match (status, result) {
            (200..=299, Ok(()) | Err(ApiError::Decode(_))) => {}
            (401 | 403, Err(ApiError::Unauthorized { status: got, .. })) => prop_assert_eq!(got, status),
            (404, Err(ApiError::NotFound)) => {}
            (429, Err(ApiError::RateLimited { retry_after, .. })) => {
                prop_assert!(retry_after.is_none_or(|after| after >= Duration::from_secs(1)), "{:?}", retry_after);
            }
            (_, Err(ApiError::Status { status: got })) => prop_assert_eq!(got, status),
            (status, other) => prop_assert!(false, "HTTP {} read as {:?}", status, other),
        }
        // Whatever the quota headers said, the watch holds only numbers it could read.
        if let Some(report) = server().watch.latest() {
            for pool in &report.pools {
                prop_assert!(!pool.name.is_empty());
            }
        }
    }

    #[test]
    fn users_read_the_same_whatever_the_order_extra_fields_and_nulls(users in vec(user(), 0..6)) {
        let body = Value::from(users.iter().map(|(_, json)| json.clone()).collect::<Vec<_>>()).to_string();
        let (result, _) = answered(200, Vec::new(), body.into_bytes(), async |client| {
            client.users_page(&token(), "site-1", 0).await
        });
        let expected: Vec<JiraUser> = users.into_iter().map(|(user, _)| user).collect();
        prop_assert_eq!(result.unwrap(), expected);
    }

    #[test]
    fn spaces_and_their_next_link_read_the_same_whatever_the_order(
        keys in vec(text(12), 0..5),
        next in prop::option::of(text(30)),
        order in vec(0usize..8, 8),
    ) {
        let spaces: Vec<Value> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| shuffled(
                vec![("id", Value::from(i.to_string())), ("key", Value::from(key.clone())), ("name", Value::from(key.clone())),
                     ("type", Value::from("global")), ("status", Value::from("current")), ("homepageId", Value::Null)],
                Vec::new(),
                &order,
            ))
            .collect();
        let next = next.map(|n| format!("/wiki/api/v2/spaces?cursor={}", url::form_urlencoded::byte_serialize(n.as_bytes()).collect::<String>()));
        let body = json!({"_links": {"next": next, "base": "https://acme.atlassian.net/wiki"}, "results": spaces});
        let (page, _) = answered(200, Vec::new(), body.to_string().into_bytes(), async |client| {
            client.spaces_page(&token(), "site-1", None).await
        });
        let page = page.unwrap();
        prop_assert_eq!(page.next, next);
        let got: Vec<String> = page.results.iter().map(|s: &ConfluenceSpace| s.key.clone()).collect();
        prop_assert_eq!(got, keys);
    }

    #[test]
    fn a_next_link_never_takes_the_token_off_the_sites_gateway(pieces in vec(prop::sample::select(vec![
        "/wiki/api/v2/spaces", "/wiki/", "//evil.example", "https://evil.example", "http://", "@evil.example",
        "/..", "/%2e%2e", "%2F", "\\", "?cursor=a", "#", "/ex/jira/other-site", " ", "\n", "/wiki/../../",
    ]), 1..6)) {
        let next = pieces.concat();
        let (result, asked) = answered(200, Vec::new(), br#"{"results": []}"#.to_vec(), async |client| {
            client.spaces_page(&token(), "site-1", Some(&next)).await
        });
        match result {
            Ok(_) => {
                prop_assert_eq!(asked.len(), 1, "{}", next);
                let path = url::Url::parse("http://x").unwrap().join(&asked[0]).unwrap();
                prop_assert!(path.path().starts_with("/ex/confluence/site-1/wiki/"), "{} asked {}", next, asked[0]);
            }
            Err(ApiError::Status { status: 400 }) => prop_assert!(asked.is_empty(), "{}", next),
            Err(other) => prop_assert!(false, "{} answered {:?}", next, other),
        }
    }
}
