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

/// Logs as Lambda's advanced logging controls ask: JSON when `AWS_LAMBDA_LOG_FORMAT=JSON` (as the SAM template and
/// the local stack set it), at `AWS_LAMBDA_LOG_LEVEL`, else by the directives of `RUST_LOG` (`warn,sync=debug`:
/// levels per target, no span filters), else `INFO`. It is the Lambda runtime's default subscriber without its
/// `EnvFilter`, whose regex engine the functions do not need. Handlers log allow-listed fields only, never tokens,
/// codes, states or whole events.
pub fn init_tracing() {
    use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt};
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").or_else(|_| std::env::var("RUST_LOG")).ok();
    let logs = tracing_subscriber::registry().with(log_filter(level.as_deref()));
    let lines = fmt::layer().with_target(false).without_time();
    // A second call (tests) keeps the first subscriber.
    let _ = if json { logs.with(lines.json()).try_init() } else { logs.with(lines).try_init() };
}

/// The filter for a level or `RUST_LOG`-style directives; `FATAL` (a Lambda level) is `error`, anything unreadable
/// is `INFO`.
fn log_filter(directives: Option<&str>) -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let directives = directives.map(str::trim).filter(|d| !d.is_empty());
    let directives = directives.map(|d| if d.eq_ignore_ascii_case("fatal") { "error" } else { d });
    // A bare word must be a level: `Targets` would take `verbose` for a target and silence everything else.
    let readable = |d: &&str| d.split(',').all(|part| part.contains('=') || part.trim().parse::<LevelFilter>().is_ok());
    directives
        .filter(readable)
        .and_then(|d| d.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
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

    #[test]
    fn logs_are_filtered_by_lambda_levels_and_rust_log_directives() {
        use tracing::Level;
        fn passes(directives: Option<&str>, level: Level, target: &str) -> bool {
            super::log_filter(directives).would_enable(target, &level)
        }
        assert!(passes(None, Level::INFO, "sync"));
        assert!(!passes(None, Level::DEBUG, "sync"));
        assert!(passes(Some("DEBUG"), Level::DEBUG, "sync"));
        assert!(!passes(Some("WARN"), Level::INFO, "sync"));
        assert!(!passes(Some("FATAL"), Level::WARN, "sync"));
        assert!(passes(Some("FATAL"), Level::ERROR, "sync"));
        assert!(passes(Some("warn,sync=debug"), Level::DEBUG, "sync::engine"));
        assert!(!passes(Some("warn,sync=debug"), Level::INFO, "store"));
        assert!(passes(Some("not a level ==="), Level::INFO, "sync"));
        assert!(passes(Some("verbose"), Level::INFO, "sync") && !passes(Some("verbose"), Level::DEBUG, "sync"));
        assert!(passes(Some("WARNING"), Level::INFO, "store"), "an unknown level is INFO, not silence");
        assert!(!passes(Some("not a level ==="), Level::DEBUG, "sync"));
    }
}
