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

use crate::access::TokenSource;
use crate::budget::{Budget, BudgetError, Reserved};
use crate::records::{self, Record};
use crate::seen::SeenSet;
use atlassian::admin::{AdminApi, AdminKey, AdminPage, AdminUser, SiteLogin};
use atlassian::rest::{JiraProject, JiraUser, Page, SpacesPage};
use atlassian::{AccessToken, ApiError, DirectoryApi};
use futures_util::future::join;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use store::HeldDeletions;
use store::mirror::{MirrorStore, ObjectType, Scope};
use store::{Checkpoint, CheckpointStore, StoreError};
use thiserror::Error;
use time::OffsetDateTime;

/// How many groups' members are fetched at once.
pub const MEMBER_CONCURRENCY: usize = 4;

/// What a users page is budgeted for before the run has seen one: Jira serves 100 a page whatever it is asked.
const USERS_SERVED_GUESS: u64 = 100;

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
    /// Another invocation of the same run saved a checkpoint first (a duplicate delivery): this one stops.
    #[error("another invocation of this run moved it on")]
    Superseded,
}

pub use store::RunCounts as Counts;

/// What a run reads Atlassian with.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// OAuth: every type through the API gateway, per cloud id, with a token from here (refreshed as needed).
    Oauth(&'a dyn TokenSource),
    /// An admin key: users and groups from the Admin API (the org's directory); projects and spaces from the
    /// site the site token signs in to.
    Admin { key: &'a AdminKey, org_id: &'a str, site: Option<&'a SiteLogin> },
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
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

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
    /// The next cursor on that site (spaces).
    cursor: Option<String>,
    /// Groups: the site's listing is read, and the giants it found that are left to read.
    #[serde(default)]
    listed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    giants: Vec<groups::Giant>,
    counts: Counts,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
}

impl Progress {
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

pub struct Run<'a, D, M, B, C> {
    pub directory: &'a D,
    pub mirror: &'a M,
    /// The app-wide points budget every request draws from.
    pub budget: &'a B,
    pub checkpoints: &'a C,
    pub credential: Credential<'a>,
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

/// Where a site's next page is.
enum Next {
    Offset(usize),
    Cursor(String),
    Last,
}

impl<D: DirectoryApi + AdminApi, M: MirrorStore, B: Budget, C: CheckpointStore> Run<'_, D, M, B, C> {
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
            let read = match self.object_type {
                ObjectType::Users => self.users(&scope, &mut state).await,
                ObjectType::Groups => self.groups(&scope, &mut state).await,
                ObjectType::Projects => self.projects(&scope, &mut state).await,
                ObjectType::Spaces => self.spaces(&scope, &mut state).await,
            };
            match read {
                Ok(Flow::SiteDone) => {}
                Ok(Flow::Paused) => return Ok(Step::Paused(state.progress.counts)),
                Err(SyncError::Superseded) => return Err(SyncError::Superseded),
                Err(error) => {
                    // Keep what was read: the continuation or the retry resumes after it rather than from the start.
                    if state.unsaved > 0 {
                        match self.save(&mut state).await {
                            Err(SyncError::Superseded) => return Err(SyncError::Superseded),
                            Err(save) => tracing::warn!(error = %save, "could not checkpoint a stopping run"),
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
        let held = self.close(&scope, &state.progress.sites, &state.seen, &mut counts).await?;
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
        let progress = serde_json::to_string(&state.progress).map_err(|e| StoreError::Dynamo(Box::new(e)))?;
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

    async fn users(&self, scope: &Scope, state: &mut State) -> Result<Flow, SyncError> {
        let tokens = match self.credential {
            Credential::Oauth(tokens) => tokens,
            Credential::Admin { key, org_id, .. } => return self.admin_users(scope, state, key, org_id).await,
        };
        let cloud_id = state.progress.sites[state.progress.site].clone();
        let cloud = cloud_id.as_str();
        // The page size Jira actually serves, learned as pages come, so a page's budget is what it will cost.
        let served = &AtomicU64::new(USERS_SERVED_GUESS);
        let fetch = |start, _| async move {
            let token = self.token(tokens).await?;
            let estimate = 1 + 2 * served.load(Ordering::Relaxed);
            let call = self.directory.users_page(&token, cloud, start);
            self.metered(Some(cloud), estimate, call, |p| 1 + 2 * p.len() as u64).await
        };
        // A bare array: only an empty page ends it, and the next page starts after what came back (Jira serves
        // 100 users a page whatever `maxResults` asks, and may serve fewer mid-list).
        self.pages(scope, state, fetch, |page: Vec<JiraUser>, start| {
            served.fetch_max(page.len() as u64, Ordering::Relaxed);
            let next = if page.is_empty() { Next::Last } else { Next::Offset(start + page.len()) };
            (page.iter().map(records::user).collect(), next)
        })
        .await
    }

    /// Reads a site's pages, fetching each next page while the previous one is compared and written, so the
    /// mirror's work hides behind Atlassian's latency. `split` turns a page (and the offset it was read at) into its
    /// records and where the next page is.
    async fn pages<P, F, Fut>(
        &self,
        scope: &Scope,
        state: &mut State,
        fetch: F,
        split: impl Fn(P, usize) -> (Vec<Record>, Next),
    ) -> Result<Flow, SyncError>
    where
        F: Fn(usize, Option<String>) -> Fut,
        Fut: Future<Output = Result<(P, u64), SyncError>>,
    {
        let mut fetched = fetch(state.progress.offset, state.progress.cursor.clone()).await?;
        loop {
            let (page, points) = fetched;
            let (records, next) = split(page, state.progress.offset);
            // A page this invocation would read only to drop it when it pauses is not read ahead: it would cost its
            // points twice.
            let pausing =
                self.pacing.must_pause(state.pages + 1, state.progress.counts.points + points - state.points_before);
            let ahead = match &next {
                Next::Offset(start) => Some((*start, None)),
                Next::Cursor(cursor) => Some((0, Some(cursor.clone()))),
                Next::Last => None,
            };
            let prefetch = async {
                match &ahead {
                    Some((start, cursor)) if !pausing => Some(fetch(*start, cursor.clone()).await),
                    _ => None,
                }
            };
            let (applied, prefetched) = join(self.apply(scope, state, records, (1, points)), prefetch).await;
            applied?;
            match next {
                Next::Offset(start) => state.progress.offset = start,
                Next::Cursor(cursor) => state.progress.cursor = Some(cursor),
                Next::Last => state.progress.next_site(),
            }
            if let Some(paused) = self.after_page(state).await? {
                return Ok(paused);
            }
            fetched = match (prefetched, ahead) {
                (Some(result), _) => result?,
                (None, Some((start, cursor))) => fetch(start, cursor).await?,
                (None, None) => return Ok(Flow::SiteDone),
            };
        }
    }

    async fn projects(&self, scope: &Scope, state: &mut State) -> Result<Flow, SyncError> {
        let cloud_id = state.progress.sites[state.progress.site].clone();
        let cloud = cloud_id.as_str();
        let fetch = |start, _| async move {
            let cost = |p: &Page<JiraProject>| 1 + p.values.len() as u64;
            match self.credential {
                Credential::Oauth(tokens) => {
                    let token = self.token(tokens).await?;
                    let estimate = 1 + atlassian::rest::PROJECTS_PAGE as u64;
                    self.metered(Some(cloud), estimate, self.directory.projects_page(&token, cloud, start), cost).await
                }
                Credential::Admin { site: Some(login), .. } => {
                    self.metered(None, 0, self.directory.site_projects_page(login, start), cost).await
                }
                Credential::Admin { site: None, .. } => Err(SyncError::NotAvailable),
            }
        };
        self.pages(scope, state, fetch, |page: Page<JiraProject>, start| {
            let next = if page.is_last() { Next::Last } else { Next::Offset(start + page.values.len()) };
            (page.values.iter().map(|p| records::project(&cloud_id, p)).collect(), next)
        })
        .await
    }

    async fn spaces(&self, scope: &Scope, state: &mut State) -> Result<Flow, SyncError> {
        let cloud_id = state.progress.sites[state.progress.site].clone();
        let cloud = cloud_id.as_str();
        let fetch = |_, cursor: Option<String>| async move {
            let cost = |p: &SpacesPage| 1 + p.results.len() as u64;
            match self.credential {
                Credential::Oauth(tokens) => {
                    let token = self.token(tokens).await?;
                    let estimate = 1 + atlassian::rest::SPACES_PAGE as u64;
                    let call = self.directory.spaces_page(&token, cloud, cursor.as_deref());
                    self.metered(Some(cloud), estimate, call, cost).await
                }
                Credential::Admin { site: Some(login), .. } => {
                    self.metered(None, 0, self.directory.site_spaces_page(login, cursor.as_deref()), cost).await
                }
                Credential::Admin { site: None, .. } => Err(SyncError::NotAvailable),
            }
        };
        self.pages(scope, state, fetch, |page: SpacesPage, _| {
            let records = page.results.iter().map(|s| records::space(&cloud_id, s)).collect();
            (records, page.next.map_or(Next::Last, Next::Cursor))
        })
        .await
    }

    /// The org's directory from the Admin API: v2 (every directory), or v1 (managed accounts) where the org has no
    /// v2. A v1 position is a full URL, so a resumed run stays on the generation it started with. The Admin API
    /// has its own rate limits, outside the Jira/Confluence points quota: its calls cost no points.
    async fn admin_users(
        &self,
        scope: &Scope,
        state: &mut State,
        key: &AdminKey,
        org_id: &str,
    ) -> Result<Flow, SyncError> {
        let fetch = |_, cursor: Option<String>| async move {
            let page = match cursor.as_deref() {
                Some(url) if url.starts_with("http") => self.directory.users_v1(key, org_id, Some(url)).await,
                cursor => match self.directory.users_v2(key, org_id, None, cursor).await {
                    Err(ApiError::NotFound) if cursor.is_none() => self.directory.users_v1(key, org_id, None).await,
                    other => other,
                },
            };
            Ok::<_, SyncError>((page?, 0))
        };
        self.pages(scope, state, fetch, |page: AdminPage<AdminUser>, _| {
            let records = page.data.iter().map(records::admin_user).collect();
            (records, page.next.map_or(Next::Last, Next::Cursor))
        })
        .await
    }

    /// A user's `sites`: the cloud ids it was seen on. The Admin API lists the org's directory, not who is on which
    /// site, so an admin-key connection's users carry none.
    fn user_sites(&self, seen_on: Vec<String>) -> Value {
        match self.credential {
            Credential::Oauth(_) => Value::from(seen_on),
            Credential::Admin { .. } => Value::Array(Vec::new()),
        }
    }

    /// The latest a wait for the quota may last inside this invocation: past it, Lambda would cut the run short.
    fn latest_sleep(&self) -> Option<Instant> {
        let margin = self.pacing.margin.min(Duration::from_secs(30));
        self.pacing.deadline.and_then(|deadline| deadline.checked_sub(margin))
    }

    /// An access token that lasts what this invocation may still read.
    async fn token(&self, tokens: &dyn TokenSource) -> Result<AccessToken, SyncError> {
        tokens.token(self.pacing.token_horizon()).await
    }

    /// One request under the points quota: waits for a balance in `site`'s pool that covers `estimate`, makes the
    /// call, charges what it cost (1 a request, +2 a user or group, +1 a project or space, as Atlassian counts);
    /// answers the page and its points. A quota 429 blocks the pool it names for every worker. Requests made with a
    /// site's API token (`site: None`) are outside the app's quota (Atlassian keeps API-token traffic on burst
    /// limits): their points are counted, not drawn.
    async fn metered<T>(
        &self,
        site: Option<&str>,
        estimate: u64,
        call: impl Future<Output = Result<T, ApiError>>,
        points: impl FnOnce(&T) -> u64,
    ) -> Result<(T, u64), SyncError> {
        let reserved = match site {
            Some(site) => self.budget.before(site, estimate, self.latest_sleep()).await?,
            None => Reserved::NONE,
        };
        let answer = match call.await {
            Ok(answer) => answer,
            Err(error) => {
                if let Some(site) = site {
                    self.budget.spent(site, reserved, 0);
                }
                if let (Some(site), ApiError::RateLimited { retry_after, reason: Some(reason) }) = (site, &error)
                    && error.is_quota_exhausted()
                {
                    let until = OffsetDateTime::now_utc() + retry_after.unwrap_or(DEFAULT_RATE_LIMIT_WAIT);
                    self.budget.blocked(site, reason, until).await;
                }
                return Err(error.into());
            }
        };
        let cost = points(&answer);
        if let Some(site) = site {
            self.budget.spent(site, reserved, cost);
        }
        Ok((answer, cost))
    }
}
