//! Helpers for the engine, integration, end-to-end and load tests; the Atlassian sandbox (its own crate) under its
//! old name.

pub use atlassian_sandbox as sandbox;

pub mod harness;
