//! The sync of a connection's users, groups, Jira projects and Confluence spaces into the mirror.

pub mod access;
pub mod engine;
pub mod job;
pub mod records;
pub mod seen;
pub mod sources;

/// The job queue (its own crate, so that what only queues jobs does not link the engine).
pub use jobs as queue;

/// The points budget (its own crate, so that the proxy draws from the same pools without linking the engine).
pub use ::budget;
