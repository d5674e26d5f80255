//! The Atlassian Cloud HTTP client.
//!
//! Every URL derives from two bases (`ATLASSIAN_AUTH_BASE_URL`, `ATLASSIAN_API_BASE_URL`) so the same code talks to
//! Atlassian, to the sandbox in `tests/`, or to any server that speaks the same API. The client exposes one narrow
//! trait, [`AtlassianApi`], so the connect flow is tested with an in-memory fake.
//!
//! Secrets stay in `oauth2`'s secret types (`AccessToken`, `RefreshToken`, `AuthorizationCode`, `ClientSecret`), which
//! redact `Debug`; error values never carry a response body, because token-endpoint bodies can hold tokens.

pub mod admin;
mod client;
mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod forward;
pub mod quota;
pub mod rest;
mod types;

pub use admin::{AdminApi, AdminKey, SiteLogin};
pub use client::RetryPolicy;
pub use client::{AtlassianClient, ClientCredentials, Endpoints, Http, http_client};
pub use error::{ApiError, OAuthError};
pub use forward::{Forward, ForwardApi, Forwarded, Target};
pub use oauth2::{AccessToken, AuthorizationCode, ClientId, ClientSecret, RefreshToken};
pub use quota::{QuotaReport, QuotaWatch};
pub use rest::DirectoryApi;
pub use types::{AccessibleResource, Me, TokenGrant};

use std::future::Future;

/// What the connect flow needs from Atlassian.
pub trait AtlassianApi: Send + Sync {
    /// `POST {auth}/oauth/token` with `grant_type=authorization_code`.
    fn exchange_code(&self, code: &AuthorizationCode) -> impl Future<Output = Result<TokenGrant, OAuthError>> + Send;

    /// `POST {auth}/oauth/token` with `grant_type=refresh_token`. Atlassian rotates refresh tokens: the answer
    /// carries a new one (keep the old one if it does not) and the one sent is disabled.
    fn refresh_token(
        &self,
        refresh_token: &RefreshToken,
    ) -> impl Future<Output = Result<TokenGrant, OAuthError>> + Send;

    /// `GET {api}/oauth/token/accessible-resources`: the sites this grant reaches.
    fn accessible_resources(
        &self,
        token: &AccessToken,
    ) -> impl Future<Output = Result<Vec<AccessibleResource>, ApiError>> + Send;

    /// `GET {api}/me`: the account that consented.
    fn me(&self, token: &AccessToken) -> impl Future<Output = Result<Me, ApiError>> + Send;
}
