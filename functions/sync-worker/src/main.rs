use lambda_runtime::{LambdaEvent, run, service_fn};
use runtime::config::{Env, ProcessEnv};
use std::sync::Arc;
use store::{DynamoMirror, DynamoStore};
use sync_worker::{Config, Secured, handle};
use tokens::refresh::RefreshPolicy;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runtime::init_tracing();
    let config = Arc::new(Config::from_env(&Env(ProcessEnv))?);
    // The Atlassian client's root certificates load on a thread of their own, and need not be ready for the init
    // to end: the first request waits for them only if it comes first.
    let http = atlassian::Http::in_background();
    let aws = runtime::aws_config().await;
    // The client reports Atlassian's quota headers to the budget, which reconciles its pools with them.
    let quota = atlassian::QuotaWatch::default();
    let secured = {
        let (secretsmanager, config, quota) = (runtime::secretsmanager(&aws), config.clone(), quota.clone());
        runtime::Deferred::new(move || {
            let (secretsmanager, config, http, quota) =
                (secretsmanager.clone(), config.clone(), http.clone(), quota.clone());
            async move { Secured::read(&secretsmanager, &config, http, quota).await }
        })
        .await
    };
    let dynamodb = runtime::dynamodb(&aws);
    let store = DynamoStore::new(dynamodb.clone(), &config.table);
    let mirror = DynamoMirror::new(dynamodb, &config.mirror_table);
    let refresh = RefreshPolicy::default();
    let mut budget =
        sync::budget::SharedBudget::new(&store, sync::budget::APP_POOL, config.quota.clone()).watching(quota);
    budget.max_wait = config.quota_sleep;
    let queue = sync::queue::SqsQueue::new(aws_sdk_sqs::Client::new(&aws), &config.queue_url);
    let (store, mirror, budget, queue, refresh, config, secured) =
        (&store, &mirror, &budget, &queue, &refresh, &config, &secured);
    run(service_fn(|event: LambdaEvent<aws_lambda_events::event::sqs::SqsEvent>| async move {
        let Some(secured) = secured.get().await else {
            return Ok::<_, lambda_runtime::Error>(sync_worker::unavailable(&event.payload));
        };
        let deps = sync::job::Deps {
            store,
            mirror,
            atlassian: &secured.atlassian,
            budget,
            keys: &secured.keys,
            refresh,
            queue,
            pacing: config.pacing.clone(),
            guard: config.guard.clone(),
        };
        let deadline = sync_worker::deadline(event.context.deadline);
        Ok(handle(&deps, event.payload, deadline).await)
    }))
    .await
}
