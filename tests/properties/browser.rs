//! Property tests of the two browser routes, `/connect` and `/oauth/callback`, over the in-memory store: any method,
//! any query (real session ids, states and codes among arbitrary text and markup), any cookie. The answer is never a
//! 5xx; it is a redirect to where the flow goes or an HTML page that reflects no markup; a refused request stores
//! nothing.

use atlassian::fake::FakeAtlassian;
use lambda_http::http::Method;
use lambda_http::{Body, Request, RequestExt, Response};
use proptest::collection::vec;
use proptest::prelude::*;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use store::MemoryStore;
use time::{Duration, OffsetDateTime};
use tokens::connect::{self, AuthorizeSettings, ReturnUrlAllowList, SessionSettings};
use tokens::{KeyRing, scopes};
use url::Url;

use super::text;

fn authorize_settings() -> AuthorizeSettings {
    AuthorizeSettings {
        authorize_url: Url::parse("https://auth.example/authorize").unwrap(),
        audience: "api.atlassian.com".into(),
        client_id: "cid".into(),
        redirect_uri: Url::parse("https://connector.example/oauth/callback").unwrap(),
        scopes: scopes::defaults(),
        state_ttl: Duration::minutes(10),
    }
}

/// A store with a live session, and a flow begun on it: its session id, state and browser binding.
async fn begun(store: &MemoryStore) -> (String, String, String) {
    let settings = SessionSettings {
        public_base_url: Url::parse("https://connector.example/").unwrap(),
        ttl: Duration::minutes(15),
        return_urls: ReturnUrlAllowList::parse("https://app.example/").unwrap(),
    };
    let now = OffsetDateTime::now_utc();
    let session =
        connect::create_session(store, &settings, "tenant", Some("https://app.example/done"), now).await.unwrap();
    let session_id = session.session_id.expose_secret().to_owned();
    let begun = connect::begin(store, &authorize_settings(), Some(&session_id), now).await.unwrap();
    let state = begun.authorize_url.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    (session_id, state, begun.browser.expose_secret().to_owned())
}

/// A value: `real` (a live session id, state or binding) or a hostile one.
fn value(real: usize) -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => (0..real).prop_map(Value::Real),
        1 => prop::sample::select(vec![
            "<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>", "access_denied", "cs_", "", "%00",
        ]).prop_map(|s| Value::Text(s.to_owned())),
        1 => (1usize..5000).prop_map(|n| Value::Text("s".repeat(n))),
        1 => text(30).prop_map(Value::Text),
    ]
}

#[derive(Debug, Clone)]
enum Value {
    Real(usize),
    Text(String),
}

impl Value {
    fn resolve(&self, real: &[&str]) -> String {
        match self {
            Self::Real(i) => real[*i].to_owned(),
            Self::Text(t) => t.clone(),
        }
    }
}

fn resolve(
    query: &[(&'static str, Value)],
    cookie: &Option<Value>,
    real: &[&str],
) -> (Vec<(&'static str, String)>, Option<String>) {
    (query.iter().map(|(k, v)| (*k, v.resolve(real))).collect(), cookie.as_ref().map(|c| c.resolve(real)))
}

type Case = (Method, Vec<(&'static str, Value)>, Option<Value>);

fn case() -> impl Strategy<Value = Case> {
    let method = prop_oneof![4 => Just(Method::GET), 1 => Just(Method::POST), 1 => Just(Method::HEAD)];
    let key = prop::sample::select(vec!["session", "state", "code", "error", "error_description", "x"]);
    let arbitrary = (method.clone(), vec((key.clone(), value(3)), 0..5), prop::option::of(value(3)));
    // A real flow's request with a few hostile additions: reaches the routes' success paths too.
    let near_real = (method, vec((key, value(3)), 0..2), text(20)).prop_map(|(method, extra, code)| {
        let mut query = vec![("session", Value::Real(0)), ("state", Value::Real(1)), ("code", Value::Text(code))];
        query.extend(extra);
        (method, query, Some(Value::Real(2)))
    });
    prop_oneof![arbitrary, near_real]
}

fn request(path: &str, method: Method, query: &[(&str, String)], cookie: Option<String>) -> Request {
    let mut builder =
        lambda_http::http::Request::builder().method(method).uri(format!("https://connector.example{path}"));
    if let Some(cookie) = cookie
        && lambda_http::http::HeaderValue::from_str(&cookie).is_ok()
    {
        builder = builder.header("cookie", format!("{}={cookie}", connect::BROWSER_COOKIE));
    }
    let mut params: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in query {
        params.entry((*k).to_owned()).or_default().push(v.clone());
    }
    builder.body(Body::Empty).unwrap().with_query_string_parameters(params)
}

/// Whether `value` holds a tag (`<` then a letter, `/` or `!`): a lone `<` is in every page already.
fn is_markup(value: &str) -> bool {
    value.as_bytes().windows(2).any(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || matches!(w[1], b'/' | b'!')))
}

/// The answer is a redirect (to `allowed`) or an HTML page without any of the generated markup.
fn check(response: &Response<Body>, query: &[(&str, String)], allowed: &[&str]) -> Result<(), TestCaseError> {
    let status = response.status().as_u16();
    prop_assert!(status < 500, "{}", status);
    if status == 302 {
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("");
        prop_assert!(allowed.iter().any(|a| location.starts_with(a)), "redirect to {}", location);
        return Ok(());
    }
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    prop_assert!(content_type.starts_with("text/html"), "{} {}", status, content_type);
    let Body::Text(html) = response.body() else { return Err(TestCaseError::fail("a page has a text body")) };
    for (_, value) in query {
        prop_assert!(!(is_markup(value) && html.contains(value.as_str())), "reflected {:?}", value);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn the_browser_routes_answer_anything_with_a_redirect_or_a_page((method, query, cookie) in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            // Each route over a store of its own, with a live session and a begun flow whose values the case uses.
            let store = MemoryStore::new();
            let (session_id, state, browser) = begun(&store).await;
            let real = [session_id.as_str(), state.as_str(), browser.as_str()];
            let (query_a, cookie_a) = resolve(&query, &cookie, &real);
            let before = (store.state_count(), store.connections().len());
            let connect = ::connect::Deps { store, authorize: authorize_settings() };
            let response = ::connect::handle(&connect, request("/connect", method.clone(), &query_a, cookie_a)).await.unwrap();
            check(&response, &query_a, &["https://auth.example/authorize?"])?;
            if response.status() != 302 {
                prop_assert_eq!((connect.store.state_count(), connect.store.connections().len()), before);
            }

            let store = MemoryStore::new();
            let (session_id, state, browser) = begun(&store).await;
            let real = [session_id.as_str(), state.as_str(), browser.as_str()];
            let (query_b, cookie_b) = resolve(&query, &cookie, &real);
            let before = store.connections().len();
            let callback = callback::Deps {
                store,
                atlassian: FakeAtlassian::granting(&scopes::defaults()),
                keys: KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap(),
                settings: connect::CompleteSettings { required_scopes: scopes::defaults() },
            };
            let response = callback::handle(&callback, request("/oauth/callback", method, &query_b, cookie_b)).await.unwrap();
            check(&response, &query_b, &["https://app.example/done?"])?;
            let connected = callback.store.connections().len() > before;
            prop_assert!(!connected || response.status() == 302, "a connection is made only by a flow that ends at the app");
            Ok(())
        })?;
    }
}
