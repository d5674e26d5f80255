//! The sync worker: an SQS consumer that runs one sync job per message and reports partial batch failures, so
//! only the jobs that failed transiently come back (and, after `maxReceiveCount`, land in the dead-letter queue).
//! The message id is the run id: a redelivery of the same message resumes the same run (its lease and its
//! checkpoint). A run that would outlast the invocation pauses and queues its own continuation.

use atlassian::{AtlassianApi, DirectoryApi};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use runtime::config::{ConfigError, Env, Source};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::mirror::MirrorStore;
use store::{CheckpointStore, ConnectionStore, CredentialStore, RunStore};
use sync::engine::Pacing;
use sync::job::{self, Deps, JobError};
use sync::queue::{Job, JobQueue};

pub struct Config {
    pub table: String,
    pub budget: store::budget::BudgetLimits,
    pub mirror_table: String,
    pub oauth_client_secret_id: String,
    pub token_keys_secret_id: String,
    pub public_base_url: url::Url,
    pub endpoints: atlassian::Endpoints,
    /// The queue continuations go to (the one this worker consumes).
    pub queue_url: String,
    pub pacing: Pacing,
}

impl Config {
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let per_hour = env.number_or("ATLASSIAN_POINTS_PER_HOUR", 60_000)?;
        let burst = env.number_or("ATLASSIAN_POINTS_BURST", 5_000)?;
        Ok(Self {
            budget: store::budget::BudgetLimits { per_hour, burst },
            table: env.required("STATE_TABLE")?,
            queue_url: env.required("SYNC_QUEUE_URL")?,
            pacing: Pacing {
                deadline: None,
                margin: env.seconds_or("SYNC_PAUSE_MARGIN_SECONDS", 90)?,
                max_pages: env.number_or("SYNC_MAX_PAGES_PER_INVOCATION", 0)?,
                checkpoint_every: env.seconds_or("SYNC_CHECKPOINT_SECONDS", 60)?,
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
        let Some(job) = message.body.as_deref().and_then(|b| serde_json::from_str::<Job>(b).ok()) else {
            // A malformed message never becomes valid: drop it rather than retry it into the DLQ.
            tracing::error!(message_id = %id, "dropping a sync message that is not a job");
            continue;
        };
        match job::run(deps, &job, &id, deadline).await {
            Ok(outcome) => {
                let seconds_left = deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs());
                tracing::info!(connection_id = %job.connection_id, object_type = job.object_type.as_str(), ?outcome, ?seconds_left, "sync job done")
            }
            Err(error @ (JobError::Retryable(_) | JobError::Store(_))) => {
                tracing::warn!(connection_id = %job.connection_id, object_type = job.object_type.as_str(), error = %error, "sync job failed; it will be retried");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failures.push(failure);
            }
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}
