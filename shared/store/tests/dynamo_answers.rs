//! How the DynamoDB store reads DynamoDB's answers, without DynamoDB: the SDK runs over a stub HTTP client that
//! answers each operation (by its `X-Amz-Target`) as the test says. Condition failures are the store's answers
//! (a state already taken, a session already used, a run already running); any other error stays an error.

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use std::sync::{Arc, Mutex};
use store::{CompleteError, ConnectionStore, DynamoStore, RunStore, SessionStore, StateStore, StoreError};
use time::OffsetDateTime;

/// Answers an operation (`PutItem`, …) with a status and a JSON body.
type Answer = dyn Fn(&str) -> (u16, String) + Send + Sync;

#[derive(Clone)]
struct Stub {
    answer: Arc<Answer>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Stub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stub")
    }
}

impl HttpConnector for Stub {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
        self.calls.lock().unwrap().push(operation.clone());
        let (status, body) = (self.answer)(&operation);
        let mut response = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
        response.headers_mut().insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(response))
    }
}

type Calls = Arc<Mutex<Vec<String>>>;

/// A store whose DynamoDB answers through `answer`, without retries; and the operations it was asked.
fn stubbed(answer: impl Fn(&str) -> (u16, String) + Send + Sync + 'static) -> (DynamoStore, Calls) {
    let stub = Stub { answer: Arc::new(answer), calls: Arc::default() };
    let calls = stub.calls.clone();
    let connector = SharedHttpConnector::new(stub);
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url("http://dynamodb.test")
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .http_client(http_client_fn(move |_, _| connector.clone()))
        .build();
    (DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), "table"), calls)
}

fn error(kind: &str) -> (u16, String) {
    (400, format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"stubbed"}}"#))
}

fn condition_failed() -> (u16, String) {
    error("ConditionalCheckFailedException")
}

fn throttled() -> (u16, String) {
    error("ProvisionedThroughputExceededException")
}

#[tokio::test]
async fn a_key_drawn_twice_is_exists_and_throttling_stays_an_error() {
    let session = store::contract::session("tenant");
    let (store, _) = stubbed(|_| condition_failed());
    assert!(matches!(store.put_session(&session).await, Err(StoreError::Exists("session"))));
    let (store, _) = stubbed(|_| throttled());
    assert!(matches!(store.put_session(&session).await, Err(StoreError::Dynamo(_))));
}

#[tokio::test]
async fn a_state_taken_before_is_none() {
    let (store, calls) = stubbed(|_| condition_failed());
    assert!(store.take_state("hash").await.unwrap().is_none(), "a replayed state finds nothing");
    assert_eq!(*calls.lock().unwrap(), ["DeleteItem"]);
    let (store, _) = stubbed(|_| throttled());
    assert!(store.take_state("hash").await.is_err(), "throttling is not a used state");
}

#[tokio::test]
async fn a_used_session_is_told_apart_from_a_failed_transaction() {
    let connection = store::contract::connection("tenant", "con_1");
    let canceled = |first: &'static str| {
        move |_: &str| {
            let body = format!(
                r#"{{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"canceled","CancellationReasons":[{{"Code":"{first}"}},{{"Code":"None"}}]}}"#
            );
            (400, body)
        }
    };
    let (store, _) = stubbed(canceled("ConditionalCheckFailed"));
    assert!(matches!(store.complete_connect("session", &connection).await, Err(CompleteError::SessionUsed)));
    // The session's update went through; the transaction failed for another reason: an error, not "used".
    let (store, _) = stubbed(canceled("None"));
    assert!(matches!(store.complete_connect("session", &connection).await, Err(CompleteError::Store(_))));
}

#[tokio::test]
async fn conditional_writes_answer_false_and_errors_stay_errors() {
    let now = OffsetDateTime::now_utc();
    let run = store::RunRecord::running(store::ObjectType::Users, "run-1", now, 0);
    let (store, _) = stubbed(|_| condition_failed());
    assert!(!store.try_start_run("con_1", &run, now).await.unwrap(), "another run holds the lease");
    assert!(!store.save_run("con_1", &run).await.unwrap(), "another run replaced this one");
    assert!(!store.revoke_connection("con_1", now).await.unwrap(), "no such connection");
    let (store, _) = stubbed(|_| throttled());
    assert!(store.try_start_run("con_1", &run, now).await.is_err());
    assert!(store.revoke_connection("con_1", now).await.is_err());
}

#[tokio::test]
async fn a_contended_points_pool_gives_up_after_its_attempts() {
    use store::BudgetStore;
    use store::budget::{BudgetLimits, Draw};
    let (store, calls) = stubbed(|operation| match operation {
        "GetItem" => (200, "{}".to_owned()),
        _ => condition_failed(),
    });
    let limits = BudgetLimits { points: 1000, window: std::time::Duration::from_secs(60) };
    let draw = Draw { wanted: 100, ..Draw::default() };
    let taken = store.take_points("global", limits, draw, OffsetDateTime::now_utc()).await;
    assert!(matches!(taken, Err(StoreError::Contended(32))), "{taken:?}");
    let puts = calls.lock().unwrap().iter().filter(|c| *c == "PutItem").count();
    assert_eq!(puts, 32, "each attempt reads the pool again and writes on the value it read");
}
