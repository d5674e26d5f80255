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
//!
//! Every error is JSON `{"error": {"code", "message"}}`.

use lambda_http::http::Method;
use lambda_http::{Body, Request, RequestExt, Response};
use runtime::config::{ConfigError, Env, Source};
use runtime::http;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use store::mirror::{MirrorStore, ObjectType, Scope};
use store::{Connection, ConnectionStore, RunRecord, RunStatus, RunStore, SessionStore};
use sync::queue::{Job, JobQueue};
use sync::records::MEMBER_CHUNKS;
use time::OffsetDateTime;
use tokens::connect::{self, ReturnUrlAllowList, SessionSettings};
use tokens::ids;
use url::Url;

pub struct Config {
    pub table: String,
    pub token_keys_secret_id: String,
    pub endpoints: atlassian::Endpoints,
    pub mirror_table: String,
    pub sync_queue_url: String,
    pub management_key_secret_id: String,
    pub public_base_url: Url,
    pub return_urls: ReturnUrlAllowList,
    pub session_ttl: time::Duration,
    /// How often each type is scheduled (`SYNC_SCHEDULES`), for each run's `next_due_at`.
    pub cadences: Cadences,
}

/// How often each object type is synced, from the schedules' `rate(…)` expressions (a `cron(…)` has no fixed
/// interval: its type shows no `next_due_at`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cadences(pub BTreeMap<ObjectType, time::Duration>);

impl Cadences {
    /// `users=rate(6 hours),groups=rate(6 hours),projects=rate(1 day),spaces=rate(1 day)`: the template's defaults.
    pub const DEFAULT: &str = "users=rate(6 hours),groups=rate(6 hours),projects=rate(1 day),spaces=rate(1 day)";

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut cadences = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, expression) = pair.split_once('=').ok_or_else(|| format!("`{pair}` is not type=expression"))?;
            let object_type = ObjectType::parse(name.trim()).ok_or_else(|| format!("no object type `{name}`"))?;
            let expression = expression.trim();
            if expression.starts_with("cron(") {
                continue;
            }
            let inner = expression
                .strip_prefix("rate(")
                .and_then(|e| e.strip_suffix(')'))
                .ok_or_else(|| format!("`{expression}` is neither rate(…) nor cron(…)"))?;
            let (count, unit) = inner.trim().split_once(' ').ok_or_else(|| format!("`{expression}` has no unit"))?;
            let count: i64 = count.parse().map_err(|_| format!("`{expression}` has no number"))?;
            let unit = match unit.trim().trim_end_matches('s') {
                "minute" => time::Duration::MINUTE,
                "hour" => time::Duration::HOUR,
                "day" => time::Duration::DAY,
                _ => return Err(format!("`{expression}`: the unit is minutes, hours or days")),
            };
            cadences.insert(object_type, unit * count as i32);
        }
        Ok(Self(cadences))
    }
}

impl Config {
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let allow_list = env.optional("RETURN_URL_ALLOWLIST").unwrap_or_default();
        Ok(Self {
            table: env.required("STATE_TABLE")?,
            token_keys_secret_id: env.required("TOKEN_KEYS_SECRET_ID")?,
            endpoints: atlassian::Endpoints {
                auth_base: env.url_or("ATLASSIAN_AUTH_BASE_URL", atlassian::Endpoints::DEFAULT_AUTH_BASE)?,
                api_base: env.url_or("ATLASSIAN_API_BASE_URL", atlassian::Endpoints::DEFAULT_API_BASE)?,
            },
            mirror_table: env.required("MIRROR_TABLE")?,
            sync_queue_url: env.required("SYNC_QUEUE_URL")?,
            management_key_secret_id: env.required("MANAGEMENT_API_KEY_SECRET_ID")?,
            public_base_url: env.url("PUBLIC_BASE_URL")?,
            return_urls: ReturnUrlAllowList::parse(&allow_list)
                .map_err(|reason| ConfigError::Invalid { name: "RETURN_URL_ALLOWLIST", reason })?,
            session_ttl: env.seconds_or("SESSION_TTL_SECONDS", 900)?.try_into().unwrap_or(time::Duration::MINUTE * 15),
            cadences: Cadences::parse(&env.optional("SYNC_SCHEDULES").unwrap_or_else(|| Cadences::DEFAULT.into()))
                .map_err(|reason| ConfigError::Invalid { name: "SYNC_SCHEDULES", reason })?,
        })
    }

    pub fn session_settings(&self) -> SessionSettings {
        SessionSettings {
            public_base_url: self.public_base_url.clone(),
            ttl: self.session_ttl,
            return_urls: self.return_urls.clone(),
        }
    }
}

pub struct Deps<S, M, Q, A> {
    pub store: S,
    pub mirror: M,
    pub queue: Q,
    /// The Admin API and sites, to validate admin-key connections.
    pub atlassian: A,
    /// Seals the credentials of admin-key connections.
    pub keys: tokens::KeyRing,
    pub management_key: SecretString,
    /// How often each type is scheduled, for the status API's `next_due_at`.
    pub cadences: Cadences,
    pub sessions: SessionSettings,
}

pub async fn handle<S, M, Q, A>(deps: &Deps<S, M, Q, A>, request: Request) -> Result<Response<Body>, lambda_http::Error>
where
    S: SessionStore + ConnectionStore + RunStore,
    M: MirrorStore,
    Q: JobQueue,
    A: atlassian::AdminApi,
{
    if !authorized(deps, &request) {
        let mut response = http::json_error(401, "unauthorized", "A valid management API key is required.");
        response.headers_mut().insert("www-authenticate", lambda_http::http::HeaderValue::from_static("Bearer"));
        return Ok(response);
    }
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = request.method().clone();
    let response = match (segments.as_slice(), &method) {
        (["connect-sessions"], &Method::POST) => create_session(deps, &request).await,
        (["connections"], &Method::GET) => list_connections(deps, &request).await,
        (["connections"], &Method::POST) => create_connection(deps, &request).await,
        (["connections", id], &Method::GET) => get_connection(deps, id).await,
        (["connections", id], &Method::DELETE) => disconnect(deps, id).await,
        (["connections", id], &Method::PATCH) => update_connection(deps, id, &request).await,
        (["connections", id, "objects", object_type], &Method::GET) => objects(deps, id, object_type, &request).await,
        (["connections", id, "objects", "groups", group_id, "members"], &Method::GET) => {
            members(deps, id, group_id, &request).await
        }
        (["connections", id, "sync"], &Method::POST) => request_sync(deps, id, &request).await,
        (
            ["connect-sessions"]
            | ["connections"]
            | ["connections", _]
            | ["connections", _, "objects", _]
            | ["connections", _, "objects", "groups", _, "members"]
            | ["connections", _, "sync"],
            _,
        ) => http::json_error(405, "method_not_allowed", "This method is not allowed here."),
        _ => http::json_error(404, "not_found", "No such route."),
    };
    Ok(response)
}

fn authorized<S, M, Q, A>(deps: &Deps<S, M, Q, A>, request: &Request) -> bool {
    request
        .headers()
        .get(lambda_http::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|presented| ids::secrets_equal(presented.trim(), deps.management_key.expose_secret()))
}

#[derive(Deserialize)]
struct CreateSession {
    tenant_id: String,
    #[serde(default)]
    return_url: Option<String>,
}

#[derive(Serialize)]
struct CreatedSession<'a> {
    session_id: &'a str,
    connect_url: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

async fn create_session<S: SessionStore, M, Q, A>(deps: &Deps<S, M, Q, A>, request: &Request) -> Response<Body> {
    let Ok(body) = serde_json::from_slice::<CreateSession>(request.body().as_ref()) else {
        return http::json_error(400, "invalid_body", "Expected JSON {\"tenant_id\": \"…\", \"return_url\": \"…\"?}.");
    };
    let now = OffsetDateTime::now_utc();
    match connect::create_session(&deps.store, &deps.sessions, &body.tenant_id, body.return_url.as_deref(), now).await {
        Ok(session) => http::json(
            201,
            &CreatedSession {
                session_id: session.session_id.expose_secret(),
                connect_url: session.connect_url.as_str(),
                expires_at: session.expires_at,
            },
        ),
        Err(error) => {
            if let tokens::ConnectError::Store(source) = &error {
                tracing::error!(error = %source, "creating a connect session failed");
            }
            http::json_error(error.http_status(), error.code(), &error.message())
        }
    }
}

/// `POST /connections`. The body is parsed into plain fields and the secrets moved into redacting types at once;
/// no part of it is ever logged or echoed back.
#[derive(Deserialize)]
struct CreateConnection {
    tenant_id: String,
    mode: String,
    #[serde(default)]
    org_id: String,
    #[serde(default)]
    admin_api_key: String,
    #[serde(default)]
    site_url: Option<String>,
    #[serde(default)]
    site_email: Option<String>,
    #[serde(default)]
    site_api_token: Option<String>,
    #[serde(default)]
    products: Option<Vec<String>>,
}

const CREATE_CONNECTION_SHAPE: &str = "Expected JSON {\"tenant_id\", \"mode\": \"admin_api_key\", \"org_id\", \"admin_api_key\", \"site_url\"?, \"site_email\"?, \"site_api_token\"?, \"products\"?: [\"jira\", \"confluence\"]}.";

/// The request as the domain takes it, or the code and message of the 400 that says what is wrong with it.
fn admin_request(body: CreateConnection) -> Result<tokens::admin::AdminConnectRequest, (&'static str, &'static str)> {
    let invalid = |code, message| Err((code, message));
    if body.mode != "admin_api_key" {
        return invalid(
            "unsupported_mode",
            "mode must be \"admin_api_key\"; OAuth connections are made with POST /connect-sessions and the link it returns.",
        );
    }
    let (tenant_id, org_id, key) = (body.tenant_id.trim(), body.org_id.trim(), body.admin_api_key.trim());
    if tenant_id.is_empty() || org_id.is_empty() || key.is_empty() {
        return invalid("missing_field", "tenant_id, org_id and admin_api_key are required.");
    }
    let site = site_login(body.site_url, body.site_email, body.site_api_token)?;
    let products = match body.products {
        None => None,
        Some(names) => {
            let parsed: Option<Vec<store::Product>> = names
                .iter()
                .map(|n| match n.as_str() {
                    "jira" => Some(store::Product::Jira),
                    "confluence" => Some(store::Product::Confluence),
                    _ => None,
                })
                .collect();
            match parsed {
                Some(products) if site.is_some() => Some(products),
                Some(_) => return invalid("products_need_site", "products are checked on a site: give site_url too."),
                None => return invalid("unknown_product", "products are \"jira\" and \"confluence\"."),
            }
        }
    };
    Ok(tokens::admin::AdminConnectRequest {
        tenant_id: tenant_id.to_owned(),
        org_id: org_id.to_owned(),
        admin_api_key: atlassian::AdminKey::new(key.to_owned()),
        site,
        products,
    })
}

/// The site login from its three fields: all or none.
fn site_login(
    url: Option<String>,
    email: Option<String>,
    token: Option<String>,
) -> Result<Option<atlassian::SiteLogin>, (&'static str, &'static str)> {
    match (url, email, token) {
        (None, None, None) => Ok(None),
        (Some(url), Some(email), Some(token)) if !email.trim().is_empty() && !token.trim().is_empty() => {
            let Some(site_url) = Url::parse(url.trim()).ok().filter(site_url_allowed) else {
                return Err((
                    "invalid_site_url",
                    "site_url must be the site's https URL, e.g. https://your-site.atlassian.net.",
                ));
            };
            Ok(Some(atlassian::SiteLogin {
                site_url,
                email: email.trim().to_owned(),
                api_token: SecretString::from(token.trim().to_owned()),
            }))
        }
        _ => Err((
            "incomplete_site_token",
            "site_url, site_email and site_api_token go together: give all three, or none.",
        )),
    }
}

/// https, or http to this machine (a local sandbox); no credentials or query in the URL.
fn site_url_allowed(url: &Url) -> bool {
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    (url.scheme() == "https" || (url.scheme() == "http" && loopback))
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
}

async fn create_connection<S: ConnectionStore + RunStore, M, Q, A: atlassian::AdminApi>(
    deps: &Deps<S, M, Q, A>,
    request: &Request,
) -> Response<Body> {
    let Ok(body) = serde_json::from_slice::<CreateConnection>(request.body().as_ref()) else {
        return http::json_error(400, "invalid_body", CREATE_CONNECTION_SHAPE);
    };
    let admin = match admin_request(body) {
        Ok(admin) => admin,
        Err((code, message)) => return http::json_error(400, code, message),
    };
    let now = OffsetDateTime::now_utc();
    match tokens::admin::connect(&deps.store, &deps.atlassian, &deps.keys, &admin, now).await {
        Ok(connection) => {
            tracing::info!(connection_id = %connection.connection_id, tenant_id = %connection.tenant_id, "admin-key connection stored");
            match deps.store.list_runs(&connection.connection_id).await {
                Ok(runs) => http::json(201, &ConnectionView::new(&connection, &runs, &deps.cadences)),
                Err(error) => internal(&error),
            }
        }
        Err(error) => admin_error(&error),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchConnection {
    #[serde(default)]
    admin_api_key: Option<String>,
    #[serde(default)]
    site_url: Option<String>,
    #[serde(default)]
    site_email: Option<String>,
    #[serde(default)]
    site_api_token: Option<String>,
}

async fn update_connection<S: ConnectionStore + RunStore, M, Q, A: atlassian::AdminApi>(
    deps: &Deps<S, M, Q, A>,
    id: &str,
    request: &Request,
) -> Response<Body> {
    const SHAPE: &str = "Expected JSON {\"admin_api_key\"?, \"site_url\"?, \"site_email\"?, \"site_api_token\"?}.";
    let Ok(body) = serde_json::from_slice::<PatchConnection>(request.body().as_ref()) else {
        return http::json_error(400, "invalid_body", SHAPE);
    };
    let key = body.admin_api_key.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty());
    let site = match site_login(body.site_url, body.site_email, body.site_api_token) {
        Ok(site) => site,
        Err((code, message)) => return http::json_error(400, code, message),
    };
    if key.is_none() && site.is_none() {
        return http::json_error(400, "nothing_to_update", SHAPE);
    }
    let connection = match deps.store.get_connection(id).await {
        Ok(Some(connection)) => connection,
        Ok(None) => return not_found(),
        Err(error) => return internal(&error),
    };
    if connection.mode != store::ConnectionMode::AdminApiKey {
        return http::json_error(
            409,
            "not_an_admin_key_connection",
            "Only admin-key connections take new credentials here; an OAuth connection is renewed by connecting again.",
        );
    }
    if connection.status == store::ConnectionStatus::Revoked {
        return http::json_error(409, "connection_revoked", "This connection was disconnected; create a new one.");
    }
    let patch = tokens::admin::AdminPatch { admin_api_key: key.map(atlassian::AdminKey::new), site };
    let now = OffsetDateTime::now_utc();
    match tokens::admin::update(&deps.store, &deps.atlassian, &deps.keys, &connection, patch, now).await {
        Ok(updated) => {
            tracing::info!(connection_id = %updated.connection_id, "admin-key connection credentials replaced");
            match deps.store.list_runs(id).await {
                Ok(runs) => http::json(200, &ConnectionView::new(&updated, &runs, &deps.cadences)),
                Err(error) => internal(&error),
            }
        }
        Err(error) => admin_error(&error),
    }
}

/// The answer to an admin-key connection that could not be made or updated.
fn admin_error(error: &tokens::admin::AdminConnectError) -> Response<Body> {
    if error.is_input() {
        return http::json_error(422, error.code(), &error.to_string());
    }
    tracing::warn!(error = %error, code = error.code(), "an admin-key connection could not be made");
    let status = if matches!(error, tokens::admin::AdminConnectError::Unavailable(_)) { 502 } else { 500 };
    http::json_error(status, error.code(), &error.to_string())
}

async fn list_connections<S: ConnectionStore + RunStore, M, Q, A>(
    deps: &Deps<S, M, Q, A>,
    request: &Request,
) -> Response<Body> {
    let query = request.query_string_parameters();
    let Some(tenant_id) = query.first("tenant_id").filter(|t| !t.is_empty()) else {
        return http::json_error(400, "tenant_id_required", "Pass ?tenant_id= to list a tenant's connections.");
    };
    let connections = match deps.store.list_connections(tenant_id).await {
        Ok(connections) => connections,
        Err(error) => return internal(&error),
    };
    let mut items = Vec::with_capacity(connections.len());
    for connection in &connections {
        match deps.store.list_runs(&connection.connection_id).await {
            Ok(runs) => items
                .push(serde_json::to_value(ConnectionView::new(connection, &runs, &deps.cadences)).unwrap_or_default()),
            Err(error) => return internal(&error),
        }
    }
    http::json(200, &serde_json::json!({ "items": items }))
}

async fn get_connection<S: ConnectionStore + RunStore, M, Q, A>(deps: &Deps<S, M, Q, A>, id: &str) -> Response<Body> {
    match deps.store.get_connection(id).await {
        Ok(Some(connection)) => match deps.store.list_runs(id).await {
            Ok(runs) => http::json(200, &ConnectionView::new(&connection, &runs, &deps.cadences)),
            Err(error) => internal(&error),
        },
        Ok(None) => not_found(),
        Err(error) => internal(&error),
    }
}

#[derive(Deserialize, Default)]
struct SyncRequest {
    #[serde(default)]
    object_types: Option<Vec<String>>,
}

async fn request_sync<S: ConnectionStore, M, Q: JobQueue, A>(
    deps: &Deps<S, M, Q, A>,
    id: &str,
    request: &Request,
) -> Response<Body> {
    let body = request.body().as_ref();
    let parsed = if body.is_empty() { Ok(SyncRequest::default()) } else { serde_json::from_slice::<SyncRequest>(body) };
    let Ok(parsed) = parsed else {
        return http::json_error(
            400,
            "invalid_body",
            "Expected JSON {\"object_types\": [\"users\", \"groups\", \"projects\", \"spaces\"]}.",
        );
    };
    let types = match parsed.object_types {
        None => ObjectType::ALL.to_vec(),
        Some(names) => match names.iter().map(|n| ObjectType::parse(n)).collect::<Option<Vec<_>>>() {
            Some(types) if !types.is_empty() => types,
            _ => {
                return http::json_error(
                    400,
                    "unknown_object_type",
                    "Object types are users, groups, projects and spaces.",
                );
            }
        },
    };
    let connection = match deps.store.get_connection(id).await {
        Ok(Some(connection)) => connection,
        Ok(None) => return not_found(),
        Err(error) => return internal(&error),
    };
    if connection.status != store::ConnectionStatus::Active {
        let message = match connection.mode {
            store::ConnectionMode::Oauth => {
                "The connection is not active: create a connect session for its tenant and have the admin connect again."
            }
            store::ConnectionMode::AdminApiKey => {
                "The connection is not active: PATCH it with a new admin_api_key (or site token), or create it again."
            }
        };
        return http::json_error(409, "connection_not_active", message);
    }
    let jobs: Vec<Job> = types.iter().map(|&object_type| Job::new(id, object_type)).collect();
    if let Err(error) = deps.queue.enqueue(&jobs).await {
        tracing::error!(error = %error, "enqueueing sync jobs failed");
        return http::json_error(503, "queue_unavailable", "The sync could not be queued; try again.");
    }
    let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    http::json(202, &serde_json::json!({"connection_id": id, "enqueued": names}))
}

fn not_found() -> Response<Body> {
    http::json_error(404, "connection_not_found", "No connection has this id.")
}

/// Tokens first (at once, in one write), then the mirrored data.
async fn disconnect<S: ConnectionStore + RunStore, M: MirrorStore, Q, A>(
    deps: &Deps<S, M, Q, A>,
    id: &str,
) -> Response<Body> {
    match deps.store.revoke_connection(id, OffsetDateTime::now_utc()).await {
        Ok(true) => {}
        Ok(false) => return not_found(),
        Err(error) => return internal(&error),
    }
    for object_type in ObjectType::ALL {
        if let Err(error) = deps.mirror.clear(&Scope::new(id, object_type)).await {
            return internal(&error);
        }
    }
    tracing::info!(connection_id = id, "connection revoked, tokens destroyed, mirror cleared");
    get_connection(deps, id).await
}

async fn objects<S: ConnectionStore, M: MirrorStore, Q, A>(
    deps: &Deps<S, M, Q, A>,
    id: &str,
    object_type: &str,
    request: &Request,
) -> Response<Body> {
    let Some(object_type) = ObjectType::parse(object_type) else {
        return http::json_error(404, "unknown_object_type", "Object types are users, groups, projects and spaces.");
    };
    let connection = match deps.store.get_connection(id).await {
        Ok(Some(connection)) => connection,
        Ok(None) => return not_found(),
        Err(error) => return internal(&error),
    };
    let query = request.query_string_parameters();
    let limit = match page_limit(&query, 100) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    match deps.mirror.list(&Scope::new(id, object_type), query.first("cursor"), limit).await {
        Ok((mut objects, next)) => {
            if object_type == ObjectType::Users
                && connection.mode == store::ConnectionMode::Oauth
                && let Err(error) = enrich(deps, &connection, &mut objects).await
            {
                return internal(&error);
            }
            let items: Vec<serde_json::Value> = objects
                .into_iter()
                .map(|object| {
                    let mut item = object.record;
                    // A big group's chunk hashes are the mirror's bookkeeping; its members are behind `/members`.
                    item.remove(MEMBER_CHUNKS);
                    item.insert("deleted".into(), object.deleted.into());
                    let synced_at =
                        object.synced_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                    item.insert("synced_at".into(), synced_at.into());
                    serde_json::Value::Object(item)
                })
                .collect();
            http::json(200, &serde_json::json!({"items": items, "next_cursor": next}))
        }
        Err(store::StoreError::InvalidCursor) => {
            http::json_error(400, "invalid_cursor", "The cursor is not one this API gave out.")
        }
        Err(error) => internal(&error),
    }
}

/// A page of a group's member account ids, however the mirror keeps them: in the group's record (up to 1,000) or in
/// chunks beside it. The cursor is the mirror's own (`<bucket>.<index>`; a small group is one bucket).
async fn members<S: ConnectionStore, M: MirrorStore, Q, A>(
    deps: &Deps<S, M, Q, A>,
    id: &str,
    group_id: &str,
    request: &Request,
) -> Response<Body> {
    match deps.store.get_connection(id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(),
        Err(error) => return internal(&error),
    }
    let query = request.query_string_parameters();
    let limit = match page_limit(&query, 1000) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    let scope = Scope::new(id, ObjectType::Groups);
    let group = match deps.mirror.objects(&scope, &[group_id.to_owned()]).await {
        Ok(mut found) => match found.remove(group_id) {
            Some(group) => group,
            None => return http::json_error(404, "group_not_found", "The mirror has no group with this id."),
        },
        Err(error) => return internal(&error),
    };
    let cursor = query.first("cursor");
    let page = match group.record.get("member_account_ids").and_then(|ids| ids.as_array()) {
        Some(ids) => {
            let ids = ids.iter().filter_map(|id| id.as_str().map(str::to_owned)).collect();
            let inline = [store::mirror::MemberChunk { bucket: 0, ids }];
            match cursor.map(store::mirror::parse_members_cursor) {
                None => Ok(store::mirror::members_page(&inline, (0, 0), limit, false)),
                Some(Some(from)) if from.0 == 0 => Ok(store::mirror::members_page(&inline, from, limit, false)),
                Some(_) => Err(store::StoreError::InvalidCursor),
            }
        }
        None => deps.mirror.members(&scope, group_id, cursor, limit).await,
    };
    match page {
        Ok((items, next)) => http::json(
            200,
            &serde_json::json!({
                "group_id": group_id,
                "member_count": group.record.get("member_count"),
                "deleted": group.deleted,
                "items": items,
                "next_cursor": next,
            }),
        ),
        Err(store::StoreError::InvalidCursor) => {
            http::json_error(400, "invalid_cursor", "The cursor is not one this API gave out.")
        }
        Err(error) => internal(&error),
    }
}

/// Users of an OAuth connection, enriched from an admin-key connection of the same tenant: the Admin API is the
/// org's own record, so its `email` (where it has one; Jira hides some) and `status` (`suspended`, `closed`, which
/// Jira cannot tell) take precedence; every other field stays the OAuth connection's. Done when read, so removing
/// either connection leaves the other exactly as its own sync made it.
async fn enrich<S: ConnectionStore, M: MirrorStore, Q, A>(
    deps: &Deps<S, M, Q, A>,
    connection: &Connection,
    users: &mut [store::MirrorObject],
) -> Result<(), store::StoreError> {
    let admins: Vec<Connection> = deps
        .store
        .list_connections(&connection.tenant_id)
        .await?
        .into_iter()
        .filter(|c| c.mode == store::ConnectionMode::AdminApiKey && c.status != store::ConnectionStatus::Revoked)
        .collect();
    if admins.is_empty() || users.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = users.iter().map(|u| u.key.clone()).collect();
    for admin in &admins {
        let known = deps.mirror.objects(&Scope::new(&admin.connection_id, ObjectType::Users), &keys).await?;
        for user in users.iter_mut() {
            let Some(found) = known.get(&user.key).filter(|f| !f.deleted) else { continue };
            if let Some(email) = found.record.get("email").filter(|e| !e.is_null()) {
                user.record.insert("email".into(), email.clone());
            }
            if let Some(status) = found.record.get("status") {
                user.record.insert("status".into(), status.clone());
            }
        }
    }
    Ok(())
}

/// A listing's `limit` (1 to 1,000; `default` when absent), or the 400 that says what is wrong with it.
#[allow(clippy::result_large_err)] // the error is the answer itself
fn page_limit(
    query: &lambda_http::aws_lambda_events::query_map::QueryMap,
    default: usize,
) -> Result<usize, Response<Body>> {
    match query.first("limit").map(str::parse::<usize>) {
        None => Ok(default),
        Some(Ok(limit)) if (1..=1000).contains(&limit) => Ok(limit),
        Some(_) => Err(http::json_error(400, "invalid_limit", "limit must be between 1 and 1000.")),
    }
}

fn internal(error: &store::StoreError) -> Response<Body> {
    tracing::error!(error = %error, "store request failed");
    http::json_error(500, "internal_error", "The connector hit an internal error.")
}

/// The latest run of an object type, as the API shows it.
#[derive(Serialize)]
pub struct RunView<'a> {
    pub status: RunStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub counts: Option<&'a store::RunCounts>,
    pub error: Option<std::borrow::Cow<'a, str>>,
    /// While `waiting`: when the run resumes (an estimate: the quota may ask for longer).
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub waiting_until: Option<OffsetDateTime>,
    /// When a run of this type last succeeded.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_succeeded_at: Option<OffsetDateTime>,
    /// When the type is next due: a cadence after it last succeeded. In the past, the sync is behind its cadence
    /// (the quota cannot keep up, or runs fail).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_due_at: Option<OffsetDateTime>,
    /// Deletions held back until a later run confirms them (too many at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_deletions: Option<&'a store::HeldDeletions>,
}

/// What the API shows of a connection: everything but the credentials.
#[derive(Serialize)]
pub struct ConnectionView<'a> {
    pub connection_id: &'a str,
    pub tenant_id: &'a str,
    pub mode: store::ConnectionMode,
    pub status: store::ConnectionStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<&'a str>,
    pub sites: &'a [store::Site],
    pub scopes: &'a [String],
    /// The Atlassian account that consented (OAuth), or the site token's account (admin key).
    pub account_id: &'a str,
    /// The organization an admin key administers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<&'a str>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The latest run per object type; `null` for a type never run.
    pub sync: BTreeMap<&'static str, Option<RunView<'a>>>,
}

impl<'a> ConnectionView<'a> {
    pub fn new(c: &'a Connection, runs: &'a [RunRecord], cadences: &Cadences) -> Self {
        let sync = ObjectType::ALL
            .into_iter()
            .map(|object_type| {
                let view = match runs.iter().find(|r| r.object_type == object_type) {
                    Some(run) => Some(RunView {
                        status: run.status,
                        started_at: Some(run.started_at),
                        finished_at: run.finished_at,
                        counts: Some(&run.counts),
                        error: run.error.as_deref().map(std::borrow::Cow::Borrowed),
                        waiting_until: run.waiting_until.filter(|_| run.status == RunStatus::Waiting),
                        last_succeeded_at: run.last_succeeded_at,
                        next_due_at: run
                            .last_succeeded_at
                            .zip(cadences.0.get(&object_type))
                            .map(|(succeeded, cadence)| succeeded + *cadence),
                        held_deletions: run.held_deletions.as_ref(),
                    }),
                    // Known before any run: the connection cannot sync this type, and why.
                    None => sync::engine::availability(c, object_type).err().map(|reason| RunView {
                        status: RunStatus::NotAvailable,
                        started_at: None,
                        finished_at: None,
                        counts: None,
                        error: Some(std::borrow::Cow::Owned(reason)),
                        waiting_until: None,
                        last_succeeded_at: None,
                        next_due_at: None,
                        held_deletions: None,
                    }),
                };
                (object_type.as_str(), view)
            })
            .collect();
        Self {
            connection_id: &c.connection_id,
            tenant_id: &c.tenant_id,
            mode: c.mode,
            status: c.status,
            status_reason: c.status_reason.as_deref(),
            sites: &c.sites,
            scopes: &c.scopes,
            account_id: &c.account_id,
            org_id: c.org_id.as_deref(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            sync,
        }
    }
}
