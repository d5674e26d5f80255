//! Property tests of the whole input surface: requests generated from hostile pieces (any method, path segments from
//! the API's own words mixed with arbitrary text, any query, any content type, arbitrary bytes or JSON with the
//! routes' field names and arbitrary values). Whatever arrives, the answer is never a 5xx, a refusal always has the
//! JSON error shape, and a refused request changes nothing.

use super::hostile::{raw, snapshot};
use super::*;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

/// Text of any Unicode characters, controls and NUL included.
fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// A piece of text a client might put anywhere: the API's own words and values, ids near and past the limits, or
/// anything.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "connect-sessions", "connections", "con_1", "objects", "users", "groups", "projects", "spaces",
            "members", "sync", "g-1", "..", "%2F", "%00", "", "admin_api_key", "t", "org-1",
            "https://app.example/done", "https://acme.atlassian.net", "jira", "confluence", "10", "0", "-1",
        ])
        .prop_map(str::to_owned),
        1 => (1usize..3000).prop_map(|n| "x".repeat(n)),
        2 => text(40),
    ]
}

/// Any JSON value, nested a little, with strings of any characters.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        word().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::from),
            btree_map(word(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body as the routes read them: an object of their field names (and others) with arbitrary values, or bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let field = prop::sample::select(vec![
        "tenant_id",
        "mode",
        "org_id",
        "admin_api_key",
        "object_types",
        "tenant_id",
        "return_url",
        "mode",
        "org_id",
        "admin_api_key",
        "site_url",
        "site_email",
        "site_api_token",
        "products",
        "object_types",
        "extra",
    ]);
    prop_oneof![
        1 => Just(Vec::new()),
        3 => btree_map(field, json_value(), 0..8).prop_map(|m| Value::Object(
            m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        ).to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => vec(any::<u8>(), 0..512),
    ]
}

/// A path: one of the API's routes with its slots filled by [`word`] (often a real id), or arbitrary segments.
fn path() -> impl Strategy<Value = String> {
    let slot = || {
        prop_oneof![2 => Just("con_1".to_owned()), 1 => word()]
            .prop_map(|w| url::form_urlencoded::byte_serialize(w.as_bytes()).collect::<String>())
    };
    let object_type = prop_oneof![
        3 => prop::sample::select(vec!["users", "groups", "projects", "spaces"]).prop_map(str::to_owned),
        1 => slot(),
    ];
    prop_oneof![
        1 => Just("/connect-sessions".to_owned()),
        1 => Just("/connections".to_owned()),
        2 => slot().prop_map(|id| format!("/connections/{id}")),
        2 => (slot(), object_type).prop_map(|(id, t)| format!("/connections/{id}/objects/{t}")),
        1 => (slot(), slot()).prop_map(|(id, g)| format!("/connections/{id}/objects/groups/{g}/members")),
        2 => slot().prop_map(|id| format!("/connections/{id}/sync")),
        1 => vec(slot(), 0..7).prop_map(|s| format!("/{}", s.join("/"))),
    ]
}

fn request_parts() -> impl Strategy<Value = (Method, String, Option<String>, Vec<u8>)> {
    let method = prop_oneof![
        4 => Just(Method::GET),
        4 => Just(Method::POST),
        1 => Just(Method::PATCH),
        1 => Just(Method::DELETE),
        1 => prop::sample::select(vec![Method::PUT, Method::HEAD, Method::OPTIONS]),
    ];
    let query = vec((prop::sample::select(vec!["cursor", "limit", "tenant_id", "x"]), word()), 0..3)
        .prop_map(|q| url::form_urlencoded::Serializer::new(String::new()).extend_pairs(q).finish());
    let content_type = prop::option::weighted(
        0.9,
        prop_oneof![
            6 => Just("application/json".to_owned()),
            1 => Just("application/json; charset=utf-8".to_owned()),
            1 => Just("text/plain".to_owned()),
            1 => vec(0x20u8..0x7f, 0..30).prop_map(|b| String::from_utf8(b).unwrap_or_default()),
        ],
    );
    (method, path(), query, content_type, body())
        .prop_map(|(m, path, query, ct, body)| (m, format!("{path}?{query}"), ct, body))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn no_request_gets_a_5xx_and_a_refusal_changes_nothing((method, path, content_type, body) in request_parts()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let deps = deps();
            connected(&deps, vec![store::Product::Jira, store::Product::Confluence]).await;
            let before = snapshot(&deps).await;
            let (status, answer) = call(&deps, raw(method.clone(), &path, content_type.as_deref(), body)).await;
            let case = format!("{method} {path} ({content_type:?}) -> {status} {answer}");
            prop_assert!(status.as_u16() < 500, "{}", case);
            if status.as_u16() >= 400 {
                prop_assert!(answer["error"]["code"].as_str().is_some_and(|c| !c.is_empty()), "{}", case);
                prop_assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", case);
                prop_assert_eq!(snapshot(&deps).await, before, "{}", case);
            }
            Ok(())
        })?;
    }
}
