//! Rules that span a tenant's connections and their mirrors.

use crate::mirror::{MirrorObject, MirrorStore, ObjectType, Scope};
use crate::{Connection, ConnectionMode, ConnectionStatus, ConnectionStore, StoreError};
use time::OffsetDateTime;

/// Users of an OAuth connection, enriched from the admin-key connections of the same tenant: the Admin API is the
/// org's own record, so its `email` (where it has one; Jira hides some) and `status` (`suspended`, `closed`, which
/// Jira cannot tell) take precedence; every other field stays the OAuth connection's. Done when read, so removing
/// either connection leaves the other exactly as its own sync made it.
pub async fn enrich_users<S: ConnectionStore, M: MirrorStore>(
    store: &S,
    mirror: &M,
    connection: &Connection,
    users: &mut [MirrorObject],
) -> Result<(), StoreError> {
    if connection.mode != ConnectionMode::Oauth || users.is_empty() {
        return Ok(());
    }
    let admins: Vec<Connection> = store
        .list_connections(&connection.tenant_id)
        .await?
        .into_iter()
        .filter(|c| c.mode == ConnectionMode::AdminApiKey && c.status != ConnectionStatus::Revoked)
        .collect();
    let keys: Vec<String> = users.iter().map(|u| u.key.clone()).collect();
    for admin in &admins {
        let known = mirror.objects(&Scope::new(&admin.connection_id, ObjectType::Users), &keys).await?;
        for user in users.iter_mut() {
            let Some(found) = known.get(&user.key).filter(|f| !f.deleted) else { continue };
            if let Some(email) = found.record.get("email").filter(|e| !e.is_null()) {
                user.record.insert("email".into(), email.clone());
            }
            if let Some(status) = found.record.get("status") {
                user.record.insert("status".into(), status.clone());
            }
        }
    }
    Ok(())
}

/// Disconnects: the tokens first (at once, in one write), then the mirrored data. `false`: no such connection.
pub async fn disconnect<S: ConnectionStore, M: MirrorStore>(
    store: &S,
    mirror: &M,
    id: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    if !store.revoke_connection(id, now).await? {
        return Ok(false);
    }
    for object_type in ObjectType::ALL {
        mirror.clear(&Scope::new(id, object_type)).await?;
    }
    Ok(true)
}
