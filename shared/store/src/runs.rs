//! Run records: the latest run of each object type of a connection, stored beside the connection
//! (`pk = CONN#<id>`, `sk = RUN#<type>`), so one query returns a connection and its sync status. A running record
//! holds a lease: at most one run per (connection, type) at a time, and a crashed run's lease lapses. A `waiting`
//! run (paused for the points quota, or backing off after a transient failure) keeps its lease until it resumes.

use crate::mirror::ObjectType;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// Paused until `waiting_until`: the points quota is spent, or a transient failure is backing off. Its
    /// continuation is queued with that delay.
    Waiting,
    Succeeded,
    Failed,
    NeedsReauth,
    NotAvailable,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    pub pages: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    /// Quota points Atlassian charges for what was read (1 a request, +2 a user or group, +1 a project or space).
    pub points: u64,
    /// Deletions the run would have marked but held back (see [`HeldDeletions`]).
    #[serde(default)]
    pub held: u64,
}

impl RunStatus {
    /// Whether a run in this status still holds its lease (it will resume).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Running | Self::Waiting)
    }
}

/// Deletions a complete run held back because they were too many at once (a truncated read upstream looks exactly
/// like a mass deletion); a later run that would delete the very same set confirms them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDeletions {
    pub count: u64,
    /// Of how many live objects.
    pub of: u64,
    /// A digest of the held keys, to tell the same set again.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub object_type: ObjectType,
    pub run_id: String,
    pub status: RunStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub counts: RunCounts,
    /// What went wrong (or why the run waits, or what it held back), for people: a short message, never the
    /// internal cause chain (that is in the logs).
    #[serde(default)]
    pub error: Option<String>,
    /// A stable code for `error`: `quota_wait`, `rate_limited`, `atlassian_error`, `store_error`, `token_refused`,
    /// `token_refresh_failed`, `deletions_held`, `not_available`, `needs_reauth`, `internal_error`. (A `waiting` run
    /// with `atlassian_error` or `store_error` retries after a backoff.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Epoch milliseconds until which a running record is owned by its run.
    #[serde(default)]
    pub lease_until_ms: i64,
    /// While `waiting`: when the run resumes (an estimate; the quota may need longer).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub waiting_until: Option<OffsetDateTime>,
    /// When a run of this type last succeeded (carried from run to run).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub last_succeeded_at: Option<OffsetDateTime>,
    /// Deletions held back by the last complete run, waiting for a later run to confirm them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_deletions: Option<HeldDeletions>,
}

impl RunRecord {
    /// A new run's record: running, holding its lease until `lease_until_ms`.
    pub fn running(object_type: ObjectType, run_id: &str, started_at: OffsetDateTime, lease_until_ms: i64) -> Self {
        Self {
            object_type,
            run_id: run_id.to_owned(),
            status: RunStatus::Running,
            started_at,
            finished_at: None,
            counts: RunCounts::default(),
            error: None,
            error_code: None,
            lease_until_ms,
            waiting_until: None,
            last_succeeded_at: None,
            held_deletions: None,
        }
    }
}
