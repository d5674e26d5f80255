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
    /// This client was built without the OAuth app's credentials.
    #[error("no OAuth app is configured for this client")]
    NotConfigured,
    #[error("the token endpoint could not be reached")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Failures of the REST API calls.
#[derive(Debug, Error)]
pub enum ApiError {
    /// 401/403. `expired`: the server said the credential expired (the Admin API does for expired keys).
    #[error("Atlassian refused the credential (HTTP {status})")]
    Unauthorized { status: u16, expired: bool },
    #[error("Atlassian found no such resource (HTTP 404)")]
    NotFound,
    /// `429`: `retry_after` is the server's `Retry-After` (0 already clamped to 1 s); `reason` its
    /// `RateLimit-Reason` (`jira-quota-global-based`, `jira-burst-based`, …).
    #[error("Atlassian rate-limited the request ({})", .reason.as_deref().unwrap_or("no reason given"))]
    RateLimited { retry_after: Option<std::time::Duration>, reason: Option<String> },
    #[error("Atlassian answered HTTP {status}")]
    Status { status: u16 },
    #[error("Atlassian's answer could not be read")]
    Decode(#[source] reqwest::Error),
    #[error("Atlassian could not be reached")]
    Transport(#[source] reqwest::Error),
    /// The request could not be built from what it was given (a header value with a line break, …): not sent.
    #[error("the request to Atlassian could not be built from its inputs")]
    Unsendable(#[source] reqwest::Error),
    /// The answer was longer than the caller would read (the proxy's limit).
    #[error("Atlassian's answer is longer than {limit} bytes")]
    TooLarge { limit: usize },
    /// The HTTP client could not be built (its TLS setup failed): no request was made.
    #[error("the HTTP client could not be built")]
    Setup(#[source] std::sync::Arc<reqwest::Error>),
}

impl ApiError {
    /// Worth another try: rate limits, server errors (5xx, and 409, which Jira answers for requests that ran too
    /// long), timeouts, dropped connections and bodies cut short.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transport(_) | Self::Decode(_) => true,
            Self::Status { status } => *status >= 500 || *status == 409,
            Self::Unauthorized { .. }
            | Self::NotFound
            | Self::Setup(_)
            | Self::Unsendable(_)
            | Self::TooLarge { .. } => false,
        }
    }

    /// Atlassian (or the request itself) refused what it was sent, for a reason a retry cannot change: 4xx other than
    /// an auth failure, 404, 409 or 429, or a request that could not be built. The caller's input is at fault.
    pub fn refused_input(&self) -> Option<u16> {
        match self {
            Self::Status { status } if (400..500).contains(status) && *status != 409 => Some(*status),
            Self::Unsendable(_) => Some(400),
            _ => None,
        }
    }

    /// A quota (not burst) limit: the whole product is paused until the quota resets, so the caller should stop and
    /// come back later instead of retrying in place.
    pub fn is_quota_exhausted(&self) -> bool {
        matches!(self, Self::RateLimited { reason: Some(reason), .. } if reason.contains("quota"))
    }
}
