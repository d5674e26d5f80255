//! The spending side of the points quota (`store::budget` holds the pools), for sync workers and the proxy alike.
//! Before each Atlassian request the worker needs a balance that covers the request's likely cost, drawn from the shared pool in chunks (one
//! DynamoDB write per chunk, not per request); after it, the request's actual points are charged. When the pool is
//! dry the run does not fail: [`BudgetError::Exhausted`] says how long until the window resets, and the run waits
//! for it through a delayed continuation.
//!
//! The model is Atlassian's (see the README's "Points quota"): the app-wide pool (`global`), or one pool per
//! tenant (`tenant`, for apps Atlassian moved to tenant quotas), each `points` per fixed window, less a reserve for
//! the proxy, other clients and requests in flight across a window's end. What Atlassian reports in its headers
//! (`RateLimit` `r=`, `X-RateLimit-NearLimit`) is carried into the next draw, and a quota 429 blocks its pool until
//! the window resets. No request starts in the last moments of a window (a twentieth of it, two seconds at most):
//! Atlassian would count one answered after the reset in the next window, whose pool here starts from nothing.

use atlassian::QuotaWatch;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use store::budget::{BudgetLimits, Draw};
use store::{BudgetStore, StoreError};
use thiserror::Error;
use time::OffsetDateTime;

mod quota;

pub use quota::{Edition, QuotaConfig, QuotaMode, TenantQuota};

/// The app's pools' name in the store (the global one; tenant pools add `:tenant:{cloudId}`): syncs and the proxy
/// draw from the same.
pub const APP_POOL: &str = "atlassian-app";

#[derive(Debug, Error)]
pub enum BudgetError {
    #[error("the app's Atlassian points quota is spent; it resets in {0:?}")]
    Exhausted(Duration),
    #[error("the budget store failed")]
    Store(#[from] StoreError),
}

pub trait Budget: Send + Sync {
    /// Waits (briefly, and never past `latest`: the invocation's own deadline) until the worker may make a request
    /// to `site` (a cloud id) that will likely cost `estimate`, and sets that aside for it (answering how much:
    /// never more than the pool could grant): requests made at once never count the same points twice, and none
    /// waits for points the others keep taking.
    fn before(
        &self,
        site: &str,
        estimate: u64,
        latest: Option<Instant>,
    ) -> impl Future<Output = Result<Reserved, BudgetError>> + Send;

    /// Charges what a request to `site` cost, `points`, and gives back what was set aside for it, `reserved`
    /// (to the window it was set aside in: a request answered after the reset is Atlassian's in the next one).
    fn spent(&self, site: &str, reserved: Reserved, points: u64);

    /// Atlassian answered a quota 429 with `reason` (`jira-quota-global-based`, `…-tenant-based`): the pool it
    /// names grants nothing until `until`.
    fn blocked(&self, site: &str, reason: &str, until: OffsetDateTime) -> impl Future<Output = ()> + Send;

    /// Gives back what was drawn and not spent, and charges what was spent beyond it (an invocation ends).
    fn release(&self) -> impl Future<Output = ()> + Send;
}

/// Points set aside for a request (or several) in one window of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    pub points: u64,
    window: i64,
}

impl Reserved {
    /// Nothing set aside: the request is not metered (a site's API token is outside the app's quota).
    pub const NONE: Self = Self { points: 0, window: 0 };
}

/// No limit (tests, and tools that do not talk to Atlassian's quota).
pub struct Unlimited;

impl Budget for Unlimited {
    async fn before(&self, _: &str, estimate: u64, _: Option<Instant>) -> Result<Reserved, BudgetError> {
        Ok(Reserved { points: estimate, window: 0 })
    }
    fn spent(&self, _: &str, _: Reserved, _: u64) {}
    async fn blocked(&self, _: &str, _: &str, _: OffsetDateTime) {}
    async fn release(&self) {}
}

/// Points drawn into this worker and not yet spent, in one window of a pool of `quota` points.
#[derive(Debug, Clone, Copy, Default)]
struct Balance {
    window: i64,
    points: i64,
    quota: u64,
}

/// A moment in a pool's windows.
struct Moment {
    now: OffsetDateTime,
    window: i64,
    /// Until the window ends.
    left: Duration,
    /// Whether a request may start (it is not in the window's last moments).
    open: bool,
}

/// The shared pools.
pub struct SharedBudget<'a, S> {
    store: &'a S,
    prefix: String,
    config: QuotaConfig,
    watch: Option<QuotaWatch>,
    balances: Mutex<HashMap<String, Balance>>,
    drawing: tokio::sync::Mutex<()>,
    /// How much to draw at once, and the longest wait for a window before the run gives its invocation back.
    pub chunk: u64,
    pub max_wait: Duration,
}

impl<'a, S: BudgetStore> SharedBudget<'a, S> {
    pub fn new(store: &'a S, prefix: &str, config: QuotaConfig) -> Self {
        Self {
            store,
            prefix: prefix.to_owned(),
            config,
            watch: None,
            balances: Mutex::new(HashMap::new()),
            drawing: tokio::sync::Mutex::new(()),
            chunk: 500,
            max_wait: Duration::from_secs(5),
        }
    }

    /// Reconciles with what Atlassian reports to `watch` (the client's).
    pub fn watching(mut self, watch: QuotaWatch) -> Self {
        self.watch = Some(watch);
        self
    }

    /// The end of a window in which no request starts: a twentieth of it, at most two seconds.
    fn guard(&self, limits: BudgetLimits) -> Duration {
        (limits.window / 20).min(Duration::from_secs(2))
    }

    fn balances(&self) -> std::sync::MutexGuard<'_, HashMap<String, Balance>> {
        self.balances.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where now falls in the pool's windows, and whether a request may start: none does in the last moments of a
    /// window.
    fn moment(&self, limits: BudgetLimits) -> Moment {
        let now = OffsetDateTime::now_utc();
        let (window, ends) = limits.window_of(now);
        let left = Duration::try_from(ends - now).unwrap_or_default();
        Moment { now, window, left, open: left >= self.guard(limits) }
    }

    /// Adds `drawn` (points just drawn from the store in `window`) to `pool`'s balance, then sets `estimate` aside
    /// if the balance holds that much and requests may start (`open`); otherwise answers the balance.
    fn reserve(&self, pool: &str, window: i64, quota: u64, estimate: i64, open: bool, drawn: u64) -> Result<(), i64> {
        let mut balances = self.balances();
        let balance = balances.entry(pool.to_owned()).or_default();
        if balance.window != window {
            if drawn > 0 {
                // Drawn for a window this worker has already left: counted there, and of no use here.
                return Err(balance.points);
            }
            // What was drawn in an earlier window was counted there; this one starts from nothing.
            *balance = Balance { window, points: 0, quota };
        }
        balance.points += drawn as i64;
        if balance.points >= estimate && open {
            balance.points -= estimate;
            return Ok(());
        }
        Err(balance.points)
    }

    /// A tenant pool's size as Atlassian last stated it (`RateLimit-Policy: "tenant-app-quota";q=…`): the
    /// configured size of a tenant pool is a guess (an edition's formula, its base when the users are not given).
    /// The global pool keeps the configured size: a deployment may mean to use less than the app has.
    fn learned_size(&self, site: &str) -> Option<u64> {
        if self.config.mode != QuotaMode::Tenant {
            return None;
        }
        let report = self.watch.as_ref()?.latest_for(site)?;
        report.tenant()?.quota.filter(|q| *q > 0)
    }

    /// What Atlassian last said was spent of this pool in the current window, if it said.
    fn reported_spent(&self, site: &str, quota: u64, limits: BudgetLimits, window: i64) -> Option<u64> {
        let report = match self.config.mode {
            QuotaMode::Global => self.watch.as_ref()?.latest()?,
            QuotaMode::Tenant => self.watch.as_ref()?.latest_for(site)?,
        };
        if limits.window_of(report.at).0 != window {
            return None;
        }
        let pool = match self.config.mode {
            QuotaMode::Global => report.global(),
            QuotaMode::Tenant => report.tenant(),
        };
        let quota = pool.and_then(|p| p.quota).unwrap_or(quota);
        match pool.and_then(|p| p.remaining) {
            Some(remaining) => Some(quota.saturating_sub(remaining)),
            None if report.near_limit => Some(quota * 4 / 5),
            None => None,
        }
    }
}

impl<S: BudgetStore> Budget for SharedBudget<'_, S> {
    async fn before(&self, site: &str, estimate: u64, latest: Option<Instant>) -> Result<Reserved, BudgetError> {
        let (pool, quota) = self.config.pool(&self.prefix, site);
        let quota = self.learned_size(site).unwrap_or(quota);
        let limits = self.config.limits(quota);
        // A request never needs more than the pool could ever grant.
        let estimate = estimate.clamp(1, limits.points.max(1)) as i64;
        loop {
            let Moment { window, left, open, .. } = self.moment(limits);
            let balance = match self.reserve(&pool, window, quota, estimate, open, 0) {
                Ok(()) => return Ok(Reserved { points: estimate as u64, window }),
                Err(balance) => balance,
            };
            if balance >= estimate {
                // No request starts in the last moments of a window: one answered after the reset would be counted
                // by Atlassian in the next window, whose pool here starts from nothing.
                if latest.is_some_and(|latest| Instant::now() + left > latest) {
                    return Err(BudgetError::Exhausted(left));
                }
                tokio::time::sleep(left).await;
                continue;
            }
            // One draw at a time from this worker, in the order the requests asked: requests made at once neither
            // race each other on the pool's item nor keep taking a drawn balance from under the one that drew it.
            let _turn = self.drawing.lock().await;
            // The wait for the turn may have crossed into the next window.
            let Moment { now, window, open, .. } = self.moment(limits);
            let balance = match self.reserve(&pool, window, quota, estimate, open, 0) {
                Ok(()) => return Ok(Reserved { points: estimate as u64, window }),
                Err(balance) if balance >= estimate => continue, // the guard band, at the top of the loop
                Err(balance) => balance,
            };
            let draw = Draw {
                wanted: self.chunk.max((estimate - balance).max(0) as u64),
                spent_at_least: self.reported_spent(site, quota, limits, window),
                ..Draw::default()
            };
            let take = self.store.take_points(&pool, limits, draw, now).await?;
            if take.granted > 0 {
                // The request that drew the points is the first to use them.
                if self.reserve(&pool, window, quota, estimate, open, take.granted).is_ok() {
                    return Ok(Reserved { points: estimate as u64, window });
                }
                continue;
            }
            let wait = take.wait.unwrap_or(Duration::from_secs(1));
            // A sleep past the invocation's deadline would be cut short by Lambda, and the run redelivered and read
            // again: a longer wait is a delayed continuation.
            if wait > self.max_wait || latest.is_some_and(|latest| Instant::now() + wait > latest) {
                return Err(BudgetError::Exhausted(wait));
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn spent(&self, site: &str, reserved: Reserved, points: u64) {
        let (pool, quota) = self.config.pool(&self.prefix, site);
        let window = self.config.limits(quota).window_of(OffsetDateTime::now_utc()).0;
        let mut balances = self.balances();
        let balance = balances.entry(pool).or_default();
        if balance.window != window {
            *balance = Balance { window, points: 0, quota };
        }
        // What was set aside in an earlier window stays spent there; the answer counts in this one.
        let back = if reserved.window == window { reserved.points as i64 } else { 0 };
        balance.points += back - points as i64;
    }

    async fn blocked(&self, site: &str, reason: &str, until: OffsetDateTime) {
        // A tenant-based 429 names the site's pool; a global one the app's, whatever this deployment's mode.
        let mode = if reason.contains("tenant") { QuotaMode::Tenant } else { QuotaMode::Global };
        let (pool, quota) = self.config.pool_of(mode, &self.prefix, site);
        self.balances().remove(&pool);
        let draw = Draw { blocked_until: Some(until), ..Draw::default() };
        if let Err(error) =
            self.store.take_points(&pool, self.config.limits(quota), draw, OffsetDateTime::now_utc()).await
        {
            tracing::warn!(error = %runtime::error_chain(&error), "could not record Atlassian's quota 429 in the shared pool");
        }
    }

    async fn release(&self) {
        let now = OffsetDateTime::now_utc();
        let unsettled: Vec<(String, Balance)> = self.balances().drain().filter(|(_, b)| b.points != 0).collect();
        for (pool, balance) in unsettled {
            let limits = self.config.limits(balance.quota);
            if limits.window_of(now).0 != balance.window {
                continue;
            }
            // A balance below zero is what answers cost beyond what was set aside for them: charged now (as much
            // as the pool has left), so the pool does not believe it has more than Atlassian does.
            let draw = match u64::try_from(balance.points) {
                Ok(unspent) => Draw { give_back: unspent, ..Draw::default() },
                Err(_) => Draw { wanted: balance.points.unsigned_abs(), ..Draw::default() },
            };
            if let Err(error) = self.store.take_points(&pool, limits, draw, now).await {
                tracing::warn!(error = %runtime::error_chain(&error), "could not give unspent points back to the shared pool");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::MemoryStore;

    fn config(points: u64) -> QuotaConfig {
        QuotaConfig { points, reserve: 0.0, window: Duration::from_secs(3600), ..QuotaConfig::default() }
    }

    #[tokio::test]
    async fn draws_in_chunks_and_says_how_long_until_the_window_resets() {
        let store = MemoryStore::new();
        let budget = SharedBudget::new(&store, "app", config(1000));
        // Two chunks of 500 cover ten requests of 100.
        for _ in 0..10 {
            let reserved = budget.before("site", 100, None).await.unwrap();
            budget.spent("site", reserved, 100);
        }
        let Err(BudgetError::Exhausted(wait)) = budget.before("site", 100, None).await else { panic!("dry") };
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(3600), "{wait:?}");
    }

    #[tokio::test]
    async fn a_request_waits_for_its_whole_estimate_and_unspent_points_go_back() {
        let store = MemoryStore::new();
        let budget = SharedBudget::new(&store, "app", config(1000));
        let reserved = budget.before("site", 700, None).await.unwrap(); // draws 700 at once, not a 500 chunk
        budget.spent("site", reserved, 201);
        budget.release().await;
        let other = SharedBudget::new(&store, "app", config(1000));
        other.before("site", 799, None).await.unwrap();
        assert!(matches!(other.before("site", 900, None).await, Err(BudgetError::Exhausted(_))));
    }

    #[tokio::test]
    async fn what_an_answer_cost_beyond_its_estimate_is_charged_when_the_invocation_ends() {
        let store = MemoryStore::new();
        let mut budget = SharedBudget::new(&store, "app", config(1000));
        budget.chunk = 0;
        let reserved = budget.before("site", 1, None).await.unwrap(); // a proxied search: 1 point set aside
        budget.spent("site", reserved, 301); // it answered 300 issues
        budget.release().await;
        let other = SharedBudget::new(&store, "app", config(1000));
        other.before("site", 699, None).await.unwrap();
        assert!(matches!(other.before("site", 2, None).await, Err(BudgetError::Exhausted(_))), "301 were charged");
    }

    #[tokio::test]
    async fn atlassians_report_and_429s_are_believed() {
        let store = MemoryStore::new();
        let watch = QuotaWatch::default();
        let budget = SharedBudget::new(&store, "app", config(1000)).watching(watch.clone());
        // Someone else spent 900 of the window's 1,000: only 100 are left for this deployment.
        let h = reqwest_headers("\"global-app-quota\";q=1000;w=3600", "\"global-app-quota\";r=100;t=60");
        watch.record(atlassian::QuotaReport::from_headers(&h, Some("site".into())).unwrap());
        let reserved = budget.before("site", 50, None).await.unwrap();
        budget.spent("site", reserved, 50);
        let reserved = budget.before("site", 50, None).await.unwrap();
        budget.spent("site", reserved, 50);
        assert!(matches!(budget.before("site", 50, None).await, Err(BudgetError::Exhausted(_))));

        // A quota 429 blocks the pool for every worker until its Retry-After.
        let fresh = MemoryStore::new();
        let (a, b) = (SharedBudget::new(&fresh, "app", config(1000)), SharedBudget::new(&fresh, "app", config(1000)));
        a.blocked("site", "jira-quota-global-based", OffsetDateTime::now_utc() + time::Duration::minutes(2)).await;
        let Err(BudgetError::Exhausted(wait)) = b.before("site", 10, None).await else { panic!("blocked") };
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
    }

    #[tokio::test]
    async fn near_limit_alone_is_taken_for_four_fifths_spent() {
        // Atlassian says only `X-RateLimit-NearLimit: true` (less than 20 % left, no numbers): the pool is taken
        // for four fifths spent, so this deployment draws at most the last fifth of the window.
        let store = MemoryStore::new();
        let watch = QuotaWatch::default();
        let budget = SharedBudget::new(&store, "app", config(1000)).watching(watch.clone());
        let mut near = reqwest::header::HeaderMap::new();
        near.insert("x-ratelimit-nearlimit", reqwest::header::HeaderValue::from_static("true"));
        watch.record(atlassian::QuotaReport::from_headers(&near, Some("site".into())).unwrap());
        let mut spent = 0;
        while let Ok(reserved) = budget.before("site", 50, None).await {
            budget.spent("site", reserved, 50);
            spent += 50;
            assert!(spent <= 1000, "the pool never runs dry");
        }
        assert_eq!(spent, 200, "a fifth of the window");
        // Without the header the same window would have granted all of it.
        let fresh = MemoryStore::new();
        let blind = SharedBudget::new(&fresh, "app", config(1000));
        let reserved = blind.before("site", 900, None).await.unwrap();
        assert_eq!(reserved.points, 900);
    }

    #[tokio::test]
    async fn tenant_pools_are_separate() {
        let store = MemoryStore::new();
        let mut config = config(300);
        config.mode = QuotaMode::Tenant;
        config.tenant_points.insert("big".into(), TenantQuota::Points(10_000));
        let budget = SharedBudget::new(&store, "app", config);
        let reserved = budget.before("small", 300, None).await.unwrap();
        budget.spent("small", reserved, 300);
        assert!(matches!(budget.before("small", 10, None).await, Err(BudgetError::Exhausted(_))));
        budget.before("big", 5000, None).await.unwrap();
        budget.before("other", 200, None).await.unwrap();
    }

    #[tokio::test]
    async fn requests_at_once_set_their_points_aside() {
        let store = MemoryStore::new();
        let mut budget = SharedBudget::new(&store, "app", config(1000));
        budget.chunk = 1000;
        // Ten requests of 100 start before any is charged: the eleventh finds nothing left, however the ten end.
        let mut reserved = Vec::new();
        for _ in 0..10 {
            reserved.push(budget.before("site", 100, None).await.unwrap());
        }
        assert!(matches!(budget.before("site", 100, None).await, Err(BudgetError::Exhausted(_))));
        // They cost 60 each: what they did not spend is there again.
        for reserved in reserved {
            budget.spent("site", reserved, 60);
        }
        for _ in 0..4 {
            budget.before("site", 100, None).await.unwrap();
        }
        assert!(matches!(budget.before("site", 100, None).await, Err(BudgetError::Exhausted(_))));
    }

    #[tokio::test]
    async fn a_tenant_pool_takes_the_size_atlassian_states() {
        let store = MemoryStore::new();
        let watch = QuotaWatch::default();
        let mut config = config(1000);
        config.mode = QuotaMode::Tenant;
        config.tenant_points.insert("*".into(), TenantQuota::Points(2000));
        let budget = SharedBudget::new(&store, "app", config).watching(watch.clone());
        // Configured: 2,000 for every tenant.
        budget.before("site", 2000, None).await.unwrap();
        assert!(matches!(budget.before("site", 10, None).await, Err(BudgetError::Exhausted(_))));
        // Atlassian states 5,000 for this site's pool.
        let h = reqwest_headers("\"tenant-app-quota\";q=5000;w=3600", "\"tenant-app-quota\";t=60");
        watch.record(atlassian::QuotaReport::from_headers(&h, Some("site".into())).unwrap());
        budget.before("site", 3000, None).await.unwrap();
        assert!(matches!(budget.before("site", 10, None).await, Err(BudgetError::Exhausted(_))));
    }

    fn reqwest_headers(policy: &'static str, limit: &'static str) -> reqwest::header::HeaderMap {
        let mut map = reqwest::header::HeaderMap::new();
        map.insert("ratelimit-policy", reqwest::header::HeaderValue::from_static(policy));
        map.insert("ratelimit", reqwest::header::HeaderValue::from_static(limit));
        map
    }
}
