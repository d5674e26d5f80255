use crate::mirror::ObjectType;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A single-use connect link handed to a tenant by the SaaS backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectSession {
    /// SHA-256 (hex) of the session id; the id itself is never stored.
    pub id_hash: String,
    pub tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Absent (not NULL) until used: the transaction that completes a flow conditions on its absence.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub used_at: Option<OffsetDateTime>,
}

/// An OAuth `state` in flight: which session it belongs to, and until when it is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthState {
    /// SHA-256 (hex) of the state value.
    pub state_hash: String,
    pub session_id_hash: String,
    pub tenant_id: String,
    pub return_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// SHA-256 (hex) of the browser binding the connect link set as a cookie: the callback must bring it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_hash: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionMode {
    Oauth,
    /// An org admin API key (and optionally a site's email + API token).
    AdminApiKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Active,
    NeedsReauth,
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Product {
    Jira,
    Confluence,
}

/// A site (cloud id) the grant reaches, with the products its granted scopes cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub cloud_id: String,
    pub url: String,
    pub name: String,
    pub products: Vec<Product>,
    /// When the grant stopped reaching this site (it left `accessible-resources`); its objects are no longer synced.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub lost_at: Option<OffsetDateTime>,
}

/// Tokens sealed by `tokens::crypto`: opaque bytes plus the version of the key that wrapped them. Empty once a
/// connection is revoked (its tokens are destroyed).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCredentials {
    pub key_version: String,
    #[serde(with = "serde_bytes")]
    pub blob: Vec<u8>,
}

impl std::fmt::Debug for SealedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedCredentials")
            .field("key_version", &self.key_version)
            .field("blob", &format_args!("[{} bytes]", self.blob.len()))
            .finish()
    }
}

/// A connected Atlassian org for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub connection_id: String,
    pub tenant_id: String,
    pub mode: ConnectionMode,
    pub status: ConnectionStatus,
    /// Why the connection is not `active`, for people.
    #[serde(default)]
    pub status_reason: Option<String>,
    pub sites: Vec<Site>,
    pub scopes: Vec<String>,
    /// The Atlassian account that consented (the grant's owner); for an admin key, the site token's account, if any.
    pub account_id: String,
    /// The organization an admin key administers (admin-key connections only).
    #[serde(default)]
    pub org_id: Option<String>,
    #[serde(default)]
    pub credentials: SealedCredentials,
    /// Bumped on every credentials write; later refreshes use it for optimistic concurrency.
    #[serde(default)]
    pub token_version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When the customer last connected (consented, or gave admin-key credentials): a token refresh leaves it, a
    /// reconnect moves it (the `Connection Reconnected` event comes from that).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub connected_at: Option<OffsetDateTime>,
}

impl Connection {
    /// The sites a type is read from: Jira sites for users, groups and projects; Confluence sites for spaces; never a
    /// site the grant no longer reaches.
    pub fn sites_for(&self, object_type: ObjectType) -> Vec<String> {
        let product = if object_type == ObjectType::Spaces { Product::Confluence } else { Product::Jira };
        self.sites
            .iter()
            .filter(|s| s.lost_at.is_none() && s.products.contains(&product))
            .map(|s| s.cloud_id.clone())
            .collect()
    }

    /// Whether a connection can sync a type, and if not, why (for people): OAuth connections need a site whose
    /// granted scopes cover the product; admin-key connections read users and groups from the Admin API, and projects
    /// and spaces through the site token, where one was given and the org has the product there.
    pub fn availability(&self, object_type: ObjectType) -> Result<(), Unavailable> {
        let product = if object_type == ObjectType::Spaces { "Confluence" } else { "Jira" };
        match self.mode {
            ConnectionMode::Oauth if self.sites_for(object_type).is_empty() => Err(Unavailable::NotGranted { product }),
            ConnectionMode::Oauth => Ok(()),
            ConnectionMode::AdminApiKey if matches!(object_type, ObjectType::Users | ObjectType::Groups) => Ok(()),
            ConnectionMode::AdminApiKey if self.sites.is_empty() => {
                Err(Unavailable::NoSiteToken { object_type: object_type.as_str() })
            }
            ConnectionMode::AdminApiKey if self.sites_for(object_type).is_empty() => {
                let site = self.sites.first().map(|s| s.url.clone()).unwrap_or_default();
                Err(Unavailable::NotOnSite { product, site })
            }
            ConnectionMode::AdminApiKey => Ok(()),
        }
    }
}

/// Why a connection cannot sync an object type (worded for people: the status API shows it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("no site this grant reaches has {product} in its granted scopes")]
    NotGranted { product: &'static str },
    #[error(
        "no site token was given: {object_type} are read through a site's API token (PATCH the connection with \
         site_url, site_email and site_api_token)"
    )]
    NoSiteToken { object_type: &'static str },
    #[error("{product} is not a product of this organization on {site}")]
    NotOnSite { product: &'static str, site: String },
}
