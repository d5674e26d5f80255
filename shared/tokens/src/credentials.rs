//! The credentials of a connection (OAuth tokens, or an admin API key with an optional site token), and how they
//! are sealed into and opened from the store. Both are sealed the same way, bound to the connection id.

use crate::crypto::{CryptoError, KeyRing};
use atlassian::{AccessToken, RefreshToken};
use serde::{Deserialize, Serialize};
use store::SealedCredentials;
use time::OffsetDateTime;

/// Tokens in secret types: `Debug` prints `[redacted]`, and only [`seal`] ever serialises them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub access_token: AccessToken,
    pub refresh_token: Option<RefreshToken>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Seals credentials bound to their connection id.
pub fn seal(keys: &KeyRing, connection_id: &str, credentials: &Credentials) -> Result<SealedCredentials, CryptoError> {
    let plaintext = serde_json::to_vec(credentials).map_err(|_| CryptoError::Seal)?;
    keys.seal(&plaintext, connection_id)
}

pub fn open(keys: &KeyRing, connection_id: &str, sealed: &SealedCredentials) -> Result<Credentials, CryptoError> {
    let plaintext = keys.open(sealed, connection_id)?;
    serde_json::from_slice(&plaintext).map_err(|_| CryptoError::Open)
}

/// An admin-key connection's secrets. `Debug` is redacted; only [`seal_admin`] serialises them.
#[derive(Clone, Serialize, Deserialize)]
pub struct AdminCredentials {
    admin_api_key: String,
    #[serde(default)]
    site_email: Option<String>,
    #[serde(default)]
    site_api_token: Option<String>,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials")
            .field("admin_api_key", &"[redacted]")
            .field("site_email", &self.site_email)
            .field("site_api_token", &self.site_api_token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl AdminCredentials {
    /// The key, and the site login's email and token if there is one (its URL stays on the connection).
    pub fn new(key: &atlassian::AdminKey, site: Option<&atlassian::SiteLogin>) -> Self {
        use secrecy::ExposeSecret;
        Self {
            admin_api_key: key.expose().to_owned(),
            site_email: site.map(|s| s.email.clone()),
            site_api_token: site.map(|s| s.api_token.expose_secret().to_owned()),
        }
    }

    pub fn key(&self) -> atlassian::AdminKey {
        atlassian::AdminKey::new(self.admin_api_key.clone())
    }

    /// The site login, given the site's URL (kept on the connection).
    pub fn site_login(&self, site_url: &url::Url) -> Option<atlassian::SiteLogin> {
        Some(atlassian::SiteLogin {
            site_url: site_url.clone(),
            email: self.site_email.clone()?,
            api_token: secrecy::SecretString::from(self.site_api_token.clone()?),
        })
    }
}

pub fn seal_admin(
    keys: &KeyRing,
    connection_id: &str,
    credentials: &AdminCredentials,
) -> Result<SealedCredentials, CryptoError> {
    let plaintext = serde_json::to_vec(credentials).map_err(|_| CryptoError::Seal)?;
    keys.seal(&plaintext, connection_id)
}

pub fn open_admin(
    keys: &KeyRing,
    connection_id: &str,
    sealed: &SealedCredentials,
) -> Result<AdminCredentials, CryptoError> {
    let plaintext = keys.open(sealed, connection_id)?;
    serde_json::from_slice(&plaintext).map_err(|_| CryptoError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_redacts() {
        let keys = KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap();
        let credentials = Credentials {
            access_token: AccessToken::new("at-123456".into()),
            refresh_token: Some(RefreshToken::new("rt-654321".into())),
            expires_at: OffsetDateTime::UNIX_EPOCH,
        };
        let debug = format!("{credentials:?}");
        assert!(!debug.contains("at-123456") && !debug.contains("rt-654321"), "{debug}");
        let sealed = seal(&keys, "con_1", &credentials).unwrap();
        assert!(!format!("{sealed:?}").contains("at-123456"));
        let opened = open(&keys, "con_1", &sealed).unwrap();
        assert_eq!(opened.access_token.secret(), "at-123456");
        assert_eq!(opened.refresh_token.unwrap().secret(), "rt-654321");
    }
}
