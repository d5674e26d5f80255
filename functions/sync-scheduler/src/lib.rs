//! The sync scheduler: each EventBridge schedule invokes it with `{"object_type": "users"}` (one schedule per type,
//! at its own cadence); it pages through every active connection and puts one job per connection on the queue.
//! Scheduled syncs also keep every active connection's refresh token in use, far inside Atlassian's 90-day
//! inactivity expiry.

use serde::{Deserialize, Serialize};
use store::ConnectionStore;
use store::mirror::ObjectType;
use sync::queue::{Job, JobQueue, QueueError};

#[derive(Debug, Deserialize)]
pub struct Request {
    pub object_type: ObjectType,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Response {
    pub object_type: ObjectType,
    pub enqueued: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("listing connections failed")]
    Store(#[from] store::StoreError),
    #[error("enqueueing jobs failed")]
    Queue(#[from] QueueError),
}

impl From<ScheduleError> for lambda_runtime::Diagnostic {
    fn from(error: ScheduleError) -> Self {
        // Either failure is transient: EventBridge's retry (or the next schedule) tries again.
        lambda_runtime::Diagnostic { error_type: "Retryable".into(), error_message: error.to_string() }
    }
}

pub async fn handle<S: ConnectionStore, Q: JobQueue>(
    store: &S,
    queue: &Q,
    request: Request,
) -> Result<Response, ScheduleError> {
    let mut enqueued = 0;
    let mut cursor: Option<String> = None;
    loop {
        let (ids, next) = store.active_connections(cursor.as_deref()).await?;
        let jobs: Vec<Job> =
            ids.into_iter().map(|connection_id| Job::new(&connection_id, request.object_type)).collect();
        queue.enqueue(&jobs).await?;
        enqueued += jobs.len();
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    tracing::info!(object_type = request.object_type.as_str(), enqueued, "scheduled sync jobs");
    Ok(Response { object_type: request.object_type, enqueued })
}
