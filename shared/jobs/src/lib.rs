//! Sync jobs on AWS's own engine: the scheduler and the management API put one message per
//! (connection, object type) on an SQS queue; the worker function consumes them. A job message is JSON
//! `{"connection_id": "…", "object_type": "users"}`; a paused run's continuation also names its `run_id` (and,
//! while it retries a transient failure, the `attempt`). A continuation can be delayed (SQS `DelaySeconds`, at most
//! 15 minutes): a run waiting for the points quota or backing off is a queued message, not a sleeping Lambda.

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;
use store::mirror::ObjectType;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub connection_id: String,
    pub object_type: ObjectType,
    /// Set on a continuation: the run it resumes. A new run takes its message's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// How many times in a row the run has failed transiently (0 on a fresh start or after progress).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Job {
    /// A new run of `object_type` for a connection.
    pub fn new(connection_id: &str, object_type: ObjectType) -> Self {
        Self { connection_id: connection_id.to_owned(), object_type, run_id: None, attempt: 0 }
    }

    /// A job message as the queue delivers it, if it is one: JSON of a [`Job`] whose connection id and run id have
    /// the shape this connector gives them ([`store::valid_id`]; connection ids are `con_…`, run ids
    /// SQS message ids). Anything else can never succeed, whoever sent it: the worker drops it instead of letting it
    /// retry into the dead-letter queue (an id past DynamoDB's key limit would fail every attempt).
    pub fn parse(body: &str) -> Option<Self> {
        let job: Self = serde_json::from_str(body).ok()?;
        (store::valid_id(&job.connection_id) && job.run_id.as_deref().is_none_or(store::valid_id)).then_some(job)
    }

    /// The continuation of run `run_id` of this job's (connection, type), at `attempt`.
    pub fn continuation(&self, run_id: &str, attempt: u32) -> Self {
        Self { run_id: Some(run_id.to_owned()), attempt, ..self.clone() }
    }
}

/// The longest delay SQS puts on a message; longer waits chain continuations.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("SQS refused the messages")]
    Sqs(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{0} of the messages were not accepted")]
    Partial(usize),
}

pub trait JobQueue: Send + Sync {
    fn enqueue(&self, jobs: &[Job]) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Queues `job` to be delivered after `delay` (capped at [`MAX_DELAY`]).
    fn enqueue_after(&self, job: &Job, delay: Duration) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// The SQS queue, sent to in batches of ten (SendMessageBatch's limit).
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }
}

impl JobQueue for SqsQueue {
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), QueueError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        for chunk in jobs.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, job)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(serde_json::to_string(job).unwrap_or_default())
                        .build()
                        .map_err(|e| QueueError::Sqs(Box::new(e)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError::Sqs(Box::new(e)))?;
            if !output.failed().is_empty() {
                return Err(QueueError::Partial(output.failed().len()));
            }
        }
        Ok(())
    }

    async fn enqueue_after(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        let body = serde_json::to_string(job).map_err(|e| QueueError::Sqs(Box::new(e)))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            // Whole seconds, rounded up: a continuation must not arrive before the wait is over.
            .delay_seconds(delay.min(MAX_DELAY).as_secs_f64().ceil() as i32)
            .send()
            .await
            .map_err(|e| QueueError::Sqs(Box::new(e)))?;
        Ok(())
    }
}

#[cfg(feature = "testing")]
mod memory;
#[cfg(feature = "testing")]
pub use memory::MemoryQueue;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_messages_shaped_like_this_connectors_jobs_are_jobs() {
        let job = Job::parse(r#"{"connection_id": "con_0a1b", "object_type": "users", "run_id": "m-1", "attempt": 2}"#);
        assert_eq!(job, Some(Job::new("con_0a1b", ObjectType::Users).continuation("m-1", 2)));
        let long = "c".repeat(129);
        for body in [
            "not json".to_owned(),
            r#"{"connection_id": "con_1", "object_type": "widgets"}"#.to_owned(),
            r#"{"connection_id": "", "object_type": "users"}"#.to_owned(),
            r#"{"connection_id": "con/1", "object_type": "users"}"#.to_owned(),
            r#"{"connection_id": "con\u0000", "object_type": "users"}"#.to_owned(),
            format!(r#"{{"connection_id": "{long}", "object_type": "users"}}"#),
            r#"{"connection_id": "con_1", "object_type": "users", "run_id": "a b"}"#.to_owned(),
            r#"{"connection_id": "con_1", "object_type": "users", "attempt": -1}"#.to_owned(),
        ] {
            assert_eq!(Job::parse(&body), None, "{body}");
        }
    }
}
