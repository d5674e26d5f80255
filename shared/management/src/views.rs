//! What the API shows: a connection without its credentials, and the latest run of each type with its schedule.

use crate::Cadences;
use serde::Serialize;
use std::collections::BTreeMap;
use store::mirror::ObjectType;
use store::{Connection, RunRecord, RunStatus};
use time::OffsetDateTime;

/// The latest run of an object type, as the API shows it.
#[derive(Serialize)]
pub struct RunView<'a> {
    pub status: RunStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub counts: Option<&'a store::RunCounts>,
    pub error: Option<std::borrow::Cow<'a, str>>,
    /// A stable code for `error` (see `store::RunRecord::error_code`).
    pub error_code: Option<&'a str>,
    /// While `waiting`: when the run resumes (an estimate: the quota may ask for longer).
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub waiting_until: Option<OffsetDateTime>,
    /// When a run of this type last succeeded.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_succeeded_at: Option<OffsetDateTime>,
    /// When the type is next due: a cadence after it last succeeded. In the past, the sync is behind its cadence
    /// (the quota cannot keep up, or runs fail).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_due_at: Option<OffsetDateTime>,
    /// Deletions held back until a later run confirms them (too many at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_deletions: Option<&'a store::HeldDeletions>,
}

/// What the API shows of a connection: everything but the credentials.
#[derive(Serialize)]
pub struct ConnectionView<'a> {
    pub connection_id: &'a str,
    pub tenant_id: &'a str,
    pub mode: store::ConnectionMode,
    pub status: store::ConnectionStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<&'a str>,
    pub sites: &'a [store::Site],
    pub scopes: &'a [String],
    /// The Atlassian account that consented (OAuth), or the site token's account (admin key).
    pub account_id: &'a str,
    /// The organization an admin key administers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<&'a str>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The latest run per object type; `null` for a type never run.
    pub sync: BTreeMap<&'static str, Option<RunView<'a>>>,
}

impl<'a> ConnectionView<'a> {
    pub fn new(c: &'a Connection, runs: &'a [RunRecord], cadences: &Cadences) -> Self {
        let sync = ObjectType::ALL
            .into_iter()
            .map(|object_type| {
                let view = match runs.iter().find(|r| r.object_type == object_type) {
                    Some(run) => Some(RunView {
                        status: run.status,
                        started_at: Some(run.started_at),
                        finished_at: run.finished_at,
                        counts: Some(&run.counts),
                        error: run.error.as_deref().map(std::borrow::Cow::Borrowed),
                        error_code: run.error_code.as_deref(),
                        waiting_until: run.waiting_until.filter(|_| run.status == RunStatus::Waiting),
                        last_succeeded_at: run.last_succeeded_at,
                        next_due_at: run
                            .last_succeeded_at
                            .zip(cadences.0.get(&object_type))
                            .map(|(succeeded, cadence)| succeeded + *cadence),
                        held_deletions: run.held_deletions.as_ref(),
                    }),
                    // Known before any run: the connection cannot sync this type, and why.
                    None => c.availability(object_type).err().map(|reason| RunView {
                        status: RunStatus::NotAvailable,
                        started_at: None,
                        finished_at: None,
                        counts: None,
                        error: Some(std::borrow::Cow::Owned(reason.to_string())),
                        error_code: Some("not_available"),
                        waiting_until: None,
                        last_succeeded_at: None,
                        next_due_at: None,
                        held_deletions: None,
                    }),
                };
                (object_type.as_str(), view)
            })
            .collect();
        Self {
            connection_id: &c.connection_id,
            tenant_id: &c.tenant_id,
            mode: c.mode,
            status: c.status,
            status_reason: c.status_reason.as_deref(),
            sites: &c.sites,
            scopes: &c.scopes,
            account_id: &c.account_id,
            org_id: c.org_id.as_deref(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            sync,
        }
    }
}
