//! A small server that behaves like Atlassian's OAuth 2.0 (3LO) and identity APIs, over a seeded org, so the
//! connector is developed and tested without Atlassian. What it copies from the real thing (see
//! `../shared/reference/atlassian-api.md`):
//!
//! - `GET /authorize` shows a consent page (Accept / Cancel) and redirects back with `code` + `state`, or with
//!   `error=access_denied&error_description=…` like Atlassian does;
//! - `POST /oauth/token` takes JSON or form bodies, client credentials in the body (or Basic), single-use codes
//!   bound to their `redirect_uri`, and **rotating refresh tokens**: each refresh returns a new pair and disables
//!   the old refresh token; reusing it after the reuse leeway kills every token of the grant; a wrong client secret
//!   answers `401 {"error":"access_denied"}`; dead refresh tokens answer `403 {"error":"invalid_grant"}`;
//! - `GET /oauth/token/accessible-resources` and `GET /me` with Bearer tokens;
//! - the Jira and Confluence REST APIs through the gateway (`rest.rs`), with users pages capped below `maxResults`,
//!   project and space ids that repeat across sites (`org.rs`), and Atlassian's points quota with its headers
//!   (`quota.rs`); the Organization Admin API and Basic-auth sites (`admin.rs`).
//!
//! The consent page has a "sandbox options" section (test-only) to pick the account, the sites, the scopes granted
//! and a fault for the issued code, so tests in parallel each shape their own grant. `/__sandbox/*` exposes what
//! was issued (for the test that greps logs for secrets) and lets tests revoke grants, inject faults
//! (`POST /__sandbox/faults`, [`Faults`], including `lose_refresh_replies`: a refresh that rotates the tokens and
//! then loses its answer) and set the quota (`POST /__sandbox/quota`). `GET /__sandbox/stats` counts token
//! requests, refreshes, REST requests by route, points, burst and quota 429s, points by quota window, and lost
//! refresh replies.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawForm, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};
use url::Url;

mod admin;
mod org;
mod quota;
mod rest;
mod work;

pub use admin::{FOREIGN_SITE, ORG_ID, ORG_NAME};
pub use org::{Group, Org, OrgSize, Project, SiteDef, Space, TenantSize, User, site_id};
pub use quota::Quota;
pub use rest::Faults;

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub client_id: String,
    pub client_secret: String,
    /// The seeded org's size (the first three users are org admins who can consent).
    pub org: OrgSize,
    pub access_token_ttl: Duration,
    /// How long an already-rotated refresh token may still be used (Atlassian: 10 minutes).
    pub reuse_leeway: Duration,
    /// Faults injected into the REST API from the start (also settable at `POST /__sandbox/faults`).
    pub faults: Faults,
    /// The most users a `users/search` page serves, whatever `maxResults` asks (Jira: 100, JRASERVER-78660).
    pub users_page_cap: usize,
    /// The most members a `group/member` page serves (Jira: 50, its documented maximum); less makes a client that
    /// assumes the page size it asked for skip members.
    pub members_page_cap: usize,
    /// Every Nth users page is served shorter still (half), mid-list: only an empty page ends the list (0: never).
    pub short_pages_every: u64,
    /// The points quota of the Jira and Confluence REST APIs (also settable at `POST /__sandbox/quota`).
    pub quota: Quota,
    /// The first group has this many members (0: it is as small as the others): every real org has a group that
    /// holds nearly everyone (`jira-software-users`).
    pub big_group: usize,
    /// Many tenants instead of one org (see [`Org::tenants`]); empty: the one org of `org`.
    pub tenants: Vec<TenantSize>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            client_id: "sandbox-client-id".into(),
            client_secret: "sandbox-client-secret".into(),
            org: OrgSize::default(),
            access_token_ttl: Duration::from_secs(3600),
            reuse_leeway: Duration::from_secs(600),
            faults: Faults::default(),
            users_page_cap: 100,
            members_page_cap: 50,
            short_pages_every: 0,
            quota: Quota::default(),
            big_group: 0,
            tenants: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The code's exchange answers 500 with an HTML page.
    Token500,
    /// The code's exchange answers `invalid_grant`.
    TokenInvalidGrant,
}

struct CodeGrant {
    grant_key: String,
    client_id: String,
    redirect_uri: String,
    expires_at: Instant,
    fault: Fault,
}

struct Grant {
    account_id: String,
    sites: Vec<String>,
    scopes: Vec<String>,
    refresh_current: Option<String>,
    /// Refresh tokens already rotated away, with when they were rotated.
    refresh_previous: Vec<(String, Instant)>,
    revoked: bool,
}

#[derive(Default)]
struct Inner {
    codes: HashMap<String, CodeGrant>,
    grants: HashMap<String, Grant>,
    access: HashMap<String, (String, Instant)>,
    issued: Vec<String>,
    token_requests: u64,
    refreshes: u64,
    faults: Faults,
    /// REST requests answered, by route, and the quota points Atlassian would have charged.
    rest_requests: std::collections::BTreeMap<&'static str, u64>,
    points: u64,
    rest_counter: u64,
    /// Users pages served, for `short_pages_every`.
    users_pages: u64,
    /// 429s from `Faults::rate_limit_every` (burst limits), apart from the quota's.
    burst_429s: u64,
    /// 5xx answers from `Faults::error_every`.
    server_errors: u64,
    /// Cursor pages served (after a first), and those that repeated a record (`Faults::repeat_every`).
    cursor_pages: u64,
    repeated: u64,
    lost_refresh_replies: u64,
    /// Requests stalled by `Faults::stall_every`.
    stalled: u64,
    quota: quota::QuotaState,
    admin: admin::AdminState,
}

#[derive(Clone)]
pub struct Sandbox {
    config: Arc<SandboxConfig>,
    org: Arc<RwLock<Org>>,
    inner: Arc<Mutex<Inner>>,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        let mut org = if config.tenants.is_empty() { Org::seeded(config.org) } else { Org::tenants(&config.tenants) };
        org.grow_first_group(config.big_group);
        let inner = Inner {
            faults: config.faults.clone(),
            quota: quota::QuotaState::new(config.quota.clone()),
            ..Inner::default()
        };
        Self { config: Arc::new(config), org: Arc::new(RwLock::new(org)), inner: Arc::new(Mutex::new(inner)) }
    }

    /// A snapshot of the org as it is now.
    pub fn org(&self) -> Org {
        self.read_org().clone()
    }

    fn read_org(&self) -> RwLockReadGuard<'_, Org> {
        self.org.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/authorize", get(authorize_page).post(authorize_decision))
            .route("/oauth/token", post(token))
            .route("/oauth/token/accessible-resources", get(accessible_resources))
            .route("/me", get(me))
            .route("/__sandbox/issued", get(issued))
            .route("/__sandbox/stats", get(stats))
            .route("/__sandbox/org", get(org))
            .route("/__sandbox/org/mutate", post(mutate))
            .route("/__sandbox/org/keep-users", post(keep_users))
            .route("/__sandbox/org/groups/{group_id}/members", post(add_member))
            .route("/__sandbox/faults", post(set_faults))
            .route("/__sandbox/quota", post(quota::set))
            .route("/__sandbox/grants", post(mint_grant))
            .route("/__sandbox/grants/{account_id}/revoke", post(revoke))
            .route("/__sandbox/grants/{account_id}/sites/{cloud_id}/remove", post(remove_site))
            .merge(rest::routes())
            .merge(work::routes())
            .merge(admin::routes())
            .layer(axum::middleware::from_fn_with_state(self.clone(), quota::headers))
            .with_state(self)
    }

    /// Serves on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    fn issue(&self, inner: &mut Inner, prefix: &str) -> String {
        let mut bytes = [0u8; 24];
        aws_lc_rs::rand::fill(&mut bytes).expect("random source");
        let value = format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        inner.issued.push(value.clone());
        value
    }

    /// A new access token (and, with `offline_access`, a new refresh token, rotating the old one away) for a grant,
    /// as the token endpoint answers it.
    fn issue_tokens(&self, inner: &mut Inner, grant_key: &str) -> serde_json::Value {
        let access_token = self.issue(inner, "sbx-at-");
        let expires_at = Instant::now() + self.config.access_token_ttl;
        inner.access.insert(access_token.clone(), (grant_key.to_owned(), expires_at));
        let (scopes, offline) = {
            let grant = &inner.grants[grant_key];
            (grant.scopes.join(" "), grant.scopes.iter().any(|s| s == "offline_access"))
        };
        let refresh_token = offline.then(|| self.issue(inner, "sbx-rt-"));
        if let Some(grant) = inner.grants.get_mut(grant_key) {
            if let Some(old) = grant.refresh_current.take() {
                grant.refresh_previous.push((old, Instant::now()));
            }
            grant.refresh_current = refresh_token.clone();
        }
        let mut body = json!({
            "access_token": access_token,
            "expires_in": self.config.access_token_ttl.as_secs(),
            "scope": scopes,
            "token_type": "Bearer",
        });
        if let Some(refresh_token) = refresh_token {
            body["refresh_token"] = json!(refresh_token);
        }
        body
    }

    #[allow(clippy::result_large_err)] // a test server: the rejection is the response itself
    fn grant_for_bearer(&self, headers: &HeaderMap) -> Result<(String, Vec<String>, Vec<String>), Response> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let inner = self.lock();
        let unauthorized =
            || (StatusCode::UNAUTHORIZED, axum::Json(json!({"code": 401, "message": "Unauthorized"}))).into_response();
        let Some((grant_key, expires_at)) = inner.access.get(token) else {
            return Err(unauthorized());
        };
        if *expires_at <= Instant::now() {
            return Err(unauthorized());
        }
        match inner.grants.get(grant_key) {
            Some(grant) if !grant.revoked => Ok((grant.account_id.clone(), grant.sites.clone(), grant.scopes.clone())),
            _ => Err(unauthorized()),
        }
    }
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;background:#f4f5f7;color:#172b4d;margin:0;padding:3rem}}
main{{background:#fff;max-width:36rem;margin:auto;padding:2rem;border-radius:8px;box-shadow:0 1px 3px rgba(9,30,66,.25)}}
button{{font-size:1rem;padding:.5rem 1.2rem;border-radius:4px;border:0;margin-right:.5rem;cursor:pointer}}
.accept{{background:#0052cc;color:#fff}} .cancel{{background:#ebecf0}} code{{background:#f4f5f7;padding:0 .25rem}}
details{{margin:1rem 0;color:#5e6c84}} label{{display:block;margin:.25rem 0}}</style></head>
<body><main><p><strong>Atlassian sandbox</strong></p>{body}</main></body></html>"#,
        title = html_escape::encode_text(title)
    ))
}

async fn authorize_page(State(sandbox): State<Sandbox>, Query(query): Query<HashMap<String, String>>) -> Response {
    use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
    let get = |k: &str| query.get(k).map(String::as_str).unwrap_or_default();
    let problems: Vec<&str> = [
        (get("client_id") != sandbox.config.client_id, "unknown client_id"),
        (get("response_type") != "code", "response_type must be code"),
        (get("audience") != "api.atlassian.com", "audience must be api.atlassian.com"),
        (Url::parse(get("redirect_uri")).is_err(), "redirect_uri must be an absolute URL"),
        (get("scope").trim().is_empty(), "scope is required"),
        (get("state").is_empty(), "state is required"),
    ]
    .into_iter()
    .filter_map(|(bad, why)| bad.then_some(why))
    .collect();
    if !problems.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            page(
                "Invalid authorization request",
                &format!("<h1>Something's wrong</h1><p>{}</p>", text(&problems.join("; "))),
            ),
        )
            .into_response();
    }
    let scopes: Vec<&str> = get("scope").split_whitespace().collect();
    let hidden: String = ["client_id", "redirect_uri", "state", "scope"]
        .iter()
        .map(|k| format!(r#"<input type="hidden" name="{k}" value="{}">"#, attr(get(k))))
        .collect();
    let org = sandbox.read_org();
    let accounts: String = org
        .users
        .iter()
        .filter(|u| u.org_admin)
        .map(|u| format!(r#"<option value="{}">{} ({})</option>"#, attr(&u.account_id), text(&u.name), text(&u.email)))
        .collect();
    let sites: String = org
        .sites
        .iter()
        .map(|s| {
            format!(
                r#"<label><input type="checkbox" name="site" value="{}" checked> {}</label>"#,
                attr(&s.id),
                text(&s.url)
            )
        })
        .collect();
    let scope_list: String = scopes.iter().map(|s| format!("<li><code>{}</code></li>", text(s))).collect();
    let body = format!(
        r#"<h1>Connector is requesting access to your Atlassian account</h1>
<form method="post" action="authorize">{hidden}
<label>Signed in as <select name="account_id">{accounts}</select></label>
<p>Use app on:</p>{sites}
<p>It wants to:</p><ul>{scope_list}</ul>
<details><summary>Sandbox options</summary>
<label>Granted scopes <input name="granted_scopes" size="60" value="{granted}"></label>
<label>Fault <select name="fault"><option value="">none</option><option value="token_500">token endpoint 500</option><option value="token_invalid_grant">code rejected (invalid_grant)</option></select></label>
</details>
<button class="accept" type="submit" name="decision" value="accept">Accept</button>
<button class="cancel" type="submit" name="decision" value="cancel">Cancel</button>
</form>"#,
        granted = attr(&scopes.join(" ")),
    );
    page("Authorize app", &body).into_response()
}

async fn authorize_decision(State(sandbox): State<Sandbox>, RawForm(form): RawForm) -> Response {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&form).into_owned().collect();
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or_default();
    let Ok(mut redirect) = Url::parse(get("redirect_uri")) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri must be an absolute URL").into_response();
    };
    if get("client_id") != sandbox.config.client_id {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    if get("decision") != "accept" {
        redirect
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "User did not authorize the request")
            .append_pair("state", get("state"));
        return found(&redirect);
    }
    let account_id = get("account_id");
    if !sandbox.read_org().users.iter().any(|u| u.account_id == account_id && u.org_admin) {
        return (StatusCode::BAD_REQUEST, "unknown account").into_response();
    }
    let sites: Vec<String> = pairs.iter().filter(|(k, _)| k == "site").map(|(_, v)| v.clone()).collect();
    let granted = if pairs.iter().any(|(k, _)| k == "granted_scopes") { get("granted_scopes") } else { get("scope") };
    let fault = match get("fault") {
        "token_500" => Fault::Token500,
        "token_invalid_grant" => Fault::TokenInvalidGrant,
        _ => Fault::None,
    };
    let code = {
        let mut inner = sandbox.lock();
        // One grant per (app, account). Consenting again adds the sites chosen to the grant (Atlassian cannot
        // revoke one site alone), takes the scopes of this consent and starts a new token chain.
        let grant_key = format!("{}:{account_id}", sandbox.config.client_id);
        let mut all_sites =
            inner.grants.get(&grant_key).filter(|g| !g.revoked).map(|g| g.sites.clone()).unwrap_or_default();
        for site in sites {
            if !all_sites.contains(&site) {
                all_sites.push(site);
            }
        }
        inner.grants.insert(
            grant_key.clone(),
            Grant {
                account_id: account_id.to_owned(),
                sites: all_sites,
                scopes: granted.split_whitespace().map(String::from).collect(),
                refresh_current: None,
                refresh_previous: Vec::new(),
                revoked: false,
            },
        );
        let code = sandbox.issue(&mut inner, "sbx-code-");
        inner.codes.insert(
            code.clone(),
            CodeGrant {
                grant_key,
                client_id: get("client_id").to_owned(),
                redirect_uri: get("redirect_uri").to_owned(),
                expires_at: Instant::now() + Duration::from_secs(300),
                fault,
            },
        );
        code
    };
    redirect.query_pairs_mut().append_pair("code", &code).append_pair("state", get("state"));
    found(&redirect)
}

/// `302 Found`, as Atlassian redirects.
fn found(location: &Url) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_string())]).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": error, "error_description": description}))).into_response()
}

async fn token(State(sandbox): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut fields: HashMap<String, String> = if is_json {
        match serde_json::from_slice::<HashMap<String, serde_json::Value>>(&body) {
            Ok(map) => map.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned()))).collect(),
            Err(_) => {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Malformed JSON");
            }
        }
    } else {
        url::form_urlencoded::parse(&body).into_owned().collect()
    };
    // Basic client authentication is accepted too.
    if let Some(basic) =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "))
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic)
        && let Some((id, secret)) = String::from_utf8_lossy(&decoded).split_once(':')
    {
        fields.entry("client_id".into()).or_insert_with(|| id.to_owned());
        fields.entry("client_secret".into()).or_insert_with(|| secret.to_owned());
    }
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let refreshing = field("grant_type") == "refresh_token";
    let mut inner = sandbox.lock();
    inner.token_requests += 1;
    if field("client_id") != sandbox.config.client_id || field("client_secret") != sandbox.config.client_secret {
        return oauth_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized");
    }
    let grant_key = match field("grant_type") {
        "authorization_code" => {
            let Some(code) = inner.codes.remove(field("code")) else {
                return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Invalid authorization code");
            };
            if code.expires_at <= Instant::now()
                || code.client_id != field("client_id")
                || code.redirect_uri != field("redirect_uri")
            {
                return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Invalid authorization code");
            }
            match code.fault {
                Fault::Token500 => {
                    return (StatusCode::INTERNAL_SERVER_ERROR, Html("<h1>Internal Server Error</h1>")).into_response();
                }
                Fault::TokenInvalidGrant => {
                    return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Invalid authorization code");
                }
                Fault::None => {}
            }
            code.grant_key
        }
        "refresh_token" => {
            let presented = field("refresh_token").to_owned();
            let now = Instant::now();
            let leeway = sandbox.config.reuse_leeway;
            let found = inner.grants.iter_mut().find(|(_, g)| {
                g.refresh_current.as_deref() == Some(&presented)
                    || g.refresh_previous.iter().any(|(t, _)| *t == presented)
            });
            let Some((key, grant)) = found else {
                return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Unknown or invalid refresh token.");
            };
            if grant.revoked {
                return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Unknown or invalid refresh token.");
            }
            if grant.refresh_current.as_deref() != Some(&presented) {
                let rotated_at = grant.refresh_previous.iter().find(|(t, _)| *t == presented).map(|(_, at)| *at);
                if rotated_at.is_none_or(|at| now.duration_since(at) > leeway) {
                    // Reuse outside the leeway: Atlassian invalidates every token of the grant.
                    grant.revoked = true;
                    return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Unknown or invalid refresh token.");
                }
            }
            let key = key.clone();
            inner.refreshes += 1;
            key
        }
        _ => {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "Unsupported grant type");
        }
    };
    let body = sandbox.issue_tokens(&mut inner, &grant_key);
    if refreshing && inner.faults.lose_refresh_replies > 0 {
        // The tokens have rotated; the client just never hears of it. Its old refresh token is now a rotated one,
        // usable within the reuse leeway.
        inner.faults.lose_refresh_replies -= 1;
        inner.lost_refresh_replies += 1;
        return rest::dropped_connection();
    }
    axum::Json(body).into_response()
}

async fn accessible_resources(State(sandbox): State<Sandbox>, headers: HeaderMap) -> Response {
    let (_, sites, scopes) = match sandbox.grant_for_bearer(&headers) {
        Ok(grant) => grant,
        Err(response) => return response,
    };
    let site_scopes: Vec<&String> = scopes.iter().filter(|s| *s != "offline_access" && *s != "read:me").collect();
    let resources: Vec<_> = sandbox
        .read_org()
        .sites
        .iter()
        .filter(|s| sites.contains(&s.id))
        .map(|s| {
            json!({
                "id": s.id, "url": s.url, "name": s.name, "scopes": site_scopes,
                "avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/rocket.png",
            })
        })
        .collect();
    axum::Json(resources).into_response()
}

async fn me(State(sandbox): State<Sandbox>, headers: HeaderMap) -> Response {
    let (account_id, _, _) = match sandbox.grant_for_bearer(&headers) {
        Ok(grant) => grant,
        Err(response) => return response,
    };
    let org = sandbox.read_org();
    let Some(user) = org.user(&account_id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    axum::Json(json!({
        "account_type": "atlassian", "account_id": user.account_id, "email": user.email, "name": user.name,
        "picture": "https://avatar-management.services.atlassian.com/default/48", "account_status": "active",
        "nickname": user.name.split(' ').next(), "zoneinfo": "Europe/London", "locale": "en-GB",
        "extended_profile": {"job_title": "Org admin"}, "email_verified": true,
    }))
    .into_response()
}

async fn issued(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(json!({"secrets": sandbox.lock().issued.clone()})).into_response()
}

async fn stats(State(sandbox): State<Sandbox>) -> Response {
    let inner = sandbox.lock();
    let mut stats = json!({
        "token_requests": inner.token_requests,
        "refreshes": inner.refreshes,
        "rest_requests": inner.rest_requests,
        "points": inner.points,
        "burst_429s": inner.burst_429s,
        "server_errors": inner.server_errors,
        "repeated": inner.repeated,
        "lost_refresh_replies": inner.lost_refresh_replies,
        "stalled": inner.stalled,
    });
    if let (Some(stats), Value::Object(quota)) = (stats.as_object_mut(), inner.quota.stats()) {
        stats.extend(quota);
    }
    axum::Json(stats).into_response()
}

async fn org(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(sandbox.org()).into_response()
}

/// One round of changes to the org (see [`Org::mutate`]); answers the org as it is now.
async fn mutate(State(sandbox): State<Sandbox>) -> Response {
    let mut org = sandbox.org.write().unwrap_or_else(|p| p.into_inner());
    org.mutate();
    axum::Json(org.clone()).into_response()
}

/// The org loses every user but the first `keep` (a mass departure, or what a truncated listing looks like):
/// `{"keep": N}`; answers the org as it is now.
async fn keep_users(State(sandbox): State<Sandbox>, axum::Json(body): axum::Json<serde_json::Value>) -> Response {
    let Some(keep) = body["keep"].as_u64() else {
        return (StatusCode::BAD_REQUEST, "keep must be a number of users").into_response();
    };
    let mut org = sandbox.org.write().unwrap_or_else(|p| p.into_inner());
    org.keep_users(keep as usize);
    axum::Json(org.clone()).into_response()
}

/// One more member for a group: `{"account_id"}` of a user of the org.
async fn add_member(
    State(sandbox): State<Sandbox>,
    Path(group_id): Path<String>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    let mut org = sandbox.org.write().unwrap_or_else(|p| p.into_inner());
    let account_id = body["account_id"].as_str().unwrap_or_default().to_owned();
    if org.user(&account_id).is_none() {
        return (StatusCode::BAD_REQUEST, "no such user").into_response();
    }
    let Some(group) = org.groups.iter_mut().find(|g| g.id == group_id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !group.members.contains(&account_id) {
        group.members.push(account_id);
        group.members.sort();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn set_faults(State(sandbox): State<Sandbox>, axum::Json(faults): axum::Json<Faults>) -> Response {
    sandbox.lock().faults = faults;
    StatusCode::NO_CONTENT.into_response()
}

/// A grant made without the consent page (load tests connect a thousand tenants): `{"account_id", "sites": [cloud
/// ids], "scopes": "…"}` of an org admin; answers like the token endpoint does for a code.
async fn mint_grant(State(sandbox): State<Sandbox>, axum::Json(body): axum::Json<serde_json::Value>) -> Response {
    let account_id = body["account_id"].as_str().unwrap_or_default().to_owned();
    if !sandbox.read_org().user(&account_id).is_some_and(|u| u.org_admin) {
        return (StatusCode::BAD_REQUEST, "account_id must be an org admin").into_response();
    }
    let sites: Vec<String> =
        body["sites"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect();
    let scopes: Vec<String> =
        body["scopes"].as_str().unwrap_or_default().split_whitespace().map(String::from).collect();
    let mut inner = sandbox.lock();
    let grant_key = format!("{}:{account_id}", sandbox.config.client_id);
    let grant =
        Grant { account_id, sites, scopes, refresh_current: None, refresh_previous: Vec::new(), revoked: false };
    inner.grants.insert(grant_key.clone(), grant);
    axum::Json(sandbox.issue_tokens(&mut inner, &grant_key)).into_response()
}

async fn revoke(State(sandbox): State<Sandbox>, Path(account_id): Path<String>) -> Response {
    let mut inner = sandbox.lock();
    let mut found = false;
    for grant in inner.grants.values_mut().filter(|g| g.account_id == account_id) {
        grant.revoked = true;
        found = true;
    }
    if found { StatusCode::NO_CONTENT.into_response() } else { StatusCode::NOT_FOUND.into_response() }
}

/// The grant stops reaching one site (as when a site is deleted or the app is removed from it).
async fn remove_site(State(sandbox): State<Sandbox>, Path((account_id, cloud_id)): Path<(String, String)>) -> Response {
    let mut inner = sandbox.lock();
    let mut found = false;
    for grant in inner.grants.values_mut().filter(|g| g.account_id == account_id) {
        let before = grant.sites.len();
        grant.sites.retain(|s| *s != cloud_id);
        found |= grant.sites.len() < before;
    }
    if found { StatusCode::NO_CONTENT.into_response() } else { StatusCode::NOT_FOUND.into_response() }
}
