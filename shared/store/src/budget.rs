//! The app-wide Atlassian points budget as a token bucket, shared by every worker through one item.
//!
//! Atlassian's 3LO quota is 65,000 points per hour **per app across all tenants**, reset at the top of the UTC
//! hour. A bucket refilling at `per_hour / 3600` points a second with a `burst` capacity spends at most
//! `per_hour + burst` in any hour, so `per_hour + burst` is kept at or under the real quota.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Steady refill, points per hour.
    pub per_hour: u64,
    /// Bucket capacity: what may be spent at once after a quiet spell.
    pub burst: u64,
}

impl Default for BudgetLimits {
    fn default() -> Self {
        // 60,000 + 5,000 = Atlassian's default 65,000 points/hour for a 3LO app.
        Self { per_hour: 60_000, burst: 5_000 }
    }
}

/// The bucket as stored: milli-points, so the refill of a few milliseconds is not lost to rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketState {
    pub milli_points: u64,
    /// Epoch milliseconds of the last change; also the optimistic-concurrency version.
    pub updated_ms: i64,
}

/// What a take got: `granted` points (possibly fewer than wanted, possibly 0), and when 0 how long until
/// `wanted` (capped at the burst) will be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    pub granted: u64,
    pub wait: Option<std::time::Duration>,
}

pub fn epoch_ms(now: OffsetDateTime) -> i64 {
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Refills `state` up to `now` and takes up to `wanted` points. `None` state: a full bucket.
pub fn take(state: Option<BucketState>, limits: BudgetLimits, wanted: u64, now: OffsetDateTime) -> (BucketState, Take) {
    let now_ms = epoch_ms(now);
    let capacity = limits.burst * 1000;
    let state = state.unwrap_or(BucketState { milli_points: capacity, updated_ms: now_ms });
    let elapsed_ms = (now_ms - state.updated_ms).max(0) as u64;
    // per_hour points per 3,600,000 ms = per_hour milli-points per 3,600 ms.
    let refill = elapsed_ms.saturating_mul(limits.per_hour) / 3600;
    let available = state.milli_points.saturating_add(refill).min(capacity);
    let wanted_milli = wanted.saturating_mul(1000);
    let granted_milli = if available >= wanted_milli { wanted_milli } else { available - available % 1000 };
    let granted = granted_milli / 1000;
    let wait = (granted == 0 && wanted > 0).then(|| {
        let target = wanted_milli.min(capacity);
        let missing = target.saturating_sub(available);
        let ms = (missing * 3600).div_ceil(limits.per_hour.max(1));
        std::time::Duration::from_millis(ms.max(1))
    });
    (
        BucketState { milli_points: available - granted_milli, updated_ms: now_ms.max(state.updated_ms) },
        Take { granted, wait },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    const LIMITS: BudgetLimits = BudgetLimits { per_hour: 3600, burst: 100 };

    #[test]
    fn a_full_bucket_grants_up_to_the_burst() {
        let now = OffsetDateTime::now_utc();
        let (state, take1) = take(None, LIMITS, 60, now);
        assert_eq!(take1, Take { granted: 60, wait: None });
        let (state, take2) = take(Some(state), LIMITS, 60, now);
        assert_eq!(take2.granted, 40, "only what is left");
        let (_, take3) = take(Some(state), LIMITS, 10, now);
        assert_eq!(take3.granted, 0);
        assert_eq!(take3.wait, Some(std::time::Duration::from_secs(10)), "3600/h refills one point a second");
    }

    #[test]
    fn the_bucket_refills_but_never_past_the_burst() {
        let now = OffsetDateTime::now_utc();
        let (state, _) = take(None, LIMITS, 100, now);
        let (state, t) = take(Some(state), LIMITS, 100, now + Duration::seconds(30));
        assert_eq!(t.granted, 30);
        let (_, t) = take(Some(state), LIMITS, 1000, now + Duration::hours(5));
        assert_eq!(t.granted, 100);
    }

    #[test]
    fn an_hour_never_sees_more_than_per_hour_plus_burst() {
        let start = OffsetDateTime::now_utc();
        let mut state = None;
        let mut spent = 0;
        for second in 0..3600 {
            let (next, t) = take(state, LIMITS, 7, start + Duration::seconds(second));
            state = Some(next);
            spent += t.granted;
        }
        assert!(spent <= LIMITS.per_hour + LIMITS.burst, "{spent}");
        assert!(spent >= LIMITS.per_hour, "{spent}");
    }
}
