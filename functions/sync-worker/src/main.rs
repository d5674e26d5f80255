use lambda_runtime::{LambdaEvent, run, service_fn};
use runtime::config::{Env, ProcessEnv};
use runtime::secrets;
use secrecy::ExposeSecret;
use store::{DynamoMirror, DynamoStore};
use sync_worker::{Config, handle};
use tokens::KeyRing;
use tokens::refresh::RefreshPolicy;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runtime::init_tracing();
    let config = Config::from_env(&Env(ProcessEnv))?;
    // The Atlassian client's root certificates load on a thread of their own, and need not be ready for the init
    // to end: the first request waits for them only if it comes first.
    let http = atlassian::Http::in_background();
    let aws = runtime::aws_config().await;
    let secretsmanager = runtime::secretsmanager(&aws);
    // The two secrets at once: each read is a round trip of the cold start.
    let (credentials, keys) = tokio::try_join!(
        secrets::oauth_credentials(&secretsmanager, &config.oauth_client_secret_id),
        secrets::read(&secretsmanager, &config.token_keys_secret_id),
    )?;
    let keys = KeyRing::from_json(keys.expose_secret())?;
    // The client reports Atlassian's quota headers to the budget, which reconciles its pools with them.
    let quota = atlassian::QuotaWatch::default();
    let atlassian = atlassian::AtlassianClient::new(
        http,
        config.endpoints.clone(),
        credentials,
        tokens::connect::callback_url(&config.public_base_url),
    )
    .with_quota_watch(quota.clone());
    let dynamodb = runtime::dynamodb(&aws);
    let store = DynamoStore::new(dynamodb.clone(), &config.table);
    let mirror = DynamoMirror::new(dynamodb, &config.mirror_table);
    let refresh = RefreshPolicy::default();
    let mut budget = sync::budget::SharedBudget::new(&store, "atlassian-app", config.quota.clone()).watching(quota);
    budget.max_wait = config.quota_sleep;
    let queue = sync::queue::SqsQueue::new(aws_sdk_sqs::Client::new(&aws), &config.queue_url);
    let deps = sync::job::Deps {
        store: &store,
        mirror: &mirror,
        atlassian: &atlassian,
        budget: &budget,
        keys: &keys,
        refresh: &refresh,
        queue: &queue,
        pacing: config.pacing.clone(),
        guard: config.guard.clone(),
    };
    run(service_fn(|event: LambdaEvent<aws_lambda_events::event::sqs::SqsEvent>| {
        let deps = &deps;
        let deadline = sync_worker::deadline(event.context.deadline);
        async move { Ok::<_, lambda_runtime::Error>(handle(deps, event.payload, deadline).await) }
    }))
    .await
}
