//! An in-memory store with the same semantics as [`crate::DynamoStore`], for unit tests of the layers above.

use crate::{
    CompleteError, ConnectSession, Connection, ConnectionStatus, ConnectionStore, CredentialStore, OAuthState,
    SealedCredentials, SessionStore, StateStore, StoreError,
};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use time::OffsetDateTime;

mod mirror;

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

/// A checkpoint header (if saved) and every chunk written for it, listed or not.
type CheckpointSlot = (Option<crate::Checkpoint>, HashMap<String, Vec<u8>>);

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, ConnectSession>,
    states: HashMap<String, OAuthState>,
    connections: HashMap<String, Connection>,
    leases: HashMap<String, (String, OffsetDateTime)>,
    buckets: HashMap<String, crate::budget::BucketState>,
    mirror: HashMap<crate::Scope, std::collections::BTreeMap<String, crate::MirrorObject>>,
    /// Big groups' member chunks, by (scope, group key) and bucket.
    members: HashMap<(crate::Scope, String), std::collections::BTreeMap<u32, Vec<String>>>,
    runs: HashMap<(String, crate::ObjectType), crate::RunRecord>,
    /// Per (connection, type): the header, and every chunk written under it (listed or not).
    checkpoints: HashMap<(String, crate::ObjectType), CheckpointSlot>,
    /// The ids of the events put on the bus.
    published: std::collections::HashSet<String>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in another test thread must not hide this one's result.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every connection, for assertions.
    pub fn connections(&self) -> Vec<Connection> {
        self.lock().connections.values().cloned().collect()
    }

    /// How many sessions were stored, for assertions.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// How many states are still unused, for assertions.
    pub fn state_count(&self) -> usize {
        self.lock().states.len()
    }
}

/// What DynamoDB refuses, refused here too (as DynamoDB's `ValidationException` would be): tests of the layers above
/// then meet the limits that their input checks exist for.
#[derive(Debug, thiserror::Error)]
#[error("DynamoDB would refuse this: {0}")]
pub struct BeyondDynamoLimits(&'static str);

/// A partition key is at most 2,048 bytes; an item at most 400 KB (approximated by its JSON).
fn within_limits(keys: &[&str], item: Option<&impl serde::Serialize>) -> Result<(), StoreError> {
    // The longest prefix the DynamoDB layout puts before a key (`SESSION#`, `TENANT#`…).
    const PREFIX: usize = 8;
    if keys.iter().any(|key| key.len() + PREFIX > 2048) {
        return Err(StoreError::dynamo(BeyondDynamoLimits("a key over 2,048 bytes")));
    }
    if item.is_some_and(|item| serde_json::to_vec(item).map_or(true, |bytes| bytes.len() > 400 * 1024)) {
        return Err(StoreError::dynamo(BeyondDynamoLimits("an item over 400 KB")));
    }
    Ok(())
}

impl SessionStore for MemoryStore {
    async fn put_session(&self, session: &ConnectSession) -> Result<(), StoreError> {
        within_limits(&[&session.id_hash, &session.tenant_id], Some(session))?;
        let mut inner = self.lock();
        if inner.sessions.contains_key(&session.id_hash) {
            return Err(StoreError::Exists("session"));
        }
        inner.sessions.insert(session.id_hash.clone(), session.clone());
        Ok(())
    }

    async fn get_session(&self, id_hash: &str) -> Result<Option<ConnectSession>, StoreError> {
        within_limits(&[id_hash], None::<&()>)?;
        Ok(self.lock().sessions.get(id_hash).cloned())
    }
}

impl StateStore for MemoryStore {
    async fn put_state(&self, state: &OAuthState) -> Result<(), StoreError> {
        within_limits(&[&state.state_hash], Some(state))?;
        let mut inner = self.lock();
        if inner.states.contains_key(&state.state_hash) {
            return Err(StoreError::Exists("state"));
        }
        inner.states.insert(state.state_hash.clone(), state.clone());
        Ok(())
    }

    async fn take_state(&self, state_hash: &str) -> Result<Option<OAuthState>, StoreError> {
        within_limits(&[state_hash], None::<&()>)?;
        Ok(self.lock().states.remove(state_hash))
    }
}

impl ConnectionStore for MemoryStore {
    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        within_limits(&[id], None::<&()>)?;
        Ok(self.lock().connections.get(id).cloned())
    }

    async fn list_connections(&self, tenant_id: &str) -> Result<Vec<Connection>, StoreError> {
        within_limits(&[tenant_id], None::<&()>)?;
        let mut found: Vec<_> =
            self.lock().connections.values().filter(|c| c.tenant_id == tenant_id).cloned().collect();
        found.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        Ok(found)
    }

    async fn complete_connect(
        &self,
        session_id_hash: &str,
        connection: &Connection,
    ) -> Result<Connection, CompleteError> {
        within_limits(&[&connection.connection_id, &connection.tenant_id], Some(connection))?;
        let mut inner = self.lock();
        match inner.sessions.get_mut(session_id_hash) {
            Some(session) if session.used_at.is_none() => session.used_at = Some(connection.updated_at),
            _ => return Err(CompleteError::SessionUsed),
        }
        Ok(upsert(&mut inner, connection))
    }

    async fn upsert_connection(&self, connection: &Connection) -> Result<Connection, StoreError> {
        within_limits(&[&connection.connection_id, &connection.tenant_id], Some(connection))?;
        Ok(upsert(&mut self.lock(), connection))
    }

    async fn replace_connection(
        &self,
        connection: &Connection,
        token_version: u64,
    ) -> Result<Option<Connection>, StoreError> {
        within_limits(&[&connection.connection_id, &connection.tenant_id], Some(connection))?;
        let mut inner = self.lock();
        match at_version(&mut inner, &connection.connection_id, token_version) {
            Some(stored) if stored.status != ConnectionStatus::Revoked => Ok(Some(upsert(&mut inner, connection))),
            _ => Ok(None),
        }
    }

    async fn update_sites(&self, id: &str, sites: &[crate::Site], now: OffsetDateTime) -> Result<(), StoreError> {
        if let Some(connection) = self.lock().connections.get_mut(id) {
            connection.sites = sites.to_vec();
            connection.updated_at = now;
        }
        Ok(())
    }

    async fn active_connections(&self, after: Option<&str>) -> Result<(Vec<String>, Option<String>), StoreError> {
        let mut ids: Vec<String> = self
            .lock()
            .connections
            .values()
            .filter(|c| c.status == ConnectionStatus::Active)
            .map(|c| c.connection_id.clone())
            .filter(|id| after.is_none_or(|a| id.as_str() > a))
            .collect();
        ids.sort();
        Ok((ids, None))
    }

    async fn revoke_connection(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        within_limits(&[id], None::<&()>)?;
        let mut inner = self.lock();
        let Some(connection) = inner.connections.get_mut(id) else { return Ok(false) };
        connection.credentials = SealedCredentials::default();
        connection.status = ConnectionStatus::Revoked;
        connection.status_reason = Some("disconnected through the management API".into());
        connection.token_version += 1;
        connection.updated_at = now;
        inner.leases.remove(id);
        Ok(true)
    }
}

/// The connection, if its `token_version` is still `expected` (the condition of every credentials write).
fn upsert(inner: &mut Inner, connection: &Connection) -> Connection {
    let mut stored = connection.clone();
    if let Some(existing) = inner.connections.get(&connection.connection_id) {
        stored.created_at = existing.created_at;
        stored.token_version = existing.token_version + 1;
    } else {
        stored.token_version = 1;
    }
    inner.connections.insert(stored.connection_id.clone(), stored.clone());
    stored
}

fn at_version<'a>(inner: &'a mut Inner, id: &str, expected: u64) -> Option<&'a mut Connection> {
    inner.connections.get_mut(id).filter(|c| c.token_version == expected)
}

impl CredentialStore for MemoryStore {
    async fn try_lease(
        &self,
        connection_id: &str,
        owner: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if !inner.connections.contains_key(connection_id) {
            return Ok(false);
        }
        if inner.leases.get(connection_id).is_some_and(|(holder, held_until)| *held_until >= now && holder != owner) {
            return Ok(false);
        }
        inner.leases.insert(connection_id.to_owned(), (owner.to_owned(), until));
        Ok(true)
    }

    async fn release_lease(&self, connection_id: &str, owner: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.leases.get(connection_id).is_some_and(|(holder, _)| holder == owner) {
            inner.leases.remove(connection_id);
        }
        Ok(())
    }

    async fn save_credentials(
        &self,
        connection_id: &str,
        expected_version: u64,
        credentials: &SealedCredentials,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(connection) = at_version(&mut inner, connection_id, expected_version) else { return Ok(false) };
        connection.credentials = credentials.clone();
        connection.token_version += 1;
        connection.updated_at = now;
        inner.leases.remove(connection_id);
        Ok(true)
    }

    async fn mark_needs_reauth(
        &self,
        connection_id: &str,
        expected_version: u64,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(connection) = at_version(&mut inner, connection_id, expected_version) else { return Ok(false) };
        connection.status = ConnectionStatus::NeedsReauth;
        connection.status_reason = Some(reason.to_owned());
        connection.updated_at = now;
        inner.leases.remove(connection_id);
        Ok(true)
    }
}

impl crate::EventLedger for MemoryStore {
    async fn published(&self, ids: &[String]) -> Result<std::collections::HashSet<String>, StoreError> {
        let inner = self.lock();
        Ok(ids.iter().filter(|id| inner.published.contains(*id)).cloned().collect())
    }

    async fn note_published(&self, ids: &[String], _: OffsetDateTime) -> Result<(), StoreError> {
        self.lock().published.extend(ids.iter().cloned());
        Ok(())
    }
}

impl crate::BudgetStore for MemoryStore {
    async fn take_points(
        &self,
        name: &str,
        limits: crate::budget::BudgetLimits,
        draw: crate::budget::Draw,
        now: OffsetDateTime,
    ) -> Result<crate::budget::Take, StoreError> {
        let mut inner = self.lock();
        let (state, take) = crate::budget::take(inner.buckets.get(name).copied(), limits, draw, now);
        inner.buckets.insert(name.to_owned(), state);
        Ok(take)
    }
}

impl crate::RunStore for MemoryStore {
    async fn try_start_run(
        &self,
        connection_id: &str,
        run: &crate::RunRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let key = (connection_id.to_owned(), run.object_type);
        let now_ms = crate::budget::epoch_ms(now);
        if let Some(current) = inner.runs.get(&key)
            && current.status.is_live()
            && current.lease_until_ms >= now_ms
            && current.run_id != run.run_id
        {
            return Ok(false);
        }
        inner.runs.insert(key, run.clone());
        Ok(true)
    }

    async fn save_run(&self, connection_id: &str, run: &crate::RunRecord) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let key = (connection_id.to_owned(), run.object_type);
        match inner.runs.get(&key) {
            Some(current) if current.run_id == run.run_id => {
                inner.runs.insert(key, run.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get_run(
        &self,
        connection_id: &str,
        object_type: crate::ObjectType,
    ) -> Result<Option<crate::RunRecord>, StoreError> {
        Ok(self.lock().runs.get(&(connection_id.to_owned(), object_type)).cloned())
    }

    async fn list_runs(&self, connection_id: &str) -> Result<Vec<crate::RunRecord>, StoreError> {
        let mut runs: Vec<_> =
            self.lock().runs.iter().filter(|((c, _), _)| c == connection_id).map(|(_, r)| r.clone()).collect();
        runs.sort_by_key(|r| r.object_type);
        Ok(runs)
    }
}

impl crate::CheckpointStore for MemoryStore {
    async fn load_checkpoint(
        &self,
        connection_id: &str,
        object_type: crate::ObjectType,
    ) -> Result<Option<crate::checkpoint::Saved>, StoreError> {
        let inner = self.lock();
        let Some((Some(header), chunks)) = inner.checkpoints.get(&(connection_id.to_owned(), object_type)) else {
            return Ok(None);
        };
        let bytes = header
            .chunks
            .iter()
            .map(|key| {
                chunks.get(key).cloned().ok_or_else(|| StoreError::Inconsistent("a checkpoint chunk is missing".into()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some((header.clone(), bytes)))
    }

    async fn save_checkpoint(
        &self,
        connection_id: &str,
        object_type: crate::ObjectType,
        base: &crate::Checkpoint,
        state: &str,
        seen: &[u8],
        _now: OffsetDateTime,
    ) -> Result<Option<crate::Checkpoint>, StoreError> {
        let mut inner = self.lock();
        let (header, chunks) = inner.checkpoints.entry((connection_id.to_owned(), object_type)).or_default();
        let mut keys = Vec::new();
        for (key, bytes) in crate::checkpoint::chunks(base, seen) {
            chunks.insert(key.clone(), bytes.to_vec());
            keys.push(key);
        }
        if !crate::checkpoint::is_base(header.as_ref(), base) {
            return Ok(None);
        }
        let next = crate::checkpoint::next(base, state, keys);
        *header = Some(next.clone());
        Ok(Some(next))
    }

    async fn clear_checkpoint(&self, connection_id: &str, object_type: crate::ObjectType) -> Result<(), StoreError> {
        self.lock().checkpoints.remove(&(connection_id.to_owned(), object_type));
        Ok(())
    }
}
