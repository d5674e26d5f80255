//! `GET /connect?session=…`: checks the connect session, stores a single-use OAuth state bound to it and sends the
//! browser to Atlassian's consent screen. Failures are small HTML pages: a person is looking at them.

use lambda_http::{Body, Request, RequestExt, Response};
use runtime::config::{ConfigError, Env, Source};
use runtime::{answers, http};
use store::{SessionStore, StateStore};
use time::OffsetDateTime;
use tokens::connect::{self, AuthorizeSettings};
use tokens::scopes;
use url::Url;

pub struct Config {
    pub table: String,
    pub oauth_client_secret_id: String,
    pub public_base_url: Url,
    pub auth_base_url: Url,
    pub audience: String,
    pub scopes: Vec<String>,
    pub state_ttl: time::Duration,
}

impl Config {
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        Ok(Self {
            table: env.required("STATE_TABLE")?,
            oauth_client_secret_id: env.required("OAUTH_CLIENT_SECRET_ID")?,
            public_base_url: env.url("PUBLIC_BASE_URL")?,
            auth_base_url: env.url_or("ATLASSIAN_AUTH_BASE_URL", atlassian::Endpoints::DEFAULT_AUTH_BASE)?,
            audience: env.optional("ATLASSIAN_AUDIENCE").unwrap_or_else(|| "api.atlassian.com".into()),
            scopes: env.optional("OAUTH_SCOPES").map(|s| scopes::parse(&s)).unwrap_or_else(scopes::defaults),
            state_ttl: env.seconds_or("STATE_TTL_SECONDS", 600)?.try_into().unwrap_or(time::Duration::MINUTE * 10),
        })
    }

    pub fn authorize_settings(&self, client_id: String) -> AuthorizeSettings {
        let endpoints =
            atlassian::Endpoints { auth_base: self.auth_base_url.clone(), api_base: self.auth_base_url.clone() };
        AuthorizeSettings {
            authorize_url: endpoints.authorize_url(),
            audience: self.audience.clone(),
            client_id,
            redirect_uri: connect::callback_url(&self.public_base_url),
            scopes: self.scopes.clone(),
            state_ttl: self.state_ttl,
        }
    }
}

pub struct Deps<S> {
    pub store: S,
    pub authorize: AuthorizeSettings,
}

pub async fn handle<S: SessionStore + StateStore>(
    deps: &Deps<S>,
    request: Request,
) -> Result<Response<Body>, lambda_http::Error> {
    if request.method() != lambda_http::http::Method::GET {
        return Ok(answers::get_only_page());
    }
    let query = request.query_string_parameters();
    let session = query.first("session");
    Ok(match connect::begin(&deps.store, &deps.authorize, session, OffsetDateTime::now_utc()).await {
        Ok(begun) => {
            // The flow is bound to this browser: the callback must bring the cookie back.
            let mut response = http::redirect(begun.authorize_url.as_str());
            let callback = &deps.authorize.redirect_uri;
            let max_age = deps.authorize.state_ttl.whole_seconds();
            let binding = secrecy::ExposeSecret::expose_secret(&begun.browser);
            let secure = !http::is_loopback(callback);
            http::set_cookie(&mut response, connect::BROWSER_COOKIE, binding, callback.path(), secure, max_age);
            response
        }
        Err(error) => {
            tracing::warn!(code = error.code(), "connect link refused");
            answers::connect_page(&error, answers::Step::Start, None)
        }
    })
}
