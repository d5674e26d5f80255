use callback::{Config, Deps, handle};
use runtime::config::{Env, ProcessEnv};
use runtime::{Deferred, secrets};
use std::sync::Arc;
use store::DynamoStore;
use tokens::connect::CompleteSettings;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    runtime::init_tracing();
    let config = Arc::new(Config::from_env(&Env(ProcessEnv))?);
    // The Atlassian client's root certificates load on a thread of their own, and need not be ready for the init
    // to end: the first request waits for them only if it comes first.
    let http = atlassian::Http::in_background();
    let aws = runtime::aws_config().await;
    let (secretsmanager, dynamodb) = (runtime::secretsmanager(&aws), runtime::dynamodb(&aws));
    // Built from the secrets; deferred to the next request if Secrets Manager cannot answer now (the callback's
    // code stays good: the page says to reload).
    let deps = Deferred::new(move || {
        let (secretsmanager, dynamodb, config, http) =
            (secretsmanager.clone(), dynamodb.clone(), config.clone(), http.clone());
        async move {
            let (oauth, keys) = (&config.oauth_client_secret_id, &config.token_keys_secret_id);
            let app = secrets::oauth_app(&secretsmanager, oauth, keys).await?;
            let atlassian =
                atlassian::AtlassianClient::new(http, config.endpoints.clone(), app.credentials, config.redirect_uri());
            Ok(Deps {
                store: DynamoStore::new(dynamodb, &config.table),
                atlassian,
                keys: app.keys,
                settings: CompleteSettings { required_scopes: config.required_scopes.clone() },
            })
        }
    })
    .await;
    runtime::deferred::serve_http(deps, runtime::deferred::unavailable_page, |deps, request| {
        Box::pin(handle(deps, request))
    })
    .await
}
