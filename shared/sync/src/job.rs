//! One sync job, as a worker runs it for a (connection, object type): take the run's lease, get a valid access
//! token (refreshing it rotation-safely), run the engine, and record how it ended. A revoked grant ends the run
//! `needs_reauth` (and the connection with it); a type whose product no site has ends `not_available`.

use crate::budget::Budget;
use crate::engine::{self, SyncError};
use atlassian::{AtlassianApi, DirectoryApi};
use store::mirror::{MirrorStore, ObjectType};
use store::{
    ConnectionStatus, ConnectionStore, CredentialStore, RunCounts, RunRecord, RunStatus, RunStore, StoreError,
};
use thiserror::Error;
use time::{Duration, OffsetDateTime};
use tokens::KeyRing;
use tokens::refresh::{self, RefreshError, RefreshPolicy};

/// How long a run's lease lasts: past the longest Lambda run (15 minutes).
pub const RUN_LEASE: Duration = Duration::minutes(16);

pub struct Deps<'a, S, M, A, B> {
    pub store: &'a S,
    pub mirror: &'a M,
    pub atlassian: &'a A,
    /// The app-wide points budget (`budget::SharedBudget` in the worker).
    pub budget: &'a B,
    pub keys: &'a KeyRing,
    pub refresh: &'a RefreshPolicy,
}

/// How a job ended, for the worker's answer to its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The run finished; its record says how (succeeded, needs_reauth, not_available).
    Finished(RunStatus, RunCounts),
    /// Another run of the same (connection, type) holds the lease: nothing to do.
    AlreadyRunning,
    /// The connection is gone or no longer active.
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

pub async fn run<S, M, A, B>(
    deps: &Deps<'_, S, M, A, B>,
    connection_id: &str,
    object_type: ObjectType,
    run_id: &str,
) -> Result<Outcome, JobError>
where
    S: ConnectionStore + CredentialStore + RunStore,
    M: MirrorStore,
    A: AtlassianApi + DirectoryApi,
    B: Budget,
{
    let now = OffsetDateTime::now_utc();
    let Some(connection) = deps.store.get_connection(connection_id).await? else { return Ok(Outcome::Skipped) };
    if connection.status != ConnectionStatus::Active {
        return Ok(Outcome::Skipped);
    }
    let mut record = RunRecord {
        object_type,
        run_id: run_id.to_owned(),
        status: RunStatus::Running,
        started_at: now,
        finished_at: None,
        counts: RunCounts::default(),
        error: None,
        lease_until_ms: store::budget::epoch_ms(now + RUN_LEASE),
    };
    if !deps.store.try_start_run(connection_id, &record, now).await? {
        return Ok(Outcome::AlreadyRunning);
    }
    let result = sync(deps, &connection, object_type, run_id).await;
    record.finished_at = Some(OffsetDateTime::now_utc());
    let retry = match result {
        Ok(counts) => {
            (record.status, record.counts) = (RunStatus::Succeeded, counts);
            None
        }
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
    tracing::info!(connection_id, object_type = object_type.as_str(), status = ?record.status, counts = ?record.counts, "sync run ended");
    deps.store.save_run(connection_id, &record).await?;
    match retry {
        Some(reason) => Err(JobError::Retryable(reason)),
        None => Ok(Outcome::Finished(record.status, record.counts)),
    }
}

enum Failure {
    NotAvailable(String),
    NeedsReauth(String),
    Failed(String),
}

async fn sync<S, M, A, B>(
    deps: &Deps<'_, S, M, A, B>,
    connection: &store::Connection,
    object_type: ObjectType,
    run_id: &str,
) -> Result<RunCounts, Failure>
where
    S: ConnectionStore + CredentialStore + RunStore,
    M: MirrorStore,
    A: AtlassianApi + DirectoryApi,
    B: Budget,
{
    let token =
        refresh::access_token(deps.store, deps.atlassian, deps.keys, deps.refresh, &connection.connection_id, run_id)
            .await
            .map_err(|error| match error {
                RefreshError::NeedsReauth { reason } => Failure::NeedsReauth(reason),
                other => Failure::Failed(other.to_string()),
            })?;
    let connection = &refresh_sites(deps, connection, &token).await?;
    let sites = engine::sites_for(connection, object_type);
    if sites.is_empty() {
        let product = if object_type == ObjectType::Spaces { "Confluence" } else { "Jira" };
        return Err(Failure::NotAvailable(format!("no site this grant reaches has {product} in its granted scopes")));
    }
    let run = engine::Run {
        directory: deps.atlassian,
        mirror: deps.mirror,
        budget: deps.budget,
        token: &token,
        connection_id: &connection.connection_id,
        sites,
        object_type,
        now: OffsetDateTime::now_utc(),
    };
    run.run().await.map_err(|error| match error {
        SyncError::NotAvailable => Failure::NotAvailable("no site for this object type".into()),
        // A token refused mid-run: the grant was revoked since the refresh.
        SyncError::Atlassian(atlassian::ApiError::Unauthorized { .. }) => {
            Failure::Failed("Atlassian refused the access token or a scope; the next run refreshes it".into())
        }
        other => Failure::Failed(format!("{other}: {}", source_chain(&other))),
    })
}

/// Compares the connection's sites with what the grant reaches now: a site gone from `accessible-resources` is
/// marked `lost_at` (and no longer synced, so its objects end `deleted`); a site added to the grant is picked up.
async fn refresh_sites<S, M, A, B>(
    deps: &Deps<'_, S, M, A, B>,
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
