use thiserror::Error;

/// Failures of the token endpoint, branched on the OAuth `error` code (Atlassian has changed the HTTP status before).
#[derive(Debug, Error)]
pub enum OAuthError {
    /// `access_denied` from the token endpoint means Atlassian rejected our client credentials (a wrong client
    /// secret): a server configuration problem, never a user's denial.
    #[error("Atlassian rejected the app's client credentials")]
    ClientRejected,
    /// `invalid_grant` / `unauthorized_client`: the code or refresh token is unknown, used, expired or revoked.
    #[error("Atlassian rejected the grant ({code})")]
    InvalidGrant { code: String },
    /// Any other OAuth error code.
    #[error("the token endpoint answered with OAuth error `{code}`")]
    Rejected { code: String },
    /// The response was not a token response nor an OAuth error (e.g. a 5xx page).
    #[error("the token endpoint gave an unreadable answer")]
    Protocol,
    #[error("the token endpoint could not be reached")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Failures of the REST API calls.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("Atlassian refused the access token (HTTP {status})")]
    Unauthorized { status: u16 },
    #[error("Atlassian answered HTTP {status}")]
    Status { status: u16 },
    #[error("Atlassian's answer could not be read")]
    Decode(#[source] reqwest::Error),
    #[error("Atlassian could not be reached")]
    Transport(#[source] reqwest::Error),
}
