use super::*;
use crate::stream::{Change, StreamRecord};
use serde::Serialize;
use store::mirror::MirrorObject;
use store::{ObjectType, RunStatus, contract};

fn item(value: &impl Serialize, pk: &str, sk: &str) -> serde_dynamo::Item {
    let mut item: serde_dynamo::Item = serde_dynamo::to_item(value).unwrap();
    item.insert("pk".into(), serde_dynamo::AttributeValue::S(pk.into()));
    item.insert("sk".into(), serde_dynamo::AttributeValue::S(sk.into()));
    item
}

pub(crate) fn record(id: &str, old: Option<serde_dynamo::Item>, new: Option<serde_dynamo::Item>) -> StreamRecord {
    let name = match (&old, &new) {
        (None, Some(_)) => "INSERT",
        (Some(_), Some(_)) => "MODIFY",
        _ => "REMOVE",
    };
    let keys = new.clone().or_else(|| old.clone()).map(|i| {
        let keys: std::collections::HashMap<String, serde_dynamo::AttributeValue> =
            i.iter().filter(|(k, _)| *k == "pk" || *k == "sk").map(|(k, v)| (k.clone(), v.clone())).collect();
        serde_dynamo::Item::from(keys)
    });
    StreamRecord {
        event_id: id.into(),
        event_name: name.into(),
        dynamodb: Change {
            created: Some(1_764_633_600.0),
            keys,
            new_image: new,
            old_image: old,
            sequence_number: None,
        },
    }
}

fn types(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.detail_type).collect()
}

pub(crate) fn conn(c: &Connection) -> serde_dynamo::Item {
    item(c, &format!("CONN#{}", c.connection_id), "CONN")
}

#[test]
fn connection_changes_are_events_and_refreshes_are_not() {
    let connected = contract::connection("tenant-1", "con_1");
    let events = derive(&record("e1", None, Some(conn(&connected)))).unwrap();
    assert_eq!(types(&events), [crate::CONNECTED]);
    let detail = &events[0].detail;
    assert_eq!((detail["event_id"].as_str(), detail["tenant_id"].as_str()), (Some("e1"), Some("tenant-1")));
    assert_eq!(detail["occurred_at"], "2025-12-02T00:00:00Z");
    assert!(!serde_json::to_string(detail).unwrap().contains("credentials"), "never the credentials");

    // A refresh: new credentials, a new version, a new updated_at. Not an event.
    let mut refreshed = connected.clone();
    refreshed.credentials.blob = vec![9, 9, 9];
    refreshed.token_version += 1;
    refreshed.updated_at += time::Duration::minutes(50);
    assert!(derive(&record("e2", Some(conn(&connected)), Some(conn(&refreshed)))).unwrap().is_empty());

    let mut lost = refreshed.clone();
    lost.status = ConnectionStatus::NeedsReauth;
    lost.status_reason = Some("the customer revoked the app's access".into());
    let events = derive(&record("e3", Some(conn(&refreshed)), Some(conn(&lost)))).unwrap();
    assert_eq!(types(&events), [crate::NEEDS_REAUTH]);
    assert_eq!(events[0].detail["reason"], "the customer revoked the app's access");

    let mut back = lost.clone();
    back.status = ConnectionStatus::Active;
    back.connected_at = Some(back.updated_at + time::Duration::hours(1));
    assert_eq!(types(&derive(&record("e4", Some(conn(&lost)), Some(conn(&back)))).unwrap()), [crate::RECONNECTED]);
    // Consenting again while active is a reconnect too.
    let mut again = back.clone();
    again.connected_at = Some(again.updated_at + time::Duration::hours(2));
    assert_eq!(types(&derive(&record("e5", Some(conn(&back)), Some(conn(&again)))).unwrap()), [crate::RECONNECTED]);

    let mut revoked = again.clone();
    revoked.status = ConnectionStatus::Revoked;
    revoked.credentials = store::SealedCredentials::default();
    assert_eq!(types(&derive(&record("e6", Some(conn(&again)), Some(conn(&revoked)))).unwrap()), [crate::REVOKED]);
}

#[test]
fn sites_lost_and_added_are_each_an_event_with_its_own_id() {
    let before = contract::connection("tenant-1", "con_1");
    let mut after = before.clone();
    after.sites[0].lost_at = Some(after.updated_at);
    after.sites.push(store::Site { cloud_id: "cloud-2".into(), lost_at: None, ..before.sites[0].clone() });
    after.status = ConnectionStatus::NeedsReauth;
    let record = record("e7", Some(conn(&before)), Some(conn(&after)));
    let events = derive(&record).unwrap();
    assert_eq!(types(&events), [crate::NEEDS_REAUTH, crate::SITE_LOST, crate::SITE_ADDED]);
    let ids: Vec<&str> = events.iter().map(Event::event_id).collect();
    assert_eq!(ids, ["e7", "e7:1", "e7:2"]);
    assert_eq!(events[1].detail["site"]["cloud_id"], before.sites[0].cloud_id);
    assert_eq!(events[2].detail["site"]["cloud_id"], "cloud-2");
    assert_eq!(derive(&record).unwrap(), events, "a record delivered again means the same events, same ids");
}

fn run(status: RunStatus, run_id: &str) -> serde_dynamo::Item {
    let mut run = store::RunRecord::running(ObjectType::Users, run_id, OffsetDateTime::UNIX_EPOCH, 0);
    run.status = status;
    if !status.is_live() {
        run.finished_at = Some(OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(3));
        run.counts.created = 25;
    }
    item(&run, "CONN#con_1", "RUN#users")
}

#[test]
fn a_run_is_an_event_when_it_ends_and_only_then() {
    assert!(derive(&record("r1", None, Some(run(RunStatus::Running, "run-1")))).unwrap().is_empty());
    let waiting = record("r2", Some(run(RunStatus::Running, "run-1")), Some(run(RunStatus::Waiting, "run-1")));
    assert!(derive(&waiting).unwrap().is_empty());
    let ended = derive(&record("r3", Some(run(RunStatus::Waiting, "run-1")), Some(run(RunStatus::Succeeded, "run-1"))))
        .unwrap();
    assert_eq!(types(&ended), [crate::RUN_FINISHED]);
    let detail = &ended[0].detail;
    assert_eq!((detail["status"].as_str(), detail["object_type"].as_str()), (Some("succeeded"), Some("users")));
    assert_eq!((detail["counts"]["created"].as_u64(), detail["connection_id"].as_str()), (Some(25), Some("con_1")));
    let touched = record("r4", Some(run(RunStatus::Succeeded, "run-1")), Some(run(RunStatus::Succeeded, "run-1")));
    assert!(derive(&touched).unwrap().is_empty(), "an ended run written again is not a second end");
    let next = record("r5", Some(run(RunStatus::Succeeded, "run-1")), Some(run(RunStatus::Failed, "run-2")));
    assert_eq!(types(&derive(&next).unwrap()), [crate::RUN_FINISHED], "the next run, ended at once");
}

pub(crate) fn object(key: &str, fields: Value, deleted: bool, synced_minute: i64) -> serde_dynamo::Item {
    let Value::Object(record) = fields else { panic!() };
    let mut object =
        MirrorObject::new(key.into(), record, OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(synced_minute));
    object.deleted = deleted;
    item(&object, "con_1#users", &format!("0a#{key}"))
}

#[test]
fn objects_created_updated_with_their_changes_and_deleted() {
    let ada = json!({"account_id": "a1", "display_name": "Ada", "email": "ada@x", "status": "active"});
    let created = derive(&record("o1", None, Some(object("a1", ada.clone(), false, 0)))).unwrap();
    assert_eq!(types(&created), [crate::OBJECT_CREATED]);
    assert_eq!(created[0].detail["object"], ada);
    assert_eq!(
        (created[0].detail["key"].as_str(), created[0].detail["object_type"].as_str()),
        (Some("a1"), Some("users"))
    );

    let resynced = record("o2", Some(object("a1", ada.clone(), false, 0)), Some(object("a1", ada.clone(), false, 60)));
    assert!(derive(&resynced).unwrap().is_empty(), "a sync that found it unchanged");

    let mut renamed = ada.clone();
    renamed["display_name"] = json!("Ada L.");
    renamed.as_object_mut().unwrap().remove("email");
    let updated = derive(&record(
        "o3",
        Some(object("a1", ada.clone(), false, 0)),
        Some(object("a1", renamed.clone(), false, 60)),
    ))
    .unwrap();
    assert_eq!(types(&updated), [crate::OBJECT_UPDATED]);
    assert_eq!(updated[0].detail["changed"], json!(["display_name", "email"]));
    assert_eq!(updated[0].detail["previous"], json!({"display_name": "Ada", "email": "ada@x"}));

    let deleted = derive(&record(
        "o4",
        Some(object("a1", renamed.clone(), false, 60)),
        Some(object("a1", renamed.clone(), true, 90)),
    ))
    .unwrap();
    assert_eq!(types(&deleted), [crate::OBJECT_DELETED]);
    assert_eq!(deleted[0].detail["object"], renamed);
    let still =
        record("o5", Some(object("a1", renamed.clone(), true, 90)), Some(object("a1", renamed.clone(), true, 99)));
    assert!(derive(&still).unwrap().is_empty());
    let back = record("o6", Some(object("a1", renamed.clone(), true, 99)), Some(object("a1", renamed, false, 120)));
    assert_eq!(types(&derive(&back).unwrap()), [crate::OBJECT_CREATED], "back after a deletion");
    let cleared = record("o7", Some(object("a1", ada, false, 0)), None);
    assert!(derive(&cleared).unwrap().is_empty(), "a disconnect clears the mirror: no event per object");
}

#[test]
fn group_members_that_came_and_went_inline_or_in_chunks() {
    let group = |members: &[&str]| json!({"group_id": "g1", "name": "devs", "member_count": members.len(), "member_account_ids": members});
    let as_group = |fields: Value| {
        let Value::Object(record) = fields else { panic!() };
        item(&MirrorObject::new("c#g1".into(), record, OffsetDateTime::UNIX_EPOCH), "con_1#groups", "01#c#g1")
    };
    let events = derive(&record("g1", Some(as_group(group(&["a", "b"]))), Some(as_group(group(&["b", "c"]))))).unwrap();
    assert_eq!(types(&events), [crate::OBJECT_UPDATED, crate::MEMBERS_CHANGED]);
    assert_eq!(events[0].detail["changed"], json!(["member_account_ids"]));
    assert_eq!(events[0].detail["previous"], json!({}), "the member list is said by the members event");
    assert_eq!((&events[1].detail["added"], &events[1].detail["removed"]), (&json!(["c"]), &json!(["a"])));

    let chunk = |ids: &[&str]| {
        let mut item: serde_dynamo::Item = serde_dynamo::to_item(json!({"ids": ids})).unwrap();
        item.insert("pk".into(), serde_dynamo::AttributeValue::S("con_1#groups#members#c#g9".into()));
        item.insert("sk".into(), serde_dynamo::AttributeValue::S("0000002a".into()));
        item
    };
    let events = derive(&record("g2", Some(chunk(&["a", "b"])), Some(chunk(&["a", "b", "d"])))).unwrap();
    assert_eq!(types(&events), [crate::MEMBERS_CHANGED]);
    assert_eq!((events[0].detail["key"].as_str(), &events[0].detail["added"]), (Some("c#g9"), &json!(["d"])));
    let gone = derive(&record("g3", Some(chunk(&["a"])), None)).unwrap();
    assert_eq!(gone[0].detail["removed"], json!(["a"]));
    let mut staged = chunk(&["a"]);
    staged.insert("pk".into(), serde_dynamo::AttributeValue::S("con_1#groups#members#staged#run-1#c#g9".into()));
    assert!(derive(&record("g4", None, Some(staged))).unwrap().is_empty(), "a run's staging is not the mirror");
}

#[test]
fn other_items_mean_nothing() {
    let pool = item(&json!({"window": 1, "spent": 10}), "BUDGET#atlassian-app", "BUDGET");
    assert!(derive(&record("x1", None, Some(pool))).unwrap().is_empty());
    let session = item(&contract::session("t"), "SESSION#abc", "SESSION");
    assert!(derive(&record("x2", None, Some(session))).unwrap().is_empty());
    let checkpoint = item(&json!({"offset": 3}), "CONN#con_1", "CHECKPOINT#users");
    assert!(derive(&record("x3", None, Some(checkpoint))).unwrap().is_empty());
}
