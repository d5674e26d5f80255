//! The second way in: a connection made from an org admin API key (and optionally a site's email + API token),
//! validated against Atlassian **before** anything is stored. Each way the credentials can be wrong is its own
//! [`AdminConnectError`], worded to say what to fix.
//!
//! What is checked, in order: the key lists orgs (401 → invalid or expired); the org id is one of them; the key may
//! read the org's users (v2 directories, or v1 where v2 is not available; 403 → no admin rights); and with a site:
//! the site is one of the org's workspaces, the email + token sign in to it (Jira's `/rest/api/3/myself`, or
//! Confluence's current user on a site without Jira), and, when
//! Confluence was asked for, the org has Confluence on that site.

use crate::credentials::{self, AdminCredentials};
use crate::crypto::KeyRing;
use atlassian::ApiError;
use atlassian::admin::{AdminApi, AdminKey, SiteLogin, Workspace};
use store::{Connection, ConnectionMode, ConnectionStatus, ConnectionStore, Product, Site, StoreError};
use thiserror::Error;
use time::OffsetDateTime;
use url::Url;

/// What the management API hands over (already parsed; secrets in redacting types).
#[derive(Debug, Clone)]
pub struct AdminConnectRequest {
    pub tenant_id: String,
    pub org_id: String,
    pub admin_api_key: AdminKey,
    pub site: Option<SiteLogin>,
    /// Products the caller requires on the site; `None`: whatever the org has there.
    pub products: Option<Vec<Product>>,
}

/// A request that cannot be taken as it is: a stable code, and what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct InvalidRequest {
    pub code: &'static str,
    pub message: &'static str,
}

const fn invalid(code: &'static str, message: &'static str) -> InvalidRequest {
    InvalidRequest { code, message }
}

impl AdminConnectRequest {
    /// The caller's fields, trimmed and checked: the tenant, the org and the key are required, the site login is
    /// whole or absent (see [`site_login`]), and products are checked on a site, so they need one.
    pub fn new(
        tenant_id: &str,
        org_id: &str,
        admin_api_key: &str,
        (site_url, site_email, site_api_token): (Option<String>, Option<String>, Option<String>),
        products: Option<&[String]>,
    ) -> Result<Self, InvalidRequest> {
        let (tenant_id, org_id, key) = (tenant_id.trim(), org_id.trim(), admin_api_key.trim());
        if tenant_id.is_empty() || org_id.is_empty() || key.is_empty() {
            return Err(invalid("missing_field", "tenant_id, org_id and admin_api_key are required."));
        }
        let site = site_login(site_url, site_email, site_api_token)?;
        let products = match products {
            None => None,
            Some(names) => {
                let parsed: Option<Vec<Product>> = names
                    .iter()
                    .map(|n| match n.as_str() {
                        "jira" => Some(Product::Jira),
                        "confluence" => Some(Product::Confluence),
                        _ => None,
                    })
                    .collect();
                match parsed {
                    Some(products) if site.is_some() => Some(products),
                    Some(_) => {
                        return Err(invalid(
                            "products_need_site",
                            "products are checked on a site: give site_url too.",
                        ));
                    }
                    None => return Err(invalid("unknown_product", "products are \"jira\" and \"confluence\".")),
                }
            }
        };
        Ok(Self {
            tenant_id: tenant_id.to_owned(),
            org_id: org_id.to_owned(),
            admin_api_key: AdminKey::new(key.to_owned()),
            site,
            products,
        })
    }
}

/// A site login from its three fields: all or none. The URL is the site's https URL (http only to this machine, a
/// local sandbox), without credentials, query or fragment.
pub fn site_login(
    url: Option<String>,
    email: Option<String>,
    token: Option<String>,
) -> Result<Option<SiteLogin>, InvalidRequest> {
    match (url, email, token) {
        (None, None, None) => Ok(None),
        (Some(url), Some(email), Some(token)) if !email.trim().is_empty() && !token.trim().is_empty() => {
            let Some(site_url) = Url::parse(url.trim()).ok().filter(site_url_allowed) else {
                return Err(invalid(
                    "invalid_site_url",
                    "site_url must be the site's https URL, e.g. https://your-site.atlassian.net.",
                ));
            };
            Ok(Some(SiteLogin {
                site_url,
                email: email.trim().to_owned(),
                api_token: secrecy::SecretString::from(token.trim().to_owned()),
            }))
        }
        _ => Err(invalid(
            "incomplete_site_token",
            "site_url, site_email and site_api_token go together: give all three, or none.",
        )),
    }
}

fn site_url_allowed(url: &Url) -> bool {
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    (url.scheme() == "https" || (url.scheme() == "http" && loopback))
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
}

#[derive(Debug, Error)]
pub enum AdminConnectError {
    #[error(
        "Atlassian did not accept this API key. Check that it was copied whole, or create a new one: an org admin creates keys at admin.atlassian.com → Settings → API keys."
    )]
    KeyRejected,
    #[error(
        "This API key has expired (keys last at most a year). An org admin creates a new one at admin.atlassian.com → Settings → API keys."
    )]
    KeyExpired,
    #[error(
        "This API key does not administer the organization {org_id}. It administers: {known}. The organization ID is in the admin.atlassian.com URL (…/o/<org id>/…) and is shown when the key is created."
    )]
    WrongOrg { org_id: String, known: String },
    #[error(
        "This API key may not read the organization's users. An org admin must create it at admin.atlassian.com → Settings → API keys, without scopes (or with the scopes to read users, groups and workspaces)."
    )]
    NoAdminRights,
    #[error("{site_url} is not a site of this organization. Give the URL of one of its sites: {known}.")]
    SiteNotInOrg { site_url: String, known: String },
    #[error(
        "The email and API token do not sign in to {site_url}. The token may belong to another account or site, or be revoked; create one at id.atlassian.com → Security → API tokens, as an account with access to this site."
    )]
    SiteTokenRejected { site_url: String },
    #[error(
        "Confluence is not a product of this organization on {site_url}. Leave \"confluence\" out of \"products\" to connect Jira only."
    )]
    ConfluenceMissing { site_url: String },
    #[error("Atlassian could not be asked right now; try again later.")]
    Unavailable(#[source] ApiError),
    /// Atlassian refused the request itself (HTTP 400, 413, 431, …): something in the fields is malformed or too
    /// long for it, whatever the credentials are.
    #[error(
        "Atlassian refused the request as malformed (HTTP {0}): check that the key, the site URL, the email and the token were copied whole, without line breaks or anything around them."
    )]
    Refused(u16),
    /// The connection was disconnected or updated while these credentials were checked: nothing was written.
    #[error(
        "The connection changed while the new credentials were checked (it was disconnected or updated): read it again."
    )]
    Changed,
    #[error("the credentials could not be sealed")]
    Crypto(#[source] crate::crypto::CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdminConnectError {
    /// A stable code for API answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::KeyRejected => "invalid_api_key",
            Self::KeyExpired => "api_key_expired",
            Self::WrongOrg { .. } => "wrong_org_id",
            Self::NoAdminRights => "api_key_not_admin",
            Self::SiteNotInOrg { .. } => "site_not_in_org",
            Self::SiteTokenRejected { .. } => "site_token_rejected",
            Self::ConfluenceMissing { .. } => "confluence_not_in_org",
            Self::Unavailable(_) => "atlassian_unavailable",
            Self::Refused(_) => "refused_by_atlassian",
            Self::Changed => "connection_changed",
            Self::Crypto(_) | Self::Store(_) => "internal_error",
        }
    }

    /// Whether the caller's input is at fault (400/422) rather than Atlassian or us (502/500).
    pub fn is_input(&self) -> bool {
        !matches!(self, Self::Unavailable(_) | Self::Crypto(_) | Self::Store(_))
    }
}

/// What Atlassian said about the credentials: the site (if any) with its products, and the site account.
#[derive(Debug, Clone)]
pub struct Validated {
    pub site: Option<Site>,
    pub account_id: Option<String>,
}

/// Checks the credentials with Atlassian. Nothing is stored.
pub async fn validate<A: AdminApi>(
    atlassian: &A,
    request: &AdminConnectRequest,
) -> Result<Validated, AdminConnectError> {
    let key = &request.admin_api_key;
    let orgs = atlassian.orgs(key).await.map_err(key_error)?;
    if !orgs.iter().any(|o| o.id == request.org_id) {
        let known =
            orgs.iter()
                .map(|o| {
                    if o.attributes.name.is_empty() {
                        o.id.clone()
                    } else {
                        format!("{} ({})", o.attributes.name, o.id)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
        return Err(AdminConnectError::WrongOrg { org_id: request.org_id.clone(), known });
    }
    // Reading users is what the sync does: v2 where the org has it, v1 otherwise.
    match atlassian.users_v2(key, &request.org_id, None, None).await {
        Ok(_) => {}
        Err(ApiError::NotFound) => {
            atlassian.users_v1(key, &request.org_id, None).await.map_err(key_error)?;
        }
        Err(error) => return Err(key_error(error)),
    }
    let Some(login) = &request.site else {
        return Ok(Validated { site: None, account_id: None });
    };
    let workspaces = atlassian.workspaces(key, &request.org_id).await.map_err(key_error)?;
    let site_url = normalize(&login.site_url);
    let on_site: Vec<&Workspace> = workspaces.iter().filter(|w| same_site(&w.host_url, &site_url)).collect();
    let Some(first) = on_site.first() else {
        let mut known: Vec<String> = workspaces.iter().map(|w| w.host_url.clone()).collect();
        known.sort();
        known.dedup();
        return Err(AdminConnectError::SiteNotInOrg { site_url, known: known.join(", ") });
    };
    let mut products = Vec::new();
    if on_site.iter().any(|w| w.is_jira()) {
        products.push(Product::Jira);
    }
    if on_site.iter().any(|w| w.is_confluence()) {
        products.push(Product::Confluence);
    }
    if let Some(wanted) = &request.products
        && wanted.contains(&Product::Confluence)
        && !products.contains(&Product::Confluence)
    {
        return Err(AdminConnectError::ConfluenceMissing { site_url });
    }
    let me = atlassian.site_myself(login, products.contains(&Product::Jira)).await.map_err(|error| match error {
        ApiError::Unauthorized { .. } | ApiError::NotFound => {
            AdminConnectError::SiteTokenRejected { site_url: site_url.clone() }
        }
        other => unavailable(other),
    })?;
    let name = if first.name.is_empty() {
        login.site_url.host_str().unwrap_or_default().split('.').next().unwrap_or_default().to_owned()
    } else {
        first.name.clone()
    };
    let site = Site { cloud_id: first.cloud_id.clone(), url: site_url, name, products, lost_at: None };
    Ok(Validated { site: Some(site), account_id: Some(me.account_id) })
}

/// Validates, then stores (or updates) the tenant's admin-key connection for the org, its secrets sealed.
pub async fn connect<S: ConnectionStore, A: AdminApi>(
    store: &S,
    atlassian: &A,
    keys: &KeyRing,
    request: &AdminConnectRequest,
    now: OffsetDateTime,
) -> Result<Connection, AdminConnectError> {
    let connection = validated_connection(atlassian, keys, request, now).await?;
    Ok(store.upsert_connection(&connection).await?)
}

/// The connection an admin-key request makes, once Atlassian accepted its credentials (not stored yet).
async fn validated_connection<A: AdminApi>(
    atlassian: &A,
    keys: &KeyRing,
    request: &AdminConnectRequest,
    now: OffsetDateTime,
) -> Result<Connection, AdminConnectError> {
    let validated = validate(atlassian, request).await?;
    let connection_id = connection_id(&request.tenant_id, &request.org_id);
    let sealed = credentials::seal_admin(
        keys,
        &connection_id,
        &AdminCredentials::new(&request.admin_api_key, request.site.as_ref()),
    )
    .map_err(AdminConnectError::Crypto)?;
    let connection = Connection {
        connection_id,
        tenant_id: request.tenant_id.clone(),
        mode: ConnectionMode::AdminApiKey,
        status: ConnectionStatus::Active,
        status_reason: None,
        sites: validated.site.into_iter().collect(),
        scopes: Vec::new(),
        account_id: validated.account_id.unwrap_or_default(),
        org_id: Some(request.org_id.clone()),
        credentials: sealed,
        token_version: 0,
        created_at: now,
        updated_at: now,
        connected_at: Some(now),
    };
    Ok(connection)
}

/// New credentials for an existing admin-key connection (`PATCH /connections/{id}`): what is `None` stays.
#[derive(Debug, Clone, Default)]
pub struct AdminPatch {
    pub admin_api_key: Option<AdminKey>,
    pub site: Option<SiteLogin>,
}

/// Replaces an admin-key connection's credentials after validating the result like a new connection; the
/// connection (and its mirror) stays, back to `active`. The write holds only if the connection is still as
/// `connection` shows it: a disconnect (or another update) meanwhile wins, and this one is [`AdminConnectError::Changed`].
pub async fn update<S: ConnectionStore, A: AdminApi>(
    store: &S,
    atlassian: &A,
    keys: &KeyRing,
    connection: &Connection,
    patch: AdminPatch,
    now: OffsetDateTime,
) -> Result<Connection, AdminConnectError> {
    let secrets = credentials::open_admin(keys, &connection.connection_id, &connection.credentials)
        .map_err(AdminConnectError::Crypto)?;
    let site = patch.site.or_else(|| {
        let url = Url::parse(&connection.sites.first()?.url).ok()?;
        secrets.site_login(&url)
    });
    let request = AdminConnectRequest {
        tenant_id: connection.tenant_id.clone(),
        org_id: connection.org_id.clone().unwrap_or_default(),
        admin_api_key: patch.admin_api_key.unwrap_or_else(|| secrets.key()),
        site,
        products: None,
    };
    let replacement = validated_connection(atlassian, keys, &request, now).await?;
    store.replace_connection(&replacement, connection.token_version).await?.ok_or(AdminConnectError::Changed)
}

/// One admin-key connection per (tenant, org): connecting again updates it.
pub fn connection_id(tenant_id: &str, org_id: &str) -> String {
    crate::ids::connection_id(tenant_id, &format!("org:{org_id}"))
}

fn key_error(error: ApiError) -> AdminConnectError {
    match error {
        ApiError::Unauthorized { status: 401, expired: true } => AdminConnectError::KeyExpired,
        ApiError::Unauthorized { status: 401, .. } => AdminConnectError::KeyRejected,
        ApiError::Unauthorized { .. } => AdminConnectError::NoAdminRights,
        other => unavailable(other),
    }
}

/// An Atlassian failure that is not about the credentials: the caller's malformed input, or Atlassian's trouble.
fn unavailable(error: ApiError) -> AdminConnectError {
    match error.refused_input() {
        Some(status) => AdminConnectError::Refused(status),
        None => AdminConnectError::Unavailable(error),
    }
}

/// `scheme://host[:port][/path]` without a trailing slash: how site URLs are compared and stored.
fn normalize(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_ascii_lowercase()
}

fn same_site(host_url: &str, site_url: &str) -> bool {
    host_url.trim_end_matches('/').eq_ignore_ascii_case(site_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atlassian_refusing_the_request_is_the_callers_to_fix() {
        for status in [400, 413, 431] {
            let error = key_error(ApiError::Status { status });
            assert!(matches!(error, AdminConnectError::Refused(s) if s == status) && error.is_input(), "{status}");
        }
        for transient in [ApiError::Status { status: 503 }, ApiError::Status { status: 409 }] {
            assert!(matches!(key_error(transient), AdminConnectError::Unavailable(_)));
        }
        assert!(matches!(
            key_error(ApiError::Unauthorized { status: 401, expired: false }),
            AdminConnectError::KeyRejected
        ));
    }
}
