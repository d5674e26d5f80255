//! How one invocation of a run reads: the plan it reads with, the gate that stops it when its connection is
//! revoked, the source its credential opens (an OAuth grant's sites through a rotation-safe token, or an org admin
//! key's directory and site token), and how what stopped it becomes a [`Failure`] the job records.

use super::*;

/// What one invocation of a run reads with.
pub(super) struct Plan<'r> {
    pub(super) object_type: ObjectType,
    pub(super) run_id: &'r str,
    pub(super) resume: Option<Resume>,
    pub(super) pacing: Pacing,
    pub(super) guard: DeletionGuard,
    pub(super) now: OffsetDateTime,
}

/// Open while the connection is not revoked (read from the store, strongly consistent, each time it is asked).
pub(super) struct ConnectionGate<'a, S> {
    pub(super) store: &'a S,
    pub(super) connection_id: &'a str,
}

impl<S: ConnectionStore> engine::Gate for ConnectionGate<'_, S> {
    fn open(&self) -> futures_util::future::BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let connection = self.store.get_connection(self.connection_id).await?;
            Ok(connection.is_some_and(|c| c.status != ConnectionStatus::Revoked))
        })
    }
}

/// How a run that did not get to done ends.
pub(super) enum Failure {
    Superseded,
    /// The connection was disconnected during the run.
    Revoked,
    NotAvailable(NotAvailable),
    /// The grant or the key is gone: the reason, for people.
    NeedsReauth(String),
    /// Worth another try soon: Atlassian or DynamoDB trouble, a token refresh that did not go through.
    Transient(RunError),
    /// No retry can do better (a corrupt connection, Atlassian refusing the request itself).
    Failed(RunError),
}

/// Why a run cannot read its type at all.
#[derive(Debug, Error)]
pub(super) enum NotAvailable {
    #[error(transparent)]
    Connection(#[from] store::Unavailable),
    #[error("no site of this connection has the product this object type comes from")]
    NoSite,
    #[error("no site token for this object type")]
    NoSiteToken,
}

/// What stopped a run (its cause chain goes to the logs and the run record).
#[derive(Debug, Error)]
pub(super) enum RunError {
    #[error("the sync failed")]
    Sync(#[source] SyncError),
    /// A token refused mid-run: the grant may have been revoked since the refresh; the retry's refresh tells.
    #[error("Atlassian refused the access token or a scope; the retry refreshes it")]
    TokenRefused(#[source] SyncError),
    #[error("accessible-resources failed")]
    Sites(#[source] ApiError),
    #[error("the connection's sites could not be saved")]
    SaveSites(#[source] StoreError),
    #[error("the connection's credentials could not be opened")]
    Credentials(#[source] tokens::crypto::CryptoError),
    #[error("the connection has no org id")]
    NoOrgId,
    #[error("marking the connection needs_reauth failed")]
    MarkNeedsReauth(#[source] StoreError),
}

impl RunError {
    /// A stable code and a short message for the run record (what a client may see; the chain is in the logs).
    pub(super) fn summary(&self) -> (&'static str, String) {
        let sync = |error: &SyncError| match error {
            SyncError::Atlassian(api) => ("atlassian_error", api.to_string()),
            SyncError::Store(_) | SyncError::Budget(BudgetError::Store(_)) => {
                ("store_error", "the connector's state store failed".into())
            }
            SyncError::Token(e) => ("token_refresh_failed", e.to_string()),
            other => ("internal_error", other.to_string()),
        };
        match self {
            Self::Sync(error) => sync(error),
            Self::TokenRefused(_) => ("token_refused", self.to_string()),
            Self::Sites(api) => ("atlassian_error", format!("accessible-resources: {api}")),
            Self::SaveSites(_) | Self::MarkNeedsReauth(_) => {
                ("store_error", "the connector's state store failed".into())
            }
            Self::Credentials(_) | Self::NoOrgId => ("internal_error", self.to_string()),
        }
    }
}

/// How an engine error ends the run.
pub(super) fn failure(error: SyncError) -> Failure {
    let transient = match &error {
        SyncError::Superseded => return Failure::Superseded,
        SyncError::Revoked => return Failure::Revoked,
        SyncError::NotAvailable => return Failure::NotAvailable(NotAvailable::NoSite),
        SyncError::Atlassian(ApiError::Unauthorized { .. }) => {
            return Failure::Transient(RunError::TokenRefused(error));
        }
        SyncError::Atlassian(e) => e.is_transient(),
        SyncError::Token(RefreshError::NeedsReauth { reason }) => return Failure::NeedsReauth(reason.clone()),
        SyncError::Token(e) => e.retryable(),
        SyncError::Budget(_) | SyncError::Store(_) | SyncError::Checkpoint(_) => true,
    };
    if transient { Failure::Transient(RunError::Sync(error)) } else { Failure::Failed(RunError::Sync(error)) }
}

pub(super) async fn sync<S, M, A, B, Q>(
    deps: &Deps<'_, S, M, A, B, Q>,
    connection: &store::Connection,
    plan: Plan<'_>,
) -> Result<Step, Failure>
where
    S: ConnectionStore + CredentialStore + RunStore + CheckpointStore,
    M: MirrorStore,
    A: AtlassianApi + DirectoryApi + AdminApi,
    B: Budget,
{
    if connection.mode == ConnectionMode::AdminApiKey {
        return sync_admin(deps, connection, plan).await;
    }
    // The lease owner names this invocation: two deliveries of one run must not both refresh.
    let owner = format!("{}/{}", plan.run_id, nonce());
    let tokens = Refreshing::new(deps.store, deps.atlassian, deps.keys, deps.refresh, &connection.connection_id, owner);
    let ended = sync_oauth(deps, connection, &tokens, plan).await;
    if !matches!(&ended, Err(Failure::Transient(RunError::TokenRefused(_)))) {
        return ended;
    }
    // Atlassian refused a token that had not expired: a revoked grant shows now, in the refresh; a token that
    // refreshes is tried again (the run waits and resumes with it).
    match tokens.after_refusal().await {
        Err(SyncError::Token(RefreshError::NeedsReauth { reason })) => Err(Failure::NeedsReauth(reason)),
        _ => ended,
    }
}

pub(super) async fn sync_oauth<S, M, A, B, Q>(
    deps: &Deps<'_, S, M, A, B, Q>,
    connection: &store::Connection,
    tokens: &Refreshing<'_, S, A>,
    plan: Plan<'_>,
) -> Result<Step, Failure>
where
    S: ConnectionStore + CredentialStore + RunStore + CheckpointStore,
    M: MirrorStore,
    A: AtlassianApi + DirectoryApi + AdminApi,
    B: Budget,
{
    let Plan { object_type, run_id, resume, pacing, guard, now } = plan;
    let token = tokens.token(pacing.token_horizon()).await.map_err(failure)?;
    let connection = &refresh_sites(deps, connection, &token).await?;
    let sites = connection.sites_for(object_type);
    if resume.is_none() {
        connection.availability(object_type).map_err(|e| Failure::NotAvailable(e.into()))?;
    }
    let source = OauthSource::new(deps.atlassian, deps.budget, tokens, pacing.clone());
    let run = engine::Run {
        source: &source,
        mirror: deps.mirror,
        checkpoints: deps.store,
        gate: &ConnectionGate { store: deps.store, connection_id: &connection.connection_id },
        connection_id: &connection.connection_id,
        run_id,
        sites,
        object_type,
        now,
        pacing,
        guard,
    };
    run.run(resume).await.map_err(failure)
}

/// A run of an admin-key connection: no token to refresh; users and groups come from the Admin API, projects and
/// spaces from the site. A key Atlassian refuses (expired or revoked) turns the connection `needs_reauth` with the
/// reason, until `PATCH /connections/{id}` brings a new one; a refused site token ends the run `needs_reauth`.
pub(super) async fn sync_admin<S, M, A, B, Q>(
    deps: &Deps<'_, S, M, A, B, Q>,
    connection: &store::Connection,
    plan: Plan<'_>,
) -> Result<Step, Failure>
where
    S: ConnectionStore + CredentialStore + RunStore + CheckpointStore,
    M: MirrorStore,
    A: DirectoryApi + AdminApi,
    B: Budget,
{
    let Plan { object_type, run_id, resume, pacing, guard, now } = plan;
    let id = &connection.connection_id;
    let secrets = credentials::open_admin(deps.keys, id, &connection.credentials)
        .map_err(|e| Failure::Failed(RunError::Credentials(e)))?;
    let org_id = connection.org_id.as_deref().ok_or(Failure::Failed(RunError::NoOrgId))?;
    let key = secrets.key();
    let login =
        connection.sites.first().and_then(|s| url::Url::parse(&s.url).ok()).and_then(|u| secrets.site_login(&u));
    if resume.is_none() {
        connection.availability(object_type).map_err(|e| Failure::NotAvailable(e.into()))?;
    }
    let directory_type = matches!(object_type, ObjectType::Users | ObjectType::Groups);
    // The directory is one "site" of its own: the org.
    let sites = if directory_type { vec![format!("org:{org_id}")] } else { connection.sites_for(object_type) };
    let source = AdminSource::new(deps.atlassian, &key, org_id, login.as_ref());
    let run = engine::Run {
        source: &source,
        mirror: deps.mirror,
        checkpoints: deps.store,
        gate: &ConnectionGate { store: deps.store, connection_id: &connection.connection_id },
        connection_id: id,
        run_id,
        sites,
        object_type,
        now,
        pacing,
        guard,
    };
    match run.run(resume).await {
        Ok(step) => Ok(step),
        Err(SyncError::NotAvailable) => Err(Failure::NotAvailable(NotAvailable::NoSiteToken)),
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
            marked.map_err(|e| Failure::Failed(RunError::MarkNeedsReauth(e)))?;
            Err(Failure::NeedsReauth(reason.into()))
        }
        Err(SyncError::Atlassian(ApiError::Unauthorized { .. })) => Err(Failure::NeedsReauth(
            "The site's email and API token no longer sign in; PATCH the connection with a new site_api_token.".into(),
        )),
        Err(other) => Err(failure(other)),
    }
}

/// Compares the connection's sites with what the grant reaches now: a site gone from `accessible-resources` is
/// marked `lost_at` (and no longer synced, so its objects end `deleted`); a site added to the grant is picked up.
pub(super) async fn refresh_sites<S, M, A, B, Q>(
    deps: &Deps<'_, S, M, A, B, Q>,
    connection: &store::Connection,
    token: &atlassian::AccessToken,
) -> Result<store::Connection, Failure>
where
    S: ConnectionStore,
    A: AtlassianApi,
{
    let resources = deps.atlassian.accessible_resources(token).await.map_err(|e| match e {
        // The token itself refused: the run replaces it (see `sync`), as for a refusal mid-run.
        ApiError::Unauthorized { .. } => Failure::Transient(RunError::TokenRefused(SyncError::Atlassian(e))),
        e if e.is_transient() => Failure::Transient(RunError::Sites(e)),
        e => Failure::Failed(RunError::Sites(e)),
    })?;
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
        .map_err(|e| Failure::Transient(RunError::SaveSites(e)))?;
    Ok(store::Connection { sites, ..connection.clone() })
}
