use crate::{AccessibleResource, ApiError, AtlassianApi, Me, OAuthError, TokenGrant};
use backon::{ExponentialBuilder, Retryable};
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AccessToken, AuthType, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RedirectUrl,
    RefreshToken, RequestTokenError, TokenResponse, TokenUrl,
};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::time::Duration;
use url::Url;

/// The two bases every Atlassian URL derives from.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub auth_base: Url,
    pub api_base: Url,
}

impl Endpoints {
    pub const DEFAULT_AUTH_BASE: &str = "https://auth.atlassian.com";
    pub const DEFAULT_API_BASE: &str = "https://api.atlassian.com";

    pub fn authorize_url(&self) -> Url {
        join(&self.auth_base, "authorize")
    }
    pub fn token_url(&self) -> Url {
        join(&self.auth_base, "oauth/token")
    }
    pub fn accessible_resources_url(&self) -> Url {
        join(&self.api_base, "oauth/token/accessible-resources")
    }
    pub fn me_url(&self) -> Url {
        join(&self.api_base, "me")
    }
}

/// Joins a relative path onto a base, keeping any path prefix of the base (`https://host/prefix` + `me`).
fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    {
        let mut segments = url.path_segments_mut().expect("http(s) base URLs have paths");
        segments.pop_if_empty();
        segments.extend(path.split('/'));
    }
    url
}

/// The OAuth app's identity, read from Secrets Manager.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: ClientId,
    pub client_secret: ClientSecret,
}

type TokenClient = BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The HTTP client every Atlassian call goes through: rustls on the aws-lc-rs provider the AWS SDK already links,
/// no redirects (following them opens SSRF), and bounded timeouts so a slow Atlassian cannot eat a Lambda run.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    // Installing the process-wide provider fails harmlessly when another caller did it first.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .user_agent(concat!("atlassian-connector/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The HTTP client an [`AtlassianClient`] talks through: given ready, or built when first needed. Building one
/// loads and parses the root certificates (a few milliseconds of CPU): a function whose cold start should not wait
/// for that builds it [`Http::in_background`] (it is then usually ready by the first request) or
/// [`Http::on_first_use`] (for one that seldom calls Atlassian).
#[derive(Debug, Clone)]
pub struct Http(std::sync::Arc<std::sync::OnceLock<Result<reqwest::Client, std::sync::Arc<reqwest::Error>>>>);

impl Http {
    pub fn on_first_use() -> Self {
        Self(std::sync::Arc::default())
    }

    /// Starts building the client on a thread of its own; a request that comes before it is ready waits for it.
    pub fn in_background() -> Self {
        let http = Self::on_first_use();
        let cell = http.0.clone();
        std::thread::spawn(move || {
            cell.get_or_init(build);
        });
        http
    }

    /// The client, built now (or waited for) if it is not ready; why not, if it cannot be built.
    fn get(&self) -> Result<&reqwest::Client, ApiError> {
        self.0.get_or_init(build).as_ref().map_err(|why| ApiError::Setup(std::sync::Arc::clone(why)))
    }
}

fn build() -> Result<reqwest::Client, std::sync::Arc<reqwest::Error>> {
    http_client().map_err(std::sync::Arc::new)
}

impl From<reqwest::Client> for Http {
    fn from(client: reqwest::Client) -> Self {
        Self(std::sync::Arc::new(std::sync::OnceLock::from(Ok(client))))
    }
}

/// How the client rides out burst 429s, 5xx and dropped connections: retries with exponential backoff (never
/// shorter than `Retry-After`); a wait longer than `max_delay` is handed back to the caller instead.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 4, min_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30) }
    }
}

/// The real client.
#[derive(Debug, Clone)]
pub struct AtlassianClient {
    http: Http,
    endpoints: Endpoints,
    /// `None` for a client of the Admin API and sites only (the management API holds no OAuth app secret).
    oauth: Option<TokenClient>,
    retry: RetryPolicy,
    /// Where the quota headers of every answer are reported, if anyone budgets the quota.
    quota: Option<crate::quota::QuotaWatch>,
}

impl AtlassianClient {
    pub fn new(http: impl Into<Http>, endpoints: Endpoints, credentials: ClientCredentials, redirect_uri: Url) -> Self {
        // Atlassian documents the client credentials in the request body, not a Basic header.
        let oauth = BasicClient::new(credentials.client_id)
            .set_client_secret(credentials.client_secret)
            .set_token_uri(TokenUrl::from_url(endpoints.token_url()))
            .set_redirect_uri(RedirectUrl::from_url(redirect_uri))
            .set_auth_type(AuthType::RequestBody);
        Self { http: http.into(), endpoints, oauth: Some(oauth), retry: RetryPolicy::default(), quota: None }
    }

    /// A client for the Admin API and sites' own APIs (API keys, Basic tokens), without an OAuth app.
    pub fn without_oauth(http: impl Into<Http>, endpoints: Endpoints) -> Self {
        Self { http: http.into(), endpoints, oauth: None, retry: RetryPolicy::default(), quota: None }
    }

    /// The OAuth app, and the HTTP client it talks through.
    fn oauth(&self) -> Result<(&TokenClient, &reqwest::Client), OAuthError> {
        let oauth = self.oauth.as_ref().ok_or(OAuthError::NotConfigured)?;
        let http = self.http.get().map_err(|e| OAuthError::Transport(Box::new(e)))?;
        Ok((oauth, http))
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Reports the points-quota headers of every answer to `watch`.
    pub fn with_quota_watch(mut self, watch: crate::quota::QuotaWatch) -> Self {
        self.quota = Some(watch);
        self
    }

    /// Sets how transient failures are retried.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The HTTP client, built now if it is not yet.
    pub(crate) fn http(&self) -> Result<&reqwest::Client, ApiError> {
        self.http.get()
    }

    /// Reports an answer's quota headers to whoever budgets the quota.
    pub(crate) fn report_quota(&self, headers: &reqwest::header::HeaderMap, cloud_id: Option<String>) {
        if let Some(watch) = &self.quota
            && let Some(report) = crate::quota::QuotaReport::from_headers(headers, cloud_id)
        {
            watch.record(report);
        }
    }

    /// A GET with the retry policy: exponential backoff with jitter, at least the server's `Retry-After`.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, url: Url, auth: Auth<'_>) -> Result<T, ApiError> {
        self.with_retries(|| self.send_once(reqwest::Method::GET, url.clone(), auth, None)).await
    }

    /// A POST of a JSON body with the same retries (for the Admin API's read-only searches).
    pub(crate) async fn post_json<T: DeserializeOwned>(
        &self,
        url: Url,
        auth: Auth<'_>,
        body: &serde_json::Value,
    ) -> Result<T, ApiError> {
        self.with_retries(|| self.send_once(reqwest::Method::POST, url.clone(), auth, Some(body))).await
    }

    async fn with_retries<T, F, Fut>(&self, call: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries)
            .with_jitter();
        let max_delay = self.retry.max_delay;
        call.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &ApiError| e.is_transient() && !e.is_quota_exhausted())
            .adjust(move |e: &ApiError, delay| match (e, delay) {
                // Retry-After is a floor; a wait longer than we may sleep goes back to the caller.
                (ApiError::RateLimited { retry_after: Some(after), .. }, Some(_)) if *after > max_delay => None,
                (ApiError::RateLimited { retry_after: Some(after), .. }, Some(delay)) => Some(delay.max(*after)),
                (_, delay) => delay,
            })
            .notify(|e: &ApiError, delay| tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "retrying an Atlassian call"))
            .await
    }

    async fn send_once<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: Url,
        auth: Auth<'_>,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ApiError> {
        let mut request = self.http()?.request(method, url.clone()).header(reqwest::header::ACCEPT, "application/json");
        request = match auth {
            Auth::Bearer(secret) => request.bearer_auth(secret),
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
        };
        if let Some(body) = body {
            request = request.json(body);
        }
        let cloud_id = gateway_cloud_id(&url);
        // A request that cannot even be built (a credential with a line break cannot be a header) is the caller's
        // to fix: it is never sent, so never retried.
        let response = request.send().await.map_err(|e| match e.is_builder() {
            true => ApiError::Unsendable(e),
            false => ApiError::Transport(e),
        })?;
        self.report_quota(response.headers(), cloud_id);
        let status = response.status();
        match status.as_u16() {
            200..=299 => response.json().await.map_err(ApiError::Decode),
            401 | 403 => Err(unauthorized(status.as_u16(), response).await),
            404 => Err(ApiError::NotFound),
            429 => {
                let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let retry_after = header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .or_else(|| header("x-ratelimit-reset").and_then(|v| seconds_until(&v)))
                    // Servers have sent `Retry-After: 0`; never hammer back at once.
                    .map(|secs| Duration::from_secs(secs.max(1)));
                Err(ApiError::RateLimited { retry_after, reason: header("ratelimit-reason") })
            }
            other => Err(ApiError::Status { status: other }),
        }
    }
}

/// The cloud id of a gateway URL (`…/ex/{product}/{cloudId}/…`).
fn gateway_cloud_id(url: &Url) -> Option<String> {
    let mut segments = url.path_segments()?;
    segments.by_ref().find(|s| *s == "ex")?;
    segments.next()?;
    segments.next().map(str::to_owned)
}

/// How a request authenticates: a Bearer token (3LO access token, admin API key) or Basic `email:API token`.
#[derive(Clone, Copy)]
pub(crate) enum Auth<'a> {
    Bearer(&'a str),
    Basic { user: &'a str, password: &'a str },
}

/// A 401/403, with whether the server said the credential expired (the Admin API says so for expired keys).
async fn unauthorized(status: u16, response: reqwest::Response) -> ApiError {
    // Read a little of the body, never log it: it names the problem, not the secret.
    let text = response.text().await.unwrap_or_default();
    let expired = text.len() < 4096 && text.to_ascii_lowercase().contains("expired");
    ApiError::Unauthorized { status, expired }
}

/// Seconds from now until an `X-RateLimit-Reset`: RFC 3339, Jira's `yyyy-MM-ddTHH:mmZ` (no seconds), or epoch
/// seconds.
fn seconds_until(reset: &str) -> Option<u64> {
    let reset = reset.trim();
    let minutes = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]Z");
    let at = time::OffsetDateTime::parse(reset, &time::format_description::well_known::Rfc3339)
        .ok()
        .or_else(|| time::PrimitiveDateTime::parse(reset, minutes).ok().map(|t| t.assume_utc()))
        .or_else(|| reset.parse::<i64>().ok().and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok()))?;
    Some((at - time::OffsetDateTime::now_utc()).whole_seconds().max(0) as u64)
}

impl AtlassianApi for AtlassianClient {
    async fn exchange_code(&self, code: &AuthorizationCode) -> Result<TokenGrant, OAuthError> {
        let (oauth, http) = self.oauth()?;
        let response = oauth
            .exchange_code(AuthorizationCode::new(code.secret().clone()))
            .request_async(http)
            .await
            .map_err(map_token_error)?;
        Ok(grant(&response))
    }

    async fn refresh_token(&self, refresh_token: &RefreshToken) -> Result<TokenGrant, OAuthError> {
        let (oauth, http) = self.oauth()?;
        let response =
            oauth.exchange_refresh_token(refresh_token).request_async(http).await.map_err(map_token_error)?;
        Ok(grant(&response))
    }

    async fn accessible_resources(&self, token: &AccessToken) -> Result<Vec<AccessibleResource>, ApiError> {
        self.get_json(self.endpoints.accessible_resources_url(), Auth::Bearer(token.secret())).await
    }

    async fn me(&self, token: &AccessToken) -> Result<Me, ApiError> {
        self.get_json(self.endpoints.me_url(), Auth::Bearer(token.secret())).await
    }
}

fn grant(response: &oauth2::basic::BasicTokenResponse) -> TokenGrant {
    TokenGrant {
        access_token: response.access_token().clone(),
        refresh_token: response.refresh_token().cloned(),
        expires_in: response.expires_in().unwrap_or(Duration::from_secs(3600)),
        scopes: response.scopes().map(|scopes| scopes.iter().map(|s| s.to_string()).collect()).unwrap_or_default(),
    }
}

type ReqwestTokenError =
    RequestTokenError<oauth2::HttpClientError<reqwest::Error>, oauth2::StandardErrorResponse<BasicErrorResponseType>>;

/// Maps `oauth2`'s error without keeping the response body (it may hold tokens).
fn map_token_error(error: ReqwestTokenError) -> OAuthError {
    match error {
        RequestTokenError::ServerResponse(response) => match response.error() {
            BasicErrorResponseType::InvalidGrant | BasicErrorResponseType::UnauthorizedClient => {
                OAuthError::InvalidGrant { code: response.error().to_string() }
            }
            BasicErrorResponseType::Extension(code) if code == "access_denied" => OAuthError::ClientRejected,
            other => OAuthError::Rejected { code: other.to_string() },
        },
        RequestTokenError::Request(source) => OAuthError::Transport(Box::new(source)),
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) => OAuthError::Protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_client_is_there_when_asked_however_it_was_started() {
        // Built in the background (waited for if not ready yet), on first use, or given.
        for http in [Http::in_background(), Http::on_first_use(), Http::from(http_client().unwrap())] {
            let first = http.get().map(|c| c as *const reqwest::Client).unwrap();
            let again = http.clone().get().map(|c| c as *const reqwest::Client).unwrap();
            assert_eq!(first, again, "built once, shared by clones");
        }
    }

    #[test]
    fn urls_keep_the_base_path() {
        let endpoints = Endpoints {
            auth_base: Url::parse("http://127.0.0.1:9900/sandbox/").unwrap(),
            api_base: Url::parse("https://api.atlassian.com").unwrap(),
        };
        assert_eq!(endpoints.token_url().as_str(), "http://127.0.0.1:9900/sandbox/oauth/token");
        assert_eq!(endpoints.authorize_url().as_str(), "http://127.0.0.1:9900/sandbox/authorize");
        assert_eq!(
            endpoints.accessible_resources_url().as_str(),
            "https://api.atlassian.com/oauth/token/accessible-resources"
        );
        assert_eq!(endpoints.me_url().as_str(), "https://api.atlassian.com/me");
    }

    #[test]
    fn reset_times_are_read_in_every_style() {
        let in_90s = time::OffsetDateTime::now_utc() + time::Duration::seconds(90);
        let rfc = in_90s.format(&time::format_description::well_known::Rfc3339).unwrap();
        assert!((85..=90).contains(&super::seconds_until(&rfc).unwrap()));
        let epoch = in_90s.unix_timestamp().to_string();
        assert!((85..=90).contains(&super::seconds_until(&epoch).unwrap()));
        let minutes = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]Z");
        let jira = (in_90s + time::Duration::minutes(1)).format(minutes).unwrap();
        assert!((31..=150).contains(&super::seconds_until(&jira).unwrap()), "{jira}");
        assert_eq!(super::seconds_until("2001-01-01T00:00Z"), Some(0), "a reset in the past waits nothing extra");
        assert_eq!(super::seconds_until("soon"), None);
    }
}
