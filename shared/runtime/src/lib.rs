//! What every function shares at its edge: typed configuration read once at cold start, secrets from Secrets
//! Manager, JSON logs, and the shapes of HTTP answers (JSON errors for the API, small HTML pages for browsers).

#[cfg(feature = "answers")]
pub mod answers;
pub mod config;
pub mod deferred;
pub mod http;
pub mod secrets;
#[cfg(feature = "sqs")]
pub mod sqs;

pub use config::ConfigError;
pub use deferred::Deferred;
pub use secrets::{OAuthClient, SecretError};

/// JSON logs through the Lambda runtime's subscriber (JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`, as the SAM template
/// and the local stack set it). Handlers log allow-listed fields only, never tokens, codes, states or whole events.
pub fn init_tracing() {
    lambda_http::tracing::init_default_subscriber();
}

/// The AWS SDK configuration. Endpoints come only from the SDK's own variables (`AWS_ENDPOINT_URL`, …), so the
/// same code runs against AWS and against the local stack.
///
/// In Lambda (and under the local stack) the region and the credentials are environment variables: taking them
/// from there directly skips the default chains, whose loader builds the SDK's TLS client (its root certificates
/// parsed) before the cold start needs it; the first request builds it instead. Elsewhere (a profile on a
/// developer's machine) the default chains apply.
pub async fn aws_config() -> aws_config::SdkConfig {
    use aws_config::{BehaviorVersion, Region, environment::EnvironmentVariableCredentialsProvider};
    let region = std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty());
    let keys = std::env::var_os("AWS_ACCESS_KEY_ID").is_some() && std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some();
    match region {
        Some(region) if keys => {
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(region))
                .credentials_provider(EnvironmentVariableCredentialsProvider::new())
                .load()
                .await
        }
        _ => aws_config::load_defaults(BehaviorVersion::latest()).await,
    }
}

pub fn dynamodb(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// Secrets Manager, with its reads bounded: a read that has not answered in a few seconds (the SDK's retries
/// included) will not answer inside the init's 10 s either, and the function starts without it (see [`Deferred`]).
pub fn secretsmanager(config: &aws_config::SdkConfig) -> aws_sdk_secretsmanager::Client {
    use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
    use std::time::Duration;
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(4))
        .build();
    let config = aws_sdk_secretsmanager::config::Builder::from(config).timeout_config(timeouts).build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// An error with every cause under it, `outer: inner: …`, for logs (the client sees only a code and a message).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("the store failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause() {
        let error = Outer(std::io::Error::other("connection reset"));
        assert_eq!(super::error_chain(&error), "the store failed: connection reset");
    }
}
