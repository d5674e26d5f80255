//! The worker's side of the app-wide points budget (`store::budget`): before each Atlassian request the worker
//! needs a positive balance, drawn from the shared bucket in chunks (one DynamoDB write per chunk, not per
//! request); after it, the request's actual points are charged, so a worker overdraws by at most one page. When the
//! bucket is dry for longer than a short wait, the run stops and its job comes back later.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use store::budget::BudgetLimits;
use store::{BudgetStore, StoreError};
use thiserror::Error;
use time::OffsetDateTime;

#[derive(Debug, Error)]
pub enum BudgetError {
    #[error("the app's Atlassian points budget is spent; it refills in {0:?}")]
    Exhausted(Duration),
    #[error("the budget store failed")]
    Store(#[from] StoreError),
}

pub trait Budget: Send + Sync {
    /// Waits (briefly) until the worker may make a request.
    fn before(&self) -> impl Future<Output = Result<(), BudgetError>> + Send;
    /// Charges what a request cost.
    fn spent(&self, points: u64);
}

/// No limit (tests, and tools that do not talk to Atlassian's quota).
pub struct Unlimited;

impl Budget for Unlimited {
    async fn before(&self) -> Result<(), BudgetError> {
        Ok(())
    }
    fn spent(&self, _: u64) {}
}

/// The shared bucket.
pub struct SharedBudget<'a, S> {
    store: &'a S,
    name: String,
    limits: BudgetLimits,
    /// Points drawn from the bucket and not yet charged (negative: overdrawn by the last page).
    balance: Mutex<i64>,
    /// How much to draw at once, and the longest wait for a refill before giving up.
    pub chunk: u64,
    pub max_wait: Duration,
}

impl<'a, S: BudgetStore> SharedBudget<'a, S> {
    pub fn new(store: &'a S, name: &str, limits: BudgetLimits) -> Self {
        Self {
            store,
            name: name.to_owned(),
            limits,
            balance: Mutex::new(0),
            chunk: 500,
            max_wait: Duration::from_secs(5),
        }
    }

    fn balance(&self) -> i64 {
        *self.balance.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: BudgetStore> Budget for SharedBudget<'_, S> {
    async fn before(&self) -> Result<(), BudgetError> {
        loop {
            let balance = self.balance();
            if balance > 0 {
                return Ok(());
            }
            let wanted = self.chunk.max(balance.unsigned_abs() + 1);
            let take = self.store.take_points(&self.name, self.limits, wanted, OffsetDateTime::now_utc()).await?;
            if take.granted > 0 {
                *self.balance.lock().unwrap_or_else(|p| p.into_inner()) += take.granted as i64;
                continue;
            }
            let wait = take.wait.unwrap_or(Duration::from_secs(1));
            if wait > self.max_wait {
                return Err(BudgetError::Exhausted(wait));
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn spent(&self, points: u64) {
        *self.balance.lock().unwrap_or_else(|p| p.into_inner()) -= points as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::MemoryStore;

    #[tokio::test]
    async fn draws_in_chunks_and_stops_when_dry() {
        let store = MemoryStore::new();
        let budget = SharedBudget::new(&store, "app", BudgetLimits { per_hour: 36, burst: 1000 });
        // 1,000 points of burst: two chunks of 500 cover ten requests of 100.
        for _ in 0..10 {
            budget.before().await.unwrap();
            budget.spent(100);
        }
        // The bucket is dry and refills at 36 points an hour: too slow to wait for.
        assert!(matches!(budget.before().await, Err(BudgetError::Exhausted(wait)) if wait > Duration::from_secs(60)));
    }

    #[tokio::test]
    async fn an_overdraft_is_paid_back_first() {
        let store = MemoryStore::new();
        let budget = SharedBudget::new(&store, "app", BudgetLimits { per_hour: 36, burst: 3000 });
        budget.before().await.unwrap();
        budget.spent(2001); // a users page of 1,000 costs more than one chunk
        budget.before().await.unwrap();
        assert!(budget.balance() > 0);
        let left = store
            .take_points("app", BudgetLimits { per_hour: 36, burst: 3000 }, 10_000, OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert!(left.granted <= 3000 - 2002, "the overdraft was drawn from the shared bucket: {left:?}");
    }
}
