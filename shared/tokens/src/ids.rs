//! Random identifiers and the hashes they are stored under.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;

pub(crate) fn fill_random(buf: &mut [u8]) {
    // aws-lc's DRBG only fails when the OS has no entropy source, which no Lambda or dev machine lacks.
    aws_lc_rs::rand::fill(buf).expect("the system random source is available");
}

/// A URL-safe random value of 256 bits with a readable prefix (`cs_…` for sessions, `st_…` for states).
pub fn random_secret(prefix: &str) -> SecretString {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    SecretString::from(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// SHA-256 as lower-case hex: how session ids and states are keyed in the table.
pub fn sha256_hex(value: &str) -> String {
    hex(digest(&SHA256, value.as_bytes()).as_ref())
}

/// Compares two secrets in constant time (over their digests, so the length does not leak either).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let a = digest(&SHA256, a.as_bytes());
    let b = digest(&SHA256, b.as_bytes());
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref()).is_ok()
}

/// One connection per (tenant, Atlassian grant); a grant is one Atlassian account's consent to this app, so the id
/// is derived from both: reconnecting the same org from the same tenant lands on the same connection.
pub fn connection_id(tenant_id: &str, account_id: &str) -> String {
    let hash = digest(&SHA256, format!("{tenant_id}\0{account_id}").as_bytes());
    format!("con_{}", &hex(hash.as_ref())[..24])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn secrets_are_long_random_and_prefixed() {
        let a = random_secret("st_");
        let b = random_secret("st_");
        assert!(a.expose_secret().starts_with("st_"));
        assert!(a.expose_secret().len() >= 3 + 43);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(!format!("{a:?}").contains(&a.expose_secret()[3..]));
    }

    #[test]
    fn hashes_and_comparisons() {
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(secrets_equal("key", "key"));
        assert!(!secrets_equal("key", "kez"));
        assert!(!secrets_equal("key", "key-longer"));
    }

    #[test]
    fn connection_ids_are_stable_per_tenant_and_account() {
        assert_eq!(connection_id("t1", "acc"), connection_id("t1", "acc"));
        assert_ne!(connection_id("t1", "acc"), connection_id("t2", "acc"));
        assert_ne!(connection_id("t1", "acc"), connection_id("t1", "acc2"));
        assert_eq!(connection_id("t1", "acc").len(), 4 + 24);
    }
}
