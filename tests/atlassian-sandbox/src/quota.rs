//! Atlassian's points quota (see the reference, §7 and §12), for the sandbox's Jira and Confluence REST routes as a
//! 3LO app reaches them: the gateway (`/ex/jira/…`, `/ex/confluence/…`). The Admin API has no points, and the
//! Basic-auth sites' routes are API-token traffic, which Atlassian keeps on burst limits only: neither is metered
//! (their points are still counted in `points`).
//!
//! - A **global pool** (`global_points` a window, the app's across every tenant) and optional **tenant pools**
//!   (`tenant_points` a window for each cloud id). Windows are fixed and aligned to the Unix epoch (window index =
//!   `floor(unix_time / window)`), as Atlassian resets at the top of the UTC hour; tests shrink the hour to seconds.
//! - A request is checked once it is authenticated: when its global pool, or its tenant's, has `spent >= q` this
//!   window it answers `429 {"code":429,"message":"Rate limit exceeded."}` with `Retry-After` (whole seconds to the
//!   window's end, at least 1) and `RateLimit-Reason: {jira|confluence}-quota-{global|tenant}-based`. Otherwise it
//!   is answered and then charged (1 + 2 per user or group, 1 + 1 per project or space) to both pools, so a request
//!   admitted just below `q` may end past it, as Atlassian charges after the fact; the overshoot is in the stats.
//!   Jira and Confluence draw on the same pools. Answers refused before the check (401, faults) or after it (400,
//!   404) are not charged.
//! - Every answer of those routes carries, for the pools configured, `RateLimit-Policy: "global-app-quota";q=…;w=…,
//!   "tenant-app-quota";q=…;w=…` and `RateLimit: "global-app-quota";t=…` (seconds to reset) with `;r=…` (remaining,
//!   never negative) before `t` once 80 % of `q` is spent, and `X-RateLimit-NearLimit: true` once less than 20 % is
//!   left. With `beta_headers` the first two are `Beta-RateLimit-Policy` and `Beta-RateLimit` (the names before
//!   enforcement), but the quota is still enforced, so a client must read both families.
//!
//! The quota can be replaced at run time with `POST /__sandbox/quota` (`{"global_points", "tenant_points",
//! "window_secs", "beta_headers"}`), which also resets its counters. `GET /__sandbox/stats` shows them: `quota`,
//! `current_window`, `quota_429s`, `window_points` (window → global points, counted with or without a pool),
//! `max_window_points` (so a test can assert it never passed `q` + the largest single request),
//! `tenant_window_points` (cloud id → window → points) and `quota_overshoot` (the most points past `q` in a window).

use super::Sandbox;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The points quota of the sandbox's Jira and Confluence REST APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The app's pool across every tenant, in points a window (`None`: unlimited).
    pub global_points: Option<u64>,
    /// Each cloud id's own pool, in points a window (`None`: no tenant pools).
    pub tenant_points: Option<u64>,
    /// The window (Atlassian: an hour).
    pub window: Duration,
    /// Send `Beta-RateLimit-Policy` and `Beta-RateLimit` instead of `RateLimit-Policy` and `RateLimit`.
    pub beta_headers: bool,
}

impl Default for Quota {
    fn default() -> Self {
        Self { global_points: None, tenant_points: None, window: Duration::from_secs(3600), beta_headers: false }
    }
}

/// The body of `POST /__sandbox/quota`.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub(super) struct QuotaSettings {
    global_points: Option<u64>,
    tenant_points: Option<u64>,
    window_secs: f64,
    beta_headers: bool,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self { global_points: None, tenant_points: None, window_secs: 3600.0, beta_headers: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Global,
    Tenant,
}

impl Pool {
    fn name(self) -> &'static str {
        match self {
            Pool::Global => "global",
            Pool::Tenant => "tenant",
        }
    }
}

/// The quota and what it has counted.
#[derive(Debug, Default)]
pub(super) struct QuotaState {
    quota: Quota,
    /// Window index → points charged to the global pool (counted even when it is unlimited).
    global: BTreeMap<u64, u64>,
    /// Cloud id → window index → points.
    tenants: BTreeMap<String, BTreeMap<u64, u64>>,
    quota_429s: u64,
    /// The most points any pool was charged past its `q` in one window.
    overshoot: u64,
}

/// The window `now` falls in, and how long until it ends (never zero).
fn window_at(window: Duration, now: SystemTime) -> (u64, Duration) {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let length = window.as_nanos().max(1);
    let index = since_epoch / length;
    let end = (index + 1) * length;
    let left = u64::try_from(end - since_epoch).unwrap_or(u64::MAX);
    (u64::try_from(index).unwrap_or(u64::MAX), Duration::from_nanos(left))
}

/// Whole seconds, rounded up, at least 1 (Atlassian has sent `Retry-After: 0`; the sandbox does not).
fn whole_secs(duration: Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}

impl QuotaState {
    pub(super) fn new(quota: Quota) -> Self {
        Self { quota, ..Self::default() }
    }

    fn spent(&self, pool: Pool, tenant: &str, window: u64) -> u64 {
        let windows = match pool {
            Pool::Global => Some(&self.global),
            Pool::Tenant => self.tenants.get(tenant),
        };
        windows.and_then(|w| w.get(&window)).copied().unwrap_or(0)
    }

    /// The pools configured, with their `q`.
    fn pools(&self) -> impl Iterator<Item = (Pool, u64)> {
        [(Pool::Global, self.quota.global_points), (Pool::Tenant, self.quota.tenant_points)]
            .into_iter()
            .filter_map(|(pool, q)| Some((pool, q?)))
    }

    /// The pool a request of `tenant` would overdraw now, if any (the global one first: it pauses the whole app).
    fn exhausted(&self, tenant: &str, now: SystemTime) -> Option<(Pool, Duration)> {
        let (window, left) = window_at(self.quota.window, now);
        self.pools().find(|&(pool, q)| self.spent(pool, tenant, window) >= q).map(|(pool, _)| (pool, left))
    }

    fn charge(&mut self, tenant: &str, points: u64, now: SystemTime) {
        let (window, _) = window_at(self.quota.window, now);
        *self.global.entry(window).or_default() += points;
        *self.tenants.entry(tenant.to_owned()).or_default().entry(window).or_default() += points;
        let over: Vec<u64> = self.pools().map(|(pool, q)| self.spent(pool, tenant, window).saturating_sub(q)).collect();
        self.overshoot = over.into_iter().fold(self.overshoot, u64::max);
    }

    /// The rate-limit headers of an answer to `tenant`, with the pools as they are now.
    fn headers(&self, tenant: &str, now: SystemTime) -> Vec<(&'static str, String)> {
        let (window, left) = window_at(self.quota.window, now);
        let w = if self.quota.window.subsec_nanos() == 0 {
            self.quota.window.as_secs().to_string()
        } else {
            self.quota.window.as_secs_f64().to_string()
        };
        let t = whole_secs(left);
        let (mut policy, mut state, mut near) = (Vec::new(), Vec::new(), false);
        for (pool, q) in self.pools() {
            let name = format!("\"{}-app-quota\"", pool.name());
            let spent = self.spent(pool, tenant, window);
            let remaining = q.saturating_sub(spent);
            policy.push(format!("{name};q={q};w={w}"));
            // `r` shows only once 80 % is spent; NearLimit once less than 20 % is left.
            if spent.saturating_mul(5) >= q.saturating_mul(4) {
                state.push(format!("{name};r={remaining};t={t}"));
            } else {
                state.push(format!("{name};t={t}"));
            }
            near |= remaining == 0 || remaining.saturating_mul(5) < q;
        }
        if policy.is_empty() {
            return Vec::new();
        }
        let (policy_header, state_header) = if self.quota.beta_headers {
            ("beta-ratelimit-policy", "beta-ratelimit")
        } else {
            ("ratelimit-policy", "ratelimit")
        };
        let mut headers = vec![(policy_header, policy.join(", ")), (state_header, state.join(", "))];
        if near {
            headers.push(("x-ratelimit-nearlimit", "true".into()));
        }
        headers
    }

    /// The quota's part of `/__sandbox/stats`.
    pub(super) fn stats(&self) -> Value {
        let (current, _) = window_at(self.quota.window, SystemTime::now());
        json!({
            "quota": {
                "global_points": self.quota.global_points, "tenant_points": self.quota.tenant_points,
                "window_secs": self.quota.window.as_secs_f64(), "beta_headers": self.quota.beta_headers,
            },
            "current_window": current,
            "quota_429s": self.quota_429s,
            "max_window_points": self.global.values().copied().max().unwrap_or(0),
            "window_points": self.global,
            "tenant_window_points": self.tenants,
            "quota_overshoot": self.overshoot,
        })
    }
}

impl Sandbox {
    /// Admits a REST request of `product` (`jira` or `confluence`) on `tenant`, or answers the quota's 429.
    #[allow(clippy::result_large_err)] // a test server: the rejection is the response itself
    pub(super) fn admit(&self, product: &str, tenant: &str) -> Result<(), Response> {
        let mut inner = self.lock();
        let Some((pool, left)) = inner.quota.exhausted(tenant, SystemTime::now()) else {
            return Ok(());
        };
        inner.quota.quota_429s += 1;
        let headers = [
            ("retry-after", whole_secs(left).to_string()),
            ("ratelimit-reason", format!("{product}-quota-{}-based", pool.name())),
        ];
        let body = axum::Json(json!({"code": 429, "message": "Rate limit exceeded."}));
        Err((StatusCode::TOO_MANY_REQUESTS, headers, body).into_response())
    }

    /// Counts an answered request's points and charges them to the global pool and `tenant`'s (`None`: a request
    /// with a site's API token, which Atlassian keeps on burst limits only: counted, not charged).
    pub(super) fn charge(&self, tenant: Option<&str>, points: u64) {
        let mut inner = self.lock();
        inner.points += points;
        if let Some(tenant) = tenant {
            inner.quota.charge(tenant, points, SystemTime::now());
        }
    }

    /// The cloud id whose pools a request path draws on, if the path is metered at all: the 3LO gateway's. (The
    /// sites' Basic-auth routes are API-token traffic, which Atlassian keeps on burst limits only.)
    fn metered_tenant(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix("/ex/jira/").or_else(|| path.strip_prefix("/ex/confluence/"))?;
        rest.split('/').next().map(String::from)
    }
}

/// Middleware: the quota headers on every answer of a metered route (after the answer was charged).
pub(super) async fn headers(State(sandbox): State<Sandbox>, request: Request, next: Next) -> Response {
    let Some(tenant) = sandbox.metered_tenant(request.uri().path()) else {
        return next.run(request).await;
    };
    let mut response = next.run(request).await;
    let headers = sandbox.lock().quota.headers(&tenant, SystemTime::now());
    for (name, value) in headers {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// `POST /__sandbox/quota`: a new quota, with its counters reset.
pub(super) async fn set(State(sandbox): State<Sandbox>, axum::Json(settings): axum::Json<QuotaSettings>) -> Response {
    let Ok(window) = Duration::try_from_secs_f64(settings.window_secs) else {
        return (StatusCode::BAD_REQUEST, "window_secs must be a positive number of seconds").into_response();
    };
    if window.is_zero() {
        return (StatusCode::BAD_REQUEST, "window_secs must be a positive number of seconds").into_response();
    }
    let quota = Quota {
        global_points: settings.global_points,
        tenant_points: settings.tenant_points,
        window,
        beta_headers: settings.beta_headers,
    };
    sandbox.lock().quota = QuotaState::new(quota);
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs_f64(secs)
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let hour = Duration::from_secs(3600);
        assert_eq!(window_at(hour, at(7200.0)), (2, hour));
        assert_eq!(window_at(hour, at(7200.0 + 3599.5)).0, 2);
        assert_eq!(whole_secs(window_at(hour, at(7200.0 + 3599.5)).1), 1);
        assert_eq!(window_at(Duration::from_millis(2500), at(10.0)).0, 4);
        assert_eq!(whole_secs(Duration::ZERO), 1);
    }

    #[test]
    fn pools_fill_and_headers_follow() {
        let quota = Quota { global_points: Some(100), tenant_points: Some(50), ..Quota::default() };
        let mut state = QuotaState::new(quota);
        let now = at(3600.0 * 10.0 + 5.0);
        let header = |state: &QuotaState, name: &str| {
            state.headers("a", now).into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
        };
        assert_eq!(
            header(&state, "ratelimit-policy").as_deref(),
            Some("\"global-app-quota\";q=100;w=3600, \"tenant-app-quota\";q=50;w=3600")
        );
        assert_eq!(
            header(&state, "ratelimit").as_deref(),
            Some("\"global-app-quota\";t=3595, \"tenant-app-quota\";t=3595")
        );
        state.charge("a", 40, now);
        assert_eq!(
            header(&state, "ratelimit").as_deref(),
            Some("\"global-app-quota\";t=3595, \"tenant-app-quota\";r=10;t=3595")
        );
        assert_eq!(header(&state, "x-ratelimit-nearlimit"), None, "10 of 50 left is not below 20 %");
        assert!(state.exhausted("a", now).is_none());
        state.charge("a", 15, now);
        assert_eq!(header(&state, "x-ratelimit-nearlimit").as_deref(), Some("true"));
        assert_eq!(state.exhausted("a", now).map(|(p, _)| p), Some(Pool::Tenant));
        assert!(state.exhausted("b", now).is_none(), "another tenant still has its pool");
        state.charge("b", 50, now);
        assert_eq!(state.exhausted("b", now).map(|(p, _)| p), Some(Pool::Global), "the app's pool goes first");
        assert_eq!(state.overshoot, 5);
        assert!(state.exhausted("a", at(3600.0 * 11.0)).is_none(), "the next window starts afresh");
    }
}
