use callback::{Config, Deps, handle};
use lambda_http::{run, service_fn};
use runtime::config::{Env, ProcessEnv};
use runtime::secrets;
use secrecy::ExposeSecret;
use store::DynamoStore;
use tokens::KeyRing;
use tokens::connect::CompleteSettings;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
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
    let atlassian = atlassian::AtlassianClient::new(http, config.endpoints.clone(), credentials, config.redirect_uri());
    let deps = Deps {
        store: DynamoStore::new(runtime::dynamodb(&aws), &config.table),
        atlassian,
        keys,
        settings: CompleteSettings { required_scopes: config.required_scopes },
    };
    run(service_fn(|request| handle(&deps, request))).await
}
