//! Events for the product, derived from the tables' DynamoDB streams, so that no write path can forget one: every
//! connection change (connected, reconnected, needs re-authorisation, revoked, a site lost or added), every run's
//! end, and every change the mirror writes (an object created, updated with the fields that changed, deleted; a
//! group's members added and removed). Each event carries an `event_id` derived from the stream record, the same
//! however often the record is delivered: the publisher's ledger keeps a record delivered again from putting it on
//! the bus twice, and a consumer drops the rare duplicate (a crash between putting and noting) by it. One JSON Schema per detail-type is
//! in `docs/schemas` (described in `docs/events.md`); `make test` checks the events the end-to-end tests see
//! against them.

mod derive;
mod publish;
pub mod stream;

pub use derive::{DeriveError, derive};
pub use publish::{Bus, EventBridgeBus, PublishError, Published, Tenants, publish};

/// The `source` of every event on the bus.
pub const SOURCE: &str = "atlassian-connector";

/// Every `detail-type`, in `docs/events.md`'s order (`docs/schemas/index.json` has a schema for each).
pub const DETAIL_TYPES: &[&str] = &[
    CONNECTED,
    RECONNECTED,
    NEEDS_REAUTH,
    REVOKED,
    SITE_LOST,
    SITE_ADDED,
    RUN_FINISHED,
    OBJECT_CREATED,
    OBJECT_UPDATED,
    OBJECT_DELETED,
    MEMBERS_CHANGED,
];

pub const CONNECTED: &str = "Connection Connected";
pub const RECONNECTED: &str = "Connection Reconnected";
pub const NEEDS_REAUTH: &str = "Connection Needs Reauth";
pub const REVOKED: &str = "Connection Revoked";
pub const SITE_LOST: &str = "Connection Site Lost";
pub const SITE_ADDED: &str = "Connection Site Added";
pub const RUN_FINISHED: &str = "Sync Run Finished";
pub const OBJECT_CREATED: &str = "Object Created";
pub const OBJECT_UPDATED: &str = "Object Updated";
pub const OBJECT_DELETED: &str = "Object Deleted";
pub const MEMBERS_CHANGED: &str = "Group Members Changed";

/// One event: its `detail-type` and its `detail` (which names its connection in `connection_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub detail_type: &'static str,
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    pub fn connection_id(&self) -> &str {
        self.detail.get("connection_id").and_then(|v| v.as_str()).unwrap_or_default()
    }
    pub fn event_id(&self) -> &str {
        self.detail.get("event_id").and_then(|v| v.as_str()).unwrap_or_default()
    }
}
