mod config;

use config::Config;
use management::{Deps, ManagementKeys, handle};
use runtime::config::{Env, ProcessEnv};
use runtime::{Deferred, secrets};
use std::sync::{Arc, RwLock};
use store::{DynamoMirror, DynamoStore};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    runtime::init_tracing();
    let config = Arc::new(Config::from_env(&Env(ProcessEnv))?);
    let aws = runtime::aws_config().await;
    let (secretsmanager, dynamodb, sqs) =
        (runtime::secretsmanager(&aws), runtime::dynamodb(&aws), aws_sdk_sqs::Client::new(&aws));
    // Built from the secrets; deferred to the next request if Secrets Manager cannot answer now.
    let deps = Deferred::new(move || {
        let (secretsmanager, dynamodb, sqs, config) =
            (secretsmanager.clone(), dynamodb.clone(), sqs.clone(), config.clone());
        async move {
            // The secrets at once: each read is a round trip of the cold start.
            let (management_key, app) = tokio::try_join!(
                async {
                    Ok::<_, runtime::deferred::BuildError>(
                        secrets::read(&secretsmanager, &config.management_key_secret_id).await?,
                    )
                },
                secrets::oauth_app(&secretsmanager, &config.oauth_client_secret_id, &config.token_keys_secret_id),
            )?;
            let keys = app.keys;
            let management_keys = Arc::new(RwLock::new(ManagementKeys::parse(&management_key)?));
            tokio::spawn(refresh_keys(
                secretsmanager,
                config.management_key_secret_id.clone(),
                management_keys.clone(),
            ));
            Ok(Deps {
                store: DynamoStore::new(dynamodb.clone(), &config.table),
                mirror: DynamoMirror::new(dynamodb, &config.mirror_table),
                queue: jobs::SqsQueue::new(sqs, &config.sync_queue_url),
                // A person waits on validation, inside API Gateway's 30 s: retry briefly, then answer 502 (the proxy
                // does not retry: its caller sees Atlassian's answer). Only admin-key requests and the proxy call
                // Atlassian: its HTTP client is built at the first of them, not in the cold start. Atlassian's
                // quota headers reach the proxy's budget.
                atlassian: atlassian::AtlassianClient::new(
                    atlassian::Http::on_first_use(),
                    config.endpoints.clone(),
                    app.credentials,
                    tokens::connect::callback_url(&config.public_base_url),
                )
                .with_quota_watch(atlassian::QuotaWatch::default())
                .with_retry(atlassian::RetryPolicy {
                    max_retries: 2,
                    min_delay: std::time::Duration::from_millis(300),
                    max_delay: std::time::Duration::from_secs(3),
                }),
                keys,
                management_keys,
                sessions: config.session_settings(),
                cadences: config.cadences.clone(),
                proxy: config.proxy.clone(),
            })
        }
    })
    .await;
    runtime::deferred::serve_http(deps, runtime::deferred::unavailable_json, |deps, request| {
        Box::pin(handle(deps, request))
    })
    .await
}

/// How often the management keys are read again: a rotation is live everywhere this long after the secret changes.
const KEY_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);

/// Reads the management key secret again every [`KEY_REFRESH`] (a frozen container catches up when it thaws); a
/// failed read keeps the keys it has.
async fn refresh_keys(client: aws_sdk_secretsmanager::Client, secret_id: String, keys: Arc<RwLock<ManagementKeys>>) {
    let mut every = tokio::time::interval(KEY_REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        match secrets::read(&client, &secret_id).await.map(|secret| ManagementKeys::parse(&secret)) {
            Ok(Ok(fresh)) => *keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh,
            Ok(Err(error)) => {
                tracing::warn!(error = %runtime::error_chain(&error), "the management key secret is malformed; keeping the keys")
            }
            Err(error) => {
                tracing::warn!(error = %runtime::error_chain(&error), "could not re-read the management keys")
            }
        }
    }
}
