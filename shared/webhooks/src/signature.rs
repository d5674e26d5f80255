//! The signature of a delivery, and its check on the receiving side.

use aws_lc_rs::hmac;
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;

pub const SIGNATURE_HEADER: &str = "atlassian-connector-signature";
pub const EVENT_ID_HEADER: &str = "atlassian-connector-event-id";

/// The webhook secret: one value, or `{"current": "…", "previous": "…"}` while it is rotated (deliveries are then
/// signed with both, and a receiver that knows either accepts them). `Debug` never shows them.
#[derive(Clone)]
pub struct Secrets(Vec<SecretString>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets([{} redacted])", self.0.len())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the webhook secret is empty or malformed")]
    BadSecret,
    #[error("the signature header is missing or malformed")]
    Malformed,
    #[error("the signature was made too long ago (or in the future)")]
    Stale,
    #[error("no signature matches the body")]
    Mismatch,
}

impl Secrets {
    pub fn parse(value: &SecretString) -> Result<Self, VerifyError> {
        let text = value.expose_secret().trim();
        let secrets: Vec<String> = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(fields)) => ["current", "previous"]
                .iter()
                .filter_map(|k| fields.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
                .collect(),
            _ => vec![text.to_owned()],
        };
        let secrets: Vec<SecretString> =
            secrets.into_iter().filter(|s| s.len() >= 16).map(SecretString::from).collect();
        if secrets.is_empty() {
            return Err(VerifyError::BadSecret);
        }
        Ok(Self(secrets))
    }
}

fn mac(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    context.sign().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The signature header's value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secrets: &Secrets, timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in &secrets.0 {
        header.push_str(",v1=");
        header.push_str(&mac(secret, timestamp, body));
    }
    header
}

/// A receiver's check: one `v1` matches `body` under one of `secrets` (compared in constant time), and `t` is
/// within `tolerance_secs` of `now`.
pub fn verify(secrets: &Secrets, header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed)?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed);
    }
    // (`abs_diff`: a forged `t` far from now must not overflow the subtraction.)
    if now.abs_diff(timestamp) > tolerance_secs.max(0).unsigned_abs() {
        return Err(VerifyError::Stale);
    }
    let matches = secrets.0.iter().any(|secret| {
        let expected = mac(secret, timestamp, body);
        signatures.iter().any(|given| {
            aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected.as_bytes()).is_ok()
        })
    });
    if matches { Ok(()) } else { Err(VerifyError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(value: &str) -> Secrets {
        Secrets::parse(&SecretString::from(value)).unwrap()
    }

    #[test]
    fn a_signed_body_verifies_and_any_change_does_not() {
        let s = secrets("whsec_0123456789abcdef");
        let body = br#"{"detail-type":"Object Updated"}"#;
        let header = sign(&s, 1_764_633_600, body);
        assert!(header.starts_with("t=1764633600,v1="), "{header}");
        assert_eq!(verify(&s, &header, body, 1_764_633_650, 300), Ok(()));
        assert_eq!(verify(&s, &header, b"{}", 1_764_633_650, 300), Err(VerifyError::Mismatch));
        let moved = header.replace("t=1764633600", "t=1764633601");
        assert_eq!(verify(&s, &moved, body, 1_764_633_650, 300), Err(VerifyError::Mismatch), "the time is signed");
        assert_eq!(verify(&s, &header, body, 1_764_633_600 + 301, 300), Err(VerifyError::Stale), "a replay later");
        assert_eq!(
            verify(&secrets("another-secret-0000"), &header, body, 1_764_633_650, 300),
            Err(VerifyError::Mismatch)
        );
        for malformed in ["", "v1=abc", "t=1764633600", "t=soon,v1=abc"] {
            assert_eq!(verify(&s, malformed, body, 1_764_633_650, 300), Err(VerifyError::Malformed), "{malformed}");
        }
    }

    #[test]
    fn during_a_rotation_both_secrets_sign_and_either_verifies() {
        let both = secrets(r#"{"current": "whsec_new_0123456789", "previous": "whsec_old_0123456789"}"#);
        let header = sign(&both, 100, b"x");
        assert_eq!(header.matches("v1=").count(), 2);
        assert_eq!(verify(&secrets("whsec_old_0123456789"), &header, b"x", 100, 300), Ok(()));
        assert_eq!(verify(&secrets("whsec_new_0123456789"), &header, b"x", 100, 300), Ok(()));
    }

    #[test]
    fn secrets_are_long_enough_and_never_shown() {
        assert!(Secrets::parse(&SecretString::from("short")).is_err());
        assert!(Secrets::parse(&SecretString::from(r#"{"current": ""}"#)).is_err());
        let shown = format!("{:?}", secrets("whsec_0123456789abcdef"));
        assert!(!shown.contains("whsec"), "{shown}");
    }
}
