//! The management API, for the SaaS backend (`Authorization: Bearer <management key>`):
//!
//! - `POST /connect-sessions` `{"tenant_id", "return_url"?}` → `201 {"session_id", "connect_url", "expires_at"}`
//! - `POST /connections` `{"tenant_id", "mode": "admin_api_key", "org_id", "admin_api_key", "site_url"?,
//!   "site_email"?, "site_api_token"?, "products"?}` → `201` the connection, once Atlassian accepted the credentials
//!   (each way they can be wrong is its own `422` with what to fix; nothing is stored then)
//! - `PATCH /connections/{id}` `{"admin_api_key"?, "site_url"?, "site_email"?, "site_api_token"?}` → `200` the
//!   admin-key connection with new credentials, validated the same way, back to `active` with its mirror kept
//! - `GET /connections?tenant_id=…` → `{"items": [...]}`
//! - `GET /connections/{id}` → the connection (status, sites, scopes, times, latest sync run per type; never
//!   tokens)
//! - `GET /connections/{id}/objects/{users|groups|projects|spaces}?limit=&cursor=` → `{"items", "next_cursor"}`
//! - `GET /connections/{id}/objects/groups/{group_id}/members?limit=&cursor=` → `{"items": [account ids],
//!   "next_cursor", "member_count"}`: every member of a group of any size
//! - `POST /connections/{id}/sync` `{"object_types": [...]}` (default: all) → `202`, one job per type queued
//! - `DELETE /connections/{id}` → disconnects: tokens destroyed at once, mirrored data removed, status `revoked`
//! - `{GET,POST,PUT,DELETE} /connections/{id}/proxy/{jira|confluence|admin|site}/{path…}` → Atlassian's answer
//!   (status, body, rate-limit headers) to the call passed through the connection (`routes::proxy`)
//!
//! Every error of the connector's own is JSON `{"error": {"code", "message"}}`.

use jobs::JobQueue;
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use store::mirror::MirrorStore;
use store::{BudgetStore, ConnectionStore, CredentialStore, RunStore, SessionStore};
use tokens::connect::SessionSettings;

mod cadences;
pub mod input;
mod keys;
mod routes;
mod views;

pub use cadences::Cadences;
pub use keys::{InvalidKeys, ManagementKeys};
pub use runtime::answers::ApiError;
pub use views::{ConnectionView, RunView};

pub struct Deps<S, M, Q, A> {
    pub store: S,
    pub mirror: M,
    pub queue: Q,
    /// Atlassian: the Admin API and sites to validate admin-key connections, the token endpoint and everything
    /// else for the proxy.
    pub atlassian: A,
    /// Seals the credentials of admin-key connections.
    pub keys: tokens::KeyRing,
    /// The keys a request may present, re-read from the secret every few minutes (see [`ManagementKeys`]).
    pub management_keys: std::sync::Arc<std::sync::RwLock<ManagementKeys>>,
    /// How often each type is scheduled, for the status API's `next_due_at`.
    pub cadences: Cadences,
    pub sessions: SessionSettings,
    /// How the proxy runs: writes allowed or not, the quota it draws from.
    pub proxy: proxy::Settings,
}

pub async fn handle<S, M, Q, A>(deps: &Deps<S, M, Q, A>, request: Request) -> Result<Response<Body>, lambda_http::Error>
where
    S: SessionStore + ConnectionStore + RunStore + CredentialStore + BudgetStore,
    M: MirrorStore,
    Q: JobQueue,
    A: atlassian::AdminApi + atlassian::AtlassianApi + atlassian::ForwardApi,
{
    if !authorized(deps, &request) {
        return Ok(ApiError::unauthorized().into_response());
    }
    let answer = match input::check(&request) {
        Ok(()) => route(deps, &request).await,
        Err(refused) => Err(refused),
    };
    Ok(answer.unwrap_or_else(ApiError::into_response))
}

async fn route<S, M, Q, A>(deps: &Deps<S, M, Q, A>, request: &Request) -> routes::Answer
where
    S: SessionStore + ConnectionStore + RunStore + CredentialStore + BudgetStore,
    M: MirrorStore,
    Q: JobQueue,
    A: atlassian::AdminApi + atlassian::AtlassianApi + atlassian::ForwardApi,
{
    use routes::{connections, objects, proxy, sessions, sync};
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Every id in the path, checked once (a malformed one is a 400, whichever route it would have gone to).
    if let ["connections", id, rest @ ..] = segments.as_slice() {
        input::id("the connection id", id)?;
        if let ["objects", "groups", group_id, ..] = rest {
            input::id("the group id", group_id)?;
        }
    }
    let method = request.method().clone();
    match (segments.as_slice(), &method) {
        (["connect-sessions"], &Method::POST) => sessions::create(deps, request).await,
        (["connections"], &Method::GET) => connections::list(deps, request).await,
        (["connections"], &Method::POST) => connections::create(deps, request).await,
        (["connections", id], &Method::GET) => connections::get(deps, id).await,
        (["connections", id], &Method::DELETE) => connections::disconnect(deps, id).await,
        (["connections", id], &Method::PATCH) => connections::update(deps, id, request).await,
        (["connections", id, "objects", object_type], &Method::GET) => {
            objects::list(deps, id, object_type, request).await
        }
        (["connections", id, "objects", "groups", group_id, "members"], &Method::GET) => {
            objects::members(deps, id, group_id, request).await
        }
        (["connections", id, "sync"], &Method::POST) => sync::request(deps, id, request).await,
        (["connections", id, "proxy", product, ..], _) => proxy::forward(deps, id, product, request).await,
        (
            ["connect-sessions"]
            | ["connections"]
            | ["connections", _]
            | ["connections", _, "objects", _]
            | ["connections", _, "objects", "groups", _, "members"]
            | ["connections", _, "sync"],
            _,
        ) => Err(ApiError::new(405, "method_not_allowed", "This method is not allowed here.")),
        _ => Err(ApiError::new(404, "not_found", "No such route.")),
    }
}

fn authorized<S, M, Q, A>(deps: &Deps<S, M, Q, A>, request: &Request) -> bool {
    request
        .headers()
        .get(lambda_http::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|presented| {
            let keys = deps.management_keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            keys.accepts(presented.trim())
        })
}
