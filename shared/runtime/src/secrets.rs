//! Secrets Manager reads, done once per container at cold start and kept in redacting types.

use secrecy::SecretString;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("secret {id} could not be read")]
    Read { id: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("secret {id} has no string value")]
    Empty { id: String },
    #[error("secret {id} is not valid: {reason}")]
    Invalid { id: String, reason: &'static str },
}

/// A secret's string value.
pub async fn read(client: &aws_sdk_secretsmanager::Client, id: &str) -> Result<SecretString, SecretError> {
    let output = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| SecretError::Read { id: id.to_owned(), source: Box::new(e) })?;
    output
        .secret_string
        .filter(|s| !s.trim().is_empty())
        .map(SecretString::from)
        .ok_or_else(|| SecretError::Empty { id: id.to_owned() })
}

/// The OAuth app's credentials: `{"client_id": "…", "client_secret": "…"}`.
#[derive(Deserialize)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: SecretString,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

impl OAuthClient {
    pub fn parse(id: &str, value: &SecretString) -> Result<Self, SecretError> {
        use secrecy::ExposeSecret;
        let parsed: Self = serde_json::from_str(value.expose_secret()).map_err(|_| SecretError::Invalid {
            id: id.to_owned(),
            reason: "expected JSON {\"client_id\", \"client_secret\"}",
        })?;
        if parsed.client_id.trim().is_empty() || parsed.client_secret.expose_secret().trim().is_empty() {
            return Err(SecretError::Invalid { id: id.to_owned(), reason: "client_id and client_secret must be set" });
        }
        Ok(parsed)
    }
}

/// The OAuth app's credentials as the Atlassian client takes them, read from the secret `id`.
#[cfg(feature = "atlassian")]
pub async fn oauth_credentials(
    client: &aws_sdk_secretsmanager::Client,
    id: &str,
) -> Result<atlassian::ClientCredentials, SecretError> {
    use secrecy::ExposeSecret;
    let parsed = OAuthClient::parse(id, &read(client, id).await?)?;
    Ok(atlassian::ClientCredentials {
        client_id: atlassian::ClientId::new(parsed.client_id),
        client_secret: atlassian::ClientSecret::new(parsed.client_secret.expose_secret().to_owned()),
    })
}

/// What a function that talks OAuth to Atlassian reads from its secrets: the OAuth app's credentials and the key
/// ring that seals tokens.
#[cfg(feature = "atlassian")]
pub struct OAuthApp {
    pub credentials: atlassian::ClientCredentials,
    pub keys: tokens::KeyRing,
}

/// Reads the OAuth app's secret and the key ring's at once (each read is a round trip of the cold start).
#[cfg(feature = "atlassian")]
pub async fn oauth_app(
    client: &aws_sdk_secretsmanager::Client,
    oauth_client_id: &str,
    token_keys_id: &str,
) -> Result<OAuthApp, crate::deferred::BuildError> {
    use secrecy::ExposeSecret;
    let (credentials, keys) =
        tokio::try_join!(oauth_credentials(client, oauth_client_id), read(client, token_keys_id))?;
    Ok(OAuthApp { credentials, keys: tokens::KeyRing::from_json(keys.expose_secret())? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_redacts_the_oauth_client() {
        let value = SecretString::from(r#"{"client_id":"cid","client_secret":"very-secret"}"#);
        let client = OAuthClient::parse("s", &value).unwrap();
        assert_eq!(client.client_id, "cid");
        assert!(!format!("{client:?}").contains("very-secret"));
        let error = OAuthClient::parse("s", &SecretString::from("very-secret")).unwrap_err().to_string();
        assert!(!error.contains("very-secret"), "{error}");
    }
}
