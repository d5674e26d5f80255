//! The api's settings, read once at cold start.

use runtime::config::{ConfigError, Env, Source};
use std::collections::BTreeMap;
use store::mirror::ObjectType;
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
}

/// How often each object type is synced, from the schedules' `rate(…)` expressions (a `cron(…)` has no fixed
/// interval: its type shows no `next_due_at`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cadences(pub BTreeMap<ObjectType, time::Duration>);

impl Cadences {
    /// `users=rate(6 hours),groups=rate(6 hours),projects=rate(1 day),spaces=rate(1 day)`: the template's defaults.
    pub const DEFAULT: &str = "users=rate(6 hours),groups=rate(6 hours),projects=rate(1 day),spaces=rate(1 day)";

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut cadences = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, expression) = pair.split_once('=').ok_or_else(|| format!("`{pair}` is not type=expression"))?;
            let object_type = ObjectType::parse(name.trim()).ok_or_else(|| format!("no object type `{name}`"))?;
            let expression = expression.trim();
            if expression.starts_with("cron(") {
                continue;
            }
            let inner = expression
                .strip_prefix("rate(")
                .and_then(|e| e.strip_suffix(')'))
                .ok_or_else(|| format!("`{expression}` is neither rate(…) nor cron(…)"))?;
            let (count, unit) = inner.trim().split_once(' ').ok_or_else(|| format!("`{expression}` has no unit"))?;
            let count: i64 = count.parse().map_err(|_| format!("`{expression}` has no number"))?;
            let unit = match unit.trim().trim_end_matches('s') {
                "minute" => time::Duration::MINUTE,
                "hour" => time::Duration::HOUR,
                "day" => time::Duration::DAY,
                _ => return Err(format!("`{expression}`: the unit is minutes, hours or days")),
            };
            cadences.insert(object_type, unit * count as i32);
        }
        Ok(Self(cadences))
    }
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
                .map_err(|reason| ConfigError::Invalid { name: "RETURN_URL_ALLOWLIST", reason })?,
            session_ttl: env.seconds_or("SESSION_TTL_SECONDS", 900)?.try_into().unwrap_or(time::Duration::MINUTE * 15),
            cadences: Cadences::parse(&env.optional("SYNC_SCHEDULES").unwrap_or_else(|| Cadences::DEFAULT.into()))
                .map_err(|reason| ConfigError::Invalid { name: "SYNC_SCHEDULES", reason })?,
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
