use crate::crypto::CryptoError;
use atlassian::{ApiError, OAuthError};
use store::StoreError;
use thiserror::Error;

/// Everything that can stop a connect flow. Expected failures are values of this type that the functions turn into
/// answers (HTML pages for browsers, JSON for the API); none of them carries a secret.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("tenant_id must be 1 to 200 printable characters")]
    InvalidTenant,
    #[error("return_url is not on the allow-list")]
    ReturnUrlNotAllowed,
    #[error("the connect link has no session")]
    SessionMissing,
    #[error("the connect session is unknown")]
    SessionUnknown,
    #[error("the connect session has expired")]
    SessionExpired,
    #[error("the connect session was already used")]
    SessionUsed,
    #[error("the callback has no state")]
    StateMissing,
    #[error("the state is unknown or was already used")]
    StateUnknown,
    #[error("the state has expired")]
    StateExpired,
    #[error("the callback came without the browser binding its connect link set")]
    OtherBrowser,
    #[error("the user did not grant access")]
    ConsentDenied,
    #[error("Atlassian answered the authorization with error `{code}`")]
    AuthorizationFailed { code: String },
    #[error("the callback has no authorization code")]
    CodeMissing,
    #[error("Atlassian rejected the app's client credentials: check the OAuth client id and secret")]
    ClientRejected(#[source] OAuthError),
    #[error("Atlassian did not accept the authorization code")]
    CodeRejected(#[source] OAuthError),
    #[error("the token endpoint failed")]
    TokenEndpoint(#[source] OAuthError),
    #[error("the grant reaches no Atlassian site")]
    NoSites,
    #[error("the grant lacks required scopes: {}", .0.join(", "))]
    MissingScopes(Vec<String>),
    #[error("an Atlassian API call failed")]
    Atlassian(#[source] ApiError),
    #[error("credentials could not be sealed")]
    Crypto(#[source] CryptoError),
    #[error("the state store failed")]
    Store(#[source] StoreError),
}

impl From<StoreError> for ConnectError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl ConnectError {
    /// A stable machine-readable code, for JSON errors and return URLs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidTenant => "invalid_tenant",
            Self::ReturnUrlNotAllowed => "return_url_not_allowed",
            Self::SessionMissing => "session_missing",
            Self::SessionUnknown => "session_unknown",
            Self::SessionExpired => "session_expired",
            Self::SessionUsed => "session_used",
            Self::StateMissing => "state_missing",
            Self::StateUnknown => "state_unknown",
            Self::StateExpired => "state_expired",
            Self::OtherBrowser => "browser_mismatch",
            Self::ConsentDenied => "access_denied",
            Self::AuthorizationFailed { .. } => "authorization_failed",
            Self::CodeMissing => "code_missing",
            Self::ClientRejected(_) => "client_credentials_rejected",
            Self::CodeRejected(_) => "code_rejected",
            Self::TokenEndpoint(_) => "token_endpoint_error",
            Self::NoSites => "no_accessible_sites",
            Self::MissingScopes(_) => "missing_scopes",
            Self::Atlassian(_) => "atlassian_error",
            Self::Crypto(_) | Self::Store(_) => "internal_error",
        }
    }
}
