use oauth2::{AccessToken, RefreshToken};
use serde::Deserialize;
use std::time::Duration;

/// The answer of the token endpoint, kept in secret types.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub access_token: AccessToken,
    /// Present when `offline_access` was granted. Atlassian rotates it on every refresh.
    pub refresh_token: Option<RefreshToken>,
    pub expires_in: Duration,
    /// Granted scopes, from the response's space-separated `scope`.
    pub scopes: Vec<String>,
}

/// One element of `accessible-resources`: a site (cloud id) with the scopes granted on it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessibleResource {
    /// The cloud id: the path segment of every 3LO API call.
    pub id: String,
    pub url: String,
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The consenting account, from the User Identity API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Me {
    pub account_id: String,
    #[serde(default)]
    pub name: Option<String>,
}
