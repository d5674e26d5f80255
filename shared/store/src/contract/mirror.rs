//! The mirror's part of the contract: compare and change-only writes, clearing, and big groups' member chunks.

use super::*;

pub(super) async fn the_mirror_round_trips_compares_and_clears(store: &impl MirrorStore) {
    use crate::mirror::{MirrorObject, ObjectType, Scope};
    use serde_json::json;
    let scope = Scope::new(&unique("con"), ObjectType::Users);
    let at = now();
    let objects: Vec<MirrorObject> = (0..250)
        .map(|i| {
            let record = json!({
                "account_id": format!("acc-{i}"),
                "email": if i % 5 == 0 { serde_json::Value::Null } else { json!(format!("u{i}@acme.example")) },
                "display_name": format!("User {i}"),
                "status": "active",
                "sites": ["cloud-1", "cloud-2"],
            });
            MirrorObject::new(format!("acc-{i}"), record.as_object().cloned().expect("object"), at)
        })
        .collect();
    store.write(&scope, &objects).await.expect("write");

    let keys: Vec<String> = ["acc-0", "acc-249", "acc-missing"].iter().map(|k| k.to_string()).collect();
    let stored = store.stored(&scope, &keys).await.expect("stored");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored["acc-0"].hash, objects[0].hash);
    assert!(!stored["acc-249"].deleted);
    // Whole objects, for another connection's enrichment: as written, across batches, missing keys left out.
    let many: Vec<String> = (0..150).map(|i| format!("acc-{}", i * 2)).chain(["acc-missing".to_string()]).collect();
    let whole = store.objects(&scope, &many).await.expect("objects");
    assert_eq!(whole.len(), 125);
    assert_eq!(whole["acc-0"], objects[0]);
    assert_eq!(whole["acc-248"].record["email"], json!("u248@acme.example"));

    // Change one, delete another: the comparison sees both.
    let mut changed = objects[1].clone();
    changed.record.insert("display_name".into(), json!("Renamed"));
    changed.hash = crate::mirror::content_hash(&changed.record);
    let mut gone = objects[2].clone();
    gone.deleted = true;
    store.write(&scope, &[changed.clone(), gone]).await.expect("write");
    let stored = store.stored(&scope, &["acc-1".into(), "acc-2".into()]).await.expect("stored");
    assert_eq!(stored["acc-1"].hash, changed.hash);
    assert_ne!(changed.hash, objects[1].hash);
    assert!(stored["acc-2"].deleted);

    // Listing walks the partition exactly once, records intact.
    let (mut listed, mut cursor) = (Vec::new(), None);
    loop {
        let (page, next) = store.list(&scope, cursor.as_deref(), 100).await.expect("list");
        assert!(page.len() <= 100);
        listed.extend(page);
        cursor = next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(listed.len(), 250);
    let one = listed.iter().find(|o| o.key == "acc-1").expect("acc-1");
    assert_eq!(one, &changed);
    let zero = listed.iter().find(|o| o.key == "acc-0").expect("acc-0");
    assert_eq!(zero, &objects[0], "nulls, arrays and times round-trip");

    let other = Scope::new(&scope.connection_id, ObjectType::Groups);
    assert!(store.list(&other, None, 10).await.expect("list").0.is_empty(), "partitions are separate");
    assert_eq!(store.clear(&scope).await.expect("clear"), 250);
    assert!(store.list(&scope, None, 10).await.expect("list").0.is_empty());
}

pub(super) async fn big_groups_keep_their_members_in_chunks(store: &impl MirrorStore) {
    use crate::mirror::{MirrorObject, ObjectType, Scope, member_chunks};
    let scope = Scope::new(&unique("con"), ObjectType::Groups);
    let mut ids: Vec<String> = (0..3000).map(|i| format!("acc-{i:05}")).collect();
    ids.sort();
    let chunks = member_chunks(&ids);
    assert_eq!(chunks.len(), 32, "about 128 ids a bucket, a power of two of buckets");
    assert!(chunks.iter().all(|c| c.ids.windows(2).all(|w| w[0] < w[1])), "each chunk sorted");
    store.write_members(&scope, "g-1", &chunks, &[]).await.expect("write members");
    let record = serde_json::json!({"group_id": "g-1", "name": "everyone", "member_count": 3000});
    let group = MirrorObject::new("g-1".into(), record.as_object().cloned().expect("object"), now());
    store.write(&scope, std::slice::from_ref(&group)).await.expect("write");

    // Paging through every member, bucket by bucket, gives each id once.
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let (page, next) = store.members(&scope, "g-1", cursor.as_deref(), 250).await.expect("members");
        assert!(page.len() <= 250);
        seen.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ids);
    assert!(matches!(store.members(&scope, "g-1", Some("nonsense"), 10).await, Err(StoreError::InvalidCursor)));

    // One chunk replaced and one removed; the rest stay as they were.
    let mut changed = chunks[3].clone();
    changed.ids.push("acc-new".into());
    store.write_members(&scope, "g-1", std::slice::from_ref(&changed), &[5]).await.expect("write members");
    let (all, _) = store.members(&scope, "g-1", None, 10_000).await.expect("members");
    assert_eq!(all.len(), 3000 + 1 - chunks[5].ids.len());
    assert!(all.contains(&"acc-new".to_owned()) && !all.contains(&chunks[5].ids[0]));

    // A disconnect clears the chunks with the groups.
    store.clear(&scope).await.expect("clear");
    assert!(store.members(&scope, "g-1", None, 10).await.expect("members").0.is_empty());
}
