//! AWS failing under a sync: a small fault-injecting proxy in front of the stack's moto answers DynamoDB requests
//! as throttled and leaves parts of batches unprocessed, or answers Secrets Manager `503` at a worker's cold start.
//! The sync must end with the exact mirror and correct run records all the same.

use super::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use store::mirror::{ObjectType, Scope};
use store::{RunStatus, RunStore};
use sync::queue::Job;

/// What the proxy does to the requests it forwards.
#[derive(Default)]
struct Faults {
    /// Every Nth DynamoDB request is answered `ProvisionedThroughputExceededException` (its first attempt only:
    /// the SDK's retry of it goes through, as it usually does against DynamoDB).
    throttle_every: u64,
    /// Every Nth batch call (`BatchWriteItem`, `BatchGetItem`) has only its first half done; the rest comes back
    /// as `UnprocessedItems` / `UnprocessedKeys`, as DynamoDB answers a batch it throttled in part.
    halve_every: u64,
    /// While set, every request is answered `503` (a Secrets Manager that cannot answer).
    down: AtomicBool,
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    batches: AtomicU64,
    throttled: AtomicU64,
    unprocessed: AtomicU64,
    refused: AtomicU64,
}

struct Proxy {
    upstream: String,
    faults: Faults,
    stats: Stats,
    http: reqwest::Client,
}

/// Starts a proxy to the stack's moto; answers its URL and its state.
async fn spawn(faults: Faults) -> (String, Arc<Proxy>) {
    let proxy = Arc::new(Proxy {
        upstream: Stack::from_env().aws_endpoint,
        faults,
        stats: Stats::default(),
        http: harness::client(),
    });
    let app = axum::Router::new().fallback(forward).with_state(proxy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, proxy)
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"__type": kind, "message": message}).to_string();
    (status, [("content-type", "application/x-amz-json-1.0")], body).into_response()
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 32 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let (faults, stats) = (&proxy.faults, &proxy.stats);
    let n = stats.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if faults.down.load(Ordering::SeqCst) {
        stats.refused.fetch_add(1, Ordering::SeqCst);
        return aws_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "the service is unavailable");
    }
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let target = header("x-amz-target");
    let first_attempt = header("amz-sdk-request").contains("attempt=1;");
    if target.starts_with("DynamoDB_") && faults.throttle_every > 0 && n % faults.throttle_every == 0 && first_attempt {
        stats.throttled.fetch_add(1, Ordering::SeqCst);
        let kind = "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException";
        return aws_error(StatusCode::BAD_REQUEST, kind, "The level of configured provisioned throughput was exceeded");
    }
    let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
    let mut body = body;
    let mut withheld = None;
    if matches!(operation.as_str(), "BatchWriteItem" | "BatchGetItem") && faults.halve_every > 0 {
        let batch = stats.batches.fetch_add(1, Ordering::SeqCst) + 1;
        if batch % faults.halve_every == 0
            && let Some((halved, rest)) = halve(&operation, &body)
        {
            body = halved;
            withheld = Some(rest);
        }
    }
    let mut upstream = proxy.http.request(parts.method.clone(), format!("{}{}", proxy.upstream, parts.uri));
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(answer) = upstream.body(body).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for name in ["content-type", "x-amzn-requestid"] {
        if let Some(value) = answer.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            headers.insert(name, value);
        }
    }
    let Ok(mut bytes) = answer.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    if let (Some((field, table, rest)), true) = (withheld, status.is_success()) {
        let mut value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
        value[field][table] = rest;
        bytes = Bytes::from(value.to_string());
        stats.unprocessed.fetch_add(1, Ordering::SeqCst);
    }
    (status, headers, bytes).into_response()
}

/// A batch request with only its first half, and what the answer must say was left: the response field, the
/// table and its unprocessed part. `None` for a batch of one.
fn halve(operation: &str, body: &[u8]) -> Option<(Bytes, (&'static str, String, Value))> {
    let mut request: Value = serde_json::from_slice(body).ok()?;
    let items = request["RequestItems"].as_object_mut()?;
    let (table, entry) = items.iter_mut().next()?;
    let table = table.clone();
    let (list, field) = match operation {
        "BatchWriteItem" => (entry.as_array_mut()?, "UnprocessedItems"),
        _ => (entry["Keys"].as_array_mut()?, "UnprocessedKeys"),
    };
    if list.len() < 2 {
        return None;
    }
    let rest: Vec<Value> = list.split_off(list.len().div_ceil(2));
    let left = match operation {
        "BatchWriteItem" => Value::from(rest),
        _ => {
            let mut keys = entry.clone();
            keys["Keys"] = Value::from(rest);
            keys
        }
    };
    Some((Bytes::from(request.to_string()), (field, table, left)))
}

/// Whether every type of `id` is exactly the org, with a succeeded run record each.
async fn assert_exact(flow: &Flow, mirror: &store::DynamoMirror, id: &str) {
    let org = harness::sandbox_org(&flow.sandbox).await.unwrap();
    let sites: Vec<String> = (0..tests::sandbox::OrgSize::default().sites).map(tests::sandbox::site_id).collect();
    for object_type in ObjectType::ALL {
        let (live, deleted) = harness::mirrored(mirror, &Scope::new(id, object_type)).await;
        assert_eq!(deleted, 0, "{object_type:?}");
        assert_eq!(
            live,
            harness::expected_mirror(&org, object_type.as_str(), &sites),
            "{object_type:?}: exactly the org"
        );
        let run = flow.store.get_run(id, object_type).await.unwrap().expect("a run record");
        assert_eq!((run.status, run.error_code), (RunStatus::Succeeded, None), "{object_type:?}");
    }
}

#[tokio::test]
async fn dynamodb_throttling_and_unprocessed_batch_items_lose_nothing() {
    // Every 10th DynamoDB request throttled, every 2nd batch half done: the state store (leases, checkpoints, run
    // records) and the mirror both go through the proxy.
    let (url, proxy) = spawn(Faults { throttle_every: 10, halve_every: 2, ..Faults::default() }).await;
    let stack = Stack::from_env();
    let dynamodb = aws_sdk_dynamodb::Client::new(&Stack::sdk_config_at(&url));
    let store = DynamoStore::new(dynamodb.clone(), &stack.table);
    let mirror = store::DynamoMirror::new(dynamodb, &stack.mirror_table);
    let flow = Flow::new().await;
    let id = connected(&flow, &unique("tenant")).await;
    let (queue, policy) = (sync::queue::MemoryQueue::default(), RefreshPolicy::default());
    let deps = sync::job::Deps {
        store: &store,
        mirror: &mirror,
        atlassian: &flow.callback.atlassian,
        budget: &sync::budget::Unlimited,
        keys: &flow.callback.keys,
        refresh: &policy,
        queue: &queue,
        // Two pages an invocation: checkpoints and continuations go through the faults too.
        pacing: sync::engine::Pacing { max_pages: 2, ..sync::engine::Pacing::default() },
        guard: sync::engine::DeletionGuard::default(),
    };
    for object_type in ObjectType::ALL {
        harness::run_through(&deps, Job::new(&id, object_type)).await;
    }
    assert_exact(&flow, &store::DynamoMirror::new(stack.dynamodb(), &stack.mirror_table), &id).await;
    let stats = &proxy.stats;
    let (throttled, unprocessed) = (stats.throttled.load(Ordering::SeqCst), stats.unprocessed.load(Ordering::SeqCst));
    assert!(
        throttled >= 5 && unprocessed >= 5,
        "faults were injected: {throttled} throttled, {unprocessed} batches halved"
    );

    // An unchanged re-sync through the same faults writes nothing: nothing was written twice or half.
    for object_type in ObjectType::ALL {
        let (outcome, _, _) = harness::run_through(&deps, Job::new(&id, object_type)).await;
        let sync::job::Outcome::Finished(RunStatus::Succeeded, counts) = outcome else { panic!("{outcome:?}") };
        assert_eq!((counts.created, counts.updated, counts.deleted), (0, 0, 0), "{object_type:?}: {counts:?}");
    }
}

#[tokio::test]
async fn secrets_manager_unavailable_at_a_cold_start_costs_the_worker_no_job() {
    use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
    let stack = Stack::from_env();
    // The worker's secrets, as the stack would hold them: the sandbox's OAuth app and a key ring of the flow's.
    let direct = stack.secretsmanager();
    let ring = KeyRing::generate_json("v1");
    let sandbox = SandboxConfig::default();
    let oauth = json!({"client_id": sandbox.client_id, "client_secret": sandbox.client_secret}).to_string();
    let (oauth_id, keys_id) = (unique("oauth-client"), unique("token-keys"));
    for (name, value) in [(&oauth_id, &oauth), (&keys_id, &ring)] {
        direct.create_secret().name(name).secret_string(value).send().await.unwrap();
    }
    let mut flow = Flow::new().await;
    flow.callback.keys = KeyRing::from_json(&ring).unwrap();
    let id = connected(&flow, &unique("tenant")).await;
    let base = flow.sandbox.to_string();
    let env = [
        ("STATE_TABLE", stack.table.as_str()),
        ("MIRROR_TABLE", stack.mirror_table.as_str()),
        ("SYNC_QUEUE_URL", "http://queue.invalid/unused"),
        ("OAUTH_CLIENT_SECRET_ID", oauth_id.as_str()),
        ("TOKEN_KEYS_SECRET_ID", keys_id.as_str()),
        ("PUBLIC_BASE_URL", "https://connector.test"),
        ("ATLASSIAN_AUTH_BASE_URL", base.as_str()),
        ("ATLASSIAN_API_BASE_URL", base.as_str()),
    ];
    let config = Arc::new(sync_worker::Config::from_env(&runtime::config::Env(env)).unwrap());

    // The cold start: Secrets Manager answers 503 (the SDK retries, then gives up); the worker starts all the same.
    let (url, proxy) = spawn(Faults { down: AtomicBool::new(true), ..Faults::default() }).await;
    let secretsmanager = runtime::secretsmanager(&Stack::sdk_config_at(&url));
    let secured = runtime::Deferred::new({
        let config = config.clone();
        move || {
            let (secretsmanager, config) = (secretsmanager.clone(), config.clone());
            let http = atlassian::Http::on_first_use();
            async move { sync_worker::Secured::read(&secretsmanager, &config, http, Default::default()).await }
        }
    })
    .await;
    assert!(proxy.stats.refused.load(Ordering::SeqCst) >= 2, "the cold start asked and was refused");

    // A batch of the four types arrives meanwhile: all of it goes back to the queue, and no run starts.
    let mut event = SqsEvent::default();
    for (n, object_type) in ObjectType::ALL.into_iter().enumerate() {
        let mut message = SqsMessage::default();
        message.message_id = Some(format!("message-{n}-{}", unique("m")));
        message.body = Some(serde_json::to_string(&Job::new(&id, object_type)).unwrap());
        event.records.push(message);
    }
    assert!(secured.get().await.is_none(), "still unavailable");
    let answer = sync_worker::unavailable(&event);
    assert_eq!(answer.batch_item_failures.len(), 4, "every message goes back to the queue");
    assert!(flow.store.list_runs(&id).await.unwrap().is_empty(), "no run started");

    // Secrets Manager is back: the redelivered batch runs in the same container, and every type ends exact.
    proxy.faults.down.store(false, Ordering::SeqCst);
    let secured = secured.get().await.expect("built at the next request");
    let env = JobEnv::new();
    let deps = sync::job::Deps {
        store: &flow.store,
        mirror: &env.mirror,
        atlassian: &secured.atlassian,
        budget: &sync::budget::Unlimited,
        keys: &secured.keys,
        refresh: &env.policy,
        queue: &env.queue,
        pacing: config.pacing.clone(),
        guard: config.guard.clone(),
    };
    let answer = sync_worker::handle(&deps, event, None).await;
    assert!(answer.batch_item_failures.is_empty(), "{:?}", answer.batch_item_failures);
    assert_exact(&flow, &env.mirror, &id).await;
}
