//! The quota as Atlassian grants it, as a deployment configures it: the app-wide pool or one per tenant, sized by
//! the tenant's edition and users or by the number Atlassian granted.

use runtime::config::{ConfigError, Env, Source};
use std::collections::HashMap;
use std::time::Duration;
use store::budget::BudgetLimits;

/// Which pools the app's quota has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaMode {
    /// One pool for the app across every tenant (Atlassian's default).
    Global,
    /// One pool per tenant (cloud id), for apps Atlassian moved to tenant quotas.
    Tenant,
}

/// A tenant pool's size as Atlassian sets it: by the site's edition and users (Free 65,000; Standard 100,000 + 10
/// a user; Premium 130,000 + 20 a user; Enterprise 150,000 + 30 a user; at most 500,000), or a number it granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantQuota {
    Points(u64),
    Edition(Edition, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edition {
    Free,
    Standard,
    Premium,
    Enterprise,
}

impl TenantQuota {
    /// Reads `150000`, `premium` or `premium:800` (the edition and the site's users; without them, the edition's
    /// base: a lower bound until Atlassian's `RateLimit-Policy` names the pool's size).
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(points) = text.parse() {
            return Some(Self::Points(points));
        }
        let (edition, users) = match text.split_once(':') {
            Some((edition, users)) => (edition, users.parse().ok()?),
            None => (text, 0),
        };
        let edition = match edition.to_ascii_lowercase().as_str() {
            "free" => Edition::Free,
            "standard" => Edition::Standard,
            "premium" => Edition::Premium,
            "enterprise" => Edition::Enterprise,
            _ => return None,
        };
        Some(Self::Edition(edition, users))
    }

    /// Points per window.
    pub fn points(self) -> u64 {
        let (base, per_user, users) = match self {
            Self::Points(points) => return points,
            Self::Edition(Edition::Free, _) => return 65_000,
            Self::Edition(Edition::Standard, users) => (100_000, 10, users),
            Self::Edition(Edition::Premium, users) => (130_000, 20, users),
            Self::Edition(Edition::Enterprise, users) => (150_000, 30, users),
        };
        (base + per_user * users).min(500_000)
    }
}

/// The app's quota as Atlassian grants it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaConfig {
    pub mode: QuotaMode,
    /// Points per window: the global pool's, or every tenant's unless `tenant_points` names it.
    pub points: u64,
    /// Tenant pools Atlassian sized differently (by edition and users), per cloud id; `*`: every other tenant's.
    /// Atlassian's `RateLimit-Policy` for a tenant pool, once an answer carries it, wins over these.
    pub tenant_points: HashMap<String, TenantQuota>,
    pub window: Duration,
    /// The share of each pool left unspent: for the proxy, other clients, and requests in flight as a window ends.
    pub reserve: f64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            mode: QuotaMode::Global,
            points: 65_000,
            tenant_points: HashMap::new(),
            window: Duration::from_secs(3600),
            reserve: 0.05,
        }
    }
}

impl QuotaConfig {
    /// The quota settings: `ATLASSIAN_QUOTA_MODE` (`global` or `tenant`), `ATLASSIAN_QUOTA_POINTS` (per window: the
    /// global pool, or each tenant's), `ATLASSIAN_TENANT_QUOTAS` (`cloudId=points|edition[:users],…` for tenants Atlassian sized
    /// otherwise), `ATLASSIAN_QUOTA_WINDOW_SECONDS` and `ATLASSIAN_QUOTA_RESERVE_PERCENT`.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let invalid = |name, reason: &str| ConfigError::Invalid { name, reason: reason.into() };
        let mode = match env.optional("ATLASSIAN_QUOTA_MODE").as_deref() {
            None | Some("global") => QuotaMode::Global,
            Some("tenant") => QuotaMode::Tenant,
            Some(_) => return Err(invalid("ATLASSIAN_QUOTA_MODE", "expected global or tenant")),
        };
        let mut tenant_points = std::collections::HashMap::new();
        let pairs = env.optional("ATLASSIAN_TENANT_QUOTAS").unwrap_or_default();
        for pair in pairs.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parsed =
                pair.split_once('=').and_then(|(site, quota)| Some((site.trim(), TenantQuota::parse(quota.trim())?)));
            let Some((site, quota)) = parsed else {
                return Err(invalid(
                    "ATLASSIAN_TENANT_QUOTAS",
                    "expected cloudId=quota pairs, comma-separated, each quota points or an edition (free, standard, \
                     premium, enterprise) with :users optionally; cloudId * for every other tenant",
                ));
            };
            tenant_points.insert(site.to_owned(), quota);
        }
        let reserve =
            match env.optional("ATLASSIAN_QUOTA_RESERVE_PERCENT") {
                None => 5,
                Some(value) => value.parse::<u64>().ok().filter(|p| *p < 100).ok_or_else(|| {
                    invalid("ATLASSIAN_QUOTA_RESERVE_PERCENT", "expected a whole number from 0 to 99")
                })?,
            };
        Ok(Self {
            mode,
            points: env.number_or("ATLASSIAN_QUOTA_POINTS", defaults.points)?,
            tenant_points,
            window: env.seconds_or("ATLASSIAN_QUOTA_WINDOW_SECONDS", defaults.window.as_secs())?,
            reserve: reserve as f64 / 100.0,
        })
    }

    /// The proxy's view of the same pools: it may also spend half of the reserve that syncs leave, so a product's
    /// own calls still go through while syncs have drawn all they may (the other half stays for other clients and
    /// requests in flight as a window ends).
    pub fn for_proxy(&self) -> Self {
        Self { reserve: self.reserve / 2.0, ..self.clone() }
    }

    /// The pool a request to `site` draws from in this deployment's mode, and Atlassian's size of it.
    pub(super) fn pool(&self, prefix: &str, site: &str) -> (String, u64) {
        self.pool_of(self.mode, prefix, site)
    }

    /// The app's pool (`Global`) or `site`'s own (`Tenant`), and Atlassian's size of it.
    pub(super) fn pool_of(&self, mode: QuotaMode, prefix: &str, site: &str) -> (String, u64) {
        match mode {
            QuotaMode::Global => (prefix.to_owned(), self.points),
            QuotaMode::Tenant => {
                let sized = self.tenant_points.get(site).or_else(|| self.tenant_points.get("*"));
                let quota = sized.map_or(self.points, |q| q.points());
                (format!("{prefix}:tenant:{site}"), quota)
            }
        }
    }

    pub(super) fn limits(&self, quota: u64) -> BudgetLimits {
        let points = (quota as f64 * (1.0 - self.reserve.clamp(0.0, 1.0))).floor() as u64;
        BudgetLimits { points, window: self.window }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_pools_follow_atlassians_formula() {
        let parse = |text| TenantQuota::parse(text).map(TenantQuota::points);
        assert_eq!(parse("150000"), Some(150_000));
        assert_eq!(parse("free"), Some(65_000));
        assert_eq!(parse("standard"), Some(100_000), "the base, until Atlassian says more");
        assert_eq!(parse("Standard:800"), Some(108_000));
        assert_eq!(parse("premium:1000"), Some(150_000));
        assert_eq!(parse("enterprise:20000"), Some(500_000), "capped");
        assert_eq!(parse("gold"), None);
        assert_eq!(parse("premium:many"), None);
    }
}
