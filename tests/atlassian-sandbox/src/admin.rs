//! The sandbox's Organization Admin API and its sites as Basic-auth clients reach them, for the admin-key connect
//! mode (see the reference, §3 and §6). What it copies from Atlassian:
//!
//! - org admin **API keys** (Bearer), each for one org; a key may be expired (401 "expired"), or scoped without
//!   the right to read users (403 "User has no permission to access resource.");
//! - `GET /admin/v1/orgs`; `GET /admin/v1/orgs/{orgId}/users` (managed accounts, snake_case, `links.next` a **full
//!   URL**); `GET /admin/v2/orgs/{orgId}/directories/-/users` and `…/groups` (camelCase, `limit` 1–100 default 20,
//!   `links.next` a **cursor token**; with a cursor every other parameter is ignored, so the cursor carries the
//!   `groupIds` filter); `POST /admin/v2/orgs/{orgId}/workspaces` (the org's product instances with their
//!   `hostUrl`). v2 can be switched off (`/__sandbox/admin`) to exercise the v1 fallback;
//! - 429s from the fault settings carry `X-RateLimit-Reset` (no `Retry-After`), as the Admin API's own style;
//! - sites at `{sandbox}/site/{name}`, which take Basic `email:api-token` for `rest/api/3/myself` (and Confluence's
//!   `wiki/rest/api/user/current`),
//!   `rest/api/3/project/search` and `wiki/api/v2/spaces` (Confluence only where the site has it), and answer
//!   `_edge/tenant_info` with their cloud id. A site of another org (`globex`) accepts the same tokens.
//! - the sites' `project/search` and `spaces` are API-token traffic, which Atlassian keeps on burst limits only:
//!   their points are counted but not charged to the quota (`quota.rs`), and they carry no quota headers. The
//!   Admin API has no points.
//!
//! Control endpoints: `POST /__sandbox/admin/keys` (`{"org_id"?, "can_read_users"?, "expired"?}` → `{"key"}`),
//! `POST /__sandbox/admin/keys/{key}/expire`, `POST /__sandbox/admin/keys/{key}/restrict` (no more reading users), `POST /__sandbox/api-tokens` (`{"account_id"}` → `{"email",
//! "token"}`), `POST /__sandbox/admin` (`{"v2": bool}`), `DELETE /__sandbox/sites/{cloudId}/confluence` (the site
//! keeps Jira only).

// A test server: a rejection is the response itself, however large.
#![allow(clippy::result_large_err)]

use super::{Sandbox, User};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The seeded org's id and name.
pub const ORG_ID: &str = "4f1e2d3c-0a0b-4c5d-8e9f-0123456789ab";
pub const ORG_NAME: &str = "Acme Corp";
/// A site of another org: tokens sign in to it, but it is not the seeded org's.
pub const FOREIGN_SITE: &str = "globex";

/// The cloud id the foreign site answers with (none of the seeded org's).
pub(super) fn foreign_cloud_id() -> String {
    super::site_id(900)
}

#[derive(Debug, Clone)]
pub(super) struct AdminKey {
    org_id: String,
    can_read_users: bool,
    expired: bool,
}

#[derive(Debug, Default)]
pub(super) struct AdminState {
    pub(super) keys: HashMap<String, AdminKey>,
    /// API token → account id.
    pub(super) api_tokens: HashMap<String, String>,
    pub(super) v2_off: bool,
}

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/admin/v1/orgs", get(orgs))
        .route("/admin/v1/orgs/{org_id}/users", get(v1_users))
        .route("/admin/v2/orgs/{org_id}/directories/{directory}/users", get(v2_users))
        .route("/admin/v2/orgs/{org_id}/directories/{directory}/groups", get(v2_groups))
        .route("/admin/v2/orgs/{org_id}/workspaces", post(workspaces))
        .route("/site/{site}/_edge/tenant_info", get(tenant_info))
        .route("/site/{site}/rest/api/3/myself", get(myself))
        .route("/site/{site}/wiki/rest/api/user/current", get(myself))
        .route("/site/{site}/rest/api/3/project/search", get(site_projects))
        .route("/site/{site}/wiki/api/v2/spaces", get(site_spaces))
        .route("/__sandbox/admin/keys", post(create_key))
        .route("/__sandbox/admin/keys/{key}/expire", post(expire_key))
        .route("/__sandbox/admin/keys/{key}/restrict", post(restrict_key))
        .route("/__sandbox/api-tokens", post(create_api_token))
        .route("/__sandbox/admin", post(set_admin))
        .route("/__sandbox/sites/{cloud_id}/confluence", axum::routing::delete(drop_confluence))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"code": status.as_u16(), "message": message}))).into_response()
}

fn v2_errors(status: StatusCode, code: &str, title: &str) -> Response {
    let body =
        json!({"errors": [{"id": "sandbox", "status": status.as_u16().to_string(), "code": code, "title": title}]});
    (status, axum::Json(body)).into_response()
}

/// The origin the caller reached the sandbox at, for the absolute URLs Atlassian answers with.
fn origin(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn cursor_encode(state: &Value) -> String {
    URL_SAFE_NO_PAD.encode(state.to_string())
}

fn cursor_decode(cursor: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()
}

/// The user's view in the Admin API: the composite `status` of v2 and the account status of v1.
fn statuses(user: &User) -> (&'static str, &'static str, &'static str) {
    // (status, accountStatus, membershipStatus)
    match (user.active, user.suspended) {
        (_, true) => ("suspended", "active", "suspended"),
        (false, _) => ("deactivated", "inactive", "active"),
        (true, false) => ("active", "active", "active"),
    }
}

impl Sandbox {
    /// Faults, then the key: the org it is for (which must be `org_id`, if given) and whether it reads users.
    async fn admin_gate(
        &self,
        headers: &HeaderMap,
        route: &'static str,
        org_id: Option<&str>,
        reads_users: bool,
    ) -> Result<AdminKey, Response> {
        self.faults(route, "admin").await?;
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let Some(key) = self.lock().admin.keys.get(key).cloned() else {
            return Err(error(StatusCode::UNAUTHORIZED, "Unauthorized"));
        };
        if key.expired {
            return Err(error(StatusCode::UNAUTHORIZED, "The API key has expired."));
        }
        if org_id.is_some_and(|o| o != key.org_id) {
            return Err(error(StatusCode::NOT_FOUND, "OrgNotFound"));
        }
        if reads_users && !key.can_read_users {
            let body = json!({
                "timestamp": "2026-01-01T00:00:00.000+00:00", "path": route, "status": 403, "error": "Forbidden",
                "message": "User has no permission to access resource.", "requestId": "sandbox",
            });
            return Err((StatusCode::FORBIDDEN, axum::Json(body)).into_response());
        }
        Ok(key)
    }

    /// Faults, then Basic `email:token` of an account with access to the site; answers the site's cloud id
    /// (or `None` for the foreign site) and the account.
    async fn site_gate(
        &self,
        headers: &HeaderMap,
        site: &str,
        route: &'static str,
        product: &str,
    ) -> Result<(Option<String>, String), Response> {
        self.faults(route, product).await?;
        let cloud_id = self.site_by_name(site)?;
        let credentials = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| STANDARD.decode(v).ok())
            .and_then(|v| String::from_utf8(v).ok())
            .unwrap_or_default();
        let (email, token) = credentials.split_once(':').unwrap_or_default();
        let account = self.lock().admin.api_tokens.get(token).cloned();
        let org = self.read_org();
        match account.and_then(|a| org.user(&a).cloned()) {
            Some(user) if user.email == email => Ok((cloud_id, user.account_id)),
            _ => Err(error(StatusCode::UNAUTHORIZED, "Client must be authenticated to access this resource.")),
        }
    }

    /// The cloud id of a site by name; `Ok(None)` for the foreign site.
    pub(super) fn site_by_name(&self, name: &str) -> Result<Option<String>, Response> {
        if name == FOREIGN_SITE {
            return Ok(None);
        }
        self.read_org()
            .sites
            .iter()
            .find(|s| s.name == name)
            .map(|s| Some(s.id.clone()))
            .ok_or_else(|| error(StatusCode::NOT_FOUND, "Site not found"))
    }
}

async fn orgs(State(sandbox): State<Sandbox>, headers: HeaderMap) -> Response {
    let key = match sandbox.admin_gate(&headers, "admin/orgs", None, false).await {
        Ok(key) => key,
        Err(r) => return r,
    };
    let base = origin(&headers);
    let name = if key.org_id == ORG_ID { ORG_NAME.to_string() } else { format!("Org {}", key.org_id) };
    axum::Json(json!({
        "data": [{
            "id": key.org_id, "type": "orgs", "attributes": {"name": name},
            "links": {"self": format!("{base}/admin/v1/orgs/{}", key.org_id)},
        }],
        "links": {"self": format!("{base}/admin/v1/orgs"), "prev": null, "next": null},
    }))
    .into_response()
}

type Params = Query<HashMap<String, String>>;

/// v1: managed accounts only (everyone in the seeded org is on its verified domain, except app accounts), 100 a
/// page, `links.next` a full URL.
async fn v1_users(
    State(sandbox): State<Sandbox>,
    Path(org_id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) = sandbox.admin_gate(&headers, "admin/v1/users", Some(&org_id), true).await {
        return r;
    }
    let start = match q.get("cursor") {
        None => 0,
        Some(c) => match cursor_decode(c).and_then(|v| v["after"].as_u64()) {
            Some(start) => start as usize,
            None => return error(StatusCode::BAD_REQUEST, "InvalidPageCursor"),
        },
    };
    let org = sandbox.read_org();
    let managed: Vec<&User> = org.users.iter().filter(|u| u.account_type == "atlassian").collect();
    let data: Vec<Value> = managed
        .iter()
        .skip(start)
        .take(100)
        .map(|u| {
            let (_, account_status, _) = statuses(u);
            json!({
                "account_id": u.account_id, "account_type": u.account_type, "account_status": account_status,
                "name": u.name, "email": u.email, "picture": format!("https://avatar.example/{}", u.account_id),
                "access_billable": u.active, "product_access": [],
            })
        })
        .collect();
    let base = origin(&headers);
    let path = format!("{base}/admin/v1/orgs/{org_id}/users");
    let next = (start + 100 < managed.len())
        .then(|| format!("{path}?cursor={}", cursor_encode(&json!({"after": start + 100}))));
    axum::Json(json!({"data": data, "meta": {"total": managed.len()}, "links": {"self": path, "next": next}}))
        .into_response()
}

/// The page of a v2 listing: the cursor (which carries the filter) or the query's own parameters.
fn v2_page(q: &HashMap<String, String>) -> Result<(usize, usize, Option<String>), Response> {
    match q.get("cursor") {
        Some(cursor) => {
            let state = cursor_decode(cursor)
                .ok_or_else(|| v2_errors(StatusCode::BAD_REQUEST, "INVALID_CURSOR", "The cursor is invalid"))?;
            let after = state["after"].as_u64().unwrap_or(0) as usize;
            let limit = state["limit"].as_u64().unwrap_or(20) as usize;
            Ok((after, limit, state["groupIds"].as_str().map(String::from)))
        }
        None => {
            let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
                None => 20,
                Some(Ok(limit)) if (1..=100).contains(&limit) => limit,
                Some(_) => return Err(v2_errors(StatusCode::BAD_REQUEST, "INVALID_LIMIT", "limit must be 1 to 100")),
            };
            Ok((0, limit, q.get("groupIds").cloned()))
        }
    }
}

fn v2_next(after: usize, limit: usize, total: usize, group: Option<&str>) -> Value {
    if after + limit >= total {
        return Value::Null;
    }
    Value::String(cursor_encode(&json!({"after": after + limit, "limit": limit, "groupIds": group})))
}

fn v2_available(sandbox: &Sandbox, directory: &str) -> Result<(), Response> {
    if sandbox.lock().admin.v2_off {
        return Err(v2_errors(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found"));
    }
    if directory != "-" {
        return Err(v2_errors(StatusCode::NOT_FOUND, "DIRECTORY_NOT_FOUND", "Directory not found"));
    }
    Ok(())
}

/// v2 users of every directory: Atlassian accounts with their real status and email (hidden profiles included).
async fn v2_users(
    State(sandbox): State<Sandbox>,
    Path((org_id, directory)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) = v2_available(&sandbox, &directory) {
        return r;
    }
    if let Err(r) = sandbox.admin_gate(&headers, "admin/v2/users", Some(&org_id), true).await {
        return r;
    }
    let (after, limit, group) = match v2_page(&q) {
        Ok(page) => page,
        Err(r) => return r,
    };
    let org = sandbox.read_org();
    let members: Option<&Vec<String>> = match &group {
        None => None,
        Some(id) => match org.groups.iter().find(|g| g.id == *id) {
            Some(g) => Some(&g.members),
            None => return v2_errors(StatusCode::NOT_FOUND, "GROUP_NOT_FOUND", "Group not found"),
        },
    };
    let listed: Vec<&User> = match members {
        None => org.users.iter().filter(|u| u.account_type == "atlassian").collect(),
        Some(ids) => ids.iter().filter_map(|id| org.user(id)).filter(|u| u.account_type == "atlassian").collect(),
    };
    let data: Vec<Value> = listed
        .iter()
        .skip(after)
        .take(limit)
        .map(|u| {
            let (status, account_status, membership_status) = statuses(u);
            json!({
                "accountId": u.account_id, "accountType": "atlassian", "status": status,
                "accountStatus": account_status, "membershipStatus": membership_status, "name": u.name,
                "nickname": u.name.split(' ').next(), "email": u.email, "emailVerified": true,
                "claimStatus": "managed", "platformRoles": [], "counts": {"resources": org.sites.len()},
                "links": {"self": format!("/admin/v2/orgs/{org_id}/directories/-/users/{}", u.account_id)},
            })
        })
        .collect();
    let next = v2_next(after, limit, listed.len(), group.as_deref());
    axum::Json(json!({"data": data, "links": {"self": "", "prev": null, "next": next}})).into_response()
}

async fn v2_groups(
    State(sandbox): State<Sandbox>,
    Path((org_id, directory)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) = v2_available(&sandbox, &directory) {
        return r;
    }
    if let Err(r) = sandbox.admin_gate(&headers, "admin/v2/groups", Some(&org_id), true).await {
        return r;
    }
    let (after, limit, _) = match v2_page(&q) {
        Ok(page) => page,
        Err(r) => return r,
    };
    let org = sandbox.read_org();
    let data: Vec<Value> = org
        .groups
        .iter()
        .skip(after)
        .take(limit)
        .map(|g| {
            json!({
                "id": g.id, "name": g.name, "description": null, "directoryId": "sandbox-directory",
                "counts": {"users": g.members.len(), "resources": 0},
                "links": {"self": format!("/admin/v2/orgs/{org_id}/directories/-/groups/{}", g.id)},
            })
        })
        .collect();
    let next = v2_next(after, limit, org.groups.len(), None);
    axum::Json(json!({"data": data, "links": {"self": "", "prev": null, "next": next}})).into_response()
}

/// The org's product instances: a Jira workspace per site, and a Confluence one where the site has Confluence.
async fn workspaces(State(sandbox): State<Sandbox>, Path(org_id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = sandbox.admin_gate(&headers, "admin/v2/workspaces", Some(&org_id), false).await {
        return r;
    }
    let base = origin(&headers);
    let org = sandbox.read_org();
    let mut data = Vec::new();
    for site in &org.sites {
        let host = format!("{base}/site/{}", site.name);
        let products: &[(&str, &str)] = if site.confluence {
            &[("jira-software", "jira-software"), ("confluence", "confluence")]
        } else {
            &[("jira-software", "jira-software")]
        };
        for (type_key, ari) in products {
            data.push(json!({
                "id": format!("ari:cloud:{ari}::site/{}", site.id), "type": "workspaces",
                "attributes": {"name": site.name, "typeKey": type_key, "type": type_key, "status": "online",
                               "hostUrl": host},
                "links": {"self": ""},
            }));
        }
    }
    let total = data.len();
    axum::Json(json!({"data": data, "links": {"self": "", "prev": null, "next": null}, "meta": {"total": total}}))
        .into_response()
}

async fn tenant_info(State(sandbox): State<Sandbox>, Path(site): Path<String>) -> Response {
    match sandbox.site_by_name(&site) {
        Ok(Some(cloud_id)) => axum::Json(json!({"cloudId": cloud_id})).into_response(),
        Ok(None) => axum::Json(json!({"cloudId": foreign_cloud_id()})).into_response(),
        Err(r) => r,
    }
}

async fn myself(State(sandbox): State<Sandbox>, Path(site): Path<String>, headers: HeaderMap) -> Response {
    let (_, account_id) = match sandbox.site_gate(&headers, &site, "site/myself", "jira").await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let org = sandbox.read_org();
    let Some(user) = org.user(&account_id) else { return StatusCode::NOT_FOUND.into_response() };
    axum::Json(json!({
        "accountId": user.account_id, "accountType": user.account_type, "emailAddress": user.email,
        "displayName": user.name, "active": user.active,
    }))
    .into_response()
}

async fn site_projects(
    State(sandbox): State<Sandbox>,
    Path(site): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let cloud_id = match sandbox.site_gate(&headers, &site, "site/project/search", "jira").await {
        Ok((cloud_id, _)) => cloud_id.unwrap_or_else(foreign_cloud_id),
        Err(r) => return r,
    };
    // API-token traffic: burst limits only, no points quota.
    super::rest::projects_page(&sandbox, &cloud_id, &q, false)
}

async fn site_spaces(
    State(sandbox): State<Sandbox>,
    Path(site): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let cloud_id = match sandbox.site_gate(&headers, &site, "site/spaces", "confluence").await {
        Ok((cloud_id, _)) => cloud_id.unwrap_or_else(foreign_cloud_id),
        Err(r) => return r,
    };
    let has_confluence = sandbox.read_org().sites.iter().any(|s| s.id == cloud_id && s.confluence);
    if !has_confluence {
        return error(StatusCode::NOT_FOUND, "Confluence is not available on this site");
    }
    super::rest::spaces_page(&sandbox, &cloud_id, &q, false)
}

#[derive(Deserialize)]
struct NewKey {
    org_id: Option<String>,
    can_read_users: Option<bool>,
    expired: Option<bool>,
}

async fn create_key(State(sandbox): State<Sandbox>, axum::Json(new): axum::Json<NewKey>) -> Response {
    let mut inner = sandbox.lock();
    let mut bytes = [0u8; 36];
    aws_lc_rs::rand::fill(&mut bytes).expect("random source");
    let key = format!("ATCTT3xFfGN0{}=SANDBOX1", URL_SAFE_NO_PAD.encode(bytes));
    inner.issued.push(key.clone());
    let admin_key = AdminKey {
        org_id: new.org_id.unwrap_or_else(|| ORG_ID.into()),
        can_read_users: new.can_read_users.unwrap_or(true),
        expired: new.expired.unwrap_or(false),
    };
    inner.admin.keys.insert(key.clone(), admin_key);
    axum::Json(json!({"key": key})).into_response()
}

async fn expire_key(State(sandbox): State<Sandbox>, Path(key): Path<String>) -> Response {
    match sandbox.lock().admin.keys.get_mut(&key) {
        Some(found) => {
            found.expired = true;
            StatusCode::NO_CONTENT.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn restrict_key(State(sandbox): State<Sandbox>, Path(key): Path<String>) -> Response {
    match sandbox.lock().admin.keys.get_mut(&key) {
        Some(found) => {
            found.can_read_users = false;
            StatusCode::NO_CONTENT.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct NewApiToken {
    account_id: String,
}

async fn create_api_token(State(sandbox): State<Sandbox>, axum::Json(new): axum::Json<NewApiToken>) -> Response {
    let Some(email) = sandbox.read_org().user(&new.account_id).map(|u| u.email.clone()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut inner = sandbox.lock();
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).expect("random source");
    let token = format!("ATATT3x{}", URL_SAFE_NO_PAD.encode(bytes));
    inner.issued.push(token.clone());
    inner.admin.api_tokens.insert(token.clone(), new.account_id);
    axum::Json(json!({"email": email, "token": token})).into_response()
}

#[derive(Deserialize)]
struct AdminSettings {
    v2: bool,
}

async fn set_admin(State(sandbox): State<Sandbox>, axum::Json(settings): axum::Json<AdminSettings>) -> Response {
    sandbox.lock().admin.v2_off = !settings.v2;
    StatusCode::NO_CONTENT.into_response()
}

async fn drop_confluence(State(sandbox): State<Sandbox>, Path(cloud_id): Path<String>) -> Response {
    let mut org = sandbox.org.write().unwrap_or_else(|p| p.into_inner());
    match org.sites.iter_mut().find(|s| s.id == cloud_id) {
        Some(site) => {
            site.confluence = false;
            StatusCode::NO_CONTENT.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
