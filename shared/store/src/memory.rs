//! An in-memory store with the same semantics as [`crate::DynamoStore`], for unit tests of the layers above.

use crate::{
    CompleteError, ConnectSession, Connection, ConnectionStore, OAuthState, SessionStore, StateStore, StoreError,
};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, ConnectSession>,
    states: HashMap<String, OAuthState>,
    connections: HashMap<String, Connection>,
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

impl SessionStore for MemoryStore {
    async fn put_session(&self, session: &ConnectSession) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(&session.id_hash) {
            return Err(StoreError::Dynamo("session already exists".into()));
        }
        inner.sessions.insert(session.id_hash.clone(), session.clone());
        Ok(())
    }

    async fn get_session(&self, id_hash: &str) -> Result<Option<ConnectSession>, StoreError> {
        Ok(self.lock().sessions.get(id_hash).cloned())
    }
}

impl StateStore for MemoryStore {
    async fn put_state(&self, state: &OAuthState) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.states.contains_key(&state.state_hash) {
            return Err(StoreError::Dynamo("state already exists".into()));
        }
        inner.states.insert(state.state_hash.clone(), state.clone());
        Ok(())
    }

    async fn take_state(&self, state_hash: &str) -> Result<Option<OAuthState>, StoreError> {
        Ok(self.lock().states.remove(state_hash))
    }
}

impl ConnectionStore for MemoryStore {
    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        Ok(self.lock().connections.get(id).cloned())
    }

    async fn list_connections(&self, tenant_id: &str) -> Result<Vec<Connection>, StoreError> {
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
        let mut inner = self.lock();
        match inner.sessions.get_mut(session_id_hash) {
            Some(session) if session.used_at.is_none() => session.used_at = Some(connection.updated_at),
            _ => return Err(CompleteError::SessionUsed),
        }
        let mut stored = connection.clone();
        if let Some(existing) = inner.connections.get(&connection.connection_id) {
            stored.created_at = existing.created_at;
            stored.token_version = existing.token_version + 1;
        } else {
            stored.token_version = 1;
        }
        inner.connections.insert(stored.connection_id.clone(), stored.clone());
        Ok(stored)
    }
}
