//! Applying a page: compare each record with the stored hash and write only what is new or changed. The page's
//! counts are committed only once its writes landed, so a page that fails and is read again is never counted twice.

use super::{Run, State, SyncError};
use crate::budget::Budget;
use crate::records::Record;
use atlassian::{AdminApi, DirectoryApi};
use store::CheckpointStore;
use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope, content_hash};

impl<D: DirectoryApi + AdminApi, M: MirrorStore, B: Budget, C: CheckpointStore> Run<'_, D, M, B, C> {
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
                    let mut fields = record.fields;
                    if self.object_type == ObjectType::Users {
                        // Provisional: the closing pass sets the sites every site saw it on.
                        fields.insert("sites".into(), self.user_sites(vec![state.progress.sites[site].clone()]));
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
        if !writes.is_empty() {
            self.mirror.write(scope, &writes).await?;
        }
        state.progress.counts = counts;
        Ok(())
    }
}
