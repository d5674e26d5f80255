//! Closing a complete run: one pass over the stored partition finds what no site saw (gone upstream) and corrects
//! users' `sites`. Only a run that read every site to its natural end gets here, so a run cut short never decides a
//! deletion.
//!
//! Deletions then pass a guard: a truncated read upstream (a capped page taken for the last, a listing that
//! silently stops) looks exactly like a mass deletion. When a run would mark more than
//! [`DeletionGuard::max_share`] of the live objects deleted (and at least [`DeletionGuard::min_count`]), it holds
//! them, records what it held (count and a digest of the keys) and says so in its run record. A later complete run
//! that would delete the very same set confirms them; a different set is held afresh. A run whose listing kept moving
//! under it (see [`crate::sources::overlap`]) holds its deletions whatever their share.

use super::{Run, SyncError};
use crate::seen::SeenSet;
use store::mirror::{MirrorStore, ObjectType, Scope, fingerprint};
use store::{CheckpointStore, HeldDeletions, RunCounts};

/// When a complete run's deletions need a second opinion.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletionGuard {
    /// Hold deletions of more than this share of the live objects (0.5: half).
    pub max_share: f64,
    /// ... when they are at least this many (a small org losing 3 of its 4 spaces is ordinary churn).
    pub min_count: u64,
    /// What the previous complete run of this type held, if anything: the same set again confirms it.
    pub held: Option<HeldDeletions>,
}

impl Default for DeletionGuard {
    fn default() -> Self {
        Self { max_share: 0.5, min_count: 10, held: None }
    }
}

impl DeletionGuard {
    fn holds(&self, gone: &HeldDeletions) -> bool {
        let over = gone.count >= self.min_count && gone.count as f64 > self.max_share * gone.of as f64;
        over && self.held.as_ref().is_none_or(|held| held.digest != gone.digest)
    }
}

/// A digest of a set of keys, independent of their order.
fn digest(keys: &[String]) -> String {
    let mut fingerprints: Vec<u64> = keys.iter().map(|k| fingerprint(k)).collect();
    fingerprints.sort_unstable();
    let bytes: Vec<u8> = fingerprints.iter().flat_map(|f| f.to_be_bytes()).collect();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl<M: MirrorStore, C: CheckpointStore> Run<'_, M, C> {
    /// After a complete read: marks what no site saw as deleted (unless the guard holds it) and corrects users'
    /// `sites`. Answers what was held, if anything.
    pub(super) async fn close(
        &self,
        scope: &Scope,
        progress: &super::Progress,
        seen: &SeenSet,
        counts: &mut RunCounts,
    ) -> Result<Option<HeldDeletions>, SyncError> {
        let sites = &progress.sites;
        if !self.gate.open().await? {
            return Err(SyncError::Revoked);
        }
        let (mut cursor, mut gone, mut live) = (None::<String>, Vec::new(), 0u64);
        loop {
            let (page, next) = self.mirror.list(scope, cursor.as_deref(), 1000).await?;
            let mut writes = Vec::new();
            for mut object in page.into_iter().filter(|o| !o.deleted) {
                live += 1;
                let on: Vec<usize> = seen.sites_of(&object.key);
                if on.is_empty() {
                    gone.push(object.key);
                    continue;
                }
                if self.object_type == ObjectType::Users {
                    let sites = self.source.user_sites(on.iter().map(|&i| sites[i].clone()).collect());
                    if object.record.get("sites") != Some(&sites) {
                        object.record.insert("sites".into(), sites);
                        object.synced_at = self.now;
                        writes.push(object);
                    }
                }
            }
            if !writes.is_empty() {
                self.mirror.write(scope, &writes).await?;
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        if gone.is_empty() {
            return Ok(None);
        }
        let found = HeldDeletions { count: gone.len() as u64, of: live, digest: digest(&gone) };
        // A run whose listing moved more often than it read again cannot tell what it skipped from what is gone.
        if progress.unsettled || self.guard.holds(&found) {
            tracing::warn!(
                connection_id = self.connection_id,
                object_type = self.object_type.as_str(),
                held = found.count,
                of = found.of,
                unsettled = progress.unsettled,
                "deletions held: too many at once, or the listing moved; a later run that sees the same confirms them"
            );
            counts.held = found.count;
            return Ok(Some(found));
        }
        for keys in gone.chunks(100) {
            let mut objects: Vec<_> = self.mirror.objects(scope, keys).await?.into_values().collect();
            for object in &mut objects {
                object.deleted = true;
                object.synced_at = self.now;
            }
            counts.deleted += objects.len() as u64;
            self.mirror.write(scope, &objects).await?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_holds_mass_deletions_until_the_same_set_comes_again() {
        let keys: Vec<String> = (0..40).map(|i| format!("acc-{i}")).collect();
        let mut shuffled = keys.clone();
        shuffled.reverse();
        assert_eq!(digest(&keys), digest(&shuffled), "order does not matter");
        assert_ne!(digest(&keys), digest(&keys[1..]));

        let forty_of_fifty = HeldDeletions { count: 40, of: 50, digest: digest(&keys) };
        let guard = DeletionGuard::default();
        assert!(guard.holds(&forty_of_fifty));
        let confirmed = DeletionGuard { held: Some(forty_of_fifty.clone()), ..DeletionGuard::default() };
        assert!(!confirmed.holds(&forty_of_fifty), "the same set twice is confirmed");
        let other = HeldDeletions { digest: digest(&keys[1..]), count: 39, ..forty_of_fifty.clone() };
        assert!(confirmed.holds(&other), "a different set is held afresh");
        assert!(!guard.holds(&HeldDeletions { count: 25, of: 50, ..forty_of_fifty.clone() }), "half is not over half");
        assert!(!guard.holds(&HeldDeletions { count: 3, of: 4, ..forty_of_fifty }), "too few to matter");
    }
}
