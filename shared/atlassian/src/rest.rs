//! The Jira and Confluence REST calls the sync needs, through the 3LO gateway
//! (`{api}/ex/jira/{cloudId}/…`, `{api}/ex/confluence/{cloudId}/…`; a 3LO token sent to `{site}.atlassian.net`
//! gets 401). Each call returns one page in Atlassian's own pagination style; walking the pages is the sync's job,
//! because it checkpoints between them.
//!
//! Every GET retries transient failures ([`ApiError::is_transient`]) with exponential backoff and full jitter
//! (`backon`), waiting at least the server's `Retry-After` (0 is clamped to 1 s). A quota-exhausted 429 or one
//! asking for a longer wait than [`RetryPolicy::max_delay`](crate::RetryPolicy::max_delay) is returned at once: a Lambda should checkpoint and
//! come back later, not sleep.

use crate::{AccessToken, ApiError};
use serde::Deserialize;

/// A Jira user (`users/search`, `group/member`, a project's `lead`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JiraUser {
    pub account_id: String,
    #[serde(default)]
    pub account_type: Option<String>,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Absent when the user's profile hides it.
    #[serde(default)]
    pub email_address: Option<String>,
}

fn yes() -> bool {
    true
}

/// Jira's `PageBean`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    #[serde(default)]
    pub start_at: usize,
    #[serde(default)]
    pub max_results: usize,
    #[serde(default)]
    pub total: Option<usize>,
    #[serde(default)]
    pub is_last: Option<bool>,
    #[serde(default = "Vec::new")]
    pub values: Vec<T>,
}

impl<T> Page<T> {
    /// Whether this page ends the list: `isLast` when given, else `total` when given; never a page shorter than
    /// asked alone (Atlassian serves fewer than `maxResults` mid-list). An empty page always ends it, so a list that
    /// says `isLast: false` forever cannot loop.
    pub fn is_last(&self) -> bool {
        self.values.is_empty()
            || match (self.is_last, self.total) {
                (Some(last), _) => last,
                (None, Some(total)) => self.start_at + self.values.len() >= total,
                (None, None) => false,
            }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JiraGroup {
    pub group_id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JiraProject {
    pub id: String,
    pub key: String,
    pub name: String,
    /// Present with `expand=lead`.
    #[serde(default)]
    pub lead: Option<JiraUser>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConfluenceSpace {
    pub id: String,
    pub key: String,
    pub name: String,
    #[serde(rename = "type")]
    pub space_type: String,
    pub status: String,
}

/// A page of Confluence v2 spaces, and the site-relative link to the next one.
#[derive(Debug, Clone)]
pub struct SpacesPage {
    pub results: Vec<ConfluenceSpace>,
    /// `_links.next`, e.g. `/wiki/api/v2/spaces?cursor=…&limit=250`; `None` on the last page.
    pub next: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct SpacesBody {
    results: Vec<ConfluenceSpace>,
    #[serde(rename = "_links", default)]
    links: Option<SpacesLinks>,
}

impl From<SpacesBody> for SpacesPage {
    fn from(body: SpacesBody) -> Self {
        Self { results: body.results, next: body.links.and_then(|l| l.next) }
    }
}

/// The path of a `project/search` page (the same behind the gateway and on a site).
pub(crate) fn projects_path(start_at: usize) -> String {
    format!("/rest/api/3/project/search?expand=lead&startAt={start_at}&maxResults={PROJECTS_PAGE}")
}

/// The path of the first v2 `spaces` page.
pub(crate) fn spaces_first_path() -> String {
    format!("/wiki/api/v2/spaces?limit={SPACES_PAGE}")
}

#[derive(Deserialize)]
struct SpacesLinks {
    next: Option<String>,
}

/// Page sizes: the largest each endpoint documents (what it actually serves may be less: see `users_page`).
pub const USERS_PAGE: usize = 1000;
pub const GROUPS_PAGE: usize = 50;
pub const MEMBERS_PAGE: usize = 50;
pub const PROJECTS_PAGE: usize = 100;
pub const SPACES_PAGE: usize = 250;

/// The REST reads of the sync, one page at a time.
pub trait DirectoryApi: Send + Sync {
    /// `GET /rest/api/3/users/search`: a bare array. Only an empty page ends it: Jira may serve fewer users than
    /// asked (100 a page whatever `maxResults` says) and the next page starts after what came back.
    fn users_page(
        &self,
        token: &AccessToken,
        cloud_id: &str,
        start_at: usize,
    ) -> impl Future<Output = Result<Vec<JiraUser>, ApiError>> + Send;

    /// `GET /rest/api/3/group/bulk`.
    fn groups_page(
        &self,
        token: &AccessToken,
        cloud_id: &str,
        start_at: usize,
    ) -> impl Future<Output = Result<Page<JiraGroup>, ApiError>> + Send;

    /// `GET /rest/api/3/group/member?groupId=…&includeInactiveUsers=true`.
    fn group_members_page(
        &self,
        token: &AccessToken,
        cloud_id: &str,
        group_id: &str,
        start_at: usize,
    ) -> impl Future<Output = Result<Page<JiraUser>, ApiError>> + Send;

    /// `GET /rest/api/3/project/search?expand=lead`.
    fn projects_page(
        &self,
        token: &AccessToken,
        cloud_id: &str,
        start_at: usize,
    ) -> impl Future<Output = Result<Page<JiraProject>, ApiError>> + Send;

    /// `GET /wiki/api/v2/spaces`, or the `next` link of the previous page.
    fn spaces_page(
        &self,
        token: &AccessToken,
        cloud_id: &str,
        next: Option<&str>,
    ) -> impl Future<Output = Result<SpacesPage, ApiError>> + Send;
}

use std::future::Future;

impl crate::AtlassianClient {
    fn gateway(&self, product: &str, cloud_id: &str, path_and_query: &str) -> Result<url::Url, ApiError> {
        let base = self.endpoints().api_base.as_str().trim_end_matches('/');
        let cloud_id: String = url::form_urlencoded::byte_serialize(cloud_id.as_bytes()).collect();
        let site = url::Url::parse(&format!("{base}/ex/{product}/{cloud_id}"))
            .map_err(|_| ApiError::Status { status: 400 })?;
        within(&site, path_and_query)
    }
}

/// `{base}{path_and_query}`, if it stays inside the API the path names under `base` (`/wiki/…`, `/rest/…`): only a
/// site-relative path is taken, and since parsing resolves `..` (and `%2e%2e`), one that climbs out is refused. A
/// `next` link then cannot send the credential off the site, nor elsewhere on it.
pub(crate) fn within(base: &url::Url, path_and_query: &str) -> Result<url::Url, ApiError> {
    let refused = ApiError::Status { status: 400 };
    if !path_and_query.starts_with('/') || path_and_query.starts_with("//") {
        return Err(refused);
    }
    let base_path = base.path().trim_end_matches('/');
    let url = url::Url::parse(&format!("{}{path_and_query}", base.as_str().trim_end_matches('/')))
        .map_err(|_| ApiError::Status { status: 400 })?;
    let root = path_and_query.trim_start_matches('/').split(['/', '?']).next().unwrap_or_default();
    let inside = format!("{base_path}/{root}/");
    match url.origin() == base.origin() && !root.is_empty() && url.path().starts_with(&inside) {
        true => Ok(url),
        false => Err(refused),
    }
}

impl DirectoryApi for crate::AtlassianClient {
    async fn users_page(
        &self,
        token: &AccessToken,
        cloud_id: &str,
        start_at: usize,
    ) -> Result<Vec<JiraUser>, ApiError> {
        let url = self.gateway(
            "jira",
            cloud_id,
            &format!("/rest/api/3/users/search?startAt={start_at}&maxResults={USERS_PAGE}"),
        )?;
        self.get_json(url, crate::client::Auth::Bearer(token.secret())).await
    }

    async fn groups_page(
        &self,
        token: &AccessToken,
        cloud_id: &str,
        start_at: usize,
    ) -> Result<Page<JiraGroup>, ApiError> {
        let url = self.gateway(
            "jira",
            cloud_id,
            &format!("/rest/api/3/group/bulk?startAt={start_at}&maxResults={GROUPS_PAGE}"),
        )?;
        self.get_json(url, crate::client::Auth::Bearer(token.secret())).await
    }

    async fn group_members_page(
        &self,
        token: &AccessToken,
        cloud_id: &str,
        group_id: &str,
        start_at: usize,
    ) -> Result<Page<JiraUser>, ApiError> {
        let group_id: String = url::form_urlencoded::byte_serialize(group_id.as_bytes()).collect();
        let path = format!(
            "/rest/api/3/group/member?groupId={group_id}&includeInactiveUsers=true&startAt={start_at}&maxResults={MEMBERS_PAGE}"
        );
        self.get_json(self.gateway("jira", cloud_id, &path)?, crate::client::Auth::Bearer(token.secret())).await
    }

    async fn projects_page(
        &self,
        token: &AccessToken,
        cloud_id: &str,
        start_at: usize,
    ) -> Result<Page<JiraProject>, ApiError> {
        let path = projects_path(start_at);
        self.get_json(self.gateway("jira", cloud_id, &path)?, crate::client::Auth::Bearer(token.secret())).await
    }

    async fn spaces_page(
        &self,
        token: &AccessToken,
        cloud_id: &str,
        next: Option<&str>,
    ) -> Result<SpacesPage, ApiError> {
        let first = spaces_first_path();
        let path = next.unwrap_or(&first);
        if !path.starts_with("/wiki/") {
            return Err(ApiError::Status { status: 400 });
        }
        let url = self.gateway("confluence", cloud_id, path)?;
        let body: SpacesBody = self.get_json(url, crate::client::Auth::Bearer(token.secret())).await?;
        Ok(body.into())
    }
}
