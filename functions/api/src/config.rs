//! The api's settings, read once at cold start.

use management::Cadences;
use runtime::config::{ConfigError, Env, Source};
use tokens::connect::{ReturnUrlAllowList, SessionSettings};
use url::Url;

pub struct Config {
    pub table: String,
    pub token_keys_secret_id: String,
    pub endpoints: atlassian::Endpoints,
    pub mirror_table: String,
    pub sync_queue_url: String,
    pub management_key_secret_id: String,
    pub public_base_url: Url,
    pub return_urls: ReturnUrlAllowList,
    pub session_ttl: time::Duration,
    /// How often each type is scheduled (`SYNC_SCHEDULES`), for each run's `next_due_at`.
    pub cadences: Cadences,
    /// The OAuth app's secret: the proxy refreshes OAuth connections' tokens.
    pub oauth_client_secret_id: String,
    /// The proxy: writes allowed (`PROXY_ALLOW_WRITES`), and the app's quota (`ATLASSIAN_QUOTA_*`, as the syncs').
    pub proxy: proxy::Settings,
}

impl Config {
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let allow_list = env.optional("RETURN_URL_ALLOWLIST").unwrap_or_default();
        Ok(Self {
            table: env.required("STATE_TABLE")?,
            token_keys_secret_id: env.required("TOKEN_KEYS_SECRET_ID")?,
            endpoints: atlassian::Endpoints {
                auth_base: env.url_or("ATLASSIAN_AUTH_BASE_URL", atlassian::Endpoints::DEFAULT_AUTH_BASE)?,
                api_base: env.url_or("ATLASSIAN_API_BASE_URL", atlassian::Endpoints::DEFAULT_API_BASE)?,
            },
            mirror_table: env.required("MIRROR_TABLE")?,
            sync_queue_url: env.required("SYNC_QUEUE_URL")?,
            management_key_secret_id: env.required("MANAGEMENT_API_KEY_SECRET_ID")?,
            public_base_url: env.url("PUBLIC_BASE_URL")?,
            return_urls: ReturnUrlAllowList::parse(&allow_list)
                .map_err(|e| ConfigError::unparsable("RETURN_URL_ALLOWLIST", e))?,
            session_ttl: env.seconds_or("SESSION_TTL_SECONDS", 900)?.try_into().unwrap_or(time::Duration::MINUTE * 15),
            cadences: Cadences::parse(&env.optional("SYNC_SCHEDULES").unwrap_or_else(|| Cadences::DEFAULT.into()))
                .map_err(|e| ConfigError::unparsable("SYNC_SCHEDULES", e))?,
            oauth_client_secret_id: env.required("OAUTH_CLIENT_SECRET_ID")?,
            proxy: proxy::Settings::new(allow_writes(env)?, budget::QuotaConfig::from_env(env)?),
        })
    }

    pub fn session_settings(&self) -> SessionSettings {
        SessionSettings {
            public_base_url: self.public_base_url.clone(),
            ttl: self.session_ttl,
            return_urls: self.return_urls.clone(),
        }
    }
}

/// `PROXY_ALLOW_WRITES`: `true` lets `POST`, `PUT` and `DELETE` through the proxy; `false` (the default) refuses them.
fn allow_writes<S: Source>(env: &Env<S>) -> Result<bool, ConfigError> {
    match env.optional("PROXY_ALLOW_WRITES").as_deref().map(str::trim) {
        None | Some("" | "false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ConfigError::Invalid { name: "PROXY_ALLOW_WRITES", reason: "expected true or false".into() }),
    }
}
