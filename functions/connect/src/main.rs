use connect::{Config, Deps, handle};
use lambda_http::{run, service_fn};
use runtime::config::{Env, ProcessEnv};
use runtime::{OAuthClient, secrets};
use store::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    runtime::init_tracing();
    let config = Config::from_env(&Env(ProcessEnv))?;
    let aws = runtime::aws_config().await;
    let secret = secrets::read(&runtime::secretsmanager(&aws), &config.oauth_client_secret_id).await?;
    let client = OAuthClient::parse(&config.oauth_client_secret_id, &secret)?;
    let deps = Deps {
        store: DynamoStore::new(runtime::dynamodb(&aws), &config.table),
        authorize: config.authorize_settings(client.client_id),
    };
    run(service_fn(|request| handle(&deps, request))).await
}
