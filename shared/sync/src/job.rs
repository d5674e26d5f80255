//! One sync job, as a worker runs it for a (connection, object type): take the run's lease, get a valid access
//! token (refreshing it rotation-safely), run the engine from its checkpoint if it has one, and record how it ended.
//! A run that must pause enqueues its own continuation (the same run id) and stays `running`. A revoked grant ends
//! the run `needs_reauth` (and the connection with it); a type whose product no site has ends `not_available`.

use crate::budget::Budget;
use crate::engine::{self, Credential, Pacing, Resume, Step, SyncError};
use crate::queue::{Job, JobQueue};
use atlassian::{AdminApi, ApiError, AtlassianApi, DirectoryApi};
use std::time::Instant;
use store::mirror::{MirrorStore, ObjectType};
use store::{
    CheckpointStore, ConnectionMode, ConnectionStatus, ConnectionStore, CredentialStore, RunCounts, RunRecord,
    RunStatus, RunStore, StoreError,
};
use thiserror::Error;
use time::{Duration, OffsetDateTime};
use tokens::refresh::{self, RefreshError, RefreshPolicy};
use tokens::{KeyRing, credentials};

/// How long a run's lease lasts: past the longest Lambda run (15 minutes).
pub const RUN_LEASE: Duration = Duration::minutes(16);

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
}

/// How a job ended, for the worker's answer to its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The run finished; its record says how (succeeded, needs_reauth, not_available).
    Finished(RunStatus, RunCounts),
    /// The run paused at a checkpoint and its continuation is queued.
    Continued(RunCounts),
    /// Another run of the same (connection, type) holds the lease, or another invocation of this run moved it on:
    /// nothing to do.
    AlreadyRunning,
    /// The connection is gone or no longer active, or a continuation's run has already ended.
    Skipped,
}

#[derive(Debug, Error)]
pub enum JobError {
    /// Worth another delivery: rate limits, Atlassian or DynamoDB trouble. The run is recorded `failed`.
    #[error("the sync failed and may succeed later: {0}")]
    Retryable(String),
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
    if connection.status != ConnectionStatus::Active {
        return Ok(Outcome::Skipped);
    }
    let saved = deps.store.load_checkpoint(connection_id, object_type).await?;
    // Another run's checkpoint is abandoned once this run holds the lease: it is dropped below, so a late
    // continuation of that run cannot resume it with an outdated seen-set.
    let abandoned = saved.as_ref().is_some_and(|(c, _)| c.run_id != run_id);
    let saved = saved.filter(|(c, _)| c.run_id == run_id);
    if job.run_id.is_some() && saved.is_none() {
        // The run this continues has finished (or another run replaced it): nothing is left to do.
        return Ok(Outcome::Skipped);
    }
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
        object_type,
        run_id: run_id.to_owned(),
        status: RunStatus::Running,
        started_at: resume.as_ref().map_or(now, Resume::started_at),
        finished_at: None,
        counts: RunCounts::default(),
        error: None,
        lease_until_ms: store::budget::epoch_ms(now + RUN_LEASE),
    };
    if !deps.store.try_start_run(connection_id, &record, now).await? {
        return Ok(Outcome::AlreadyRunning);
    }
    if abandoned {
        deps.store.clear_checkpoint(connection_id, object_type).await?;
    }
    let pacing = Pacing { deadline, ..deps.pacing.clone() };
    let result = sync(deps, &connection, object_type, run_id, resume, pacing, now).await;
    let retry = match result {
        Ok(Step::Done(counts)) => {
            (record.status, record.counts) = (RunStatus::Succeeded, counts);
            None
        }
        Ok(Step::Paused(counts)) => {
            let continuation = Job { run_id: Some(run_id.to_owned()), ..job.clone() };
            if let Err(error) = deps.queue.enqueue(&[continuation]).await {
                // This message comes back and resumes from the checkpoint just saved.
                return Err(JobError::Retryable(format!("could not queue the run's continuation: {error}")));
            }
            record.counts = counts;
            record.lease_until_ms = store::budget::epoch_ms(OffsetDateTime::now_utc() + RUN_LEASE);
            tracing::info!(connection_id, object_type = object_type.as_str(), counts = ?counts, "sync run paused; its continuation is queued");
            deps.store.save_run(connection_id, &record).await?;
            return Ok(Outcome::Continued(counts));
        }
        Err(Failure::Superseded) => return Ok(Outcome::AlreadyRunning),
        Err(Failure::NotAvailable(reason)) => {
            (record.status, record.error) = (RunStatus::NotAvailable, Some(reason));
            None
        }
        Err(Failure::NeedsReauth(reason)) => {
            (record.status, record.error) = (RunStatus::NeedsReauth, Some(reason));
            None
        }
        Err(Failure::Failed(reason)) => {
            (record.status, record.error) = (RunStatus::Failed, Some(reason.clone()));
            Some(reason)
        }
    };
    record.finished_at = Some(OffsetDateTime::now_utc());
    tracing::info!(connection_id, object_type = object_type.as_str(), status = ?record.status, counts = ?record.counts, "sync run ended");
    deps.store.save_run(connection_id, &record).await?;
    match retry {
        Some(reason) => Err(JobError::Retryable(reason)),
        None => Ok(Outcome::Finished(record.status, record.counts)),
    }
}

enum Failure {
    Superseded,
    NotAvailable(String),
    NeedsReauth(String),
    Failed(String),
}

async fn sync<S, M, A, B, Q>(
    deps: &Deps<'_, S, M, A, B, Q>,
    connection: &store::Connection,
    object_type: ObjectType,
    run_id: &str,
    resume: Option<Resume>,
    pacing: Pacing,
    now: OffsetDateTime,
) -> Result<Step, Failure>
where
    S: ConnectionStore + CredentialStore + RunStore + CheckpointStore,
    M: MirrorStore,
    A: AtlassianApi + DirectoryApi + AdminApi,
    B: Budget,
{
    if connection.mode == ConnectionMode::AdminApiKey {
        return sync_admin(deps, connection, object_type, run_id, resume, pacing, now).await;
    }
    let token =
        refresh::access_token(deps.store, deps.atlassian, deps.keys, deps.refresh, &connection.connection_id, run_id)
            .await
            .map_err(|error| match error {
                RefreshError::NeedsReauth { reason } => Failure::NeedsReauth(reason),
                other => Failure::Failed(other.to_string()),
            })?;
    let connection = &refresh_sites(deps, connection, &token).await?;
    let sites = engine::sites_for(connection, object_type);
    if resume.is_none() {
        engine::availability(connection, object_type).map_err(Failure::NotAvailable)?;
    }
    let run = engine::Run {
        directory: deps.atlassian,
        mirror: deps.mirror,
        budget: deps.budget,
        checkpoints: deps.store,
        credential: Credential::Oauth(&token),
        connection_id: &connection.connection_id,
        run_id,
        sites,
        object_type,
        now,
        pacing,
    };
    run.run(resume).await.map_err(|error| match error {
        SyncError::Superseded => Failure::Superseded,
        SyncError::NotAvailable => Failure::NotAvailable("no site for this object type".into()),
        // A token refused mid-run: the grant was revoked since the refresh.
        SyncError::Atlassian(atlassian::ApiError::Unauthorized { .. }) => {
            Failure::Failed("Atlassian refused the access token or a scope; the next run refreshes it".into())
        }
        other => Failure::Failed(format!("{other}: {}", source_chain(&other))),
    })
}

/// A run of an admin-key connection: no token to refresh; users and groups come from the Admin API, projects and
/// spaces from the site. A key Atlassian refuses (expired or revoked) turns the connection `needs_reauth` with the
/// reason, until `PATCH /connections/{id}` brings a new one; a refused site token ends the run `needs_reauth`.
async fn sync_admin<S, M, A, B, Q>(
    deps: &Deps<'_, S, M, A, B, Q>,
    connection: &store::Connection,
    object_type: ObjectType,
    run_id: &str,
    resume: Option<Resume>,
    pacing: Pacing,
    now: OffsetDateTime,
) -> Result<Step, Failure>
where
    S: ConnectionStore + CredentialStore + RunStore + CheckpointStore,
    M: MirrorStore,
    A: DirectoryApi + AdminApi,
    B: Budget,
{
    let id = &connection.connection_id;
    let secrets = credentials::open_admin(deps.keys, id, &connection.credentials)
        .map_err(|e| Failure::Failed(format!("the connection's credentials could not be opened: {e}")))?;
    let org_id = connection.org_id.as_deref().ok_or_else(|| Failure::Failed("the connection has no org id".into()))?;
    let key = secrets.key();
    let login =
        connection.sites.first().and_then(|s| url::Url::parse(&s.url).ok()).and_then(|u| secrets.site_login(&u));
    if resume.is_none() {
        engine::availability(connection, object_type).map_err(Failure::NotAvailable)?;
    }
    let directory_type = matches!(object_type, ObjectType::Users | ObjectType::Groups);
    // The directory is one "site" of its own: the org.
    let sites = if directory_type { vec![format!("org:{org_id}")] } else { engine::sites_for(connection, object_type) };
    let run = engine::Run {
        directory: deps.atlassian,
        mirror: deps.mirror,
        budget: deps.budget,
        checkpoints: deps.store,
        credential: Credential::Admin { key: &key, org_id, site: login.as_ref() },
        connection_id: id,
        run_id,
        sites,
        object_type,
        now,
        pacing,
    };
    match run.run(resume).await {
        Ok(step) => Ok(step),
        Err(SyncError::Superseded) => Err(Failure::Superseded),
        Err(SyncError::NotAvailable) => Err(Failure::NotAvailable("no site token for this object type".into())),
        // The key itself is refused (expired, revoked) or lost its rights: no later run can do better, so the
        // connection waits for a new key.
        Err(SyncError::Atlassian(ApiError::Unauthorized { status, expired })) if directory_type => {
            let reason = match (status, expired) {
                (401, true) => {
                    "The org admin API key has expired. Create a new one at admin.atlassian.com → Settings → API keys \
                     and PATCH the connection with it."
                }
                (401, false) => {
                    "Atlassian no longer accepts the org admin API key (revoked?). Create a new one at \
                     admin.atlassian.com → Settings → API keys and PATCH the connection with it."
                }
                _ => {
                    "The org admin API key may no longer read the org's users and groups. An org admin creates one \
                     that can at admin.atlassian.com → Settings → API keys; PATCH the connection with it."
                }
            };
            let marked = deps.store.mark_needs_reauth(id, connection.token_version, reason, now).await;
            if let Err(error) = marked {
                return Err(Failure::Failed(format!("marking the connection needs_reauth failed: {error}")));
            }
            Err(Failure::NeedsReauth(reason.into()))
        }
        Err(SyncError::Atlassian(ApiError::Unauthorized { .. })) => Err(Failure::NeedsReauth(
            "The site's email and API token no longer sign in; PATCH the connection with a new site_api_token.".into(),
        )),
        Err(other) => Err(Failure::Failed(format!("{other}: {}", source_chain(&other)))),
    }
}

/// Compares the connection's sites with what the grant reaches now: a site gone from `accessible-resources` is
/// marked `lost_at` (and no longer synced, so its objects end `deleted`); a site added to the grant is picked up.
async fn refresh_sites<S, M, A, B, Q>(
    deps: &Deps<'_, S, M, A, B, Q>,
    connection: &store::Connection,
    token: &atlassian::AccessToken,
) -> Result<store::Connection, Failure>
where
    S: ConnectionStore,
    A: AtlassianApi,
{
    let resources = deps
        .atlassian
        .accessible_resources(token)
        .await
        .map_err(|e| Failure::Failed(format!("accessible-resources: {e}")))?;
    let resources = tokens::connect::merge_sites(resources);
    let now = OffsetDateTime::now_utc();
    let mut sites: Vec<store::Site> = connection
        .sites
        .iter()
        .map(|site| {
            let reachable = resources.iter().any(|r| r.id == site.cloud_id);
            let lost_at = if reachable { None } else { site.lost_at.or(Some(now)) };
            store::Site { lost_at, ..site.clone() }
        })
        .collect();
    for resource in &resources {
        if !sites.iter().any(|s| s.cloud_id == resource.id) {
            sites.push(store::Site {
                cloud_id: resource.id.clone(),
                url: resource.url.clone(),
                name: resource.name.clone(),
                products: tokens::scopes::products(&resource.scopes),
                lost_at: None,
            });
        }
    }
    if sites == connection.sites {
        return Ok(connection.clone());
    }
    tracing::warn!(connection_id = %connection.connection_id, "the sites this grant reaches changed");
    deps.store
        .update_sites(&connection.connection_id, &sites, now)
        .await
        .map_err(|e| Failure::Failed(e.to_string()))?;
    Ok(store::Connection { sites, ..connection.clone() })
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}
