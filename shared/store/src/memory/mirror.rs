//! The in-memory mirror: objects by scope in key order, and big groups' member chunks.

use super::*;

fn sort_key(key: &str) -> String {
    format!("{:02x}#{key}", crate::mirror::bucket(key))
}

impl crate::MirrorStore for MemoryStore {
    async fn objects(
        &self,
        scope: &crate::Scope,
        keys: &[String],
    ) -> Result<HashMap<String, crate::MirrorObject>, StoreError> {
        let inner = self.lock();
        let Some(partition) = inner.mirror.get(scope) else { return Ok(HashMap::new()) };
        Ok(keys.iter().filter_map(|k| partition.get(&sort_key(k)).map(|o| (k.clone(), o.clone()))).collect())
    }

    async fn stored(
        &self,
        scope: &crate::Scope,
        keys: &[String],
    ) -> Result<HashMap<String, crate::mirror::Stored>, StoreError> {
        let inner = self.lock();
        let Some(partition) = inner.mirror.get(scope) else { return Ok(HashMap::new()) };
        Ok(keys
            .iter()
            .filter_map(|k| partition.get(&sort_key(k)))
            .map(|o| (o.key.clone(), crate::mirror::Stored { hash: o.hash.clone(), deleted: o.deleted }))
            .collect())
    }

    async fn write(&self, scope: &crate::Scope, objects: &[crate::MirrorObject]) -> Result<(), StoreError> {
        for object in objects {
            within_limits(&[&scope.connection_id, &object.key], Some(object))?;
        }
        let mut inner = self.lock();
        let partition = inner.mirror.entry(scope.clone()).or_default();
        for object in objects {
            partition.insert(sort_key(&object.key), object.clone());
        }
        Ok(())
    }

    async fn list(
        &self,
        scope: &crate::Scope,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<crate::MirrorObject>, Option<crate::mirror::Cursor>), StoreError> {
        let inner = self.lock();
        if after.is_some_and(|a| a.len() < 4 || a.as_bytes()[2] != b'#') {
            return Err(StoreError::InvalidCursor);
        }
        let Some(partition) = inner.mirror.get(scope) else { return Ok((Vec::new(), None)) };
        let start = after.map(|a| std::ops::Bound::Excluded(a.to_owned())).unwrap_or(std::ops::Bound::Unbounded);
        let mut page: Vec<(String, crate::MirrorObject)> = partition
            .range((start, std::ops::Bound::Unbounded))
            .take(limit + 1)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        let next = if more { page.last().map(|(k, _)| k.clone()) } else { None };
        Ok((page.into_iter().map(|(_, v)| v).collect(), next))
    }

    async fn clear(&self, scope: &crate::Scope) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        inner.members.retain(|(s, _), _| s != scope);
        Ok(inner.mirror.remove(scope).map(|p| p.len()).unwrap_or(0))
    }

    async fn write_members(
        &self,
        scope: &crate::Scope,
        key: &str,
        chunks: &[crate::mirror::MemberChunk],
        removed: &[u32],
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let group = inner.members.entry((scope.clone(), key.to_owned())).or_default();
        for bucket in removed {
            group.remove(bucket);
        }
        for chunk in chunks {
            group.insert(chunk.bucket, chunk.ids.clone());
        }
        Ok(())
    }

    async fn members(
        &self,
        scope: &crate::Scope,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<crate::mirror::Cursor>), StoreError> {
        let from = match after {
            None => (0, 0),
            Some(cursor) => crate::mirror::parse_members_cursor(cursor).ok_or(StoreError::InvalidCursor)?,
        };
        let inner = self.lock();
        let chunks: Vec<crate::mirror::MemberChunk> = inner
            .members
            .get(&(scope.clone(), key.to_owned()))
            .map(|group| {
                group
                    .iter()
                    .map(|(bucket, ids)| crate::mirror::MemberChunk { bucket: *bucket, ids: ids.clone() })
                    .collect()
            })
            .unwrap_or_default();
        Ok(crate::mirror::members_page(&chunks, from, limit, false))
    }
}
