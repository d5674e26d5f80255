//! Reading environment variables into typed values. A function's `Config::from_env` calls these once at cold
//! start; the first missing or malformed variable fails the start with its name.

use std::time::Duration;
use thiserror::Error;
use url::Url;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// A value a parser of its own refused (an allow-list, the schedules), with the parser's error as the cause.
    #[error("environment variable {name} is invalid")]
    Unparsable { name: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
}

impl ConfigError {
    pub fn unparsable(name: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unparsable { name, source: Box::new(error) }
    }
}

/// Where variables come from: the process environment in functions, a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }
}

pub struct Env<S: Source>(pub S);

impl<S: Source> Env<S> {
    /// A set, non-blank variable.
    pub fn optional(&self, name: &'static str) -> Option<String> {
        self.0.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    pub fn url_or(&self, name: &'static str, default: &str) -> Result<Url, ConfigError> {
        let value = self.optional(name).unwrap_or_else(|| default.to_owned());
        parse_url(name, &value)
    }

    pub fn url(&self, name: &'static str) -> Result<Url, ConfigError> {
        parse_url(name, &self.required(name)?)
    }

    pub fn seconds_or(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.positive(name, default, "expected a positive number of seconds").map(Duration::from_secs)
    }

    pub fn number_or(&self, name: &'static str, default: u64) -> Result<u64, ConfigError> {
        self.positive(name, default, "expected a positive whole number")
    }

    fn positive(&self, name: &'static str, default: u64, reason: &str) -> Result<u64, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ConfigError::Invalid { name, reason: reason.into() }),
        }
    }
}

fn parse_url(name: &'static str, value: &str) -> Result<Url, ConfigError> {
    match Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        Ok(_) => Err(ConfigError::Invalid { name, reason: "expected an http(s) URL".into() }),
        Err(e) => Err(ConfigError::Invalid { name, reason: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_typed_values_and_names_what_is_wrong() {
        let env = Env([("A", "https://x.example/p"), ("BLANK", "  "), ("N", "90"), ("BAD", "ftp://x")]);
        assert_eq!(env.url("A").unwrap().as_str(), "https://x.example/p");
        assert!(matches!(env.required("BLANK"), Err(ConfigError::Missing("BLANK"))));
        assert_eq!(env.seconds_or("N", 1).unwrap(), Duration::from_secs(90));
        assert_eq!(env.seconds_or("UNSET", 7).unwrap(), Duration::from_secs(7));
        assert_eq!(env.number_or("N", 1).unwrap(), 90);
        assert!(env.number_or("BLANK", 3).is_ok_and(|n| n == 3));
        assert!(env.seconds_or("A", 7).unwrap_err().to_string().contains("environment variable A is invalid"));
        assert_eq!(env.url_or("UNSET", "https://d.example").unwrap().as_str(), "https://d.example/");
        assert!(env.url("BAD").unwrap_err().to_string().contains("BAD"));
        assert_eq!(env.required("MISSING").unwrap_err().to_string(), "environment variable MISSING is not set");
    }
}
