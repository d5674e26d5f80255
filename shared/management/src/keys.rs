//! The management API's keys. The secret holds the key (a plain string) or, while one is rotated, both:
//! `{"current": "…", "previous": "…"}`; a request may present either. The api re-reads the secret every few minutes,
//! so a rotation needs no redeploy: put both, move the clients to the new key, drop the old one.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokens::ids;

/// The keys a request may present (one, or two during a rotation). Never shown: `Debug` is redacted.
#[derive(Clone)]
pub struct ManagementKeys(Vec<SecretString>);

impl std::fmt::Debug for ManagementKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ManagementKeys({} redacted)", self.0.len())
    }
}

/// The secret's value is neither a key nor `{"current", "previous"?}`.
#[derive(Debug, thiserror::Error)]
#[error("the management key secret must be the key, or JSON {{\"current\": \"…\", \"previous\": \"…\"}}")]
pub struct InvalidKeys;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotation {
    current: SecretString,
    #[serde(default)]
    previous: Option<SecretString>,
}

impl ManagementKeys {
    pub fn parse(secret: &SecretString) -> Result<Self, InvalidKeys> {
        let text = secret.expose_secret().trim();
        let keys = if text.starts_with('{') {
            let rotation: Rotation = serde_json::from_str(text).map_err(|_| InvalidKeys)?;
            [Some(rotation.current), rotation.previous].into_iter().flatten().collect()
        } else {
            vec![SecretString::from(text.to_owned())]
        };
        let usable =
            |k: &SecretString| k.expose_secret().len() >= 16 && !k.expose_secret().contains(char::is_whitespace);
        if keys.iter().all(usable) { Ok(Self(keys)) } else { Err(InvalidKeys) }
    }

    /// Whether `presented` is one of the keys (each compared in constant time).
    pub fn accepts(&self, presented: &str) -> bool {
        self.0.iter().fold(false, |found, key| ids::secrets_equal(presented, key.expose_secret()) | found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_or_two_while_rotating() {
        let plain = ManagementKeys::parse(&SecretString::from("mk_0123456789abcdef")).unwrap();
        assert!(plain.accepts("mk_0123456789abcdef") && !plain.accepts("mk_0123456789abcdeX"));
        let json = r#"{"current": "mk_new_0123456789ab", "previous": "mk_old_0123456789ab"}"#;
        let both = ManagementKeys::parse(&SecretString::from(json)).unwrap();
        assert!(both.accepts("mk_new_0123456789ab") && both.accepts("mk_old_0123456789ab"));
        assert!(!both.accepts("") && !both.accepts("mk_other_0123456789"));
        for bad in ["short", r#"{"previous": "mk_old_0123456789ab"}"#, r#"{"current": "mk new 0123456789ab"}"#] {
            assert!(ManagementKeys::parse(&SecretString::from(bad)).is_err(), "{bad}");
        }
        assert!(!format!("{both:?}").contains("mk_"), "redacted");
    }
}
