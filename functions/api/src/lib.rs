//! The management API, for the SaaS backend (`Authorization: Bearer <management key>`):
//!
//! - `POST /connect-sessions` `{"tenant_id", "return_url"?}` → `201 {"session_id", "connect_url", "expires_at"}`
//! - `GET /connections?tenant_id=…` → `{"items": [...]}`
//! - `GET /connections/{id}` → the connection (status, sites, scopes, times; never tokens)
//!
//! Every error is JSON `{"error": {"code", "message"}}`.

use lambda_http::http::Method;
use lambda_http::{Body, Request, RequestExt, Response};
use runtime::config::{ConfigError, Env, Source};
use runtime::http;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use store::{Connection, ConnectionStore, SessionStore};
use time::OffsetDateTime;
use tokens::connect::{self, ReturnUrlAllowList, SessionSettings};
use tokens::ids;
use url::Url;

pub struct Config {
    pub table: String,
    pub management_key_secret_id: String,
    pub public_base_url: Url,
    pub return_urls: ReturnUrlAllowList,
    pub session_ttl: time::Duration,
}

impl Config {
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let allow_list = env.optional("RETURN_URL_ALLOWLIST").unwrap_or_default();
        Ok(Self {
            table: env.required("STATE_TABLE")?,
            management_key_secret_id: env.required("MANAGEMENT_API_KEY_SECRET_ID")?,
            public_base_url: env.url("PUBLIC_BASE_URL")?,
            return_urls: ReturnUrlAllowList::parse(&allow_list)
                .map_err(|reason| ConfigError::Invalid { name: "RETURN_URL_ALLOWLIST", reason })?,
            session_ttl: env.seconds_or("SESSION_TTL_SECONDS", 900)?.try_into().unwrap_or(time::Duration::MINUTE * 15),
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

pub struct Deps<S> {
    pub store: S,
    pub management_key: SecretString,
    pub sessions: SessionSettings,
}

pub async fn handle<S: SessionStore + ConnectionStore>(
    deps: &Deps<S>,
    request: Request,
) -> Result<Response<Body>, lambda_http::Error> {
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
        (["connections", id], &Method::GET) => get_connection(deps, id).await,
        (["connect-sessions"] | ["connections"] | ["connections", _], _) => {
            http::json_error(405, "method_not_allowed", "This method is not allowed here.")
        }
        _ => http::json_error(404, "not_found", "No such route."),
    };
    Ok(response)
}

fn authorized<S>(deps: &Deps<S>, request: &Request) -> bool {
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

async fn create_session<S: SessionStore>(deps: &Deps<S>, request: &Request) -> Response<Body> {
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

async fn list_connections<S: ConnectionStore>(deps: &Deps<S>, request: &Request) -> Response<Body> {
    let query = request.query_string_parameters();
    let Some(tenant_id) = query.first("tenant_id").filter(|t| !t.is_empty()) else {
        return http::json_error(400, "tenant_id_required", "Pass ?tenant_id= to list a tenant's connections.");
    };
    match deps.store.list_connections(tenant_id).await {
        Ok(connections) => {
            let items: Vec<ConnectionView> = connections.iter().map(ConnectionView::from).collect();
            http::json(200, &serde_json::json!({ "items": items }))
        }
        Err(error) => internal(&error),
    }
}

async fn get_connection<S: ConnectionStore>(deps: &Deps<S>, id: &str) -> Response<Body> {
    match deps.store.get_connection(id).await {
        Ok(Some(connection)) => http::json(200, &ConnectionView::from(&connection)),
        Ok(None) => http::json_error(404, "connection_not_found", "No connection has this id."),
        Err(error) => internal(&error),
    }
}

fn internal(error: &store::StoreError) -> Response<Body> {
    tracing::error!(error = %error, "store request failed");
    http::json_error(500, "internal_error", "The connector hit an internal error.")
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
    /// The Atlassian account that consented.
    pub account_id: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl<'a> From<&'a Connection> for ConnectionView<'a> {
    fn from(c: &'a Connection) -> Self {
        Self {
            connection_id: &c.connection_id,
            tenant_id: &c.tenant_id,
            mode: c.mode,
            status: c.status,
            status_reason: c.status_reason.as_deref(),
            sites: &c.sites,
            scopes: &c.scopes,
            account_id: &c.account_id,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}
