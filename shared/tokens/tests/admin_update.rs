//! New credentials for an admin-key connection race a disconnect: the disconnect wins, whichever lands first.

use atlassian::admin::{AdminKey, AdminOrg};
use atlassian::fake::FakeAtlassian;
use store::{ConnectionStatus, ConnectionStore, MemoryStore};
use time::OffsetDateTime;
use tokens::KeyRing;
use tokens::admin::{self, AdminConnectError, AdminConnectRequest, AdminPatch};

#[tokio::test]
async fn an_update_checked_while_the_connection_was_disconnected_writes_nothing() {
    let store = MemoryStore::new();
    let mut atlassian = FakeAtlassian::granting(&[]);
    atlassian.admin_orgs = vec![AdminOrg { id: "org-1".into(), attributes: Default::default() }];
    let keys = KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap();
    let now = OffsetDateTime::now_utc();
    let request = AdminConnectRequest::new("tenant", "org-1", "first-key", (None, None, None), None).unwrap();
    let connection = admin::connect(&store, &atlassian, &keys, &request, now).await.unwrap();

    // The PATCH read the connection; the DELETE lands while Atlassian checks the new key.
    assert!(store.revoke_connection(&connection.connection_id, now).await.unwrap());
    let patch = AdminPatch { admin_api_key: Some(AdminKey::new("second-key".into())), site: None };
    let updated = admin::update(&store, &atlassian, &keys, &connection, patch.clone(), now).await;
    assert!(matches!(updated, Err(AdminConnectError::Changed)), "{updated:?}");
    let stored = store.get_connection(&connection.connection_id).await.unwrap().unwrap();
    assert_eq!(stored.status, ConnectionStatus::Revoked, "the disconnect stands");

    // Two updates from the same read: the second finds the connection moved on.
    let fresh = admin::connect(&store, &atlassian, &keys, &request, now).await.unwrap();
    admin::update(&store, &atlassian, &keys, &fresh, patch.clone(), now).await.unwrap();
    let again = admin::update(&store, &atlassian, &keys, &fresh, patch, now).await;
    assert!(matches!(again, Err(AdminConnectError::Changed)), "{again:?}");
}
