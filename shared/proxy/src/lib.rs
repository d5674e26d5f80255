//! The proxy: the product calls any Atlassian endpoint through a connection, and the connector adds what the call
//! needs (the site, a credential, the points budget) and nothing else.
//!
//! - `jira` and `confluence` go through Atlassian's gateway for one of an OAuth connection's sites, with an access
//!   token refreshed rotation-safely first if it would expire (`tokens::refresh`, the same lease as the syncs);
//! - `admin` goes to the Admin API with an admin-key connection's key, `site` to its site with the site token.
//!
//! Gateway calls draw from the app's points pools like sync requests (Atlassian counts them alike), and may also
//! spend half of the reserve syncs leave ([`budget::QuotaConfig::for_proxy`]); a dry pool is a 429 with
//! `Retry-After`, never a wait (the caller is inside API Gateway's 30 s). Atlassian's own 429s come back as they
//! came, and a quota 429 also blocks the pool for the syncs. Writes are refused unless the deployment allows them.

mod rules;

pub use budget::QuotaConfig;
pub use rules::{MAX_PATH, MAX_QUERY, answer_headers, path_is_safe, points, request_headers, split_query};

use atlassian::{AdminKey, ApiError, AtlassianApi, Forward, ForwardApi, Target};
use budget::{Budget, BudgetError, SharedBudget};
use std::time::{Duration, Instant};
use store::{BudgetStore, Connection, ConnectionMode, ConnectionStatus, ConnectionStore, CredentialStore, Product};
use thiserror::Error;
use tokens::KeyRing;
use tokens::refresh::{RefreshError, RefreshPolicy};

/// The largest request body passed on, and the largest answer body passed back: Lambda's 6 MB payload, less what
/// base64 adds to a binary body and what the rest of the event or response takes.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// How a deployment runs its proxy.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whether `POST`, `PUT` and `DELETE` pass (`PROXY_ALLOW_WRITES`); off by default: an access-review product
    /// reads, and a leaked management key should not be able to change the customer's Atlassian.
    pub allow_writes: bool,
    /// The app's quota, as the syncs see it (the proxy's share is computed from it).
    pub quota: QuotaConfig,
    /// Refreshes wait briefly for another holder of the lease: the caller waits inside API Gateway's 30 s.
    pub refresh: RefreshPolicy,
}

impl Settings {
    pub fn new(allow_writes: bool, quota: QuotaConfig) -> Self {
        let refresh = RefreshPolicy { wait: time::Duration::seconds(8), ..RefreshPolicy::default() };
        Self { allow_writes, quota, refresh }
    }
}

/// The product's request, as the management API received it.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: reqwest::Method,
    /// `jira`, `confluence`, `admin` or `site`.
    pub product: &'a str,
    /// What follows `/proxy/{product}`, as sent (still percent-encoded).
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The site asked for by header (`X-Atlassian-Cloud-Id`), if any; `?cloud_id=` wins.
    pub cloud_id: Option<&'a str>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Names this call in a refresh lease (the Lambda request id).
    pub owner: String,
}

/// Atlassian's answer, with only the headers that come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What the call was charged in points (0 when it is not metered: the Admin API and site tokens).
    pub points: u64,
}

/// Why a call was not passed on, or failed on the way. Each is an answer for the caller.
#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("unknown product `{0}`")]
    UnknownProduct(String),
    #[error("`{product}` is not reachable through {mode} connections")]
    WrongMode { product: String, mode: &'static str },
    #[error("the path is not a plain path inside the product's API")]
    UnsafePath,
    #[error("the query string is too long")]
    QueryTooLong,
    #[error("this method is not proxied")]
    MethodNotAllowed,
    #[error("writes through the proxy are off in this deployment")]
    WritesDisabled,
    #[error("no connection has this id")]
    NotFound,
    #[error("the connection was disconnected")]
    Revoked,
    #[error("the connection needs to be re-authorised: {0}")]
    NeedsReauth(String),
    #[error("the connection has several {product} sites; name one: {choices}")]
    SiteRequired { product: String, choices: String },
    #[error("the connection has no {product} site `{cloud_id}`")]
    UnknownSite { product: String, cloud_id: String },
    #[error("the connection reaches no {0} site")]
    NoSite(String),
    #[error("the connection has no site token")]
    NoSiteToken,
    #[error("the app's Atlassian points quota is spent for now")]
    QuotaExhausted { retry_after: Duration },
    #[error("another refresh of this connection's token is under way")]
    Busy,
    #[error("Atlassian's answer is longer than the proxy passes back")]
    AnswerTooLarge,
    #[error("Atlassian could not be reached")]
    Unreachable(#[source] ApiError),
    #[error("the request could not be sent as given (a header value?)")]
    Unsendable(#[source] ApiError),
    #[error("the connection's token could not be refreshed")]
    Refresh(#[source] RefreshError),
    #[error("the connection's credentials could not be opened")]
    Crypto(#[source] tokens::crypto::CryptoError),
    #[error("the state store failed")]
    Store(#[from] store::StoreError),
}

/// Passes `request` to Atlassian through connection `connection_id`.
pub async fn forward<S, A>(
    store: &S,
    atlassian: &A,
    keys: &KeyRing,
    settings: &Settings,
    connection_id: &str,
    request: Request<'_>,
) -> Result<Answer, ProxyError>
where
    S: ConnectionStore + CredentialStore + BudgetStore,
    A: AtlassianApi + ForwardApi,
{
    check(settings, &request)?;
    let connection = store.get_connection(connection_id).await?.ok_or(ProxyError::NotFound)?;
    match connection.status {
        ConnectionStatus::Active => {}
        ConnectionStatus::Revoked => return Err(ProxyError::Revoked),
        ConnectionStatus::NeedsReauth => {
            return Err(ProxyError::NeedsReauth(connection.status_reason.clone().unwrap_or_default()));
        }
    }
    let (query, asked_site) = split_query(request.query);
    let asked_site = asked_site.or(request.cloud_id.map(str::to_owned));
    let path_and_query = match &query {
        Some(query) => format!("{}?{query}", request.path),
        None => request.path.to_owned(),
    };
    let call = |target| Forward {
        method: request.method.clone(),
        target,
        path_and_query: &path_and_query,
        headers: &request.headers,
        body: request.body.clone(),
        max_answer: MAX_BODY,
    };
    match (connection.mode, request.product) {
        (ConnectionMode::Oauth, product @ ("jira" | "confluence")) => {
            let cloud_id = site(&connection, product, asked_site.as_deref())?;
            let token = tokens::refresh::access_token_for(
                store,
                atlassian,
                keys,
                &settings.refresh,
                connection_id,
                &request.owner,
                time::Duration::minutes(1),
            )
            .await
            .map_err(|error| match error {
                RefreshError::NeedsReauth { reason } => ProxyError::NeedsReauth(reason),
                RefreshError::NotFound => ProxyError::NotFound,
                RefreshError::Busy => ProxyError::Busy,
                other => ProxyError::Refresh(other),
            })?
            .token;
            let target = Target::Gateway { product, cloud_id: &cloud_id, token: &token };
            metered(store, atlassian, settings, &cloud_id, &request, call(target)).await
        }
        (ConnectionMode::AdminApiKey, product @ ("admin" | "site")) => {
            let credentials = tokens::credentials::open_admin(keys, connection_id, &connection.credentials)
                .map_err(ProxyError::Crypto)?;
            let answer = if product == "admin" {
                let key: AdminKey = credentials.key();
                atlassian.forward(call(Target::Admin { key: &key })).await
            } else {
                let site = connection.sites.first().ok_or(ProxyError::NoSiteToken)?;
                if asked_site.as_deref().is_some_and(|asked| asked != site.cloud_id) {
                    return Err(ProxyError::UnknownSite {
                        product: "site".into(),
                        cloud_id: asked_site.unwrap_or_default(),
                    });
                }
                let url = url_of(&site.url)?;
                let login = credentials.site_login(&url).ok_or(ProxyError::NoSiteToken)?;
                atlassian.forward(call(Target::Site { login: &login })).await
            };
            passed(answer.map_err(failed)?, 0)
        }
        (mode, product @ ("jira" | "confluence" | "admin" | "site")) => Err(ProxyError::WrongMode {
            product: product.to_owned(),
            mode: match mode {
                ConnectionMode::Oauth => "OAuth",
                ConnectionMode::AdminApiKey => "admin-key",
            },
        }),
        (_, other) => Err(ProxyError::UnknownProduct(other.to_owned())),
    }
}

/// What is refused before anything is read: the product, the method, writes, the path, the query.
fn check(settings: &Settings, request: &Request<'_>) -> Result<(), ProxyError> {
    if !matches!(request.product, "jira" | "confluence" | "admin" | "site") {
        return Err(ProxyError::UnknownProduct(request.product.to_owned()));
    }
    use reqwest::Method;
    if ![Method::GET, Method::POST, Method::PUT, Method::DELETE].contains(&request.method) {
        return Err(ProxyError::MethodNotAllowed);
    }
    if rules::writes(&request.method) && !settings.allow_writes {
        return Err(ProxyError::WritesDisabled);
    }
    if !path_is_safe(request.path) {
        return Err(ProxyError::UnsafePath);
    }
    if request.query.is_some_and(|q| q.len() > MAX_QUERY) {
        return Err(ProxyError::QueryTooLong);
    }
    Ok(())
}

/// The cloud id a gateway call goes to: the one asked for, if the connection reaches it with the product; or the
/// only one it reaches.
fn site(connection: &Connection, product: &str, asked: Option<&str>) -> Result<String, ProxyError> {
    let wanted = if product == "jira" { Product::Jira } else { Product::Confluence };
    let sites: Vec<&str> = connection
        .sites
        .iter()
        .filter(|s| s.lost_at.is_none() && s.products.contains(&wanted))
        .map(|s| s.cloud_id.as_str())
        .collect();
    match (asked, sites.as_slice()) {
        (Some(asked), _) if sites.contains(&asked) => Ok(asked.to_owned()),
        (Some(asked), _) => Err(ProxyError::UnknownSite { product: product.into(), cloud_id: asked.into() }),
        (None, [only]) => Ok((*only).to_owned()),
        (None, []) => Err(ProxyError::NoSite(product.into())),
        (None, many) => Err(ProxyError::SiteRequired { product: product.into(), choices: many.join(", ") }),
    }
}

/// A gateway call under the points quota: set aside a request's base point (the pool must not be dry), make the
/// call, charge what the answer cost, settle with the pool at once (the api holds no balance between requests).
async fn metered<S, A>(
    store: &S,
    atlassian: &A,
    settings: &Settings,
    cloud_id: &str,
    request: &Request<'_>,
    call: Forward<'_>,
) -> Result<Answer, ProxyError>
where
    S: BudgetStore,
    A: ForwardApi,
{
    let mut budget = SharedBudget::new(store, budget::APP_POOL, settings.quota.for_proxy());
    budget.chunk = 0;
    budget.max_wait = Duration::ZERO;
    let reserved = match budget.before(cloud_id, 1, Some(Instant::now())).await {
        Ok(reserved) => reserved,
        Err(BudgetError::Exhausted(wait)) => {
            return Err(ProxyError::QuotaExhausted { retry_after: wait.max(Duration::from_secs(1)) });
        }
        Err(BudgetError::Store(error)) => return Err(ProxyError::Store(error)),
    };
    let answer = atlassian.forward(call).await;
    let cost = match &answer {
        Ok(answer) => points(&request.method, request.path, answer.status, &answer.body),
        Err(_) => 0,
    };
    budget.spent(cloud_id, reserved, cost);
    if let Ok(answer) = &answer
        && answer.status == 429
        && let Some(reason) = answer.header("ratelimit-reason").filter(|r| r.contains("quota"))
    {
        let wait = answer.header("retry-after").and_then(|v| v.trim().parse().ok()).unwrap_or(60u64).max(1);
        let until = time::OffsetDateTime::now_utc() + Duration::from_secs(wait);
        budget.blocked(cloud_id, reason, until).await;
    }
    budget.release().await;
    passed(answer.map_err(failed)?, cost)
}

fn passed(answer: atlassian::Forwarded, points: u64) -> Result<Answer, ProxyError> {
    Ok(Answer { status: answer.status, headers: answer_headers(&answer.headers), body: answer.body, points })
}

fn failed(error: ApiError) -> ProxyError {
    match error {
        ApiError::TooLarge { .. } => ProxyError::AnswerTooLarge,
        ApiError::Unsendable(_) | ApiError::Status { status: 400 } => ProxyError::Unsendable(error),
        other => ProxyError::Unreachable(other),
    }
}

fn url_of(site_url: &str) -> Result<url::Url, ProxyError> {
    url::Url::parse(site_url).map_err(|_| ProxyError::NoSiteToken)
}

#[cfg(test)]
mod tests;
