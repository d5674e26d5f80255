//! What every function shares at its edge: typed configuration read once at cold start, secrets from Secrets
//! Manager, JSON logs, and the shapes of HTTP answers (JSON errors for the API, small HTML pages for browsers).

#[cfg(feature = "answers")]
pub mod answers;
pub mod config;
pub mod http;
pub mod secrets;

pub use config::ConfigError;
pub use secrets::{OAuthClient, SecretError};

/// JSON logs through the Lambda runtime's subscriber (JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`, as the SAM template
/// and the local stack set it). Handlers log allow-listed fields only, never tokens, codes, states or whole events.
pub fn init_tracing() {
    lambda_http::tracing::init_default_subscriber();
}

/// The AWS SDK configuration. Endpoints come only from the SDK's own variables (`AWS_ENDPOINT_URL`, …), so the
/// same code runs against AWS and against the local stack.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

pub fn dynamodb(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

pub fn secretsmanager(config: &aws_config::SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(config)
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
