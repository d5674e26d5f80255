use connect::{Config, Deps, handle};
use runtime::config::{Env, ProcessEnv};
use runtime::{Deferred, OAuthClient, secrets};
use std::sync::Arc;
use store::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    runtime::init_tracing();
    let config = Arc::new(Config::from_env(&Env(ProcessEnv))?);
    let aws = runtime::aws_config().await;
    let (secretsmanager, dynamodb) = (runtime::secretsmanager(&aws), runtime::dynamodb(&aws));
    // Built from the OAuth app's secret; deferred to the next request if Secrets Manager cannot answer now.
    let deps = Deferred::new(move || {
        let (secretsmanager, dynamodb, config) = (secretsmanager.clone(), dynamodb.clone(), config.clone());
        async move {
            let secret = secrets::read(&secretsmanager, &config.oauth_client_secret_id).await?;
            let client = OAuthClient::parse(&config.oauth_client_secret_id, &secret)?;
            Ok(Deps {
                store: DynamoStore::new(dynamodb, &config.table),
                authorize: config.authorize_settings(client.client_id),
            })
        }
    })
    .await;
    runtime::deferred::serve_http(deps, runtime::deferred::unavailable_page, |deps, request| {
        Box::pin(handle(deps, request))
    })
    .await
}
