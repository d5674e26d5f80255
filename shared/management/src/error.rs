//! Every way a route can fail is an [`ApiError`]: a status, a stable code and a message for people, answered as
//! `{"error": {"code", "message"}}`. The connector's own failures (the store, sealing) are logged with their whole
//! cause chain and shown to the client only as `internal_error`.

use lambda_http::{Body, Response};
use runtime::http;
use std::borrow::Cow;
use store::StoreError;
use tokens::admin::{AdminConnectError, InvalidRequest};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
        Self { status, code: code.into(), message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, code, message)
    }

    pub fn connection_not_found() -> Self {
        Self::new(404, "connection_not_found", "No connection has this id.")
    }

    /// A failure of the connector itself: logged whole, answered without detail.
    pub fn internal(what: &str, error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %runtime::error_chain(error), "{what}");
        Self::new(500, "internal_error", "The connector hit an internal error.")
    }

    pub fn into_response(self) -> Response<Body> {
        http::json_error(self.status, &self.code, &self.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidCursor => {
                Self::bad_request("invalid_cursor", "The cursor is not one this API gave out.")
            }
            error => Self::internal("a store request failed", &error),
        }
    }
}

impl From<InvalidRequest> for ApiError {
    fn from(error: InvalidRequest) -> Self {
        Self::bad_request(error.code, error.message)
    }
}

/// An admin-key connection that could not be made or updated: the caller's credentials (422, with what to fix),
/// Atlassian (502) or the connector (500).
impl From<AdminConnectError> for ApiError {
    fn from(error: AdminConnectError) -> Self {
        if error.is_input() {
            return Self::new(422, error.code(), error.to_string());
        }
        tracing::warn!(error = %runtime::error_chain(&error), code = error.code(), "an admin-key connection could not be made");
        let status = if matches!(error, AdminConnectError::Unavailable(_)) { 502 } else { 500 };
        Self::new(status, error.code(), error.to_string())
    }
}

impl From<tokens::ConnectError> for ApiError {
    fn from(error: tokens::ConnectError) -> Self {
        if let tokens::ConnectError::Store(source) = &error {
            tracing::error!(error = %runtime::error_chain(source), "creating a connect session failed");
        }
        Self::new(error.http_status(), error.code(), error.message())
    }
}
