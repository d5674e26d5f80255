//! The connect flow, as three steps the functions call:
//!
//! 1. [`create_session`] (management API): a single-use connect link for a tenant.
//! 2. [`begin`] (`GET /connect`): checks the session, stores a single-use `state` bound to it, and answers the
//!    Atlassian authorize URL.
//! 3. [`complete`] (`GET /oauth/callback`): consumes the state atomically, exchanges the code, discovers sites and
//!    the consenting account, checks scopes, and stores the connection with its sealed tokens in one transaction
//!    that also marks the session used. Any failure before that transaction stores nothing.
//!
//! A session is checked for expiry when it is opened, not at the callback: the state (10 minutes) bounds the time
//! the person spends on Atlassian's consent screen, and a link opened in time must not fail for a slow click.

use crate::credentials::{self, Credentials};
use crate::crypto::KeyRing;
use crate::error::ConnectError;
use crate::ids;
use crate::scopes;
use atlassian::{AccessibleResource, AtlassianApi, AuthorizationCode, OAuthError};
use secrecy::{ExposeSecret, SecretString};
use store::{
    CompleteError, ConnectSession, Connection, ConnectionMode, ConnectionStatus, ConnectionStore, OAuthState,
    SessionStore, Site, StateStore,
};
use time::{Duration, OffsetDateTime};
use url::Url;

/// An allow-list entry that is not an absolute http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an absolute http(s) URL")]
pub struct NotAbsoluteUrl(pub String);

/// Where a connect flow may send the browser back to: absolute URLs; a candidate matches an entry with the same
/// scheme, host and port whose path is the entry's path or lies below it.
#[derive(Debug, Clone, Default)]
pub struct ReturnUrlAllowList(Vec<Url>);

impl ReturnUrlAllowList {
    /// Parses a comma-separated list; an empty list allows no return URL at all.
    pub fn parse(list: &str) -> Result<Self, NotAbsoluteUrl> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| match Url::parse(entry) {
                Ok(url) if matches!(url.scheme(), "https" | "http") && url.has_host() => Ok(url),
                _ => Err(NotAbsoluteUrl(entry.to_owned())),
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn check(&self, candidate: &str) -> Result<Url, ConnectError> {
        let url = Url::parse(candidate).map_err(|_| ConnectError::ReturnUrlNotAllowed)?;
        let allowed = url.username().is_empty()
            && url.password().is_none()
            && self.0.iter().any(|entry| {
                entry.scheme() == url.scheme()
                    && entry.host() == url.host()
                    && entry.port_or_known_default() == url.port_or_known_default()
                    && path_within(entry.path(), url.path())
            });
        if allowed { Ok(url) } else { Err(ConnectError::ReturnUrlNotAllowed) }
    }
}

fn path_within(entry: &str, candidate: &str) -> bool {
    if entry.ends_with('/') {
        candidate.starts_with(entry)
    } else {
        candidate == entry || candidate.strip_prefix(entry).is_some_and(|rest| rest.starts_with('/'))
    }
}

pub struct SessionSettings {
    /// The public base URL of the connector's HTTP API (the connect link and callback hang off it).
    pub public_base_url: Url,
    pub ttl: Duration,
    pub return_urls: ReturnUrlAllowList,
}

#[derive(Debug)]
pub struct NewSession {
    /// The session id is the link's capability: returned once to the management API caller, stored only hashed.
    pub session_id: SecretString,
    pub connect_url: Url,
    pub expires_at: OffsetDateTime,
}

/// `{base}/connect?session=…`
pub fn connect_url(public_base_url: &Url, session_id: &SecretString) -> Url {
    let mut url = join(public_base_url, "connect");
    url.query_pairs_mut().append_pair("session", session_id.expose_secret());
    url
}

/// `{base}/oauth/callback`: the redirect URI registered with the Atlassian app.
pub fn callback_url(public_base_url: &Url) -> Url {
    join(public_base_url, "oauth/callback")
}

fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(path.split('/'));
    }
    url.set_query(None);
    url
}

/// The longest tenant id, in characters.
pub const MAX_TENANT: usize = 200;

/// A tenant id (what the product calls its customer): 1 to [`MAX_TENANT`] characters, none a control character.
pub fn valid_tenant(tenant_id: &str) -> bool {
    (1..=MAX_TENANT).contains(&tenant_id.chars().count()) && !tenant_id.chars().any(char::is_control)
}

pub async fn create_session(
    store: &impl SessionStore,
    settings: &SessionSettings,
    tenant_id: &str,
    return_url: Option<&str>,
    now: OffsetDateTime,
) -> Result<NewSession, ConnectError> {
    if !valid_tenant(tenant_id) {
        return Err(ConnectError::InvalidTenant);
    }
    let return_url = return_url.map(|url| settings.return_urls.check(url)).transpose()?;
    let session_id = ids::random_secret("cs_");
    let expires_at = now + settings.ttl;
    store
        .put_session(&ConnectSession {
            id_hash: ids::sha256_hex(session_id.expose_secret()),
            tenant_id: tenant_id.to_owned(),
            return_url: return_url.map(String::from),
            created_at: now,
            expires_at,
            used_at: None,
        })
        .await?;
    tracing::info!(tenant_id, "connect session created");
    Ok(NewSession { connect_url: connect_url(&settings.public_base_url, &session_id), session_id, expires_at })
}

pub struct AuthorizeSettings {
    /// `{ATLASSIAN_AUTH_BASE_URL}/authorize`
    pub authorize_url: Url,
    /// `api.atlassian.com` (another value for Atlassian Government Cloud).
    pub audience: String,
    pub client_id: String,
    pub redirect_uri: Url,
    pub scopes: Vec<String>,
    pub state_ttl: Duration,
}

impl AuthorizeSettings {
    fn url(&self, state: &SecretString) -> Url {
        let mut url = self.authorize_url.clone();
        url.query_pairs_mut()
            .append_pair("audience", &self.audience)
            .append_pair("client_id", &self.client_id)
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("redirect_uri", self.redirect_uri.as_str())
            .append_pair("state", state.expose_secret())
            .append_pair("response_type", "code")
            .append_pair("prompt", "consent");
        url
    }
}

/// Whether `value` can be a session id or a state this connector issued (`ids::random_secret`: a short prefix and
/// 43 base64url characters), so that nothing longer or stranger reaches the store.
fn issued_shape(value: &str) -> bool {
    (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The name of the cookie that binds a connect flow to the browser that opened the link (RFC 9700 §4.7).
pub const BROWSER_COOKIE: &str = "atlassian_connect_browser";

/// Where a connect link sends the browser, and the binding the browser must keep (as [`BROWSER_COOKIE`]) and bring
/// back to the callback.
#[derive(Debug)]
pub struct Begun {
    pub authorize_url: Url,
    pub browser: SecretString,
}

/// Opens a connect session: answers the Atlassian authorize URL carrying a fresh single-use state, bound to a fresh
/// browser binding that only its hash is stored of.
pub async fn begin<S: SessionStore + StateStore>(
    store: &S,
    settings: &AuthorizeSettings,
    session_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<Begun, ConnectError> {
    let session_id = session_id.filter(|s| !s.is_empty()).ok_or(ConnectError::SessionMissing)?;
    if !issued_shape(session_id) {
        // Not one this connector issued (too long, or characters it never uses): unknown, without a lookup.
        return Err(ConnectError::SessionUnknown);
    }
    let session = store.get_session(&ids::sha256_hex(session_id)).await?.ok_or(ConnectError::SessionUnknown)?;
    if session.used_at.is_some() {
        return Err(ConnectError::SessionUsed);
    }
    if session.expires_at <= now {
        return Err(ConnectError::SessionExpired);
    }
    let state = ids::random_secret("st_");
    let browser = ids::random_secret("br_");
    store
        .put_state(&OAuthState {
            state_hash: ids::sha256_hex(state.expose_secret()),
            session_id_hash: session.id_hash,
            tenant_id: session.tenant_id.clone(),
            return_url: session.return_url,
            expires_at: now + settings.state_ttl,
            browser_hash: Some(ids::sha256_hex(browser.expose_secret())),
        })
        .await?;
    tracing::info!(tenant_id = %session.tenant_id, "connect session opened, sending the browser to Atlassian");
    Ok(Begun { authorize_url: settings.url(&state), browser })
}

/// The query of `GET /oauth/callback`.
#[derive(Debug, Default)]
pub struct CallbackParams {
    pub code: Option<AuthorizationCode>,
    pub state: Option<SecretString>,
    pub error: Option<String>,
    /// The [`BROWSER_COOKIE`] the browser brought back, if any.
    pub browser: Option<SecretString>,
}

pub struct CompleteSettings {
    /// Scopes without which the connection is refused (by default, everything asked for).
    pub required_scopes: Vec<String>,
}

#[derive(Debug)]
pub struct Completed {
    pub connection: Connection,
    pub return_url: Option<String>,
}

#[derive(Debug)]
pub struct Failure {
    pub error: ConnectError,
    /// Where the person came from, when the state was good enough to tell.
    pub return_url: Option<String>,
}

/// Finishes a connect flow from Atlassian's redirect.
pub async fn complete<S, A>(
    store: &S,
    atlassian: &A,
    keys: &KeyRing,
    settings: &CompleteSettings,
    params: CallbackParams,
    now: OffsetDateTime,
) -> Result<Completed, Failure>
where
    S: SessionStore + StateStore + ConnectionStore,
    A: AtlassianApi,
{
    // Consume the state first, whatever else the callback says: it is single-use in every outcome. (One that this
    // connector cannot have issued is unknown without a lookup.)
    let state = match &params.state {
        Some(state) if !issued_shape(state.expose_secret()) => None,
        Some(state) => store
            .take_state(&ids::sha256_hex(state.expose_secret()))
            .await
            .map_err(|e| Failure { error: e.into(), return_url: None })?,
        None => None,
    };
    let return_url = state.as_ref().and_then(|s| s.return_url.clone());
    let result = finish(store, atlassian, keys, settings, params, state, now).await;
    match result {
        Ok(connection) => {
            tracing::info!(
                connection_id = %connection.connection_id,
                tenant_id = %connection.tenant_id,
                sites = connection.sites.len(),
                "connection stored"
            );
            Ok(Completed { connection, return_url })
        }
        Err(error) => Err(Failure { error, return_url }),
    }
}

async fn finish<S, A>(
    store: &S,
    atlassian: &A,
    keys: &KeyRing,
    settings: &CompleteSettings,
    params: CallbackParams,
    state: Option<OAuthState>,
    now: OffsetDateTime,
) -> Result<Connection, ConnectError>
where
    S: SessionStore + StateStore + ConnectionStore,
    A: AtlassianApi,
{
    if let Some(error) = params.error {
        return Err(if error == "access_denied" {
            ConnectError::ConsentDenied
        } else {
            ConnectError::AuthorizationFailed { code: sanitize_code(&error) }
        });
    }
    if params.state.is_none() {
        return Err(ConnectError::StateMissing);
    }
    let state = state.ok_or(ConnectError::StateUnknown)?;
    if state.expires_at <= now {
        return Err(ConnectError::StateExpired);
    }
    // The flow must end in the browser that opened the link: a state carried to another (a forwarded authorize URL,
    // a forged callback) is refused. (States stored before bindings existed carry none.)
    if let Some(expected) = &state.browser_hash {
        let presented = params.browser.as_ref().map(|b| ids::sha256_hex(b.expose_secret()));
        if !presented.is_some_and(|presented| ids::secrets_equal(&presented, expected)) {
            return Err(ConnectError::OtherBrowser);
        }
    }
    let code = params.code.filter(|c| !c.secret().is_empty()).ok_or(ConnectError::CodeMissing)?;
    let session = store.get_session(&state.session_id_hash).await?.ok_or(ConnectError::SessionUnknown)?;
    if session.used_at.is_some() {
        return Err(ConnectError::SessionUsed);
    }

    let grant = atlassian.exchange_code(&code).await.map_err(|error| match error {
        OAuthError::ClientRejected => ConnectError::ClientRejected(error),
        OAuthError::InvalidGrant { .. } => ConnectError::CodeRejected(error),
        other => ConnectError::TokenEndpoint(other),
    })?;
    let resources = atlassian.accessible_resources(&grant.access_token).await.map_err(ConnectError::Atlassian)?;
    let resources = merge_sites(resources);
    if resources.is_empty() {
        return Err(ConnectError::NoSites);
    }
    let granted = if grant.scopes.is_empty() {
        // Fall back to what the sites say when the token response omits `scope`.
        scopes::parse(&resources.iter().flat_map(|r| r.scopes.iter().map(String::as_str)).collect::<Vec<_>>().join(" "))
    } else {
        grant.scopes.clone()
    };
    let mut missing: Vec<String> =
        scopes::missing(&settings.required_scopes, &granted).into_iter().map(String::from).collect();
    if grant.refresh_token.is_none() && !missing.iter().any(|s| s == "offline_access") {
        // No refresh token means no offline access, whatever the scope string claims.
        missing.push("offline_access".into());
    }
    if !missing.is_empty() {
        return Err(ConnectError::MissingScopes(missing));
    }
    let me = atlassian.me(&grant.access_token).await.map_err(ConnectError::Atlassian)?;

    let connection_id = ids::connection_id(&session.tenant_id, &me.account_id);
    let expires_in = Duration::try_from(grant.expires_in).unwrap_or(Duration::HOUR);
    let sealed = credentials::seal(
        keys,
        &connection_id,
        &Credentials {
            access_token: grant.access_token,
            refresh_token: grant.refresh_token,
            expires_at: now + expires_in,
        },
    )
    .map_err(ConnectError::Crypto)?;
    let connection = Connection {
        connection_id,
        tenant_id: session.tenant_id,
        mode: ConnectionMode::Oauth,
        status: ConnectionStatus::Active,
        status_reason: None,
        sites: resources
            .into_iter()
            .map(|r| Site {
                products: scopes::products(&r.scopes),
                cloud_id: r.id,
                url: r.url,
                name: r.name,
                lost_at: None,
            })
            .collect(),
        scopes: granted,
        account_id: me.account_id,
        org_id: None,
        credentials: sealed,
        token_version: 0,
        created_at: now,
        updated_at: now,
        connected_at: Some(now),
    };
    store.complete_connect(&session.id_hash, &connection).await.map_err(|error| match error {
        CompleteError::SessionUsed => ConnectError::SessionUsed,
        CompleteError::Store(error) => ConnectError::Store(error),
    })
}

/// One entry per cloud id: should Atlassian list a site once per product, the entries' scopes are merged.
pub fn merge_sites(resources: Vec<AccessibleResource>) -> Vec<AccessibleResource> {
    let mut merged: Vec<AccessibleResource> = Vec::with_capacity(resources.len());
    for resource in resources {
        match merged.iter_mut().find(|m| m.id == resource.id) {
            Some(existing) => {
                for scope in resource.scopes {
                    if !existing.scopes.contains(&scope) {
                        existing.scopes.push(scope);
                    }
                }
            }
            None => merged.push(resource),
        }
    }
    merged
}

/// The `error` of a callback is attacker-controlled text: keep a short OAuth-style code only.
fn sanitize_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect()
}

/// The return URL with the outcome appended: `connection_id` and `status` on success, `error` on failure.
pub fn return_redirect(return_url: &str, pairs: &[(&str, &str)]) -> Option<Url> {
    let mut url = Url::parse(return_url).ok()?;
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in pairs {
            query.append_pair(key, value);
        }
    }
    Some(url)
}
