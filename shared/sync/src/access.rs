//! The access token an OAuth run reads with. One invocation may read for up to 15 minutes, and a token that was
//! fresh by the refresh margin when the run started can run out halfway; so before each request the run asks for
//! a token valid for at least the rest of its invocation, and [`Refreshing`] refreshes it (rotation-safely, through
//! `tokens::refresh`) only when the one it holds would not last.

use crate::engine::SyncError;
use atlassian::{AccessToken, AtlassianApi};
use futures_util::future::BoxFuture;
use std::sync::Mutex;
use store::{ConnectionStore, CredentialStore};
use time::OffsetDateTime;
use tokens::KeyRing;
use tokens::refresh::{self, Fresh, RefreshPolicy};

/// Where a run gets its access token.
pub trait TokenSource: Send + Sync {
    /// A token still valid `valid_for` from now.
    fn token(&self, valid_for: std::time::Duration) -> BoxFuture<'_, Result<AccessToken, SyncError>>;
}

/// A fixed token (tests, benchmarks, tools).
impl TokenSource for AccessToken {
    fn token(&self, _: std::time::Duration) -> BoxFuture<'_, Result<AccessToken, SyncError>> {
        Box::pin(async move { Ok(self.clone()) })
    }
}

/// The connection's stored token, refreshed when it would not last.
pub struct Refreshing<'a, S, A> {
    pub store: &'a S,
    pub atlassian: &'a A,
    pub keys: &'a KeyRing,
    pub policy: &'a RefreshPolicy,
    pub connection_id: &'a str,
    /// Names this invocation in the refresh lease.
    pub owner: String,
    held: Mutex<Option<Fresh>>,
}

impl<'a, S, A> Refreshing<'a, S, A> {
    pub fn new(
        store: &'a S,
        atlassian: &'a A,
        keys: &'a KeyRing,
        policy: &'a RefreshPolicy,
        connection_id: &'a str,
        owner: String,
    ) -> Self {
        Self { store, atlassian, keys, policy, connection_id, owner, held: Mutex::new(None) }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Fresh>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: ConnectionStore + CredentialStore, A: AtlassianApi> Refreshing<'_, S, A> {
    /// Atlassian refused the token this run holds although it had not expired: replaces it (a refresh, unless
    /// someone already did), so a revoked grant is found out now (`RefreshError::NeedsReauth`), not in an hour.
    pub async fn after_refusal(&self) -> Result<(), SyncError> {
        let Some(refused) = self.held().as_ref().map(|f| f.token.clone()) else { return Ok(()) };
        let fresh = refresh::replace_refused(
            self.store,
            self.atlassian,
            self.keys,
            self.policy,
            self.connection_id,
            &self.owner,
            &refused,
        )
        .await?;
        *self.held() = Some(fresh);
        Ok(())
    }
}

impl<S: ConnectionStore + CredentialStore, A: AtlassianApi> TokenSource for Refreshing<'_, S, A> {
    fn token(&self, valid_for: std::time::Duration) -> BoxFuture<'_, Result<AccessToken, SyncError>> {
        Box::pin(async move {
            let valid_for = time::Duration::try_from(valid_for).unwrap_or(time::Duration::MAX);
            let now = OffsetDateTime::now_utc();
            if let Some(fresh) = self.held().as_ref()
                && fresh.expires_at - now > valid_for.max(self.policy.margin)
            {
                return Ok(fresh.token.clone());
            }
            let fresh = refresh::access_token_for(
                self.store,
                self.atlassian,
                self.keys,
                self.policy,
                self.connection_id,
                &self.owner,
                valid_for,
            )
            .await?;
            let token = fresh.token.clone();
            *self.held() = Some(fresh);
            Ok(token)
        })
    }
}
