//! The sync scheduler: each EventBridge schedule invokes it with `{"object_type": "users"}` (one schedule per type,
//! at its own cadence); it pages through every active connection and puts one job per connection on the queue.
//! Scheduled syncs also keep every active connection's refresh token in use, far inside Atlassian's 90-day
//! inactivity expiry. A connection whose run of the type is still live (running, paused for its next turn, or
//! waiting for the quota) gets no new job: when the quota cannot keep up with the cadence, cadences stretch (the
//! status API shows `last_succeeded_at` and `next_due_at`) instead of runs piling up in the queue.

use jobs::{Job, JobQueue, QueueError};
use serde::{Deserialize, Serialize};
use store::mirror::ObjectType;
use store::{ConnectionStore, RunStore};

#[derive(Debug, Deserialize)]
pub struct Request {
    pub object_type: ObjectType,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Response {
    pub object_type: ObjectType,
    pub enqueued: usize,
    /// Connections whose run of the type was still live.
    pub skipped: usize,
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

pub async fn handle<S: ConnectionStore + RunStore, Q: JobQueue>(
    store: &S,
    queue: &Q,
    request: Request,
) -> Result<Response, ScheduleError> {
    let (mut enqueued, mut skipped) = (0, 0);
    let mut cursor: Option<String> = None;
    let now_ms = store::budget::epoch_ms(time::OffsetDateTime::now_utc());
    loop {
        let (ids, next) = store.active_connections(cursor.as_deref()).await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for connection_id in ids {
            let run = store.get_run(&connection_id, request.object_type).await?;
            if run.is_some_and(|run| run.status.is_live() && run.lease_until_ms >= now_ms) {
                skipped += 1;
                continue;
            }
            jobs.push(Job::new(&connection_id, request.object_type));
        }
        queue.enqueue(&jobs).await?;
        enqueued += jobs.len();
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    tracing::info!(object_type = request.object_type.as_str(), enqueued, skipped, "scheduled sync jobs");
    Ok(Response { object_type: request.object_type, enqueued, skipped })
}
