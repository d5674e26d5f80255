//! The Atlassian sandbox and helpers for the integration and end-to-end tests.

pub mod harness;
pub mod sandbox;
