//! `GET /oauth/callback`: where Atlassian sends the browser back. Completes the connect flow and answers with a
//! redirect to the app's return URL or, without one, a small page that says what happened.

use atlassian::AtlassianApi;
use lambda_http::{Body, Request, RequestExt, Response};
use runtime::answers;
use runtime::config::{ConfigError, Env, Source};
use runtime::http::{self, Link};
use secrecy::SecretString;
use store::{ConnectionStore, SessionStore, StateStore};
use time::OffsetDateTime;
use tokens::connect::{self, CallbackParams, CompleteSettings, Completed, Failure};
use tokens::{KeyRing, scopes};
use url::Url;

pub struct Config {
    pub table: String,
    pub oauth_client_secret_id: String,
    pub token_keys_secret_id: String,
    pub public_base_url: Url,
    pub endpoints: atlassian::Endpoints,
    pub required_scopes: Vec<String>,
}

impl Config {
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let requested = env.optional("OAUTH_SCOPES").map(|s| scopes::parse(&s)).unwrap_or_else(scopes::defaults);
        Ok(Self {
            table: env.required("STATE_TABLE")?,
            oauth_client_secret_id: env.required("OAUTH_CLIENT_SECRET_ID")?,
            token_keys_secret_id: env.required("TOKEN_KEYS_SECRET_ID")?,
            public_base_url: env.url("PUBLIC_BASE_URL")?,
            endpoints: atlassian::Endpoints {
                auth_base: env.url_or("ATLASSIAN_AUTH_BASE_URL", atlassian::Endpoints::DEFAULT_AUTH_BASE)?,
                api_base: env.url_or("ATLASSIAN_API_BASE_URL", atlassian::Endpoints::DEFAULT_API_BASE)?,
            },
            required_scopes: env.optional("REQUIRED_SCOPES").map(|s| scopes::parse(&s)).unwrap_or(requested),
        })
    }

    pub fn redirect_uri(&self) -> Url {
        connect::callback_url(&self.public_base_url)
    }
}

pub struct Deps<S, A> {
    pub store: S,
    pub atlassian: A,
    pub keys: KeyRing,
    pub settings: CompleteSettings,
}

pub async fn handle<S, A>(deps: &Deps<S, A>, request: Request) -> Result<Response<Body>, lambda_http::Error>
where
    S: SessionStore + StateStore + ConnectionStore,
    A: AtlassianApi,
{
    if request.method() != lambda_http::http::Method::GET {
        return Ok(answers::get_only_page());
    }
    let query = request.query_string_parameters();
    let params = CallbackParams {
        code: query.first("code").map(|c| atlassian::AuthorizationCode::new(c.to_owned())),
        state: query.first("state").map(|s| SecretString::from(s.to_owned())),
        error: query.first("error").map(str::to_owned),
        browser: http::cookie(&request, connect::BROWSER_COOKIE).map(|b| SecretString::from(b.to_owned())),
    };
    let outcome =
        connect::complete(&deps.store, &deps.atlassian, &deps.keys, &deps.settings, params, OffsetDateTime::now_utc())
            .await;
    let mut response = match outcome {
        Ok(completed) => success(completed),
        Err(failure) => {
            let (code, error) = (failure.error.code(), runtime::error_chain(&failure.error));
            tracing::warn!(code, error, "connect flow failed");
            failed(failure)
        }
    };
    // The binding has served (or failed): the browser forgets it.
    let host = request.uri().host().or_else(|| request.headers().get("host")?.to_str().ok());
    let secure = !host.is_some_and(http::is_loopback_host);
    http::set_cookie(&mut response, connect::BROWSER_COOKIE, "", request.uri().path(), secure, 0);
    Ok(response)
}

fn success(Completed { connection, return_url }: Completed) -> Response<Body> {
    let status = "active";
    if let Some(url) = return_url.as_deref().and_then(|url| {
        connect::return_redirect(url, &[("connection_id", &connection.connection_id), ("status", status)])
    }) {
        return http::redirect(url.as_str());
    }
    let sites: Vec<&str> = connection.sites.iter().map(|s| s.url.as_str()).collect();
    http::page(
        200,
        "Connected",
        &format!("Your Atlassian organization is connected ({}). You can close this window.", sites.join(", ")),
        Some(&format!("Connection id: {}", connection.connection_id)),
        None,
    )
}

fn failed(Failure { error, return_url }: Failure) -> Response<Body> {
    let back = return_url
        .as_deref()
        .and_then(|url| connect::return_redirect(url, &[("status", "error"), ("error", error.code())]));
    let link = back.as_ref().map(|url| Link { href: url.as_str(), text: "Back to the app" });
    answers::connect_page(&error, answers::Step::Callback, link)
}
