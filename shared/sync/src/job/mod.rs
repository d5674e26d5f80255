//! One sync job, as a worker runs it for a (connection, object type): take the run's lease, get a valid access
//! token (refreshing it rotation-safely), run the engine from its checkpoint if it has one, and record how it ended.
//! A run that must pause enqueues its own continuation (the same run id) and stays `running`. A run that must wait
//! (the points quota is spent) or that failed transiently (Atlassian or DynamoDB trouble) saves what it read,
//! turns `waiting` with `waiting_until`, and queues its continuation with that delay: the quota is never a
//! failure, a retry resumes where the run was, and none of it rides on SQS redeliveries or the dead-letter queue.
//! After [`MAX_ATTEMPTS`] transient failures in a row the run ends `failed` (the next schedule starts afresh).
//! A revoked grant ends the run `needs_reauth` (and the connection with it); a type whose product no site has ends
//! `not_available`.

use crate::access::{Refreshing, TokenSource};
use crate::budget::Budget;
use crate::budget::BudgetError;
use crate::engine::{self, DeletionGuard, Pacing, Resume, Step, SyncError, Wait};
use crate::queue::{Job, JobQueue, QueueError};
use crate::sources::{AdminSource, OauthSource};
use atlassian::{AdminApi, ApiError, AtlassianApi, DirectoryApi};
use runtime::error_chain;
use std::time::Instant;
use store::mirror::{MirrorStore, ObjectType};
use store::{
    CheckpointStore, ConnectionMode, ConnectionStatus, ConnectionStore, CredentialStore, RunCounts, RunRecord,
    RunStatus, RunStore, StoreError,
};
use thiserror::Error;
use time::{Duration, OffsetDateTime};
use tokens::refresh::{RefreshError, RefreshPolicy};
use tokens::{KeyRing, credentials};

mod read;
use read::{Failure, Plan, sync};

/// How long a run's lease lasts: past the longest Lambda run (15 minutes).
pub const RUN_LEASE: Duration = Duration::minutes(16);

/// Transient failures in a row before a run ends `failed`; the backoff doubles from [`FIRST_BACKOFF`] to SQS's
/// 15-minute cap, so the last try comes about half an hour after the first failure.
pub const MAX_ATTEMPTS: u32 = 6;
pub const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Deps<'a, S, M, A, B, Q> {
    /// State: connections, credentials, run records and checkpoints.
    pub store: &'a S,
    pub mirror: &'a M,
    pub atlassian: &'a A,
    /// The app-wide points budget (`budget::SharedBudget` in the worker).
    pub budget: &'a B,
    pub keys: &'a KeyRing,
    pub refresh: &'a RefreshPolicy,
    /// Where a paused run's continuation goes.
    pub queue: &'a Q,
    /// When runs pause (the deadline is set per invocation).
    pub pacing: Pacing,
    /// When deletions are held back (the previous run's held set is filled in per run).
    pub guard: DeletionGuard,
}

/// How a job ended, for the worker's answer to its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The run finished; its record says how (succeeded, needs_reauth, not_available).
    Finished(RunStatus, RunCounts),
    /// The run paused at a checkpoint and its continuation is queued.
    Continued(RunCounts),
    /// The run waits (for the points quota, or to retry a transient failure); its continuation is queued to
    /// arrive then.
    Waiting(OffsetDateTime),
    /// Another run of the same (connection, type) holds the lease, or another invocation of this run moved it on:
    /// nothing to do.
    AlreadyRunning,
    /// The connection is gone or no longer active, or a continuation's run has already ended.
    Skipped,
}

/// What makes the worker hand a job back to its queue for another delivery (the run resumes from its checkpoint).
#[derive(Debug, Error)]
pub enum JobError {
    #[error("the run's continuation could not be queued")]
    Continuation(#[source] QueueError),
    #[error("the state store failed")]
    Store(#[from] StoreError),
}

/// Runs `job` in one invocation that must end by `deadline`. The run id is the job's own (a continuation) or the
/// message id (a new run; a redelivery of the message resumes the same run).
pub async fn run<S, M, A, B, Q>(
    deps: &Deps<'_, S, M, A, B, Q>,
    job: &Job,
    message_id: &str,
    deadline: Option<Instant>,
) -> Result<Outcome, JobError>
where
    S: ConnectionStore + CredentialStore + RunStore + CheckpointStore,
    M: MirrorStore,
    A: AtlassianApi + DirectoryApi + AdminApi,
    B: Budget,
    Q: JobQueue,
{
    let (connection_id, object_type) = (job.connection_id.as_str(), job.object_type);
    let run_id = job.run_id.as_deref().unwrap_or(message_id);
    let now = OffsetDateTime::now_utc();
    let Some(connection) = deps.store.get_connection(connection_id).await? else { return Ok(Outcome::Skipped) };
    if connection.status == ConnectionStatus::Revoked {
        // A run that was writing when the connection was disconnected may have landed a page after the disconnect
        // cleared the mirror: whatever of this type is there goes now.
        deps.mirror.clear(&store::Scope::new(connection_id, object_type)).await?;
        return Ok(Outcome::Skipped);
    }
    if connection.status != ConnectionStatus::Active {
        return Ok(Outcome::Skipped);
    }
    let previous = deps.store.get_run(connection_id, object_type).await?;
    let continuing = previous.as_ref().filter(|p| p.run_id == run_id && p.status.is_live());
    if job.run_id.is_some() && continuing.is_none() {
        // The run this continues has ended (or another run replaced it): nothing is left to do.
        return Ok(Outcome::Skipped);
    }
    let saved = deps.store.load_checkpoint(connection_id, object_type).await?;
    // Another run's checkpoint is abandoned once this run holds the lease: it is dropped below, so a late
    // continuation of that run cannot resume it with an outdated seen-set.
    let abandoned = saved.as_ref().is_some_and(|(c, _)| c.run_id != run_id);
    let saved = saved.filter(|(c, _)| c.run_id == run_id);
    let resume = match saved {
        Some((checkpoint, chunks)) => match Resume::parse(checkpoint, &chunks) {
            Some(resume) => Some(resume),
            None => {
                tracing::warn!(connection_id, run_id, "an unreadable checkpoint was dropped; the run starts over");
                deps.store.clear_checkpoint(connection_id, object_type).await?;
                None
            }
        },
        None => None,
    };
    let mut record = RunRecord {
        started_at: continuing.map(|p| p.started_at).or(resume.as_ref().map(Resume::started_at)).unwrap_or(now),
        last_succeeded_at: previous.as_ref().and_then(|p| p.last_succeeded_at),
        held_deletions: previous.as_ref().and_then(|p| p.held_deletions.clone()),
        ..RunRecord::running(object_type, run_id, now, store::budget::epoch_ms(now + RUN_LEASE))
    };
    if !deps.store.try_start_run(connection_id, &record, now).await? {
        return Ok(Outcome::AlreadyRunning);
    }
    if abandoned {
        deps.store.clear_checkpoint(connection_id, object_type).await?;
    }
    let pacing = Pacing { deadline, ..deps.pacing.clone() };
    let guard = DeletionGuard { held: record.held_deletions.clone(), ..deps.guard.clone() };
    let plan = Plan { object_type, run_id, resume, pacing, guard, now };
    let result = sync(deps, &connection, plan).await;
    // Points drawn for requests this invocation will not make go back to the pool for other runs.
    deps.budget.release().await;
    let ended = OffsetDateTime::now_utc();
    // A waiting run's continuation: arrives `until`, at this attempt.
    let mut wait: Option<(OffsetDateTime, u32)> = None;
    match result {
        Ok(Step::Done(counts, held)) => {
            (record.status, record.counts) = (RunStatus::Succeeded, counts);
            record.last_succeeded_at = Some(ended);
            record.error_code = held.as_ref().map(|_| "deletions_held".to_owned());
            record.error = held.as_ref().map(|h| {
                format!(
                    "{} of {} {} are gone upstream: more than {:.0} % at once, so they are not marked deleted until \
                     the next run sees the same",
                    h.count,
                    h.of,
                    object_type.as_str(),
                    deps.guard.max_share * 100.0
                )
            });
            record.held_deletions = held;
        }
        Ok(Step::Paused(counts)) => {
            // On failure, this message comes back and resumes from the checkpoint just saved.
            deps.queue.enqueue(&[job.continuation(run_id, 0)]).await.map_err(JobError::Continuation)?;
            record.counts = counts;
            record.lease_until_ms = store::budget::epoch_ms(ended + RUN_LEASE);
            tracing::info!(connection_id, object_type = object_type.as_str(), counts = ?counts, "sync run paused; its continuation is queued");
            deps.store.save_run(connection_id, &record).await?;
            return Ok(Outcome::Continued(counts));
        }
        Ok(Step::Waiting { counts, until, why }) => {
            record.counts = counts;
            record.error_code = Some(if why == Wait::Budget { "quota_wait" } else { "rate_limited" }.to_owned());
            record.error = Some(match why {
                Wait::Budget => "waiting for the app's Atlassian points budget to refill".to_owned(),
                Wait::RateLimited(Some(reason)) => format!("waiting: Atlassian rate-limited the app ({reason})"),
                Wait::RateLimited(None) => "waiting: Atlassian rate-limited the app".to_owned(),
            });
            wait = Some((until, 0));
        }
        Err(Failure::Superseded) => return Ok(Outcome::AlreadyRunning),
        Err(Failure::Revoked) => {
            // The disconnect won: what this run wrote after it cleared the mirror goes too, and the run record
            // (the connection's) is left as the disconnect left it.
            tracing::info!(
                connection_id,
                object_type = object_type.as_str(),
                "the connection was disconnected during its sync; the run stops"
            );
            deps.mirror.clear(&store::Scope::new(connection_id, object_type)).await?;
            deps.store.clear_checkpoint(connection_id, object_type).await?;
            return Ok(Outcome::Skipped);
        }
        Err(Failure::NotAvailable(why)) => {
            (record.status, record.error) = (RunStatus::NotAvailable, Some(why.to_string()));
            record.error_code = Some("not_available".into());
        }
        Err(Failure::NeedsReauth(reason)) => {
            (record.status, record.error) = (RunStatus::NeedsReauth, Some(reason));
            record.error_code = Some("needs_reauth".into());
        }
        // The cause chain goes to the logs; the record keeps a code and a short message for the API's clients.
        Err(Failure::Transient(cause)) if job.attempt + 1 < MAX_ATTEMPTS => {
            let backoff = FIRST_BACKOFF.saturating_mul(1 << job.attempt.min(10)).min(crate::queue::MAX_DELAY);
            tracing::warn!(connection_id, object_type = object_type.as_str(), attempt = job.attempt + 1, error = %error_chain(&cause), "sync run failed transiently; it resumes after a backoff");
            let (code, message) = cause.summary();
            record.error = Some(format!("retrying after: {message}"));
            record.error_code = Some(code.into());
            wait = Some((ended + backoff, job.attempt + 1));
        }
        Err(Failure::Transient(cause) | Failure::Failed(cause)) => {
            tracing::warn!(connection_id, object_type = object_type.as_str(), error = %error_chain(&cause), "sync run failed");
            let (code, message) = cause.summary();
            (record.status, record.error, record.error_code) = (RunStatus::Failed, Some(message), Some(code.into()));
        }
    }
    if let Some((until, attempt)) = wait {
        let delay = std::time::Duration::try_from(until - ended).unwrap_or_default();
        let continuation = job.continuation(run_id, attempt);
        deps.queue.enqueue_after(&continuation, delay).await.map_err(JobError::Continuation)?;
        record.status = RunStatus::Waiting;
        record.waiting_until = Some(until);
        // The lease outlasts the wait, so a scheduled run cannot take over (and drop the checkpoint) meanwhile.
        record.lease_until_ms = store::budget::epoch_ms(until + RUN_LEASE);
        tracing::info!(connection_id, object_type = object_type.as_str(), counts = ?record.counts, waiting_until = %until, "sync run waits; its continuation is queued");
        deps.store.save_run(connection_id, &record).await?;
        return Ok(Outcome::Waiting(until));
    }
    record.finished_at = Some(ended);
    record.lease_until_ms = 0;
    tracing::info!(connection_id, object_type = object_type.as_str(), status = ?record.status, counts = ?record.counts, "sync run ended");
    deps.store.save_run(connection_id, &record).await?;
    Ok(Outcome::Finished(record.status, record.counts))
}

/// A short random suffix for lease owners.
fn nonce() -> String {
    let mut bytes = [0u8; 6];
    // A failing system RNG leaves zeros: the owner is then just the run id, as before.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
