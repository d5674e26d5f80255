//! The Organization Admin API (org admin API keys, Bearer) and a site's own REST API with Basic `email:API token`:
//! the second way in, for customers who connect with keys instead of an OAuth consent.
//!
//! The Admin API has two generations (see the reference, §6): v1 lists managed accounts only, in snake_case, with
//! `links.next` a full URL; v2 lists every directory (`directories/-`), in camelCase, with `links.next` a cursor
//! token (and, given a cursor, ignores every other parameter). [`AdminUser`] reads both. Its 429s may carry
//! `X-RateLimit-Reset` rather than `Retry-After`; the client waits for whichever is given.

use crate::ApiError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::future::Future;
use url::Url;

/// An org admin API key (`Authorization: Bearer …`). Redacted in `Debug`.
#[derive(Clone)]
pub struct AdminKey(SecretString);

impl AdminKey {
    pub fn new(key: String) -> Self {
        Self(SecretString::from(key))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey([redacted])")
    }
}

/// A site reached with Basic auth: its URL and an account's email and API token. The token is redacted in `Debug`.
#[derive(Clone)]
pub struct SiteLogin {
    /// `https://acme.atlassian.net` (any path prefix is kept: the sandbox serves sites under `/site/{name}`).
    pub site_url: Url,
    pub email: String,
    pub api_token: SecretString,
}

impl std::fmt::Debug for SiteLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteLogin")
            .field("site_url", &self.site_url.as_str())
            .field("email", &self.email)
            .field("api_token", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AdminOrg {
    pub id: String,
    #[serde(default)]
    pub attributes: OrgAttributes,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OrgAttributes {
    #[serde(default)]
    pub name: String,
}

/// A user as either generation of the Admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AdminUser {
    #[serde(alias = "accountId")]
    pub account_id: String,
    #[serde(default, alias = "accountType")]
    pub account_type: Option<String>,
    /// v2's composite status: `active`, `suspended`, `not_invited`, `deactivated`.
    #[serde(default)]
    pub status: Option<String>,
    /// `active`, `inactive` or `closed` (v1 `account_status`, v2 `accountStatus`).
    #[serde(default, alias = "accountStatus")]
    pub account_status: Option<String>,
    /// v2: `active`, `suspended`, `no_membership`.
    #[serde(default, rename = "membershipStatus")]
    pub membership_status: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Absent when hidden (v1); the Admin API shows managed accounts' emails even when their profile hides them.
    #[serde(default)]
    pub email: Option<String>,
}

impl AdminUser {
    /// The status the mirror keeps: `closed`, `suspended`, `inactive` or `active`.
    pub fn mirror_status(&self) -> &'static str {
        let is = |field: &Option<String>, value: &str| field.as_deref() == Some(value);
        if is(&self.account_status, "closed") {
            "closed"
        } else if is(&self.membership_status, "suspended") || is(&self.status, "suspended") {
            "suspended"
        } else if is(&self.account_status, "inactive") || is(&self.status, "deactivated") {
            "inactive"
        } else {
            "active"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AdminGroup {
    pub id: String,
    pub name: String,
}

/// A product instance of the org (`POST /admin/v2/orgs/{orgId}/workspaces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// The site's cloud id (the end of the workspace's ARI).
    pub cloud_id: String,
    /// `jira-software`, `jira-servicedesk`, `confluence`, …
    pub type_key: String,
    pub host_url: String,
    /// The site's name (`acme` for `acme.atlassian.net`).
    pub name: String,
}

impl Workspace {
    pub fn is_confluence(&self) -> bool {
        self.type_key == "confluence"
    }
    pub fn is_jira(&self) -> bool {
        self.type_key.starts_with("jira")
    }
}

/// A page of an Admin API listing and where the next one is (a v1 URL or a v2 cursor token).
#[derive(Debug, Clone)]
pub struct AdminPage<T> {
    pub data: Vec<T>,
    pub next: Option<String>,
}

/// How many users and groups a v2 page asks for (its maximum).
pub const ADMIN_PAGE: usize = 100;

pub trait AdminApi: Send + Sync {
    /// `GET /admin/v1/orgs`: the orgs the key administers.
    fn orgs(&self, key: &AdminKey) -> impl Future<Output = Result<Vec<AdminOrg>, ApiError>> + Send;

    /// `GET /admin/v2/orgs/{orgId}/directories/-/users`, optionally only a group's members; `cursor` continues.
    fn users_v2(
        &self,
        key: &AdminKey,
        org_id: &str,
        group_id: Option<&str>,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<AdminPage<AdminUser>, ApiError>> + Send;

    /// `GET /admin/v1/orgs/{orgId}/users` (managed accounts); `next` is the previous page's `links.next` URL.
    fn users_v1(
        &self,
        key: &AdminKey,
        org_id: &str,
        next: Option<&str>,
    ) -> impl Future<Output = Result<AdminPage<AdminUser>, ApiError>> + Send;

    /// `GET /admin/v2/orgs/{orgId}/directories/-/groups`; `cursor` continues.
    fn groups_v2(
        &self,
        key: &AdminKey,
        org_id: &str,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<AdminPage<AdminGroup>, ApiError>> + Send;

    /// `POST /admin/v2/orgs/{orgId}/workspaces`, every page.
    fn workspaces(&self, key: &AdminKey, org_id: &str)
    -> impl Future<Output = Result<Vec<Workspace>, ApiError>> + Send;

    /// Who the site token signs in as, with Basic auth: `GET {site}/rest/api/3/myself`, or on a site without Jira
    /// Confluence's `GET {site}/wiki/rest/api/user/current`.
    fn site_myself(
        &self,
        login: &SiteLogin,
        jira: bool,
    ) -> impl Future<Output = Result<crate::rest::JiraUser, ApiError>> + Send;

    /// `GET {site}/rest/api/3/project/search?expand=lead` with Basic auth.
    fn site_projects_page(
        &self,
        login: &SiteLogin,
        start_at: usize,
    ) -> impl Future<Output = Result<crate::rest::Page<crate::rest::JiraProject>, ApiError>> + Send;

    /// `GET {site}/wiki/api/v2/spaces` with Basic auth, or the previous page's site-relative `next` link.
    fn site_spaces_page(
        &self,
        login: &SiteLogin,
        next: Option<&str>,
    ) -> impl Future<Output = Result<crate::rest::SpacesPage, ApiError>> + Send;
}

#[derive(Deserialize)]
struct Listing<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
    #[serde(default)]
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default)]
    next: Option<String>,
}

impl<T> From<Listing<T>> for AdminPage<T> {
    fn from(listing: Listing<T>) -> Self {
        Self { data: listing.data, next: listing.links.and_then(|l| l.next).filter(|n| !n.is_empty()) }
    }
}

#[derive(Deserialize)]
struct RawWorkspace {
    id: String,
    #[serde(default)]
    attributes: WorkspaceAttributes,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkspaceAttributes {
    #[serde(default)]
    name: String,
    #[serde(default)]
    type_key: String,
    #[serde(default)]
    host_url: String,
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl crate::AtlassianClient {
    fn admin_url(&self, path_and_query: &str) -> Result<Url, ApiError> {
        let base = self.endpoints().api_base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/admin{path_and_query}")).map_err(|_| ApiError::Status { status: 400 })
    }
}

impl AdminApi for crate::AtlassianClient {
    async fn orgs(&self, key: &AdminKey) -> Result<Vec<AdminOrg>, ApiError> {
        let mut orgs = Vec::new();
        let mut url = self.admin_url("/v1/orgs")?;
        loop {
            let page: Listing<AdminOrg> = self.get_json(url, crate::client::Auth::Bearer(key.expose())).await?;
            orgs.extend(page.data);
            match page.links.and_then(|l| l.next).filter(|n| !n.is_empty()) {
                Some(next) => url = self.admin_follow(&next, "/v1/orgs")?,
                None => return Ok(orgs),
            }
        }
    }

    async fn users_v2(
        &self,
        key: &AdminKey,
        org_id: &str,
        group_id: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<AdminPage<AdminUser>, ApiError> {
        let base = format!("/v2/orgs/{}/directories/-/users", encode(org_id));
        // With a cursor, Atlassian ignores every other parameter: the cursor carries the filter.
        let query = match (cursor, group_id) {
            (Some(cursor), _) => format!("?cursor={}", encode(cursor)),
            (None, Some(group)) => format!("?limit={ADMIN_PAGE}&groupIds={}", encode(group)),
            (None, None) => format!("?limit={ADMIN_PAGE}"),
        };
        let url = self.admin_url(&format!("{base}{query}"))?;
        let page: Listing<AdminUser> = self.get_json(url, crate::client::Auth::Bearer(key.expose())).await?;
        Ok(page.into())
    }

    async fn users_v1(
        &self,
        key: &AdminKey,
        org_id: &str,
        next: Option<&str>,
    ) -> Result<AdminPage<AdminUser>, ApiError> {
        let path = format!("/v1/orgs/{}/users", encode(org_id));
        let url = match next {
            Some(next) => self.admin_follow(next, &path)?,
            None => self.admin_url(&path)?,
        };
        let page: Listing<AdminUser> = self.get_json(url, crate::client::Auth::Bearer(key.expose())).await?;
        Ok(page.into())
    }

    async fn groups_v2(
        &self,
        key: &AdminKey,
        org_id: &str,
        cursor: Option<&str>,
    ) -> Result<AdminPage<AdminGroup>, ApiError> {
        let base = format!("/v2/orgs/{}/directories/-/groups", encode(org_id));
        let query = match cursor {
            Some(cursor) => format!("?cursor={}", encode(cursor)),
            None => format!("?limit={ADMIN_PAGE}"),
        };
        let url = self.admin_url(&format!("{base}{query}"))?;
        let page: Listing<AdminGroup> = self.get_json(url, crate::client::Auth::Bearer(key.expose())).await?;
        Ok(page.into())
    }

    async fn workspaces(&self, key: &AdminKey, org_id: &str) -> Result<Vec<Workspace>, ApiError> {
        let url = self.admin_url(&format!("/v2/orgs/{}/workspaces", encode(org_id)))?;
        let mut workspaces = Vec::new();
        let mut body = serde_json::json!({"limit": 100});
        loop {
            let page: Listing<RawWorkspace> =
                self.post_json(url.clone(), crate::client::Auth::Bearer(key.expose()), &body).await?;
            workspaces.extend(page.data.into_iter().map(|w| Workspace {
                cloud_id: w.id.rsplit('/').next().unwrap_or_default().to_owned(),
                type_key: w.attributes.type_key,
                host_url: w.attributes.host_url,
                name: w.attributes.name,
            }));
            match page.links.and_then(|l| l.next).filter(|n| !n.is_empty()) {
                // A cursor goes alone in the body.
                Some(cursor) => body = serde_json::json!({"cursor": cursor}),
                None => return Ok(workspaces),
            }
        }
    }

    async fn site_myself(&self, login: &SiteLogin, jira: bool) -> Result<crate::rest::JiraUser, ApiError> {
        let path = if jira { "/rest/api/3/myself" } else { "/wiki/rest/api/user/current" };
        self.get_json(site_url(login, path)?, basic(login)).await
    }

    async fn site_projects_page(
        &self,
        login: &SiteLogin,
        start_at: usize,
    ) -> Result<crate::rest::Page<crate::rest::JiraProject>, ApiError> {
        let path = crate::rest::projects_path(start_at);
        self.get_json(site_url(login, &path)?, basic(login)).await
    }

    async fn site_spaces_page(
        &self,
        login: &SiteLogin,
        next: Option<&str>,
    ) -> Result<crate::rest::SpacesPage, ApiError> {
        let first = crate::rest::spaces_first_path();
        let path = next.unwrap_or(&first);
        if !path.starts_with("/wiki/") {
            return Err(ApiError::Status { status: 400 });
        }
        let body: crate::rest::SpacesBody = self.get_json(site_url(login, path)?, basic(login)).await?;
        Ok(body.into())
    }
}

fn basic(login: &SiteLogin) -> crate::client::Auth<'_> {
    crate::client::Auth::Basic { user: &login.email, password: login.api_token.expose_secret() }
}

impl crate::AtlassianClient {
    /// A v1 `links.next` URL, followed only if it stays on the Admin API's own path (the key must not leave).
    fn admin_follow(&self, next: &str, path: &str) -> Result<Url, ApiError> {
        let expected = self.admin_url(path)?;
        let url = Url::parse(next).map_err(|_| ApiError::Status { status: 400 })?;
        if url.origin() != expected.origin() || url.path() != expected.path() {
            return Err(ApiError::Status { status: 400 });
        }
        Ok(url)
    }
}

/// `{site_url}{path}`, keeping any path prefix of the site URL.
pub fn site_url(login: &SiteLogin, path_and_query: &str) -> Result<Url, ApiError> {
    crate::rest::within(&login.site_url, path_and_query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_path_never_climbs_above_the_site_url() {
        let login = SiteLogin {
            site_url: Url::parse("https://sandbox.example/site/acme").unwrap(),
            email: "a@b.c".into(),
            api_token: SecretString::from("t"),
        };
        let ok = site_url(&login, "/wiki/api/v2/spaces?cursor=a").unwrap();
        assert_eq!(ok.as_str(), "https://sandbox.example/site/acme/wiki/api/v2/spaces?cursor=a");
        for climbing in ["/wiki/../../other/wiki", "/%2e%2e/other", "//evil.example/wiki", "wiki", "/../acme-evil/x"] {
            assert!(site_url(&login, climbing).is_err(), "{climbing}");
        }
    }

    #[test]
    fn users_of_both_generations_read_alike() {
        let v1: AdminUser = serde_json::from_value(serde_json::json!({
            "account_id": "a1", "account_type": "atlassian", "account_status": "closed", "name": "Ada",
        }))
        .unwrap();
        let v2: AdminUser = serde_json::from_value(serde_json::json!({
            "accountId": "a2", "accountType": "atlassian", "status": "suspended", "accountStatus": "active",
            "membershipStatus": "suspended", "name": "Bo", "email": "bo@acme.example",
        }))
        .unwrap();
        assert_eq!((v1.account_id.as_str(), v1.mirror_status(), v1.email), ("a1", "closed", None));
        assert_eq!((v2.account_id.as_str(), v2.mirror_status()), ("a2", "suspended"));
        assert_eq!(v2.email.as_deref(), Some("bo@acme.example"));
    }

    #[test]
    fn keys_and_tokens_are_redacted() {
        let key = AdminKey::new("ATCTT3xFfGN0-secret".into());
        let login = SiteLogin {
            site_url: Url::parse("https://acme.atlassian.net").unwrap(),
            email: "ada@acme.example".into(),
            api_token: SecretString::from("ATATT-secret".to_string()),
        };
        let shown = format!("{key:?} {login:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("acme.atlassian.net"));
    }
}
