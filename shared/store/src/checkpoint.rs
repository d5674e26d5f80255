//! Checkpoints of runs in progress, so a run that outgrows one Lambda invocation (or crashes) resumes where it was.
//!
//! A checkpoint is a small header (the run it belongs to, a version, the engine's own position and counts as
//! opaque JSON, and the list of its chunks) plus append-only binary chunks holding what the run has seen so far.
//! Each save writes only the bytes new since the last one, as chunks under fresh random keys, and then replaces the
//! header on the condition that its version did not move: if two invocations of the same run race (SQS delivers
//! at least once), the loser's save fails and its chunks are never listed, so they cannot corrupt the winner's.
//! Everything expires after [`CHECKPOINT_TTL`] in case a run is abandoned.

use crate::StoreError;
use crate::mirror::ObjectType;
use serde::{Deserialize, Serialize};
use std::future::Future;
use time::{Duration, OffsetDateTime};

/// The largest chunk written (DynamoDB items stop at 400 KB).
pub const CHUNK_BYTES: usize = 300 * 1024;

/// How long an abandoned checkpoint lingers.
pub const CHECKPOINT_TTL: Duration = Duration::days(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub run_id: String,
    /// 0 for a run that never saved; each save adds one.
    pub version: u64,
    /// The engine's position and counts, opaque to the store.
    pub state: String,
    /// The keys of this checkpoint's chunks, in the order they were appended.
    pub chunks: Vec<String>,
}

impl Checkpoint {
    /// Where a new run starts: nothing saved yet.
    pub fn fresh(run_id: &str) -> Self {
        Self { run_id: run_id.to_owned(), version: 0, state: String::new(), chunks: Vec::new() }
    }
}

/// A checkpoint with its chunks' bytes, in order.
pub type Saved = (Checkpoint, Vec<Vec<u8>>);

pub trait CheckpointStore: Send + Sync {
    /// The saved checkpoint of (connection, type) with its chunks' bytes in order; `None` if there is none.
    fn load_checkpoint(
        &self,
        connection_id: &str,
        object_type: ObjectType,
    ) -> impl Future<Output = Result<Option<Saved>, StoreError>> + Send;

    /// Appends `seen` (the bytes new since `base` was saved, split into chunks of at most [`CHUNK_BYTES`]) and
    /// replaces the header with `state`, if the stored checkpoint is still `base` (same run and version; a `base`
    /// of version 0 replaces another run's checkpoint or none). Returns the new checkpoint, or `None` when someone
    /// else saved meanwhile (nothing listed changed).
    fn save_checkpoint(
        &self,
        connection_id: &str,
        object_type: ObjectType,
        base: &Checkpoint,
        state: &str,
        seen: &[u8],
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<Checkpoint>, StoreError>> + Send;

    /// Removes the checkpoint of (connection, type) and every chunk under it.
    fn clear_checkpoint(
        &self,
        connection_id: &str,
        object_type: ObjectType,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The header that follows `base` after appending `chunks` new chunk keys.
pub(crate) fn next(base: &Checkpoint, state: &str, chunks: Vec<String>) -> Checkpoint {
    let mut all = if base.version == 0 { Vec::new() } else { base.chunks.clone() };
    all.extend(chunks);
    Checkpoint { run_id: base.run_id.clone(), version: base.version + 1, state: state.to_owned(), chunks: all }
}

/// `seen` cut into the chunks a save on top of `base` appends, each under a fresh key: unique even when two
/// invocations save the same version.
pub(crate) fn chunks<'a>(base: &Checkpoint, seen: &'a [u8]) -> Vec<(String, &'a [u8])> {
    seen.chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(part, bytes)| {
            let mut nonce = [0u8; 8];
            // A failing system RNG leaves zeros; the key still differs per version and part.
            let _ = aws_lc_rs::rand::fill(&mut nonce);
            let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
            (format!("{:010}-{part:04}-{nonce}", base.version + 1), bytes)
        })
        .collect()
}

/// Whether a stored header still is `base`, as a save requires (DynamoDB checks it in a condition expression).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn is_base(stored: Option<&Checkpoint>, base: &Checkpoint) -> bool {
    match stored {
        None => base.version == 0,
        Some(stored) if stored.run_id != base.run_id => base.version == 0,
        Some(stored) => stored.version == base.version,
    }
}
