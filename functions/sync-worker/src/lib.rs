//! The sync worker: an SQS consumer that runs one sync job per message and reports partial batch failures, so
//! only the jobs that failed transiently come back (and, after `maxReceiveCount`, land in the dead-letter queue).
//! The message id is the run id: a redelivery of the same message resumes the same run (its lease and its
//! checkpoint). A run that would outlast the invocation pauses and queues its own continuation.

use atlassian::{AtlassianApi, DirectoryApi};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use runtime::config::{ConfigError, Env, Source};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::mirror::MirrorStore;
use store::{CheckpointStore, ConnectionStore, CredentialStore, RunStore};
use sync::budget::QuotaConfig;
use sync::engine::{DeletionGuard, Pacing};
use sync::job::{self, Deps, JobError};
use sync::queue::{Job, JobQueue};

pub struct Config {
    pub table: String,
    /// The app's Atlassian points quota (`ATLASSIAN_QUOTA_*`).
    pub quota: QuotaConfig,
    /// The longest wait for the quota slept inside an invocation (`SYNC_QUOTA_SLEEP_SECONDS`); longer waits are a
    /// delayed continuation.
    pub quota_sleep: Duration,
    pub mirror_table: String,
    pub oauth_client_secret_id: String,
    pub token_keys_secret_id: String,
    pub public_base_url: url::Url,
    pub endpoints: atlassian::Endpoints,
    /// The queue continuations go to (the one this worker consumes).
    pub queue_url: String,
    pub pacing: Pacing,
    /// When a run holds deletions back (`SYNC_DELETION_GUARD_PERCENT`, `SYNC_DELETION_GUARD_MIN`).
    pub guard: DeletionGuard,
}

impl Config {
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        Ok(Self {
            quota: QuotaConfig::from_env(env)?,
            quota_sleep: match env.optional("SYNC_QUOTA_SLEEP_SECONDS") {
                None => Duration::from_secs(5),
                Some(value) => value.parse().map(Duration::from_secs).map_err(|_| ConfigError::Invalid {
                    name: "SYNC_QUOTA_SLEEP_SECONDS",
                    reason: "expected a whole number of seconds".into(),
                })?,
            },
            table: env.required("STATE_TABLE")?,
            queue_url: env.required("SYNC_QUEUE_URL")?,
            pacing: Pacing {
                deadline: None,
                margin: env.seconds_or("SYNC_PAUSE_MARGIN_SECONDS", 90)?,
                max_pages: env.number_or("SYNC_MAX_PAGES_PER_INVOCATION", 0)?,
                checkpoint_every: env.seconds_or("SYNC_CHECKPOINT_SECONDS", 60)?,
                points_per_turn: env.number_or("SYNC_POINTS_PER_TURN", 5_000)?,
            },
            guard: DeletionGuard {
                max_share: env.number_or("SYNC_DELETION_GUARD_PERCENT", 50)?.min(100) as f64 / 100.0,
                min_count: env.number_or("SYNC_DELETION_GUARD_MIN", 10)?,
                held: None,
            },
            mirror_table: env.required("MIRROR_TABLE")?,
            oauth_client_secret_id: env.required("OAUTH_CLIENT_SECRET_ID")?,
            token_keys_secret_id: env.required("TOKEN_KEYS_SECRET_ID")?,
            public_base_url: env.url("PUBLIC_BASE_URL")?,
            endpoints: atlassian::Endpoints {
                auth_base: env.url_or("ATLASSIAN_AUTH_BASE_URL", atlassian::Endpoints::DEFAULT_AUTH_BASE)?,
                api_base: env.url_or("ATLASSIAN_API_BASE_URL", atlassian::Endpoints::DEFAULT_API_BASE)?,
            },
        })
    }
}

/// Lambda's deadline (epoch milliseconds) as an instant on this machine's clock.
pub fn deadline(epoch_ms: u64) -> Option<Instant> {
    let left = (UNIX_EPOCH + Duration::from_millis(epoch_ms)).duration_since(SystemTime::now()).ok()?;
    Some(Instant::now() + left)
}

pub async fn handle<S, M, A, B, Q>(
    deps: &Deps<'_, S, M, A, B, Q>,
    event: SqsEvent,
    deadline: Option<Instant>,
) -> SqsBatchResponse
where
    S: ConnectionStore + CredentialStore + RunStore + CheckpointStore,
    M: MirrorStore,
    A: AtlassianApi + DirectoryApi + atlassian::AdminApi,
    B: sync::budget::Budget,
    Q: JobQueue,
{
    let mut failures = Vec::new();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let Some(job) = message.body.as_deref().and_then(Job::parse) else {
            // A malformed message never becomes valid: drop it rather than retry it into the DLQ.
            tracing::error!(message_id = %id, "dropping a sync message that is not a job");
            continue;
        };
        match job::run(deps, &job, &id, deadline).await {
            Ok(outcome) => {
                let seconds_left = deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs());
                tracing::info!(connection_id = %job.connection_id, object_type = job.object_type.as_str(), ?outcome, ?seconds_left, "sync job done")
            }
            Err(error @ (JobError::Continuation(_) | JobError::Store(_))) => {
                tracing::warn!(connection_id = %job.connection_id, object_type = job.object_type.as_str(), error = %runtime::error_chain(&error), "sync job failed; it will be retried");
                failures.push(id);
            }
        }
    }
    runtime::sqs::hand_back(failures)
}

/// What the worker builds from its secrets: the Atlassian client (with the OAuth app's credentials) and the token
/// keys. Deferred ([`runtime::Deferred`]) when Secrets Manager cannot answer at cold start.
pub struct Secured {
    pub atlassian: atlassian::AtlassianClient,
    pub keys: tokens::KeyRing,
}

impl Secured {
    /// Reads the secrets and builds the client on `http`, reporting Atlassian's quota headers to `quota`.
    pub async fn read(
        secretsmanager: &aws_sdk_secretsmanager::Client,
        config: &Config,
        http: atlassian::Http,
        quota: atlassian::QuotaWatch,
    ) -> Result<Self, runtime::deferred::BuildError> {
        let (oauth, keys) = (&config.oauth_client_secret_id, &config.token_keys_secret_id);
        let app = runtime::secrets::oauth_app(secretsmanager, oauth, keys).await?;
        let callback = tokens::connect::callback_url(&config.public_base_url);
        let atlassian = atlassian::AtlassianClient::new(http, config.endpoints.clone(), app.credentials, callback)
            .with_quota_watch(quota);
        Ok(Self { atlassian, keys: app.keys })
    }
}

/// The answer while the secrets cannot be read: every message goes back to the queue, to come again after its
/// visibility timeout, untouched (no job of it has started).
pub fn unavailable(event: &SqsEvent) -> SqsBatchResponse {
    runtime::sqs::hand_back_all(event)
}
