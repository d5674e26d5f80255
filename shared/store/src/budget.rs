//! Atlassian's points quota as a shared pool, one DynamoDB item per pool, counted the way Atlassian counts it.
//!
//! Since March 2026 a 3LO app gets a number of points per **fixed window** (an hour, reset at the top of the UTC
//! hour: `RateLimit-Policy: "global-app-quota";q=65000;w=3600`), shared by every tenant (the global pool), or,
//! once Atlassian moves the app to tenant quotas, per tenant (cloud id). A pool here is the same: `points` per
//! `window`, windows aligned to the Unix epoch like Atlassian's, and the count starts afresh each window.
//!
//! Atlassian's own count wins where it is known: a draw may carry what Atlassian reported as spent in this window
//! (`q − r` from `RateLimit`'s `r=`, or 80 % when it only says `X-RateLimit-NearLimit`), and the pool never
//! believes it has spent less; a quota 429 blocks the pool until its `Retry-After`. So a second deployment or a
//! script sharing the app's quota slows this one down instead of driving it into 429s.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::OffsetDateTime;

/// One pool: `points` per fixed `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    /// What this deployment may spend per window (Atlassian's quota, less a reserve).
    pub points: u64,
    pub window: Duration,
}

impl Default for BudgetLimits {
    fn default() -> Self {
        // Atlassian's default global pool for a 3LO app, less 5 % kept for the proxy and for other clients.
        Self { points: 61_750, window: Duration::from_secs(3600) }
    }
}

impl BudgetLimits {
    /// The window `now` falls in, and when it ends.
    pub fn window_of(&self, now: OffsetDateTime) -> (i64, OffsetDateTime) {
        let window_ms = (self.window.as_millis() as i64).max(1);
        let index = epoch_ms(now).div_euclid(window_ms);
        let ends = OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds((index + 1) * window_ms);
        (index, ends)
    }
}

/// A pool as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketState {
    /// The window counted (epoch milliseconds ÷ window).
    pub window: i64,
    /// Points drawn in that window.
    pub spent: u64,
    /// Epoch milliseconds until which nothing is granted (Atlassian answered a quota 429); 0: not blocked.
    #[serde(default)]
    pub blocked_until_ms: i64,
}

/// One change to a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Draw {
    /// Points to take (granted up to what is left).
    pub wanted: u64,
    /// Points drawn earlier in this window and not spent, given back.
    pub give_back: u64,
    /// What Atlassian reported spent in the current window, if it did.
    pub spent_at_least: Option<u64>,
    /// Atlassian refused with a quota 429: grant nothing until then.
    pub blocked_until: Option<OffsetDateTime>,
}

/// What a draw got: `granted` points (possibly fewer than wanted, possibly 0), and when 0 how long until there is
/// something again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    pub granted: u64,
    pub wait: Option<Duration>,
}

pub fn epoch_ms(now: OffsetDateTime) -> i64 {
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Applies `draw` to `state` at `now`. `None` state: a fresh pool.
pub fn take(state: Option<BucketState>, limits: BudgetLimits, draw: Draw, now: OffsetDateTime) -> (BucketState, Take) {
    // A draw computed a moment ago may arrive after another worker moved the pool into the next window: it counts
    // there, never in the window that ended (restarting that one from nothing would grant its points again).
    let now = match state {
        Some(state) if state.window > limits.window_of(now).0 => {
            let window_ms = (limits.window.as_millis() as i64).max(1);
            OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(state.window * window_ms)
        }
        _ => now,
    };
    let (window, ends) = limits.window_of(now);
    let now_ms = epoch_ms(now);
    let mut state = match state {
        Some(state) if state.window == window => state,
        // A new window starts from nothing; a block set in an earlier window may still run into this one.
        Some(state) => BucketState { window, spent: 0, blocked_until_ms: state.blocked_until_ms },
        None => BucketState { window, spent: 0, blocked_until_ms: 0 },
    };
    state.spent = state.spent.saturating_sub(draw.give_back).max(draw.spent_at_least.unwrap_or(0));
    if let Some(until) = draw.blocked_until {
        state.blocked_until_ms = state.blocked_until_ms.max(epoch_ms(until));
        state.spent = state.spent.max(limits.points);
    }
    if state.blocked_until_ms > now_ms {
        let wait = Duration::from_millis((state.blocked_until_ms - now_ms) as u64);
        return (state, Take { granted: 0, wait: (draw.wanted > 0).then_some(wait) });
    }
    let granted = draw.wanted.min(limits.points.saturating_sub(state.spent));
    state.spent += granted;
    let wait = (granted == 0 && draw.wanted > 0).then(|| {
        let ms = (epoch_ms(ends) - now_ms).max(1);
        Duration::from_millis(ms as u64)
    });
    (state, Take { granted, wait })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_draw_counts_in_the_window_the_pool_is_in() {
        let start = at_window_start();
        let (state, _) = take(None, LIMITS, want(100), start);
        // A draw computed just before the reset arrives after it: nothing is granted again from the old window.
        let late = start - time::Duration::milliseconds(5);
        let (state, take) = take(Some(state), LIMITS, want(10), late);
        assert_eq!((state.window, state.spent, take.granted), (LIMITS.window_of(start).0, 100, 0));
    }

    const LIMITS: BudgetLimits = BudgetLimits { points: 100, window: Duration::from_secs(60) };

    /// The start of a window.
    fn at_window_start() -> OffsetDateTime {
        let (_, ends) = LIMITS.window_of(OffsetDateTime::now_utc());
        ends
    }

    fn want(wanted: u64) -> Draw {
        Draw { wanted, ..Draw::default() }
    }

    #[test]
    fn a_window_grants_its_points_then_waits_for_the_next() {
        let start = at_window_start();
        let (state, first) = take(None, LIMITS, want(60), start);
        assert_eq!(first, Take { granted: 60, wait: None });
        let (state, second) = take(Some(state), LIMITS, want(60), start + time::Duration::seconds(10));
        assert_eq!(second.granted, 40, "only what is left");
        let (state, dry) = take(Some(state), LIMITS, want(10), start + time::Duration::seconds(15));
        assert_eq!(dry, Take { granted: 0, wait: Some(Duration::from_secs(45)) }, "until the window resets");
        let (_, next) = take(Some(state), LIMITS, want(100), start + time::Duration::seconds(60));
        assert_eq!(next.granted, 100, "a new window starts from nothing");
    }

    #[test]
    fn atlassians_count_and_its_429s_win() {
        let start = at_window_start();
        let (state, _) = take(None, LIMITS, want(10), start);
        // Someone else spent 85 of this window's points: only 15 are left for us.
        let reported = Draw { wanted: 50, spent_at_least: Some(85), ..Draw::default() };
        let (state, t) = take(Some(state), LIMITS, reported, start);
        assert_eq!(t.granted, 15);
        // A quota 429 blocks the pool until its Retry-After, into the next window if need be.
        let until = start + time::Duration::seconds(70);
        let blocked = Draw { blocked_until: Some(until), ..Draw::default() };
        let (state, _) = take(Some(state), LIMITS, blocked, start + time::Duration::seconds(1));
        let (state, t) = take(Some(state), LIMITS, want(5), start + time::Duration::seconds(61));
        assert_eq!(t, Take { granted: 0, wait: Some(Duration::from_secs(9)) });
        let (_, t) = take(Some(state), LIMITS, want(5), start + time::Duration::seconds(70));
        assert_eq!(t.granted, 5);
    }

    #[test]
    fn unspent_points_go_back_to_the_window() {
        let start = at_window_start();
        let (state, t) = take(None, LIMITS, want(100), start);
        assert_eq!(t.granted, 100);
        let (state, _) = take(Some(state), LIMITS, Draw { give_back: 30, ..Draw::default() }, start);
        let (_, t) = take(Some(state), LIMITS, want(50), start);
        assert_eq!(t.granted, 30);
    }

    #[test]
    fn a_window_never_grants_more_than_its_points() {
        let start = at_window_start();
        let mut state = None;
        let mut granted = 0;
        for second in 0..60 {
            let (next, t) = take(state, LIMITS, want(7), start + time::Duration::seconds(second));
            state = Some(next);
            granted += t.granted;
        }
        assert_eq!(granted, LIMITS.points);
    }
}
