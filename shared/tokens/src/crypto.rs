//! Envelope encryption of credentials at rest (AES-256-GCM, aws-lc-rs).
//!
//! The key ring secret is flat JSON, `{"current": "v1", "v1": "<random text>", "v2": …}`, the shape CloudFormation's
//! `GenerateSecretString` makes; each version's AES-256 key-encryption key is derived from its text with
//! HKDF-SHA256, so any long random string (≥ 32 characters) serves.
//!
//! Each seal draws a fresh data key, encrypts the payload with it (bound to a context such as the connection id, so
//! a blob copied onto another record does not open), and wraps the data key with the current key-encryption key
//! from Secrets Manager. The key version travels with the blob, so keys rotate by adding a version and making it
//! current: old blobs still open, new writes use the new key.
//!
//! The same secrets, under another HKDF label, give the keys that sign the management API's listing cursors
//! ([`KeyRing::sign_cursor`]): a cursor is bound to its connection and listing, and cannot be forged.
//!
//! Blob layout (format 1): `01 | wrap nonce (12) | wrapped data key (32 + 16) | nonce (12) | ciphertext + tag (16)`.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::hmac;
use std::collections::BTreeMap;
use store::SealedCredentials;
use thiserror::Error;

const FORMAT: u8 = 1;
const MIN_SECRET_LEN: usize = 32;
const HKDF_SALT: &[u8] = b"atlassian-connector/token-keys";
const CURSOR_SALT: &[u8] = b"atlassian-connector/cursors";
/// A cursor's tag: the first 128 bits of its HMAC-SHA256.
const CURSOR_TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = KEY_LEN + TAG_LEN;

#[derive(Debug, Error)]
pub enum CryptoError {
    #[error("the key ring is invalid: {0}")]
    InvalidKeyRing(&'static str),
    #[error("no key with version `{0}` in the key ring")]
    UnknownKeyVersion(String),
    #[error("the sealed credentials could not be opened")]
    Open,
    #[error("the credentials could not be sealed")]
    Seal,
}

/// Key-encryption keys by version, and which one new seals use; and, derived from the same secrets under another
/// label, the keys that sign listing cursors.
pub struct KeyRing {
    current: String,
    keys: BTreeMap<String, LessSafeKey>,
    cursor_keys: BTreeMap<String, hmac::Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// Parses the secret's JSON: `{"current": "v1", "v1": "<at least 32 characters of random text>"}`.
    pub fn from_json(json: &str) -> Result<Self, CryptoError> {
        let parsed: BTreeMap<String, String> =
            serde_json::from_str(json).map_err(|_| CryptoError::InvalidKeyRing("not a JSON object of strings"))?;
        let current = parsed.get("current").cloned().ok_or(CryptoError::InvalidKeyRing("`current` is missing"))?;
        let (mut keys, mut cursor_keys) = (BTreeMap::new(), BTreeMap::new());
        for (version, secret) in parsed.into_iter().filter(|(k, _)| k != "current") {
            if secret.chars().count() < MIN_SECRET_LEN {
                return Err(CryptoError::InvalidKeyRing("a key is shorter than 32 characters"));
            }
            keys.insert(version.clone(), derive_key(&version, &secret)?);
            cursor_keys.insert(version.clone(), derive_cursor_key(&version, &secret)?);
        }
        if !keys.contains_key(&current) {
            return Err(CryptoError::InvalidKeyRing("`current` names no key"));
        }
        Ok(Self { current, keys, cursor_keys })
    }

    /// A ring with one random key, for tests and the local stack.
    pub fn generate_json(version: &str) -> String {
        let mut key = [0u8; KEY_LEN];
        crate::ids::fill_random(&mut key);
        let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
        serde_json::json!({"current": version, version: text}).to_string()
    }

    pub fn current_version(&self) -> &str {
        &self.current
    }

    /// Encrypts `plaintext`, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<SealedCredentials, CryptoError> {
        let kek = &self.keys[&self.current];
        let mut data_key = [0u8; KEY_LEN];
        crate::ids::fill_random(&mut data_key);

        let mut blob = Vec::with_capacity(1 + 2 * NONCE_LEN + WRAPPED_LEN + plaintext.len() + TAG_LEN);
        blob.push(FORMAT);
        let wrap_nonce = random_nonce();
        blob.extend_from_slice(&wrap_nonce);
        let mut wrapped = data_key.to_vec();
        kek.seal_in_place_append_tag(Nonce::assume_unique_for_key(wrap_nonce), wrap_aad(&self.current), &mut wrapped)
            .map_err(|_| CryptoError::Seal)?;
        blob.extend_from_slice(&wrapped);

        let nonce = random_nonce();
        blob.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        aes_key(&data_key)?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut body)
            .map_err(|_| CryptoError::Seal)?;
        blob.extend_from_slice(&body);
        data_key.fill(0);
        Ok(SealedCredentials { key_version: self.current.clone(), blob })
    }

    /// Decrypts what [`KeyRing::seal`] produced for the same `context`.
    pub fn open(&self, sealed: &SealedCredentials, context: &str) -> Result<Vec<u8>, CryptoError> {
        let kek = self
            .keys
            .get(&sealed.key_version)
            .ok_or_else(|| CryptoError::UnknownKeyVersion(sealed.key_version.clone()))?;
        let blob = &sealed.blob;
        if blob.len() < 1 + 2 * NONCE_LEN + WRAPPED_LEN + TAG_LEN || blob[0] != FORMAT {
            return Err(CryptoError::Open);
        }
        let (wrap_nonce, rest) = blob[1..].split_at(NONCE_LEN);
        let (wrapped, rest) = rest.split_at(WRAPPED_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);

        let mut data_key = wrapped.to_vec();
        let key = kek
            .open_in_place(nonce_from(wrap_nonce)?, wrap_aad(&sealed.key_version), &mut data_key)
            .map_err(|_| CryptoError::Open)?;
        let data_key = aes_key(key)?;
        let mut body = body.to_vec();
        let plaintext = data_key
            .open_in_place(nonce_from(nonce)?, Aad::from(context.as_bytes()), &mut body)
            .map_err(|_| CryptoError::Open)?;
        Ok(plaintext.to_vec())
    }
}

fn derive_cursor_key(version: &str, secret: &str) -> Result<hmac::Key, CryptoError> {
    let info = [version.as_bytes()];
    let prk = Salt::new(HKDF_SHA256, CURSOR_SALT).extract(secret.as_bytes());
    let okm = prk.expand(&info, hmac::HMAC_SHA256).map_err(|_| CryptoError::InvalidKeyRing("key derivation failed"))?;
    Ok(hmac::Key::from(okm))
}

/// The bytes a cursor's tag covers: what it is bound to, and the cursor itself.
fn cursor_message(binding: &str, cursor: &str) -> Vec<u8> {
    [binding.as_bytes(), b"\n", cursor.as_bytes()].concat()
}

impl KeyRing {
    /// Signs a listing cursor, bound to `binding` (a connection and what it lists): `<version>.<cursor, base64url>.
    /// <tag, base64url>`. Only [`KeyRing::open_cursor`] with the same binding takes it back.
    pub fn sign_cursor(&self, binding: &str, cursor: &str) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let tag = hmac::sign(&self.cursor_keys[&self.current], &cursor_message(binding, cursor));
        let tag = URL_SAFE_NO_PAD.encode(&tag.as_ref()[..CURSOR_TAG_LEN]);
        format!("{}.{}.{tag}", self.current, URL_SAFE_NO_PAD.encode(cursor))
    }

    /// The cursor [`KeyRing::sign_cursor`] signed for `binding`; `None` for anything else (forged, tampered with,
    /// another connection's or another listing's, or signed by a key version no longer in the ring).
    pub fn open_cursor(&self, binding: &str, signed: &str) -> Option<String> {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = signed.splitn(3, '.');
        let (version, body, tag) = (parts.next()?, parts.next()?, parts.next()?);
        let key = self.cursor_keys.get(version)?;
        let cursor = String::from_utf8(URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let expected = hmac::sign(key, &cursor_message(binding, &cursor));
        let matches = tag.len() == CURSOR_TAG_LEN
            && aws_lc_rs::constant_time::verify_slices_are_equal(&expected.as_ref()[..CURSOR_TAG_LEN], &tag).is_ok();
        matches.then_some(cursor)
    }
}

fn derive_key(version: &str, secret: &str) -> Result<LessSafeKey, CryptoError> {
    let info = [version.as_bytes()];
    let prk = Salt::new(HKDF_SHA256, HKDF_SALT).extract(secret.as_bytes());
    let okm = prk.expand(&info, &AES_256_GCM).map_err(|_| CryptoError::InvalidKeyRing("key derivation failed"))?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

fn aes_key(bytes: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::InvalidKeyRing("a key is not a valid AES-256 key"))
}

fn wrap_aad(version: &str) -> Aad<Vec<u8>> {
    Aad::from(format!("kek:{version}").into_bytes())
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    crate::ids::fill_random(&mut nonce);
    nonce
}

fn nonce_from(bytes: &[u8]) -> Result<Nonce, CryptoError> {
    Nonce::try_assume_unique_for_key(bytes).map_err(|_| CryptoError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_open_only_where_they_were_given() {
        let ring = KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap();
        let signed = ring.sign_cursor("con_1/users", "a7#acc-42");
        assert_eq!(ring.open_cursor("con_1/users", &signed).as_deref(), Some("a7#acc-42"));
        assert_eq!(ring.open_cursor("con_1/groups", &signed), None, "another listing");
        assert_eq!(ring.open_cursor("con_2/users", &signed), None, "another connection");
        let (head, tag) = signed.rsplit_once('.').unwrap();
        let forged_body =
            format!("v1.{}.{tag}", base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, "ff#zzz"));
        for bad in ["", "forged", "v1..", "v9.YQ.YQ", &forged_body, &format!("{head}.{}", "A".repeat(22))] {
            assert_eq!(ring.open_cursor("con_1/users", bad), None, "{bad}");
        }
        let other = KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap();
        assert_eq!(other.open_cursor("con_1/users", &signed), None, "another deployment's key");
    }

    fn ring(version: &str) -> (String, KeyRing) {
        let json = KeyRing::generate_json(version);
        let ring = KeyRing::from_json(&json).unwrap();
        (json, ring)
    }

    #[test]
    fn seals_and_opens_bound_to_context() {
        let (_, ring) = ring("v1");
        let sealed = ring.seal(b"top secret token", "con_1").unwrap();
        assert_eq!(sealed.key_version, "v1");
        assert!(!sealed.blob.windows(6).any(|w| w == b"secret"), "the plaintext must not show in the blob");
        assert_eq!(ring.open(&sealed, "con_1").unwrap(), b"top secret token");
        assert!(matches!(ring.open(&sealed, "con_2"), Err(CryptoError::Open)));
    }

    #[test]
    fn two_seals_of_the_same_value_differ() {
        let (_, ring) = ring("v1");
        assert_ne!(ring.seal(b"x", "c").unwrap().blob, ring.seal(b"x", "c").unwrap().blob);
    }

    #[test]
    fn tampering_is_detected() {
        let (_, ring) = ring("v1");
        let mut sealed = ring.seal(b"token", "c").unwrap();
        let last = sealed.blob.len() - 1;
        sealed.blob[last] ^= 1;
        assert!(matches!(ring.open(&sealed, "c"), Err(CryptoError::Open)));
        sealed.blob.truncate(10);
        assert!(matches!(ring.open(&sealed, "c"), Err(CryptoError::Open)));
    }

    #[test]
    fn rotation_keeps_old_blobs_readable() {
        let (old_json, old) = ring("2026-01");
        let sealed_before = old.seal(b"old", "c").unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&old_json).unwrap();
        let new: serde_json::Value = serde_json::from_str(&KeyRing::generate_json("2026-06")).unwrap();
        value["2026-06"] = new["2026-06"].clone();
        value["current"] = "2026-06".into();
        let rotated = KeyRing::from_json(&value.to_string()).unwrap();
        assert_eq!(rotated.open(&sealed_before, "c").unwrap(), b"old");
        let sealed_after = rotated.seal(b"new", "c").unwrap();
        assert_eq!(sealed_after.key_version, "2026-06");
        assert!(matches!(old.open(&sealed_after, "c"), Err(CryptoError::UnknownKeyVersion(_))));
    }

    #[test]
    fn bad_key_rings_are_refused_without_echoing_keys() {
        for bad in [
            r#"{"current":"v1"}"#,
            r#"{"current":"v1","v1":"c2hvcnQ-too-short"}"#,
            r#"{"v1":"0123456789abcdef0123456789abcdef"}"#,
            r#"{"current":"v2","v1":"0123456789abcdef0123456789abcdef"}"#,
            "nope",
        ] {
            let error = KeyRing::from_json(bad).unwrap_err().to_string();
            assert!(!error.contains("c2hvcnQ") && !error.contains("0123456789"), "{error}");
        }
        // The shape CloudFormation generates works.
        let generated =
            KeyRing::from_json(r#"{"current":"v1","v1":"Qw3rTy7uIoP0aSdFgHjKlZxCvBnM1234567890abcdEFGH"}"#).unwrap();
        let sealed = generated.seal(b"t", "c").unwrap();
        assert_eq!(generated.open(&sealed, "c").unwrap(), b"t");
        let (_, ring) = ring("v1");
        assert!(!format!("{ring:?}").contains("LessSafeKey {"), "Debug must not show keys");
    }
}
