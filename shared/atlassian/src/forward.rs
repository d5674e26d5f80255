//! A request passed through to Atlassian as its caller wrote it (the management API's proxy): the caller names the
//! API (the gateway of one site's Jira or Confluence, the Admin API, or a site reached with its API token) and a
//! path under it; this client adds the credential, keeps the path inside that API, and hands back the answer as it
//! came (status, headers, body), read up to a size limit. No retries: the caller sees Atlassian's answer and decides.

use crate::client::Auth;
use crate::{AccessToken, AdminKey, ApiError, SiteLogin};
use secrecy::ExposeSecret;
use std::future::Future;
use url::Url;

/// The API a request goes to, with the credential that API takes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// `{api}/ex/{product}/{cloud_id}{path}` (`product`: `jira` or `confluence`) with a 3LO access token.
    Gateway { product: &'a str, cloud_id: &'a str, token: &'a AccessToken },
    /// `{api}/admin{path}` with an org admin API key.
    Admin { key: &'a AdminKey },
    /// `{site_url}{path}` with a site's email and API token (Basic).
    Site { login: &'a SiteLogin },
}

/// One request to pass through.
#[derive(Debug)]
pub struct Forward<'a> {
    pub method: reqwest::Method,
    pub target: Target<'a>,
    /// Starts with `/`; stays under the target's base (a path that climbs out is refused, never sent).
    pub path_and_query: &'a str,
    /// Sent as given: the caller chooses which of its client's headers pass.
    pub headers: &'a [(String, String)],
    pub body: Vec<u8>,
    /// The largest answer body read; a longer one is [`ApiError::TooLarge`].
    pub max_answer: usize,
}

/// Atlassian's answer, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub status: u16,
    /// Every header of the answer, names in lower case; the caller chooses which go back.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Forwarded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the proxy needs from Atlassian.
pub trait ForwardApi: Send + Sync {
    fn forward(&self, request: Forward<'_>) -> impl Future<Output = Result<Forwarded, ApiError>> + Send;
}

impl ForwardApi for crate::AtlassianClient {
    async fn forward(&self, request: Forward<'_>) -> Result<Forwarded, ApiError> {
        let (url, auth) = self.resolve(request.target, request.path_and_query)?;
        let cloud_id = match request.target {
            Target::Gateway { cloud_id, .. } => Some(cloud_id.to_owned()),
            _ => None,
        };
        let mut builder = self.http()?.request(request.method, url);
        for (name, value) in request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder = match auth {
            Auth::Bearer(secret) => builder.bearer_auth(secret),
            Auth::Basic { user, password } => builder.basic_auth(user, Some(password)),
        };
        if !request.body.is_empty() {
            builder = builder.body(request.body);
        }
        let mut response = builder.send().await.map_err(|e| match e.is_builder() {
            true => ApiError::Unsendable(e),
            false => ApiError::Transport(e),
        })?;
        if cloud_id.is_some() {
            self.report_quota(response.headers(), cloud_id);
        }
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
            .collect();
        if response.content_length().is_some_and(|length| length > request.max_answer as u64) {
            return Err(ApiError::TooLarge { limit: request.max_answer });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(ApiError::Decode)? {
            if body.len() + chunk.len() > request.max_answer {
                return Err(ApiError::TooLarge { limit: request.max_answer });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Forwarded { status, headers, body })
    }
}

impl crate::AtlassianClient {
    /// The URL a target's path goes to, inside the target's API, and how it authenticates.
    fn resolve<'a>(&self, target: Target<'a>, path_and_query: &str) -> Result<(Url, Auth<'a>), ApiError> {
        let refused = || ApiError::Status { status: 400 };
        let api = self.endpoints().api_base.as_str().trim_end_matches('/');
        let (base, auth) = match target {
            Target::Gateway { product, cloud_id, token } => {
                if !matches!(product, "jira" | "confluence") {
                    return Err(refused());
                }
                let cloud_id: String = url::form_urlencoded::byte_serialize(cloud_id.as_bytes()).collect();
                (format!("{api}/ex/{product}/{cloud_id}"), Auth::Bearer(token.secret()))
            }
            Target::Admin { key } => (format!("{api}/admin"), Auth::Bearer(key.expose())),
            Target::Site { login } => (
                login.site_url.as_str().trim_end_matches('/').to_owned(),
                Auth::Basic { user: &login.email, password: login.api_token.expose_secret() },
            ),
        };
        let base = Url::parse(&base).map_err(|_| refused())?;
        Ok((crate::rest::within(&base, path_and_query)?, auth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AtlassianClient, Endpoints, Http};

    fn client() -> AtlassianClient {
        let endpoints = Endpoints {
            auth_base: Url::parse("https://auth.example").unwrap(),
            api_base: Url::parse("https://api.example/prefix").unwrap(),
        };
        AtlassianClient::without_oauth(Http::on_first_use(), endpoints)
    }

    #[test]
    fn every_target_keeps_its_path_inside_its_api() {
        let client = client();
        let token = AccessToken::new("t".into());
        let key = AdminKey::new("k".into());
        let login = SiteLogin {
            site_url: Url::parse("https://acme.example/site/acme").unwrap(),
            email: "a@b.c".into(),
            api_token: secrecy::SecretString::from("s"),
        };
        let jira = Target::Gateway { product: "jira", cloud_id: "c-1", token: &token };
        let cases = [
            (
                jira,
                "/rest/api/3/search/jql?jql=a",
                Some("https://api.example/prefix/ex/jira/c-1/rest/api/3/search/jql?jql=a"),
            ),
            (Target::Admin { key: &key }, "/v1/orgs", Some("https://api.example/prefix/admin/v1/orgs")),
            (
                Target::Site { login: &login },
                "/wiki/api/v2/pages",
                Some("https://acme.example/site/acme/wiki/api/v2/pages"),
            ),
            (jira, "/rest/../../c-2/rest/api/3/myself", None),
            (jira, "/%2e%2e/c-2/rest", None),
            (jira, "//evil.example/x", None),
            (jira, "rest/api/3/myself", None),
            (Target::Admin { key: &key }, "/../ex/jira/c-1/rest", None),
            (Target::Gateway { product: "bitbucket", cloud_id: "c-1", token: &token }, "/rest/x", None),
        ];
        for (target, path, expected) in cases {
            let resolved = client.resolve(target, path).ok().map(|(url, _)| url.to_string());
            assert_eq!(resolved.as_deref(), expected, "{path}");
        }
    }
}
