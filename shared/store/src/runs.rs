//! Run records: the latest run of each object type of a connection, stored beside the connection
//! (`pk = CONN#<id>`, `sk = RUN#<type>`), so one query returns a connection and its sync status. A running record
//! holds a lease: at most one run per (connection, type) at a time, and a crashed run's lease lapses.

use crate::mirror::ObjectType;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
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
    #[serde(default)]
    pub error: Option<String>,
    /// Epoch milliseconds until which a running record is owned by its run.
    #[serde(default)]
    pub lease_until_ms: i64,
}
