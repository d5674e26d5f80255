//! The quota as Atlassian grants it, as a deployment configures it: the app-wide pool or one per tenant, sized by
//! the tenant's edition and users or by the number Atlassian granted.

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
