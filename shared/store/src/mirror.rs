//! The mirror: the synced copy of a connection's users, groups, projects and spaces.
//!
//! Objects live in their own table, one partition per (connection, object type), sorted by `<bucket>#<key>` where
//! the bucket is the first byte of the key's SHA-256: listing is stable and a partition can be walked in slices.
//! Each object carries its `record` (the fields the API shows), a `hash` of it, `deleted` and `synced_at`.
//!
//! A sync compares every fetched page with the stored hashes ([`MirrorStore::stored`], BatchGetItem, 100 keys a
//! call) and writes only what changed ([`MirrorStore::write`], BatchWriteItem, 25 a call, unprocessed items
//! retried), so re-syncing an unchanged org writes no object at all.

use crate::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectType {
    Users,
    Groups,
    Projects,
    Spaces,
}

impl ObjectType {
    pub const ALL: [ObjectType; 4] = [Self::Users, Self::Groups, Self::Projects, Self::Spaces];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Groups => "groups",
            Self::Projects => "projects",
            Self::Spaces => "spaces",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// Which partition: one connection's objects of one type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub connection_id: String,
    pub object_type: ObjectType,
}

impl Scope {
    pub fn new(connection_id: &str, object_type: ObjectType) -> Self {
        Self { connection_id: connection_id.to_owned(), object_type }
    }
}

/// An object as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorObject {
    /// `account_id` for users, `<cloud_id>#<id>` for the others.
    pub key: String,
    /// The fields the API shows, by the names the API uses.
    pub record: Map<String, Value>,
    /// [`content_hash`] of `record`.
    pub hash: String,
    pub deleted: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub synced_at: OffsetDateTime,
}

impl MirrorObject {
    pub fn new(key: String, record: Map<String, Value>, synced_at: OffsetDateTime) -> Self {
        let hash = content_hash(&record);
        Self { key, record, hash, deleted: false, synced_at }
    }
}

/// What a comparison needs of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub hash: String,
    pub deleted: bool,
}

/// the first 128 bits of SHA-256 (hex) of the record's canonical JSON (`serde_json` maps are sorted by key).
pub fn content_hash(record: &Map<String, Value>) -> String {
    let json = serde_json::to_string(record).unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, json.as_bytes());
    digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The bucket of a key: the first byte of its SHA-256.
pub fn bucket(key: &str) -> u8 {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes()).as_ref()[0]
}

/// A 64-bit fingerprint of a key, for a run's compact seen-set.
pub fn fingerprint(key: &str) -> u64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    u64::from_be_bytes(digest.as_ref()[..8].try_into().expect("8 bytes"))
}

/// An opaque position in a partition listing.
pub type Cursor = String;

pub trait MirrorStore: Send + Sync {
    /// The stored hash and deletion flag of each of `keys` that exists.
    fn stored(
        &self,
        scope: &Scope,
        keys: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Stored>, StoreError>> + Send;

    /// The whole stored objects of each of `keys` that exists (to enrich another connection's objects).
    fn objects(
        &self,
        scope: &Scope,
        keys: &[String],
    ) -> impl Future<Output = Result<HashMap<String, MirrorObject>, StoreError>> + Send;

    /// Writes (creates or replaces) the objects.
    fn write(&self, scope: &Scope, objects: &[MirrorObject]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One page of the partition in key order, and where the next starts.
    fn list(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<MirrorObject>, Option<Cursor>), StoreError>> + Send;

    /// Removes every object of the partition (a disconnect).
    fn clear(&self, scope: &Scope) -> impl Future<Output = Result<usize, StoreError>> + Send;
}
