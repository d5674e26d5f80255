//! The in-memory queue tests use (the `testing` feature): it keeps what was queued instead of sending it.

use crate::{Job, JobQueue, MAX_DELAY, QueueError};
use std::time::Duration;

/// An in-memory queue for tests: what was queued, in order, with each job's delay (zero for `enqueue`).
#[derive(Debug, Default)]
pub struct MemoryQueue {
    pub jobs: std::sync::Mutex<Vec<Job>>,
    pub delays: std::sync::Mutex<Vec<Duration>>,
}

impl MemoryQueue {
    /// Takes every queued job with its delay.
    pub fn take(&self) -> Vec<(Job, Duration)> {
        let jobs = std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|p| p.into_inner()));
        let mut delays = std::mem::take(&mut *self.delays.lock().unwrap_or_else(|p| p.into_inner()));
        delays.resize(jobs.len(), Duration::ZERO);
        jobs.into_iter().zip(delays).collect()
    }
}

impl JobQueue for MemoryQueue {
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), QueueError> {
        let mut queued = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut delays = self.delays.lock().unwrap_or_else(|p| p.into_inner());
        delays.resize(queued.len(), Duration::ZERO);
        queued.extend_from_slice(jobs);
        delays.resize(queued.len(), Duration::ZERO);
        Ok(())
    }

    async fn enqueue_after(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        let mut queued = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut delays = self.delays.lock().unwrap_or_else(|p| p.into_inner());
        delays.resize(queued.len(), Duration::ZERO);
        queued.push(job.clone());
        delays.push(delay.min(MAX_DELAY));
        Ok(())
    }
}
