//! One error map per kind of answer. The shared crates' errors say what went wrong and carry a stable code; the
//! HTTP status a client gets and the words a person reads are decided here, once:
//!
//! - the management API answers JSON `{"error": {"code", "message"}}` through [`ApiError`], which every route
//!   returns and every shared error converts into (the connector's own failures are logged with their whole cause
//!   chain and shown only as `internal_error`);
//! - the browser routes (the connect link and the OAuth callback) answer a small HTML page through
//!   [`connect_page`]: a title, what happened, and what the person can do about it.

use crate::http::{self, Link};
use lambda_http::{Body, Response};
use std::borrow::Cow;
use store::StoreError;
use tokens::ConnectError;
use tokens::admin::{AdminConnectError, InvalidRequest};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
    /// Seconds for a `Retry-After` header (a 429 or 503 that will pass).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
        Self { status, code: code.into(), message: message.into(), retry_after: None }
    }

    /// Tells the client when to come back.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, code, message)
    }

    /// A failure of the connector itself: logged whole, answered without detail.
    pub fn internal(what: &str, error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %crate::error_chain(error), "{what}");
        Self::new(500, "internal_error", "The connector hit an internal error.")
    }

    /// The management API key is missing or wrong.
    pub fn unauthorized() -> Self {
        Self::new(401, "unauthorized", "A valid management API key is required.")
    }

    pub fn into_response(self) -> Response<Body> {
        use lambda_http::http::{HeaderValue, header};
        let mut response = http::json_error(self.status, &self.code, &self.message);
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        if self.status == 401 {
            // A 401 names the scheme it wants (RFC 9110 §11.6.1).
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
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
        if matches!(error, AdminConnectError::Changed) {
            return Self::new(409, error.code(), error.to_string());
        }
        if error.is_input() {
            return Self::new(422, error.code(), error.to_string());
        }
        tracing::warn!(error = %crate::error_chain(&error), code = error.code(), "an admin-key connection could not be made");
        let status = if matches!(error, AdminConnectError::Unavailable(_)) { 502 } else { 500 };
        Self::new(status, error.code(), error.to_string())
    }
}

impl From<tokens::ConnectError> for ApiError {
    fn from(error: tokens::ConnectError) -> Self {
        if let tokens::ConnectError::Store(source) = &error {
            tracing::error!(error = %crate::error_chain(source), "creating a connect session failed");
        }
        Self::new(status(&error), error.code(), message(&error))
    }
}

/// Where in the connect flow a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `GET /connect`: the link itself was refused.
    Start,
    /// `GET /oauth/callback`: the way back from Atlassian.
    Callback,
}

/// The page a person sees when the connect flow fails at `step`, with a link back to the app if there is one.
pub fn connect_page(error: &ConnectError, step: Step, back: Option<Link<'_>>) -> Response<Body> {
    let (title, hint) = match step {
        Step::Start => (
            "Cannot start the connection",
            "Go back to the app and start the Atlassian connection again to get a fresh link.",
        ),
        Step::Callback => (
            if matches!(error, ConnectError::ConsentDenied) { "Access not granted" } else { "The connection failed" },
            if retryable(error) {
                "To try again, go back to the app and start the Atlassian connection again."
            } else {
                "Please contact the administrator of this connector."
            },
        ),
    };
    http::page(status(error), title, &message(error), Some(hint), back)
}

/// A browser route asked with another method than GET.
pub fn get_only_page() -> Response<Body> {
    http::page(405, "Not allowed", "This address only answers GET.", None, None)
}

/// The HTTP status of the answer.
fn status(error: &ConnectError) -> u16 {
    match error {
        ConnectError::SessionExpired | ConnectError::SessionUsed => 410,
        ConnectError::SessionUnknown => 404,
        ConnectError::OtherBrowser => 400,
        ConnectError::ConsentDenied | ConnectError::AuthorizationFailed { .. } => 403,
        ConnectError::MissingScopes(_) | ConnectError::NoSites => 403,
        ConnectError::ClientRejected(_) | ConnectError::Crypto(_) | ConnectError::Store(_) => 500,
        ConnectError::TokenEndpoint(_) | ConnectError::Atlassian(_) => 502,
        ConnectError::InvalidTenant
        | ConnectError::ReturnUrlNotAllowed
        | ConnectError::SessionMissing
        | ConnectError::StateMissing
        | ConnectError::StateUnknown
        | ConnectError::StateExpired
        | ConnectError::CodeMissing
        | ConnectError::CodeRejected(_) => 400,
    }
}

/// What went wrong, for the person in front of the browser.
fn message(error: &ConnectError) -> String {
    match error {
        ConnectError::InvalidTenant => "The tenant id is missing or malformed.".into(),
        ConnectError::ReturnUrlNotAllowed => "The return URL is not one this connector may redirect to.".into(),
        ConnectError::SessionMissing => "This connect link is incomplete: it carries no session.".into(),
        ConnectError::SessionUnknown => "This connect link is not valid.".into(),
        ConnectError::SessionExpired => "This connect link has expired.".into(),
        ConnectError::SessionUsed => "This connect link was already used to connect.".into(),
        ConnectError::StateMissing => "Atlassian's answer is missing its state parameter.".into(),
        ConnectError::StateUnknown => "This sign-in attempt is unknown or was already completed.".into(),
        ConnectError::StateExpired => "This sign-in attempt took too long and expired.".into(),
        ConnectError::OtherBrowser => "This sign-in was started in another browser (or this browser blocked the \
            connector's cookie). Open the connect link again, in the browser you sign in to Atlassian with."
            .into(),
        ConnectError::ConsentDenied => {
            "Access was not granted: the Atlassian consent was cancelled or declined.".into()
        }
        ConnectError::AuthorizationFailed { code } => format!("Atlassian did not authorise the app (error: {code})."),
        ConnectError::CodeMissing => "Atlassian's answer carries no authorization code.".into(),
        ConnectError::ClientRejected(_) => {
            "Atlassian rejected this connector's app credentials. This is a configuration \
            problem on the connector's side, not yours: its administrator must check the OAuth client id and \
            secret."
                .into()
        }
        ConnectError::CodeRejected(_) => {
            "Atlassian did not accept the authorization code (it may have expired).".into()
        }
        ConnectError::TokenEndpoint(_) => "Atlassian's token service failed to answer.".into(),
        ConnectError::NoSites => "The consent reaches no Atlassian site. Choose a site on Atlassian's consent screen, \
            and make sure your account can use Jira or Confluence there."
            .into(),
        ConnectError::MissingScopes(missing) => {
            format!("Atlassian granted fewer permissions than the connector needs. Missing: {}.", missing.join(", "))
        }
        ConnectError::Atlassian(_) => "Atlassian could not be reached or answered with an error.".into(),
        ConnectError::Crypto(_) | ConnectError::Store(_) => "The connector hit an internal error.".into(),
    }
}

/// Whether trying again with a fresh link can help (shown as a hint to the person).
fn retryable(error: &ConnectError) -> bool {
    !matches!(error, ConnectError::ClientRejected(_) | ConnectError::InvalidTenant | ConnectError::ReturnUrlNotAllowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atlassian::OAuthError;

    fn text(response: &Response<Body>) -> String {
        match response.body() {
            Body::Text(text) => text.clone(),
            _ => String::new(),
        }
    }

    #[test]
    fn each_connect_failure_has_its_status_and_words() {
        let cases: Vec<(ConnectError, Step, u16, &str)> = vec![
            (ConnectError::SessionExpired, Step::Start, 410, "Cannot start the connection"),
            (ConnectError::SessionUnknown, Step::Start, 404, "fresh link"),
            (ConnectError::ConsentDenied, Step::Callback, 403, "Access not granted"),
            (
                ConnectError::ClientRejected(OAuthError::ClientRejected),
                Step::Callback,
                500,
                "contact the administrator",
            ),
            (ConnectError::TokenEndpoint(OAuthError::Protocol), Step::Callback, 502, "To try again"),
            (
                ConnectError::MissingScopes(vec!["read:me".into(), "read:jira-user".into()]),
                Step::Callback,
                403,
                "read:me, read:jira-user",
            ),
            (ConnectError::Store(StoreError::InvalidCursor), Step::Callback, 500, "internal error"),
        ];
        for (error, step, status, says) in cases {
            let page = connect_page(&error, step, None);
            assert_eq!(page.status(), status, "{error:?}");
            assert!(text(&page).contains(says), "{error:?} should say {says:?}");
        }
    }

    #[test]
    fn the_json_map_hides_the_connectors_own_failures() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (StoreError::InvalidCursor.into(), 400, "invalid_cursor"),
            (StoreError::Exists("session").into(), 500, "internal_error"),
            (ConnectError::ReturnUrlNotAllowed.into(), 400, "return_url_not_allowed"),
            (ConnectError::Store(StoreError::Contended(32)).into(), 500, "internal_error"),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.status, error.code.as_ref()), (status, code));
            assert!(!error.message.contains("DynamoDB") && !error.message.contains("session"), "{error:?}");
        }
    }
}
