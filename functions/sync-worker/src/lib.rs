//! The sync worker: an SQS consumer that runs one sync job per message and reports partial batch failures, so
//! only the jobs that failed transiently come back (and, after `maxReceiveCount`, land in the dead-letter queue).
//! The message id is the run id: a redelivery of the same message resumes the same run's lease.

use atlassian::{AtlassianApi, DirectoryApi};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use runtime::config::{ConfigError, Env, Source};
use store::mirror::MirrorStore;
use store::{ConnectionStore, CredentialStore, RunStore};
use sync::job::{self, Deps, JobError};
use sync::queue::Job;

pub struct Config {
    pub table: String,
    pub budget: store::budget::BudgetLimits,
    pub mirror_table: String,
    pub oauth_client_secret_id: String,
    pub token_keys_secret_id: String,
    pub public_base_url: url::Url,
    pub endpoints: atlassian::Endpoints,
}

impl Config {
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let per_hour = env.number_or("ATLASSIAN_POINTS_PER_HOUR", 60_000)?;
        let burst = env.number_or("ATLASSIAN_POINTS_BURST", 5_000)?;
        Ok(Self {
            budget: store::budget::BudgetLimits { per_hour, burst },
            table: env.required("STATE_TABLE")?,
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

pub async fn handle<S, M, A, B>(deps: &Deps<'_, S, M, A, B>, event: SqsEvent) -> SqsBatchResponse
where
    S: ConnectionStore + CredentialStore + RunStore,
    M: MirrorStore,
    A: AtlassianApi + DirectoryApi,
    B: sync::budget::Budget,
{
    let mut failures = Vec::new();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let Some(job) = message.body.as_deref().and_then(|b| serde_json::from_str::<Job>(b).ok()) else {
            // A malformed message never becomes valid: drop it rather than retry it into the DLQ.
            tracing::error!(message_id = %id, "dropping a sync message that is not a job");
            continue;
        };
        match job::run(deps, &job.connection_id, job.object_type, &id).await {
            Ok(outcome) => {
                tracing::info!(connection_id = %job.connection_id, object_type = job.object_type.as_str(), ?outcome, "sync job done")
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
