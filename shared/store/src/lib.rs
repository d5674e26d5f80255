//! DynamoDB state behind narrow traits.
//!
//! One table holds everything (single-table design, see the README's "Table design"): connect sessions and OAuth
//! states are short-lived items with a `ttl` attribute, connections are long-lived. Each capability is its own trait
//! so a function depends only on what it uses, and [`MemoryStore`] gives tests the same semantics without AWS;
//! [`contract`] holds the tests both implementations must pass.
//!
//! Sessions and states are keyed by the SHA-256 of their secret value: the table never holds a value that would let
//! someone who reads it continue a connect flow.

pub mod budget;
pub mod checkpoint;
#[cfg(any(test, feature = "testing"))]
pub mod contract;
mod dynamo;
mod error;
#[cfg(any(test, feature = "testing"))]
mod memory;
pub mod mirror;
mod mirror_dynamo;
mod model;
pub mod runs;
pub mod tenant;

pub use checkpoint::{Checkpoint, CheckpointStore};
pub use dynamo::DynamoStore;
pub use error::{CompleteError, StoreError};
#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryStore;
pub use mirror::{MirrorObject, MirrorStore, ObjectType, Scope};
pub use mirror_dynamo::DynamoMirror;
pub use model::{
    ConnectSession, Connection, ConnectionMode, ConnectionStatus, OAuthState, Product, SealedCredentials, Site,
    Unavailable,
};
pub use runs::{HeldDeletions, RunCounts, RunRecord, RunStatus};

use std::collections::HashSet;
use std::future::Future;
use time::OffsetDateTime;

/// The longest id this connector keys items by (connection, group, org and run ids).
pub const MAX_ID: usize = 128;

/// An id as this connector keys items by it: 1 to [`MAX_ID`] of `A-Z a-z 0-9 . _ : -` (well inside DynamoDB's key
/// limit, and never a separator of the table's composite keys).
pub fn valid_id(value: &str) -> bool {
    (1..=MAX_ID).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Connect sessions, created by the management API and opened by `/connect`.
pub trait SessionStore: Send + Sync {
    /// Stores a new session; never overwrites one.
    fn put_session(&self, session: &ConnectSession) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn get_session(&self, id_hash: &str) -> impl Future<Output = Result<Option<ConnectSession>, StoreError>> + Send;
}

/// OAuth `state` values, each bound to one session and usable once.
pub trait StateStore: Send + Sync {
    fn put_state(&self, state: &OAuthState) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes the state and returns it, atomically: of two concurrent takes, exactly one gets `Some`.
    fn take_state(&self, state_hash: &str) -> impl Future<Output = Result<Option<OAuthState>, StoreError>> + Send;
}

/// The credentials of a connection as the token refresh sees them: a short lease serialises refreshes across every
/// concurrent Lambda, and writes are conditional on `token_version`, so a write based on stale credentials (another
/// worker refreshed, or the tenant reconnected) never lands.
pub trait CredentialStore: Send + Sync {
    /// Takes the connection's refresh lease for `owner` until `until`, unless someone else holds a live one (its
    /// holder may renew it).
    fn try_lease(
        &self,
        connection_id: &str,
        owner: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Drops `owner`'s lease (a no-op if it is not theirs any more).
    fn release_lease(&self, connection_id: &str, owner: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces the credentials if `token_version` is still `expected`: bumps the version and drops the lease.
    /// `false` when the version moved on (nothing written).
    fn save_credentials(
        &self,
        connection_id: &str,
        expected_version: u64,
        credentials: &SealedCredentials,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Turns the connection `needs_reauth` with a reason for people, if `token_version` is still `expected`;
    /// drops the lease. `false` when the version moved on (someone refreshed or reconnected meanwhile).
    fn mark_needs_reauth(
        &self,
        connection_id: &str,
        expected_version: u64,
        reason: &str,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The events already put on the bus, by id, kept longer than a stream keeps a record (two days): a stream record
/// delivered again gives no second event.
pub trait EventLedger: Send + Sync {
    /// Which of `ids` were put on the bus before.
    fn published(&self, ids: &[String]) -> impl Future<Output = Result<HashSet<String>, StoreError>> + Send;
    /// Notes `ids` as put on the bus at `now`.
    fn note_published(
        &self,
        ids: &[String],
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The points quota's pools (see [`budget`]).
pub trait BudgetStore: Send + Sync {
    /// Applies `draw` to the pool `name` (takes up to `draw.wanted` points, gives back, learns what Atlassian
    /// reported), atomically across every worker.
    fn take_points(
        &self,
        name: &str,
        limits: budget::BudgetLimits,
        draw: budget::Draw,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<budget::Take, StoreError>> + Send;
}

/// Run records (see [`runs`]).
pub trait RunStore: Send + Sync {
    /// Stores `run` as the running record of its type unless another run holds a live lease (`running` or
    /// `waiting`, lease not lapsed; a record with the same `run_id` may always be resumed). `false`: someone else is
    /// running.
    fn try_start_run(
        &self,
        connection_id: &str,
        run: &RunRecord,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Replaces the record of the same run (`false` if another run took over meanwhile).
    fn save_run(&self, connection_id: &str, run: &RunRecord) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The latest run of one type.
    fn get_run(
        &self,
        connection_id: &str,
        object_type: ObjectType,
    ) -> impl Future<Output = Result<Option<RunRecord>, StoreError>> + Send;

    /// The latest run of each type.
    fn list_runs(&self, connection_id: &str) -> impl Future<Output = Result<Vec<RunRecord>, StoreError>> + Send;
}

/// Connections, one per (tenant, Atlassian grant).
pub trait ConnectionStore: Send + Sync {
    fn get_connection(&self, id: &str) -> impl Future<Output = Result<Option<Connection>, StoreError>> + Send;
    fn list_connections(&self, tenant_id: &str) -> impl Future<Output = Result<Vec<Connection>, StoreError>> + Send;
    /// In one transaction: marks the session used (it must exist and be unused) and creates or updates the
    /// connection (keeping its `created_at`, bumping its `token_version`). Returns the stored connection.
    fn complete_connect(
        &self,
        session_id_hash: &str,
        connection: &Connection,
    ) -> impl Future<Output = Result<Connection, CompleteError>> + Send;

    /// Creates or updates a connection made without a connect session (an admin API key): keeps its `created_at`,
    /// bumps its `token_version`. Returns the stored connection.
    fn upsert_connection(&self, connection: &Connection)
    -> impl Future<Output = Result<Connection, StoreError>> + Send;

    /// Like [`ConnectionStore::upsert_connection`], on the condition that the stored connection is still at
    /// `token_version` and not revoked (what the caller read): `None` when it changed meanwhile (a disconnect, or
    /// another update), and nothing is written.
    fn replace_connection(
        &self,
        connection: &Connection,
        token_version: u64,
    ) -> impl Future<Output = Result<Option<Connection>, StoreError>> + Send;

    /// Replaces the connection's sites (as a sync found them in `accessible-resources`).
    fn update_sites(
        &self,
        id: &str,
        sites: &[Site],
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One page of the ids of every `active` connection (all tenants), for the scheduler.
    fn active_connections(
        &self,
        after: Option<&str>,
    ) -> impl Future<Output = Result<(Vec<String>, Option<String>), StoreError>> + Send;

    /// Disconnects: destroys the credentials, sets status `revoked` and bumps `token_version` (so an in-flight
    /// refresh cannot write tokens back). `false` if there is no such connection.
    fn revoke_connection(&self, id: &str, now: OffsetDateTime)
    -> impl Future<Output = Result<bool, StoreError>> + Send;
}
