mod config;

use config::Config;
use lambda_http::{run, service_fn};
use management::{Deps, handle};
use runtime::config::{Env, ProcessEnv};
use runtime::secrets;
use store::{DynamoMirror, DynamoStore};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    runtime::init_tracing();
    let config = Config::from_env(&Env(ProcessEnv))?;
    let aws = runtime::aws_config().await;
    let secretsmanager = runtime::secretsmanager(&aws);
    // The two secrets at once: each read is a round trip of the cold start.
    let (management_key, keys) = tokio::try_join!(
        secrets::read(&secretsmanager, &config.management_key_secret_id),
        secrets::read(&secretsmanager, &config.token_keys_secret_id),
    )?;
    let keys = tokens::KeyRing::from_json(secrecy::ExposeSecret::expose_secret(&keys))?;
    let dynamodb = runtime::dynamodb(&aws);
    let deps = Deps {
        store: DynamoStore::new(dynamodb.clone(), &config.table),
        mirror: DynamoMirror::new(dynamodb, &config.mirror_table),
        queue: jobs::SqsQueue::new(aws_sdk_sqs::Client::new(&aws), &config.sync_queue_url),
        // A person waits on validation, inside API Gateway's 30 s: retry briefly, then answer 502. Only admin-key
        // requests call Atlassian: its HTTP client is built at the first of them, not in the cold start.
        atlassian: atlassian::AtlassianClient::without_oauth(atlassian::Http::on_first_use(), config.endpoints.clone())
            .with_retry(atlassian::RetryPolicy {
                max_retries: 2,
                min_delay: std::time::Duration::from_millis(300),
                max_delay: std::time::Duration::from_secs(3),
            }),
        keys,
        management_key,
        sessions: config.session_settings(),
        cadences: config.cadences.clone(),
    };
    run(service_fn(|request| handle(&deps, request))).await
}
