//! What Atlassian says about the app's points quota on each answer, so the local budget can agree with it.
//!
//! At enforcement the headers are `RateLimit-Policy: "global-app-quota";q=65000;w=3600` and
//! `RateLimit: "global-app-quota";r=1200;t=37` (`r=`, the points left, only once about 80 % is used; `t=`, seconds
//! to the reset); before it they carry a `Beta-` prefix. A tenant pool is named too (`"tenant-app-quota"`), several
//! pools come as a comma-separated list, and `X-RateLimit-NearLimit: true` says less than 20 % is left. Both
//! families are read; whatever is missing stays `None`.

use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// One pool as an answer described it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolReport {
    /// The policy's name, e.g. `global-app-quota` or `tenant-app-quota`.
    pub name: String,
    /// `q=`: points per window.
    pub quota: Option<u64>,
    /// `w=`: the window, seconds.
    pub window: Option<u64>,
    /// `r=`: points left in this window.
    pub remaining: Option<u64>,
    /// `t=`: seconds until the window resets.
    pub reset: Option<u64>,
}

impl PoolReport {
    /// Whether this is a tenant pool (rather than the app-wide one).
    pub fn is_tenant(&self) -> bool {
        self.name.contains("tenant")
    }
}

/// The quota headers of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaReport {
    pub at: OffsetDateTime,
    /// The site the request went to (`/ex/{product}/{cloudId}/…`), when it names one.
    pub cloud_id: Option<String>,
    pub pools: Vec<PoolReport>,
    /// `X-RateLimit-NearLimit: true`: less than 20 % left.
    pub near_limit: bool,
}

impl QuotaReport {
    /// Reads the headers of an answer; `None` when it says nothing about the quota.
    pub fn from_headers(headers: &reqwest::header::HeaderMap, cloud_id: Option<String>) -> Option<Self> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let mut pools: Vec<PoolReport> = Vec::new();
        for header in ["ratelimit-policy", "beta-ratelimit-policy", "ratelimit", "beta-ratelimit"] {
            for (name, params) in text(header).map(parse_list).unwrap_or_default() {
                let index = match pools.iter().position(|p| p.name == name) {
                    Some(index) => index,
                    None => {
                        pools.push(PoolReport { name, ..PoolReport::default() });
                        pools.len() - 1
                    }
                };
                let pool = &mut pools[index];
                for (key, value) in params {
                    let slot = match key.as_str() {
                        "q" => &mut pool.quota,
                        "w" => &mut pool.window,
                        "r" => &mut pool.remaining,
                        "t" => &mut pool.reset,
                        _ => continue,
                    };
                    slot.get_or_insert(value);
                }
            }
        }
        let near_limit = text("x-ratelimit-nearlimit").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        (!pools.is_empty() || near_limit).then(|| Self { at: OffsetDateTime::now_utc(), cloud_id, pools, near_limit })
    }

    /// The app-wide pool's report, if the answer had one.
    pub fn global(&self) -> Option<&PoolReport> {
        self.pools.iter().find(|p| !p.is_tenant())
    }

    /// The tenant pool's report, if the answer had one.
    pub fn tenant(&self) -> Option<&PoolReport> {
        self.pools.iter().find(|p| p.is_tenant())
    }
}

/// `"name";k=v;k=v, "other";k=v` (RFC 8941 lists of strings or tokens with integer parameters).
fn parse_list(value: &str) -> Vec<(String, Vec<(String, u64)>)> {
    value
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';').map(str::trim);
            let name = parts.next()?.trim_matches('"').to_owned();
            if name.is_empty() {
                return None;
            }
            let params = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').parse().ok()?))
                })
                .collect();
            Some((name, params))
        })
        .collect()
}

/// The latest quota report the client saw, shared with whoever budgets the quota (the worker's budget).
#[derive(Debug, Clone, Default)]
pub struct QuotaWatch(Arc<Mutex<Vec<QuotaReport>>>);

impl QuotaWatch {
    /// How many sites' latest reports are kept (tenant pools differ per site).
    const KEEP: usize = 64;

    pub fn record(&self, report: QuotaReport) {
        let mut reports = self.0.lock().unwrap_or_else(|p| p.into_inner());
        reports.retain(|r| r.cloud_id != report.cloud_id);
        reports.push(report);
        if reports.len() > Self::KEEP {
            reports.remove(0);
        }
    }

    /// The latest report of any site.
    pub fn latest(&self) -> Option<QuotaReport> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().max_by_key(|r| r.at).cloned()
    }

    /// The latest report of one site.
    pub fn latest_for(&self, cloud_id: &str) -> Option<QuotaReport> {
        let reports = self.0.lock().unwrap_or_else(|p| p.into_inner());
        reports.iter().rev().find(|r| r.cloud_id.as_deref() == Some(cloud_id)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn enforced_and_beta_headers_are_read_alike() {
        for (policy, limit) in [("ratelimit-policy", "ratelimit"), ("beta-ratelimit-policy", "beta-ratelimit")] {
            let h = headers(&[
                (policy, "\"global-app-quota\";q=65000;w=3600"),
                (limit, "\"global-app-quota\";r=1200;t=37"),
                ("x-ratelimit-nearlimit", "true"),
            ]);
            let report = QuotaReport::from_headers(&h, Some("cloud-1".into())).expect("a report");
            let global = report.global().expect("the global pool");
            assert_eq!(
                (global.quota, global.window, global.remaining, global.reset),
                (Some(65000), Some(3600), Some(1200), Some(37))
            );
            assert!(report.near_limit && report.tenant().is_none());
        }
    }

    #[test]
    fn several_pools_and_missing_values() {
        let h = headers(&[
            ("ratelimit-policy", "\"global-app-quota\";q=65000;w=3600, \"tenant-app-quota\";q=100000;w=3600"),
            ("ratelimit", "\"global-app-quota\";t=12, \"tenant-app-quota\";r=5;t=12"),
        ]);
        let report = QuotaReport::from_headers(&h, None).expect("a report");
        assert_eq!(report.global().and_then(|p| p.remaining), None, "r= only shows after ~80 % used");
        assert_eq!(report.tenant().and_then(|p| p.remaining), Some(5));
        assert_eq!(report.tenant().and_then(|p| p.quota), Some(100000));
        assert!(QuotaReport::from_headers(&headers(&[("retry-after", "5")]), None).is_none());
    }

    #[test]
    fn the_watch_keeps_the_latest_per_site() {
        let watch = QuotaWatch::default();
        let report = |site: &str, r: u64| QuotaReport {
            at: OffsetDateTime::now_utc(),
            cloud_id: Some(site.into()),
            pools: vec![PoolReport { name: "global-app-quota".into(), remaining: Some(r), ..PoolReport::default() }],
            near_limit: false,
        };
        watch.record(report("a", 10));
        watch.record(report("b", 20));
        watch.record(report("a", 5));
        assert_eq!(watch.latest_for("a").and_then(|r| r.global().and_then(|p| p.remaining)), Some(5));
        assert_eq!(watch.latest().and_then(|r| r.cloud_id), Some("a".into()));
    }
}
