//! Getting a valid access token without ever breaking a grant.
//!
//! Atlassian rotates refresh tokens: every refresh returns a new one and disables the one sent, and reusing a
//! disabled one outside a 10-minute leeway kills every token of the grant. So, per connection:
//!
//! 1. a token with more than [`RefreshPolicy::margin`] left is used as it is;
//! 2. otherwise one caller, across every concurrent Lambda, takes a short lease in DynamoDB; the others wait and
//!    re-read until the winner has written new tokens;
//! 3. the winner re-reads the stored credentials after taking the lease (another worker may have just refreshed),
//!    refreshes, and writes the new pair — keeping the old refresh token if the answer has none — with a write
//!    conditional on `token_version`, **before** anyone uses the new access token;
//! 4. `invalid_grant` / `unauthorized_client` turn the connection `needs_reauth` with the reason; a rejected client
//!    secret is a configuration error and leaves the connection alone;
//! 5. a refresh whose answer was lost (a timeout, a dropped connection, a 5xx) may have rotated the token at
//!    Atlassian already: the same refresh token is sent again within seconds, still holding the lease, well inside
//!    Atlassian's 10-minute reuse leeway. Left to a later run, the stored token could be past the leeway and its
//!    reuse would kill the whole grant.
//!
//! A caller that will use the token for a while (a sync run) asks for one valid for at least that long
//! ([`access_token_for`]), so a run never outlives its token.

use crate::credentials::{self, Credentials};
use crate::crypto::{CryptoError, KeyRing};
use atlassian::{AccessToken, AtlassianApi, OAuthError};
use store::{Connection, ConnectionStatus, ConnectionStore, CredentialStore, StoreError};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    /// Refresh when less than this is left of the access token (Atlassian's tokens live one hour).
    pub margin: Duration,
    /// How long a refresh lease lasts; longer than a token request can take, so it does not lapse mid-refresh.
    pub lease: Duration,
    /// How long a caller waits for someone else's refresh before giving up with [`RefreshError::Busy`].
    pub wait: Duration,
    /// How often a waiting caller re-reads the connection.
    pub poll: Duration,
    /// How many times a refresh whose answer was lost is sent again, and the first pause (doubling).
    pub lost_reply_retries: u32,
    pub lost_reply_backoff: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            margin: Duration::minutes(10),
            lease: Duration::seconds(30),
            wait: Duration::seconds(40),
            poll: Duration::milliseconds(100),
            lost_reply_retries: 3,
            lost_reply_backoff: Duration::seconds(1),
        }
    }
}

#[derive(Debug, Error)]
pub enum RefreshError {
    #[error("no connection has this id")]
    NotFound,
    /// The customer must connect again (revoked access, expired grant); the connection says why.
    #[error("the connection needs to be re-authorised: {reason}")]
    NeedsReauth { reason: String },
    #[error("Atlassian rejected the app's client credentials: check the OAuth client id and secret")]
    ClientRejected,
    #[error("another worker's refresh did not finish in time")]
    Busy,
    #[error("refreshing the token failed; try again later")]
    Transient(#[source] OAuthError),
    #[error("stored credentials could not be opened or sealed")]
    Crypto(#[source] CryptoError),
    #[error("the state store failed")]
    Store(#[from] StoreError),
}

impl RefreshError {
    /// Whether a later attempt may succeed without anyone's action.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Busy | Self::Transient(_) | Self::Store(_))
    }
}

/// A valid access token for the connection, refreshing it first if it expires within the policy's margin.
/// `owner` names the caller in the lease (a Lambda request id, say).
pub async fn access_token<S, A>(
    store: &S,
    atlassian: &A,
    keys: &KeyRing,
    policy: &RefreshPolicy,
    connection_id: &str,
    owner: &str,
) -> Result<AccessToken, RefreshError>
where
    S: ConnectionStore + CredentialStore,
    A: AtlassianApi,
{
    Ok(access_token_for(store, atlassian, keys, policy, connection_id, owner, Duration::ZERO).await?.token)
}

/// An access token and until when it is valid.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub token: AccessToken,
    pub expires_at: OffsetDateTime,
}

/// A token valid for at least `valid_for` (or the policy's margin, whichever is longer), refreshing it first if
/// needed. Atlassian's tokens live an hour, so asking for more than half of that is capped there.
pub async fn access_token_for<S, A>(
    store: &S,
    atlassian: &A,
    keys: &KeyRing,
    policy: &RefreshPolicy,
    connection_id: &str,
    owner: &str,
    valid_for: Duration,
) -> Result<Fresh, RefreshError>
where
    S: ConnectionStore + CredentialStore,
    A: AtlassianApi,
{
    obtain(store, atlassian, keys, policy, connection_id, owner, valid_for, None).await
}

/// A token to replace `refused`, which Atlassian answered 401 although it had not expired: the customer may have
/// revoked the app's access (Atlassian then refuses the refresh too, and the connection turns `needs_reauth` at
/// once, not when the token would have expired), or the token was revoked alone. Refreshes (rotation-safely) unless
/// the stored token is already another one.
pub async fn replace_refused<S, A>(
    store: &S,
    atlassian: &A,
    keys: &KeyRing,
    policy: &RefreshPolicy,
    connection_id: &str,
    owner: &str,
    refused: &AccessToken,
) -> Result<Fresh, RefreshError>
where
    S: ConnectionStore + CredentialStore,
    A: AtlassianApi,
{
    obtain(store, atlassian, keys, policy, connection_id, owner, Duration::ZERO, Some(refused)).await
}

#[allow(clippy::too_many_arguments)]
async fn obtain<S, A>(
    store: &S,
    atlassian: &A,
    keys: &KeyRing,
    policy: &RefreshPolicy,
    connection_id: &str,
    owner: &str,
    valid_for: Duration,
    refused: Option<&AccessToken>,
) -> Result<Fresh, RefreshError>
where
    S: ConnectionStore + CredentialStore,
    A: AtlassianApi,
{
    let policy = &RefreshPolicy { margin: policy.margin.max(valid_for.min(Duration::minutes(30))), ..policy.clone() };
    let deadline = OffsetDateTime::now_utc() + policy.wait;
    loop {
        let (connection, credentials) = read(store, keys, connection_id).await?;
        let now = OffsetDateTime::now_utc();
        if usable(&credentials, policy, now, refused) {
            return Ok(Fresh { token: credentials.access_token, expires_at: credentials.expires_at });
        }
        if store.try_lease(connection_id, owner, now, now + policy.lease).await? {
            let result = refresh_holding_lease(store, atlassian, keys, policy, connection_id, owner, refused).await;
            if !matches!(result, Ok(Leased::Saved(_))) {
                // Saving drops the lease; no other ending may leave the others waiting for it.
                store.release_lease(connection_id, owner).await?;
            }
            match result? {
                Leased::Saved(fresh) | Leased::AlreadyFresh(fresh) => return Ok(fresh),
                Leased::Moved => continue, // the stored version moved on under us: start from what is stored now
            }
        }
        if OffsetDateTime::now_utc() >= deadline {
            tracing::warn!(connection_id, token_version = connection.token_version, "gave up waiting for a refresh");
            return Err(RefreshError::Busy);
        }
        tokio_sleep(policy.poll).await;
    }
}

/// How a refresh under the lease ended.
enum Leased {
    /// New tokens were written (which dropped the lease).
    Saved(Fresh),
    /// Someone refreshed just before we took the lease.
    AlreadyFresh(Fresh),
    /// The stored version moved on meanwhile (a reconnect, or a refresh through a lapsed lease).
    Moved,
}

/// Holding the lease: re-read, and refresh only if still needed.
async fn refresh_holding_lease<S, A>(
    store: &S,
    atlassian: &A,
    keys: &KeyRing,
    policy: &RefreshPolicy,
    connection_id: &str,
    owner: &str,
    refused: Option<&AccessToken>,
) -> Result<Leased, RefreshError>
where
    S: ConnectionStore + CredentialStore,
    A: AtlassianApi,
{
    let (connection, credentials) = read(store, keys, connection_id).await?;
    let now = OffsetDateTime::now_utc();
    if usable(&credentials, policy, now, refused) {
        return Ok(Leased::AlreadyFresh(Fresh { token: credentials.access_token, expires_at: credentials.expires_at }));
    }
    let Some(refresh_token) = credentials.refresh_token.clone() else {
        return reauth(store, &connection, "Atlassian gave no refresh token (offline_access missing)", now).await;
    };
    let mut answer = atlassian.refresh_token(&refresh_token).await;
    let mut pause = policy.lost_reply_backoff;
    for retry in 1..=policy.lost_reply_retries {
        if !matches!(answer, Err(OAuthError::Transport(_) | OAuthError::Protocol)) {
            break;
        }
        // The answer was lost, but Atlassian may have rotated the token: send the same one again now, inside the
        // reuse leeway, keeping the lease so nobody else refreshes meanwhile.
        tracing::warn!(connection_id, retry, "a refresh answer was lost; sending the same refresh token again");
        tokio_sleep(pause).await;
        pause *= 2;
        let now = OffsetDateTime::now_utc();
        if !store.try_lease(connection_id, owner, now, now + policy.lease).await? {
            return Ok(Leased::Moved);
        }
        answer = atlassian.refresh_token(&refresh_token).await;
    }
    match answer {
        Ok(grant) => {
            let expires_in = Duration::try_from(grant.expires_in).unwrap_or(Duration::HOUR);
            let renewed = Credentials {
                access_token: grant.access_token,
                // Atlassian occasionally omits the rotated token; the one we sent then stays valid.
                refresh_token: grant.refresh_token.or(Some(refresh_token)),
                expires_at: now + expires_in,
            };
            let sealed = credentials::seal(keys, connection_id, &renewed).map_err(RefreshError::Crypto)?;
            if store.save_credentials(connection_id, connection.token_version, &sealed, now).await? {
                tracing::info!(connection_id, "access token refreshed");
                Ok(Leased::Saved(Fresh { token: renewed.access_token, expires_at: renewed.expires_at }))
            } else {
                // Someone reconnected (or refreshed through a lapsed lease) meanwhile: their tokens win.
                tracing::warn!(connection_id, "credentials changed during a refresh; keeping the stored ones");
                Ok(Leased::Moved)
            }
        }
        Err(error @ OAuthError::InvalidGrant { .. }) => {
            tracing::warn!(connection_id, error = %error, "Atlassian refused the refresh token");
            reauth(
                store,
                &connection,
                "Atlassian refused the refresh token: the customer revoked access, the grant \
                expired (90 days idle or 365 days old), or the admin's password changed. Connect again.",
                now,
            )
            .await
        }
        Err(OAuthError::ClientRejected) => Err(RefreshError::ClientRejected),
        Err(error) => Err(RefreshError::Transient(error)),
    }
}

async fn reauth<S: CredentialStore>(
    store: &S,
    connection: &Connection,
    reason: &str,
    now: OffsetDateTime,
) -> Result<Leased, RefreshError> {
    if store.mark_needs_reauth(&connection.connection_id, connection.token_version, reason, now).await? {
        Err(RefreshError::NeedsReauth { reason: reason.to_owned() })
    } else {
        Ok(Leased::Moved)
    }
}

async fn read<S: ConnectionStore>(
    store: &S,
    keys: &KeyRing,
    connection_id: &str,
) -> Result<(Connection, Credentials), RefreshError> {
    let connection = store.get_connection(connection_id).await?.ok_or(RefreshError::NotFound)?;
    if connection.status != ConnectionStatus::Active {
        let reason = connection.status_reason.clone().unwrap_or_else(|| "the connection is not active".into());
        return Err(RefreshError::NeedsReauth { reason });
    }
    let credentials = credentials::open(keys, connection_id, &connection.credentials).map_err(RefreshError::Crypto)?;
    Ok((connection, credentials))
}

fn fresh(credentials: &Credentials, policy: &RefreshPolicy, now: OffsetDateTime) -> bool {
    credentials.expires_at - now > policy.margin
}

/// Fresh, and not the token Atlassian just refused.
fn usable(
    credentials: &Credentials,
    policy: &RefreshPolicy,
    now: OffsetDateTime,
    refused: Option<&AccessToken>,
) -> bool {
    fresh(credentials, policy, now) && refused.is_none_or(|r| r.secret() != credentials.access_token.secret())
}

async fn tokio_sleep(duration: Duration) {
    tokio::time::sleep(std::time::Duration::try_from(duration).unwrap_or_default()).await;
}
