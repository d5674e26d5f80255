//! The sync of a connection's users, groups, Jira projects and Confluence spaces into the mirror.

pub mod access;
pub mod budget;
pub mod engine;
pub mod job;
pub mod queue;
pub mod records;
pub mod seen;
