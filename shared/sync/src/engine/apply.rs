//! Applying a page: compare each record with the stored hash and write only what is new or changed. The page's
//! counts are committed only once its writes landed, so a page that fails and is read again is never counted twice.
//! A big group's changed member chunks (and only those) are written before its record, so a record never names
//! chunks that are not there.

use super::{Run, State, SyncError};
use crate::records::MEMBER_CHUNKS;
use crate::records::Record;
use serde_json::Value;
use std::collections::HashSet;
use store::CheckpointStore;
use store::mirror::{MemberChunk, MirrorObject, MirrorStore, ObjectType, Scope, content_hash};

impl<M: MirrorStore, C: CheckpointStore> Run<'_, M, C> {
    /// Compares a page with the mirror, writes what is new or changed, and counts the page and its points.
    pub(super) async fn apply(
        &self,
        scope: &Scope,
        state: &mut State,
        records: Vec<Record>,
        (pages, points): (u64, u64),
    ) -> Result<(), SyncError> {
        let site = state.progress.site;
        let mut counts = state.progress.counts;
        counts.pages += pages;
        counts.points += points;
        let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
        let stored = self.mirror.stored(scope, &keys).await?;
        let mut writes = Vec::new();
        let mut chunked = Vec::new();
        for record in records {
            state.seen.insert(site, &record.key);
            let hash = content_hash(&record.fields);
            match stored.get(&record.key) {
                Some(s) if s.hash == hash && !s.deleted => counts.unchanged += 1,
                previous => {
                    if matches!(previous, Some(s) if !s.deleted) {
                        counts.updated += 1;
                    } else {
                        counts.created += 1;
                    }
                    if self.object_type == ObjectType::Groups && (record.chunks.is_some() || previous.is_some()) {
                        chunked.push((record.key.clone(), record.chunks.unwrap_or_default()));
                    }
                    let mut fields = record.fields;
                    if self.object_type == ObjectType::Users {
                        // Provisional: the closing pass sets the sites every site saw it on.
                        fields.insert("sites".into(), self.source.user_sites(vec![state.progress.sites[site].clone()]));
                    }
                    writes.push(MirrorObject {
                        key: record.key,
                        record: fields,
                        hash,
                        deleted: false,
                        synced_at: self.now,
                    });
                }
            }
        }
        if (!chunked.is_empty() || !writes.is_empty()) && !self.gate.open().await? {
            return Err(SyncError::Revoked);
        }
        if !chunked.is_empty() {
            self.write_chunks(scope, chunked).await?;
        }
        if !writes.is_empty() {
            self.mirror.write(scope, &writes).await?;
        }
        state.progress.counts = counts;
        Ok(())
    }

    /// Writes the member chunks of new or changed groups that differ from what their stored records name, and
    /// removes the chunks they no longer have (all of them, for a group that shrank back into its record).
    async fn write_chunks(&self, scope: &Scope, groups: Vec<(String, Vec<MemberChunk>)>) -> Result<(), SyncError> {
        let keys: Vec<String> = groups.iter().map(|(key, _)| key.clone()).collect();
        let stored = self.mirror.objects(scope, &keys).await?;
        for (key, chunks) in groups {
            let before = stored.get(&key).and_then(|o| o.record.get(MEMBER_CHUNKS)).and_then(Value::as_object);
            let now: HashSet<u32> = chunks.iter().map(|c| c.bucket).collect();
            let removed: Vec<u32> = before
                .map(|before| before.keys().filter_map(|b| b.parse().ok()).filter(|b| !now.contains(b)).collect())
                .unwrap_or_default();
            let changed: Vec<MemberChunk> = chunks
                .into_iter()
                .filter(|c| before.and_then(|b| b.get(&c.bucket.to_string())) != Some(&Value::from(c.hash())))
                .collect();
            if !changed.is_empty() || !removed.is_empty() {
                self.mirror.write_members(scope, &key, &changed, &removed).await?;
            }
        }
        Ok(())
    }
}
