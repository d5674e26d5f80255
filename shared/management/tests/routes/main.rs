//! The management API's handler over the in-memory store: a file per subject, what they share here.

mod admin_keys;
mod basics;
mod hostile;
mod lifecycle;
mod objects;
mod properties;
mod proxied;
mod runs;

use atlassian::fake::FakeAtlassian;
use jobs::MemoryQueue;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt};
use management::{Deps, handle};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::HashMap;
use store::{ConnectionStore, MemoryStore, SessionStore, contract};
use tokens::connect::{ReturnUrlAllowList, SessionSettings};

const KEY: &str = "mk_test_management_key";

fn deps() -> Deps<MemoryStore, MemoryStore, MemoryQueue, FakeAtlassian> {
    Deps {
        store: MemoryStore::new(),
        mirror: MemoryStore::new(),
        queue: MemoryQueue::default(),
        atlassian: FakeAtlassian::granting(&[]),
        keys: tokens::KeyRing::from_json(&tokens::KeyRing::generate_json("v1")).unwrap(),
        management_keys: std::sync::Arc::new(std::sync::RwLock::new(
            management::ManagementKeys::parse(&SecretString::from(KEY)).unwrap(),
        )),
        cadences: management::Cadences::parse(management::Cadences::DEFAULT).unwrap(),
        sessions: SessionSettings {
            public_base_url: url::Url::parse("https://connector.example").unwrap(),
            ttl: time::Duration::minutes(15),
            return_urls: ReturnUrlAllowList::parse("https://app.example/").unwrap(),
        },
        proxy: proxy::Settings::new(false, proxy::QuotaConfig::default()),
    }
}

fn request(method: Method, path_and_query: &str, key: Option<&str>, body: Option<Value>) -> Request {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut builder =
        lambda_http::http::Request::builder().method(method).uri(format!("https://connector.example{path}"));
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let body = body.map(|b| Body::Text(b.to_string())).unwrap_or(Body::Empty);
    let query: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    builder.body(body).unwrap().with_query_string_parameters(query)
}

async fn call(
    deps: &Deps<MemoryStore, MemoryStore, MemoryQueue, FakeAtlassian>,
    request: Request,
) -> (StatusCode, Value) {
    let response = handle(deps, request).await.unwrap();
    let status = response.status();
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        _ => Value::Null,
    };
    (status, body)
}

async fn connected(deps: &Deps<MemoryStore, MemoryStore, MemoryQueue, FakeAtlassian>, products: Vec<store::Product>) {
    let session = contract::session("tenant-1");
    deps.store.put_session(&session).await.unwrap();
    let mut connection = contract::connection("tenant-1", "con_1");
    connection.sites[0].products = products;
    deps.store.complete_connect(&session.id_hash, &connection).await.unwrap();
}
