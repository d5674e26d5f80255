//! The OAuth credentials of a connection, and how they are sealed into and opened from the store.

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
