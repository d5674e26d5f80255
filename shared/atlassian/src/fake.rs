//! An in-memory [`AtlassianApi`] for tests and benchmarks (feature `fake`): answers what it is told and records
//! what it was asked.

use crate::{
    AccessToken, AccessibleResource, ApiError, AtlassianApi, AuthorizationCode, Me, OAuthError, RefreshToken,
    TokenGrant,
};
use std::sync::Mutex;
use std::time::Duration;

pub struct FakeAtlassian {
    /// The next code exchange's answer; `None` once used when `reusable` is false.
    exchange: Mutex<Option<Result<TokenGrant, OAuthError>>>,
    /// Answer every exchange with the same grant (benchmarks).
    reusable: bool,
    pub resources: Vec<AccessibleResource>,
    pub account_id: String,
    calls: Mutex<Vec<&'static str>>,
    /// Answers of successive refreshes, in order; once empty, refreshes return fresh grants.
    refreshes: Mutex<std::collections::VecDeque<Result<TokenGrant, OAuthError>>>,
    refresh_count: std::sync::atomic::AtomicUsize,
    /// How long a refresh takes, so concurrent callers overlap.
    pub refresh_latency: Duration,
    /// The orgs an admin API key administers.
    pub admin_orgs: Vec<crate::admin::AdminOrg>,
    /// The answer every forwarded request gets (a 200 with `{"ok": true}` unless set).
    pub forward_answer: Mutex<Result<crate::Forwarded, ApiError>>,
    forwarded: Mutex<Vec<Forwarded>>,
}

/// A request the fake was asked to forward, as it would have gone out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub method: String,
    /// The API and credential: `gateway:{product}:{cloud_id}:{token}`, `admin:{key}` or `site:{email}`.
    pub target: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A grant with the given scopes, and a refresh token when `refresh`.
pub fn grant(scopes: &[String], refresh: bool) -> TokenGrant {
    TokenGrant {
        access_token: AccessToken::new("access-123".into()),
        refresh_token: refresh.then(|| RefreshToken::new("refresh-456".into())),
        expires_in: Duration::from_secs(3600),
        scopes: scopes.to_vec(),
    }
}

/// A site with the given scopes.
pub fn site(id: &str, scopes: &[&str]) -> AccessibleResource {
    AccessibleResource {
        id: id.into(),
        url: format!("https://{id}.atlassian.net"),
        name: id.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

impl FakeAtlassian {
    /// Grants `scopes` with a refresh token on one site with Jira and Confluence, for account `acc-1`.
    pub fn granting(scopes: &[String]) -> Self {
        Self {
            exchange: Mutex::new(Some(Ok(grant(scopes, true)))),
            reusable: false,
            resources: vec![site("cloud-1", &["read:jira-user", "read:confluence-user"])],
            account_id: "acc-1".into(),
            calls: Mutex::default(),
            refreshes: Mutex::default(),
            refresh_count: Default::default(),
            refresh_latency: Duration::ZERO,
            admin_orgs: Vec::new(),
            forward_answer: Mutex::new(Ok(crate::Forwarded {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: br#"{"ok": true}"#.to_vec(),
            })),
            forwarded: Mutex::default(),
        }
    }

    /// Sets the answer of every forwarded request.
    pub fn answering(self, answer: Result<crate::Forwarded, ApiError>) -> Self {
        *self.forward_answer.lock().unwrap_or_else(|p| p.into_inner()) = answer;
        self
    }

    /// The requests forwarded so far, in order.
    pub fn forwarded(&self) -> Vec<Forwarded> {
        self.forwarded.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Queues the answer of the next refresh.
    pub fn then_refresh(self, result: Result<TokenGrant, OAuthError>) -> Self {
        self.refreshes.lock().unwrap_or_else(|p| p.into_inner()).push_back(result);
        self
    }

    /// How many refreshes were made.
    pub fn refresh_count(&self) -> usize {
        self.refresh_count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Answers every exchange with the same grant.
    pub fn reusable(mut self) -> Self {
        self.reusable = true;
        self
    }

    pub fn with_exchange(self, result: Result<TokenGrant, OAuthError>) -> Self {
        *self.exchange.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self
    }

    /// What was called, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, call: &'static str) {
        if !self.reusable {
            self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(call);
        }
    }
}

impl AtlassianApi for FakeAtlassian {
    async fn exchange_code(&self, _code: &AuthorizationCode) -> Result<TokenGrant, OAuthError> {
        self.record("exchange");
        let mut exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        if self.reusable {
            return match exchange.as_ref() {
                Some(Ok(grant)) => Ok(grant.clone()),
                _ => Err(OAuthError::Protocol),
            };
        }
        exchange.take().expect("the fake exchanges one code unless made reusable")
    }

    async fn refresh_token(&self, _refresh_token: &RefreshToken) -> Result<TokenGrant, OAuthError> {
        let n = self.refresh_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if !self.refresh_latency.is_zero() {
            tokio::time::sleep(self.refresh_latency).await;
        }
        let queued = self.refreshes.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        queued.unwrap_or_else(|| {
            Ok(TokenGrant {
                access_token: AccessToken::new(format!("access-refreshed-{n}")),
                refresh_token: Some(RefreshToken::new(format!("refresh-rotated-{n}"))),
                expires_in: Duration::from_secs(3600),
                scopes: Vec::new(),
            })
        })
    }

    async fn accessible_resources(&self, _: &AccessToken) -> Result<Vec<AccessibleResource>, ApiError> {
        self.record("resources");
        Ok(self.resources.clone())
    }

    async fn me(&self, _: &AccessToken) -> Result<Me, ApiError> {
        self.record("me");
        Ok(Me { account_id: self.account_id.clone(), name: None })
    }
}

/// An empty directory: every list is one empty page.
impl crate::DirectoryApi for FakeAtlassian {
    async fn users_page(&self, _: &AccessToken, _: &str, _: usize) -> Result<Vec<crate::rest::JiraUser>, ApiError> {
        Ok(Vec::new())
    }
    async fn groups_page(
        &self,
        _: &AccessToken,
        _: &str,
        _: usize,
    ) -> Result<crate::rest::Page<crate::rest::JiraGroup>, ApiError> {
        Ok(empty_page())
    }
    async fn group_members_page(
        &self,
        _: &AccessToken,
        _: &str,
        _: &str,
        _: usize,
    ) -> Result<crate::rest::Page<crate::rest::JiraUser>, ApiError> {
        Ok(empty_page())
    }
    async fn projects_page(
        &self,
        _: &AccessToken,
        _: &str,
        _: usize,
    ) -> Result<crate::rest::Page<crate::rest::JiraProject>, ApiError> {
        Ok(empty_page())
    }
    async fn spaces_page(
        &self,
        _: &AccessToken,
        _: &str,
        _: Option<&str>,
    ) -> Result<crate::rest::SpacesPage, ApiError> {
        Ok(crate::rest::SpacesPage { results: Vec::new(), next: None })
    }
}

fn empty_page<T>() -> crate::rest::Page<T> {
    crate::rest::Page { start_at: 0, max_results: 50, total: Some(0), is_last: Some(true), values: Vec::new() }
}

/// An Admin API whose key administers the orgs in [`FakeAtlassian::admin_orgs`] and whose directory is empty.
impl crate::admin::AdminApi for FakeAtlassian {
    async fn orgs(&self, _: &crate::AdminKey) -> Result<Vec<crate::admin::AdminOrg>, ApiError> {
        self.record("admin_orgs");
        Ok(self.admin_orgs.clone())
    }
    async fn users_v2(
        &self,
        _: &crate::AdminKey,
        _: &str,
        _: Option<&str>,
        _: Option<&str>,
    ) -> Result<crate::admin::AdminPage<crate::admin::AdminUser>, ApiError> {
        Ok(crate::admin::AdminPage { data: Vec::new(), next: None })
    }
    async fn users_v1(
        &self,
        _: &crate::AdminKey,
        _: &str,
        _: Option<&str>,
    ) -> Result<crate::admin::AdminPage<crate::admin::AdminUser>, ApiError> {
        Ok(crate::admin::AdminPage { data: Vec::new(), next: None })
    }
    async fn groups_v2(
        &self,
        _: &crate::AdminKey,
        _: &str,
        _: Option<&str>,
    ) -> Result<crate::admin::AdminPage<crate::admin::AdminGroup>, ApiError> {
        Ok(crate::admin::AdminPage { data: Vec::new(), next: None })
    }
    async fn workspaces(&self, _: &crate::AdminKey, _: &str) -> Result<Vec<crate::admin::Workspace>, ApiError> {
        Ok(Vec::new())
    }
    async fn site_myself(&self, _: &crate::SiteLogin, _: bool) -> Result<crate::rest::JiraUser, ApiError> {
        Err(ApiError::Unauthorized { status: 401, expired: false })
    }
    async fn site_projects_page(
        &self,
        _: &crate::SiteLogin,
        _: usize,
    ) -> Result<crate::rest::Page<crate::rest::JiraProject>, ApiError> {
        Ok(empty_page())
    }
    async fn site_spaces_page(
        &self,
        _: &crate::SiteLogin,
        _: Option<&str>,
    ) -> Result<crate::rest::SpacesPage, ApiError> {
        Ok(crate::rest::SpacesPage { results: Vec::new(), next: None })
    }
}

impl crate::ForwardApi for FakeAtlassian {
    async fn forward(&self, request: crate::Forward<'_>) -> Result<crate::Forwarded, ApiError> {
        use secrecy::ExposeSecret;
        let target = match request.target {
            crate::Target::Gateway { product, cloud_id, token } => {
                format!("gateway:{product}:{cloud_id}:{}", token.secret())
            }
            crate::Target::Admin { key } => format!("admin:{}", key.expose()),
            crate::Target::Site { login } => format!("site:{}:{}", login.email, login.api_token.expose_secret()),
        };
        self.forwarded.lock().unwrap_or_else(|p| p.into_inner()).push(Forwarded {
            method: request.method.to_string(),
            target,
            path_and_query: request.path_and_query.to_owned(),
            headers: request.headers.to_vec(),
            body: request.body,
        });
        match &*self.forward_answer.lock().unwrap_or_else(|p| p.into_inner()) {
            Ok(answer) => Ok(answer.clone()),
            Err(ApiError::RateLimited { retry_after, reason }) => {
                Err(ApiError::RateLimited { retry_after: *retry_after, reason: reason.clone() })
            }
            Err(ApiError::TooLarge { limit }) => Err(ApiError::TooLarge { limit: *limit }),
            Err(_) => Err(ApiError::Status { status: 502 }),
        }
    }
}
