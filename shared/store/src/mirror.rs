//! The mirror: the synced copy of a connection's users, groups, projects and spaces.
//!
//! Objects live in their own table, one partition per (connection, object type), sorted by `<bucket>#<key>` where
//! the bucket is the first byte of the key's SHA-256: listing is stable and a partition can be walked in slices.
//! Each object carries its `record` (the fields the API shows), a `hash` of it, `deleted` and `synced_at`.
//!
//! A sync compares every fetched page with the stored hashes ([`MirrorStore::stored`], BatchGetItem, 100 keys a
//! call) and writes only what changed ([`MirrorStore::write`], BatchWriteItem, 25 a call, unprocessed items
//! retried), so re-syncing an unchanged org writes no object at all.
//!
//! A group's members live in its record while there are at most [`INLINE_MEMBERS`] of them. A bigger group (every
//! user is in one: 16,000 members is 540 KB of account ids, past DynamoDB's 400 KB items) keeps them in member
//! chunks of its own partition: the ids are spread over a power-of-two number of buckets by fingerprint, about
//! [`CHUNK_MEMBERS`] a bucket, and the record keeps each bucket's hash. A member added or removed changes one bucket:
//! one small chunk is rewritten (and the record), never the whole list; an unchanged group writes nothing.

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

/// The field of a big group's record that keeps its chunks' hashes (bucket → hash); internal, not shown by the API.
pub const MEMBER_CHUNKS: &str = "member_chunks";

/// The most members a group record holds itself.
pub const INLINE_MEMBERS: usize = 1000;

/// About how many members a chunk holds.
pub const CHUNK_MEMBERS: usize = 128;

/// One bucket of a big group's members: its account ids, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberChunk {
    pub bucket: u32,
    pub ids: Vec<String>,
}

impl MemberChunk {
    /// The hash the group record keeps of this chunk.
    pub fn hash(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.ids.join("\n").as_bytes());
        digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The cursor of a members page: the bucket and the index in it where the next page starts.
pub fn members_cursor(bucket: u32, index: usize) -> Cursor {
    format!("{bucket}.{index}")
}

/// Reads a members cursor; `None` if it is not one.
pub fn parse_members_cursor(cursor: &str) -> Option<(u32, usize)> {
    let (bucket, index) = cursor.split_once('.')?;
    Some((bucket.parse().ok()?, index.parse().ok()?))
}

/// A page of members from chunks in bucket order, starting at `(bucket, index)`: the ids and the next cursor, if
/// there is more (in these chunks or `more` after them).
pub fn members_page(
    chunks: &[MemberChunk],
    from: (u32, usize),
    limit: usize,
    more: bool,
) -> (Vec<String>, Option<Cursor>) {
    let mut page = Vec::with_capacity(limit.min(1000));
    for chunk in chunks.iter().filter(|c| c.bucket >= from.0) {
        let start = if chunk.bucket == from.0 { from.1 } else { 0 };
        for (index, id) in chunk.ids.iter().enumerate().skip(start) {
            if page.len() == limit {
                return (page, Some(members_cursor(chunk.bucket, index)));
            }
            page.push(id.clone());
        }
    }
    let next = match chunks.last() {
        Some(last) if more => Some(members_cursor(last.bucket + 1, 0)),
        _ => None,
    };
    (page, next)
}

/// Spreads `ids` (sorted, unique) over buckets by fingerprint: a power of two of them, about [`CHUNK_MEMBERS`] ids
/// each, so one member more or less changes one bucket.
pub fn member_chunks(ids: &[String]) -> Vec<MemberChunk> {
    let buckets = ids.len().div_ceil(CHUNK_MEMBERS).max(1).next_power_of_two() as u64;
    let mut chunks: Vec<MemberChunk> =
        (0..buckets as u32).map(|bucket| MemberChunk { bucket, ids: Vec::new() }).collect();
    for id in ids {
        chunks[(fingerprint(id) % buckets) as usize].ids.push(id.clone());
    }
    chunks
}

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

    /// Removes every object of the partition (a disconnect), and groups' member chunks with them.
    fn clear(&self, scope: &Scope) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Writes these member chunks of the group `key` and removes its chunks in `removed`.
    fn write_members(
        &self,
        scope: &Scope,
        key: &str,
        chunks: &[MemberChunk],
        removed: &[u32],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One page of the chunked members of the group `key` (bucket by bucket), and where the next starts.
    fn members(
        &self,
        scope: &Scope,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<String>, Option<Cursor>), StoreError>> + Send;
}
