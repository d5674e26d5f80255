//! The keys a run has seen, per site, as 64-bit fingerprints: 8 bytes a key, so even a 100,000-user org's
//! seen-set is under a megabyte and the worker's memory stays nearly flat as orgs grow. Deletions are decided at
//! the end of a complete run: a stored object whose fingerprint no site saw is gone upstream. (Two keys sharing a
//! fingerprint, odds about n²/2⁶⁵, would only delay one deletion to a later run.)

use store::mirror::fingerprint;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenSet {
    /// Per site index: sorted after [`SeenSet::seal`], in arrival order before.
    sites: Vec<Vec<u64>>,
    /// Per site index: how many fingerprints a checkpoint already holds.
    flushed: Vec<usize>,
}

impl SeenSet {
    pub fn new(sites: usize) -> Self {
        Self { sites: vec![Vec::new(); sites], flushed: vec![0; sites] }
    }

    /// Makes room for `sites` sites (a set read back from deltas has as many as its deltas named).
    pub fn grow(&mut self, sites: usize) {
        if self.sites.len() < sites {
            self.sites.resize(sites, Vec::new());
            self.flushed.resize(sites, 0);
        }
    }

    pub fn insert(&mut self, site: usize, key: &str) {
        if let Some(seen) = self.sites.get_mut(site) {
            seen.push(fingerprint(key));
        }
    }

    /// The fingerprints the sites before `site` saw (in any order).
    pub fn before(&self, site: usize) -> std::collections::HashSet<u64> {
        self.sites.iter().take(site).flatten().copied().collect()
    }

    /// The fingerprints `site` saw.
    pub fn at(&self, site: usize) -> std::collections::HashSet<u64> {
        self.sites.get(site).into_iter().flatten().copied().collect()
    }

    /// Sorts and dedupes, for lookups (idempotent).
    pub fn seal(&mut self) {
        for seen in &mut self.sites {
            seen.sort_unstable();
            seen.dedup();
        }
    }

    /// The site indexes that saw `key` (after [`SeenSet::seal`]).
    pub fn sites_of(&self, key: &str) -> Vec<usize> {
        let fp = fingerprint(key);
        self.sites.iter().enumerate().filter(|(_, seen)| seen.binary_search(&fp).is_ok()).map(|(i, _)| i).collect()
    }

    pub fn len(&self) -> usize {
        self.sites.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys seen since the last call, in a compact byte form for a checkpoint: the site count, then per site
    /// a count and big-endian fingerprints. A checkpoint appends these deltas; [`SeenSet::from_deltas`] reads
    /// them back. (Call before [`SeenSet::seal`], which reorders.)
    pub fn take_delta(&mut self) -> Vec<u8> {
        self.flushed.resize(self.sites.len(), 0);
        let new: usize = self.sites.iter().zip(&self.flushed).map(|(seen, &done)| seen.len() - done).sum();
        let mut bytes = Vec::with_capacity(4 + new * 8 + self.sites.len() * 4);
        bytes.extend_from_slice(&(self.sites.len() as u32).to_be_bytes());
        for (seen, done) in self.sites.iter().zip(&mut self.flushed) {
            bytes.extend_from_slice(&((seen.len() - *done) as u32).to_be_bytes());
            for fp in &seen[*done..] {
                bytes.extend_from_slice(&fp.to_be_bytes());
            }
            *done = seen.len();
        }
        bytes
    }

    /// The set a run of deltas describes (all of it counted as taken); `None` if the bytes are not deltas.
    pub fn from_deltas(bytes: &[u8]) -> Option<Self> {
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            *rest = tail;
            Some(head)
        }
        fn count(rest: &mut &[u8]) -> Option<usize> {
            Some(u32::from_be_bytes(take(rest, 4)?.try_into().ok()?) as usize)
        }
        let mut rest = bytes;
        let mut set = Self::new(0);
        while !rest.is_empty() {
            let sites = count(&mut rest)?;
            if set.sites.len() < sites {
                set.sites.resize(sites, Vec::new());
            }
            for seen in &mut set.sites[..sites] {
                let n = count(&mut rest)?;
                let fps = take(&mut rest, n.checked_mul(8)?)?;
                seen.extend(fps.chunks_exact(8).filter_map(|b| Some(u64::from_be_bytes(b.try_into().ok()?))));
            }
        }
        set.flushed = set.sites.iter().map(Vec::len).collect();
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_which_sites_saw_a_key() {
        let mut seen = SeenSet::new(3);
        seen.insert(0, "a");
        seen.insert(2, "a");
        seen.insert(1, "b");
        seen.insert(1, "b");
        seen.insert(7, "ignored: no such site");
        seen.seal();
        assert_eq!(seen.sites_of("a"), vec![0, 2]);
        assert_eq!(seen.sites_of("b"), vec![1]);
        assert!(seen.sites_of("c").is_empty());
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn deltas_append_compactly_and_read_back_whole() {
        let mut seen = SeenSet::new(2);
        let mut bytes = Vec::new();
        for i in 0..1000 {
            seen.insert(i % 2, &format!("acc-{i}"));
            if i % 300 == 299 {
                bytes.extend(seen.take_delta());
            }
        }
        bytes.extend(seen.take_delta());
        bytes.extend(seen.take_delta()); // an empty delta is harmless
        assert_eq!(bytes.len(), 5 * (4 + 2 * 4) + 1000 * 8, "8 bytes a key plus small headers");
        let mut back = SeenSet::from_deltas(&bytes).expect("deltas");
        assert_eq!(back.take_delta().len(), 4 + 2 * 4, "everything read back counts as taken");
        back.seal();
        seen.seal();
        assert_eq!(back.sites, seen.sites);
        assert!(back.sites_of("acc-7").contains(&1));
        assert_eq!(SeenSet::from_deltas(&bytes[..bytes.len() - 1]), None);
        assert_eq!(SeenSet::from_deltas(&[]).map(|s| s.len()), Some(0));
    }
}
