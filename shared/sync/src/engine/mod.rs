//! One run of one object type for one connection, across as many Lambda invocations as it needs.
//!
//! For each site whose products cover the type, the run reads Atlassian page by page; each page is compared
//! with the stored hashes and only new or changed objects are written. Group members are fetched a few groups at a
//! time. When every site is read, one pass over the stored partition decides what is gone upstream (marked
//! `deleted`, never before a run is complete, and held back when it is too much at once: see [`close`]) and
//! corrects users' `sites`. An unchanged org is read and nothing is written.
//!
//! A run that outgrows its invocation pauses: after a page it saves a checkpoint (which site, the offset or cursor
//! there, the counts, and the fingerprints seen so far, appended as a delta) and answers [`Step::Paused`]; the job
//! enqueues a continuation that resumes from it. Long runs also checkpoint every so often, so a crash costs little.
//! Resuming re-reads at most the pages after the last checkpoint, and since writes are compare-then-write and
//! deletions wait for a complete read, a crash anywhere ends with the same mirror. A run that fits one
//! invocation never writes a checkpoint.
//!
//! The points quota is a wait, never a failure: when the shared budget is dry, or Atlassian answers a quota 429
//! (or a rate limit asking for a longer wait than the client sleeps), the run saves its checkpoint and answers
//! [`Step::Waiting`] with when to resume; the job queues its continuation with that delay. Any other failure
//! saves what was read first, so the retry resumes after it.

mod apply;
mod close;
mod groups;

pub use close::DeletionGuard;

use crate::budget::BudgetError;
use crate::seen::SeenSet;
use crate::sources::{Fetched, Next, Source};
use atlassian::ApiError;
use futures_util::future::join;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use store::HeldDeletions;
use store::mirror::{MirrorStore, ObjectType, Scope};
use store::{Checkpoint, CheckpointStore, StoreError};
use thiserror::Error;
use time::OffsetDateTime;

#[derive(Debug, Error)]
pub enum SyncError {
    #[error("no site of this connection has the product this object type comes from")]
    NotAvailable,
    #[error("an Atlassian call failed")]
    Atlassian(#[from] ApiError),
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("the mirror store failed")]
    Store(#[from] StoreError),
    /// No access token: the grant is gone, or a refresh did not go through.
    #[error("no valid access token")]
    Token(#[from] tokens::refresh::RefreshError),
    #[error("the run's position could not be encoded for its checkpoint")]
    Checkpoint(#[from] serde_json::Error),
    /// The connection was disconnected while the run read: it stops before writing anything more.
    #[error("the connection was disconnected")]
    Revoked,
    /// Another invocation of the same run saved a checkpoint first (a duplicate delivery): this one stops.
    #[error("another invocation of this run moved it on")]
    Superseded,
}

pub use store::RunCounts as Counts;

/// Whether a run may still write for its connection: a disconnect wins over a running sync. The run asks before
/// each page's writes and before its closing pass, and stops ([`SyncError::Revoked`]) once it may not.
pub trait Gate: Send + Sync {
    fn open(&self) -> futures_util::future::BoxFuture<'_, Result<bool, StoreError>>;
}

/// A gate that never closes (tests, benchmarks, tools).
pub struct AlwaysOpen;

impl Gate for AlwaysOpen {
    fn open(&self) -> futures_util::future::BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }
}

/// When a run gives its invocation back.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// When the invocation ends (Lambda's deadline); `None`: never.
    pub deadline: Option<Instant>,
    /// Pause once less than this is left: a page with its retries, a checkpoint and the continuation must fit.
    pub margin: Duration,
    /// Pause after this many pages in one invocation (0: no limit). Tests use it to force continuations.
    pub max_pages: u64,
    /// Pause once an invocation has spent this many quota points (0: no limit; the worker's default is 5,000): the
    /// run's continuation goes to the back of the queue, so runs waiting behind a big org get their turn.
    pub points_per_turn: u64,
    /// While reading, save a checkpoint at least this often.
    pub checkpoint_every: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            deadline: None,
            margin: Duration::from_secs(90),
            max_pages: 0,
            points_per_turn: 0,
            checkpoint_every: Duration::from_secs(60),
        }
    }
}

impl Pacing {
    /// How long a token must stay valid for what this invocation may still read: the rest of it, and a minute to
    /// spare (15 minutes, Lambda's longest run, without a deadline).
    pub fn token_horizon(&self) -> Duration {
        let left = self.deadline.map_or(Duration::from_secs(900), |d| d.saturating_duration_since(Instant::now()));
        left + Duration::from_secs(60)
    }

    fn must_pause(&self, pages: u64, points: u64) -> bool {
        (self.max_pages > 0 && pages >= self.max_pages)
            || (self.points_per_turn > 0 && points >= self.points_per_turn)
            || self.deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) < self.margin)
    }
}

/// How an invocation of a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every site was read and the mirror is in line, but for the deletions held back, if any.
    Done(Counts, Option<HeldDeletions>),
    /// A checkpoint was saved; a continuation must resume the run.
    Paused(Counts),
    /// Atlassian's quota (or the app's budget of it) is spent: the run's checkpoint is saved and it resumes `until`.
    Waiting { counts: Counts, until: OffsetDateTime, why: Wait },
}

/// Why a run waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The app's shared points budget is dry until it refills.
    Budget,
    /// Atlassian answered 429 with this `RateLimit-Reason` (`jira-quota-global-based`, …), or none.
    RateLimited(Option<String>),
}

impl Step {
    /// The counts of a complete run; `None` if it paused or waits.
    pub fn done(self) -> Option<Counts> {
        match self {
            Self::Done(counts, _) => Some(counts),
            Self::Paused(_) | Self::Waiting { .. } => None,
        }
    }
}

/// How long to wait for a rate limit that says nothing.
pub(crate) const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

impl SyncError {
    /// When a run that met this error may go on, if it is a wait rather than a failure.
    fn wait(&self) -> Option<(Duration, Wait)> {
        match self {
            Self::Budget(BudgetError::Exhausted(wait)) => Some((*wait, Wait::Budget)),
            Self::Atlassian(ApiError::RateLimited { retry_after, reason }) => {
                Some((retry_after.unwrap_or(DEFAULT_RATE_LIMIT_WAIT), Wait::RateLimited(reason.clone())))
            }
            _ => None,
        }
    }
}

/// Where a run is, as its checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// The sites of the run, fixed when it started.
    sites: Vec<String>,
    /// The site being read; `sites.len()` once reading is complete.
    site: usize,
    /// The next offset on that site (users, groups, projects).
    offset: usize,
    /// The next cursor on that site (spaces); or the key of the record before `offset`, which the next page must
    /// start with (users, groups, projects: see [`crate::sources::overlap`]).
    cursor: Option<String>,
    /// How many times a listing moved under this run and a site was read again from its start.
    #[serde(default, skip_serializing_if = "is_zero")]
    rereads: u32,
    /// A listing moved more often than the run reads a site again: what it did not see may have been skipped, not
    /// removed, so its deletions are held (see [`close`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unsettled: bool,
    /// Groups: the site's listing is read, and the giants it found that are left to read.
    #[serde(default)]
    listed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    giants: Vec<groups::Giant>,
    counts: Counts,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How many times a run reads a site again when its listing moves (an org that changes faster than a run reads it
/// settles for held deletions instead).
const MAX_REREADS: u32 = 3;

impl Progress {
    /// The site's listing moved under the run: read it again from its start (what was read stays seen, and writes
    /// nothing twice), or past [`MAX_REREADS`] read on from `after` and hold the run's deletions.
    fn moved(&mut self, after: usize) {
        if self.rereads < MAX_REREADS {
            self.rereads += 1;
            (self.offset, self.cursor) = (0, None);
        } else {
            self.unsettled = true;
            (self.offset, self.cursor) = (after, None);
        }
    }

    fn next_site(&mut self) {
        (self.site, self.offset, self.cursor, self.listed) = (self.site + 1, 0, None, false);
        self.giants.clear();
    }
}

/// A saved checkpoint of a run, to resume from.
#[derive(Debug, Clone)]
pub struct Resume {
    checkpoint: Checkpoint,
    progress: Progress,
    seen: SeenSet,
}

impl Resume {
    /// Reads a checkpoint as the store returned it; `None` if it is not one this engine wrote.
    pub fn parse(checkpoint: Checkpoint, chunks: &[Vec<u8>]) -> Option<Self> {
        let progress: Progress = serde_json::from_str(&checkpoint.state).ok()?;
        let mut seen = SeenSet::from_deltas(&chunks.concat())?;
        seen.grow(progress.sites.len());
        Some(Self { checkpoint, progress, seen })
    }

    /// When the run started (its first invocation).
    pub fn started_at(&self) -> OffsetDateTime {
        self.progress.started_at
    }
}

/// A run's working state in one invocation.
struct State {
    checkpoint: Checkpoint,
    progress: Progress,
    seen: SeenSet,
    /// Pages applied in this invocation, and since the last checkpoint.
    pages: u64,
    unsaved: u64,
    saved_at: Instant,
    /// The run's points when this invocation started, for its turn's share of the quota.
    points_before: u64,
}

pub struct Run<'a, M, C> {
    /// Where the records come from: an OAuth grant or an admin key ([`crate::sources`]).
    pub source: &'a dyn Source,
    pub mirror: &'a M,
    pub checkpoints: &'a C,
    /// Closes when the connection is disconnected.
    pub gate: &'a dyn Gate,
    pub connection_id: &'a str,
    pub run_id: &'a str,
    /// The sites a new run reads (a resumed run keeps the sites it started with).
    pub sites: Vec<String>,
    pub object_type: ObjectType,
    pub now: OffsetDateTime,
    pub pacing: Pacing,
    /// When the closing pass holds deletions back.
    pub guard: DeletionGuard,
}

enum Flow {
    SiteDone,
    Paused,
}

impl<M: MirrorStore, C: CheckpointStore> Run<'_, M, C> {
    /// Reads on from `resume` (or from the start) until the run is complete or must pause.
    pub async fn run(&self, resume: Option<Resume>) -> Result<Step, SyncError> {
        let mut state = match resume {
            Some(Resume { checkpoint, progress, seen }) => {
                let points_before = progress.counts.points;
                State { checkpoint, progress, seen, pages: 0, unsaved: 0, saved_at: Instant::now(), points_before }
            }
            None => State {
                checkpoint: Checkpoint::fresh(self.run_id),
                seen: SeenSet::new(self.sites.len()),
                progress: Progress {
                    sites: self.sites.clone(),
                    site: 0,
                    offset: 0,
                    cursor: None,
                    rereads: 0,
                    unsettled: false,
                    listed: false,
                    giants: Vec::new(),
                    counts: Counts::default(),
                    started_at: self.now,
                },
                pages: 0,
                unsaved: 0,
                saved_at: Instant::now(),
                points_before: 0,
            },
        };
        if state.progress.sites.is_empty() {
            return Err(SyncError::NotAvailable);
        }
        let scope = Scope::new(self.connection_id, self.object_type);
        while state.progress.site < state.progress.sites.len() {
            let read = match (self.object_type, self.source.members()) {
                (ObjectType::Groups, Some(members)) => self.groups(&scope, &mut state, members).await,
                _ => self.pages(&scope, &mut state).await,
            };
            match read {
                Ok(Flow::SiteDone) => {}
                Ok(Flow::Paused) => return Ok(Step::Paused(state.progress.counts)),
                Err(error @ (SyncError::Superseded | SyncError::Revoked)) => return Err(error),
                Err(error) => {
                    // Keep what was read: the continuation or the retry resumes after it rather than from the start.
                    if state.unsaved > 0 {
                        match self.save(&mut state).await {
                            Err(SyncError::Superseded) => return Err(SyncError::Superseded),
                            Err(save) => {
                                tracing::warn!(error = %runtime::error_chain(&save), "could not checkpoint a stopping run")
                            }
                            Ok(()) => {}
                        }
                    }
                    let Some((wait, why)) = error.wait() else { return Err(error) };
                    let until = OffsetDateTime::now_utc() + wait;
                    return Ok(Step::Waiting { counts: state.progress.counts, until, why });
                }
            }
        }
        if state.checkpoint.version > 0 {
            // A long run: a crash in the closing pass resumes there, not at the start.
            self.save(&mut state).await?;
        }
        state.seen.seal();
        let mut counts = state.progress.counts;
        let held = self.close(&scope, &state.progress, &state.seen, &mut counts).await?;
        if state.checkpoint.version > 0 {
            self.checkpoints.clear_checkpoint(self.connection_id, self.object_type).await?;
        }
        Ok(Step::Done(counts, held))
    }

    /// After a page is applied: pauses (saving a checkpoint) when the invocation is spent, and checkpoints a long
    /// run every so often.
    async fn after_page(&self, state: &mut State) -> Result<Option<Flow>, SyncError> {
        state.pages += 1;
        state.unsaved += 1;
        if self.pacing.must_pause(state.pages, state.progress.counts.points - state.points_before) {
            self.save(state).await?;
            return Ok(Some(Flow::Paused));
        }
        if state.saved_at.elapsed() >= self.pacing.checkpoint_every {
            self.save(state).await?;
        }
        Ok(None)
    }

    async fn save(&self, state: &mut State) -> Result<(), SyncError> {
        let progress = serde_json::to_string(&state.progress)?;
        let delta = state.seen.take_delta();
        let saved = self
            .checkpoints
            .save_checkpoint(
                self.connection_id,
                self.object_type,
                &state.checkpoint,
                &progress,
                &delta,
                OffsetDateTime::now_utc(),
            )
            .await?;
        state.checkpoint = saved.ok_or(SyncError::Superseded)?;
        (state.unsaved, state.saved_at) = (0, Instant::now());
        Ok(())
    }

    /// Reads a site's pages, fetching each next page while the previous one is compared and written, so the
    /// mirror's work hides behind Atlassian's latency.
    async fn pages(&self, scope: &Scope, state: &mut State) -> Result<Flow, SyncError> {
        let site = state.progress.sites[state.progress.site].clone();
        let fetch = |offset, cursor: Option<String>| {
            let site = site.as_str();
            async move { self.source.page(self.object_type, site, offset, cursor.as_deref()).await }
        };
        let mut fetched = fetch(state.progress.offset, state.progress.cursor.clone()).await?;
        loop {
            let Fetched { records, next, pages, points } = fetched;
            // A page this invocation would read only to drop it when it pauses is not read ahead: it would cost its
            // points twice.
            let pausing =
                self.pacing.must_pause(state.pages + 1, state.progress.counts.points + points - state.points_before);
            let ahead = match &next {
                Next::Offset(start) => Some((*start, None)),
                Next::After(start, anchor) => Some((*start, Some(anchor.clone()))),
                Next::Cursor(cursor) => Some((0, Some(cursor.clone()))),
                Next::Last | Next::Moved(_) => None,
            };
            let prefetch = async {
                match &ahead {
                    Some((start, cursor)) if !pausing => Some(fetch(*start, cursor.clone()).await),
                    _ => None,
                }
            };
            let (applied, prefetched) = join(self.apply(scope, state, records, (pages, points)), prefetch).await;
            applied?;
            let moved = matches!(next, Next::Moved(_));
            match next {
                Next::Offset(start) => state.progress.offset = start,
                Next::After(start, anchor) => (state.progress.offset, state.progress.cursor) = (start, Some(anchor)),
                Next::Cursor(cursor) => state.progress.cursor = Some(cursor),
                Next::Moved(after) => {
                    tracing::warn!(object_type = self.object_type.as_str(), site, "the listing moved under the run");
                    state.progress.moved(after);
                }
                Next::Last => state.progress.next_site(),
            }
            if let Some(paused) = self.after_page(state).await? {
                return Ok(paused);
            }
            fetched = match (prefetched, ahead) {
                (Some(result), _) => result?,
                (None, Some((start, cursor))) => fetch(start, cursor).await?,
                (None, None) if moved => fetch(state.progress.offset, state.progress.cursor.clone()).await?,
                (None, None) => return Ok(Flow::SiteDone),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_that_keeps_moving_is_read_again_a_few_times_then_settles_for_held_deletions() {
        let mut progress = Progress {
            sites: vec!["site".into()],
            site: 0,
            offset: 40,
            cursor: Some("u39".into()),
            rereads: 0,
            unsettled: false,
            listed: false,
            giants: Vec::new(),
            counts: Counts::default(),
            started_at: OffsetDateTime::UNIX_EPOCH,
        };
        for reread in 1..=MAX_REREADS {
            progress.moved(50);
            assert_eq!((progress.offset, progress.cursor.as_deref(), progress.rereads), (0, None, reread));
            progress.offset = 40;
        }
        progress.moved(50);
        assert!(progress.unsettled, "past the rereads, the run reads on and holds its deletions");
        assert_eq!((progress.offset, progress.cursor.as_deref()), (50, None));
        // A checkpoint from before these fields reads as a settled run that has not moved.
        let mut old = serde_json::to_value(&progress).unwrap();
        old.as_object_mut().unwrap().retain(|field, _| field != "rereads" && field != "unsettled");
        let parsed: Progress = serde_json::from_value(old).unwrap();
        assert_eq!((parsed.rereads, parsed.unsettled), (0, false));
    }
}
