//! The keys a run has seen, per site, as 64-bit fingerprints: 8 bytes a key, so even a 100,000-user org's
//! seen-set is under a megabyte and the worker's memory stays nearly flat as orgs grow. Deletions are decided at
//! the end of a complete run: a stored object whose fingerprint no site saw is gone upstream. (Two keys sharing a
//! fingerprint, odds about n²/2⁶⁵, would only delay one deletion to a later run.)

use store::mirror::fingerprint;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenSet {
    /// Per site index: sorted after [`SeenSet::seal`], in arrival order before.
    sites: Vec<Vec<u64>>,
}

impl SeenSet {
    pub fn new(sites: usize) -> Self {
        Self { sites: vec![Vec::new(); sites] }
    }

    pub fn insert(&mut self, site: usize, key: &str) {
        if let Some(seen) = self.sites.get_mut(site) {
            seen.push(fingerprint(key));
        }
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

    /// A compact byte form for a checkpoint: per site, a count then big-endian fingerprints.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(4 + self.len() * 8 + self.sites.len() * 4);
        bytes.extend_from_slice(&(self.sites.len() as u32).to_be_bytes());
        for seen in &self.sites {
            bytes.extend_from_slice(&(seen.len() as u32).to_be_bytes());
            for fp in seen {
                bytes.extend_from_slice(&fp.to_be_bytes());
            }
        }
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
            rest = tail;
            Some(head)
        };
        let sites = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let mut set = Self::new(0);
        for _ in 0..sites {
            let count = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
            let mut seen = Vec::with_capacity(count);
            for _ in 0..count {
                seen.push(u64::from_be_bytes(take(8)?.try_into().ok()?));
            }
            set.sites.push(seen);
        }
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
    fn round_trips_through_bytes_compactly() {
        let mut seen = SeenSet::new(2);
        for i in 0..1000 {
            seen.insert(i % 2, &format!("acc-{i}"));
        }
        seen.seal();
        let bytes = seen.to_bytes();
        assert_eq!(bytes.len(), 4 + 2 * 4 + 1000 * 8);
        assert_eq!(SeenSet::from_bytes(&bytes), Some(seen));
        assert_eq!(SeenSet::from_bytes(&bytes[..bytes.len() - 1]), None);
    }
}
