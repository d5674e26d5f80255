//! The product's events end to end: a connection's life (connect, sync, the org changes, sync again, the customer
//! revokes the grant, the product disconnects) as the exact sequence of events on the stack's bus, derived from the
//! tables' streams by the event publisher under `cargo lambda watch`, and at the product's webhook; a stream record
//! delivered twice gives one event on the bus and one delivery.

use super::*;
use std::collections::BTreeMap;

/// (detail-type, what it is about): an object's or group's key, a run's type, nothing for the connection's own.
type Seen = (String, String);

/// Every event of `connection_id` the tap has, waiting until `expected` came and then three quiet seconds (so one
/// too many shows), or 120 s. Other connections' events are taken off the tap and dropped.
async fn events_of(stack: &Stack, connection_id: &str, expected: usize) -> Vec<Value> {
    let sqs = stack.sqs();
    let (mut mine, mut quiet_since) = (Vec::new(), None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        let messages = sqs
            .receive_message()
            .queue_url(&stack.events_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        for message in &messages {
            let event: Value = serde_json::from_str(message.body().unwrap()).unwrap();
            keep_for_the_schema_check(message.body().unwrap());
            if event["detail"]["connection_id"] == connection_id {
                mine.push(event);
            }
            let handle = message.receipt_handle().unwrap();
            sqs.delete_message().queue_url(&stack.events_queue_url).receipt_handle(handle).send().await.unwrap();
        }
        if mine.len() >= expected && messages.is_empty() {
            match quiet_since {
                Some(since) if std::time::Instant::now() - since > std::time::Duration::from_secs(3) => break,
                Some(_) => {}
                None => quiet_since = Some(std::time::Instant::now()),
            }
        } else if !messages.is_empty() {
            quiet_since = None;
        }
    }
    mine
}

/// Every event taken off the tap goes into `.dev/e2e-events.jsonl`, which `make test` then checks against the
/// schemas in `docs/schemas` (`scripts/check_event_schemas.py`).
fn keep_for_the_schema_check(event: &str) {
    use std::io::Write;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.dev/e2e-events.jsonl");
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path);
    file.and_then(|mut f| writeln!(f, "{}", event.replace('\n', " "))).expect("the events file is writable");
}

fn seen(events: &[Value]) -> Vec<Seen> {
    let mut seen: Vec<Seen> = events
        .iter()
        .map(|e| {
            let d = &e["detail"];
            let about = d["key"].as_str().or(d["object_type"].as_str()).unwrap_or_default();
            (e["detail-type"].as_str().unwrap().to_owned(), about.to_owned())
        })
        .collect();
    seen.sort();
    seen
}

/// The mirror as the objects API shows it: type → key → (deleted, record without the mirror's bookkeeping).
async fn mirror(stack: &Stack, id: &str) -> BTreeMap<(String, String), (bool, Value)> {
    let mut objects = BTreeMap::new();
    for object_type in TYPES {
        for object in all_objects(stack, id, object_type).await {
            let mut record = object.as_object().unwrap().clone();
            let deleted = record.remove("deleted") == Some(Value::Bool(true));
            record.remove("synced_at");
            objects.insert((object_type.to_owned(), key_of(object_type, &object)), (deleted, Value::Object(record)));
        }
    }
    objects
}

/// What a consumer builds from the events alone: the live objects, and each group's members. Applying an event
/// checks it against what came before (a creation of something new, an update whose `previous` is what the replica
/// had and whose `changed` is exactly what differs, a deletion of something live, members added that were not
/// there and removed that were); each phase then compares the replica with the objects API.
#[derive(Default)]
struct Replica {
    objects: BTreeMap<(String, String), Value>,
    members: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Replica {
    /// Applies a phase's events in the order they happened; answers the others (connection and run events).
    fn apply(&mut self, mut events: Vec<Value>) -> Vec<Seen> {
        // In the order they happened; within one millisecond, a creation before an update before a deletion.
        let rank = |e: &Value| match e["detail-type"].as_str() {
            Some("Object Created") => 0,
            Some("Object Deleted") => 2,
            _ => 1,
        };
        events.sort_by(|a, b| {
            (a["detail"]["occurred_at"].as_str(), rank(a)).cmp(&(b["detail"]["occurred_at"].as_str(), rank(b)))
        });
        let mut others = Vec::new();
        for event in &events {
            let d = &event["detail"];
            let key = || (d["object_type"].as_str().unwrap().to_owned(), d["key"].as_str().unwrap().to_owned());
            match event["detail-type"].as_str().unwrap() {
                "Object Created" => {
                    let old = self.objects.insert(key(), d["object"].clone());
                    assert!(old.is_none(), "created twice: {event}");
                }
                "Object Updated" => {
                    let current = self.objects.get_mut(&key()).unwrap_or_else(|| panic!("not live: {event}"));
                    let fields: std::collections::BTreeSet<&String> = current
                        .as_object()
                        .unwrap()
                        .keys()
                        .chain(d["object"].as_object().unwrap().keys())
                        .filter(|f| current.get(f.as_str()) != d["object"].get(f.as_str()))
                        .collect();
                    let changed: std::collections::BTreeSet<&String> = d["changed"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f.as_str().unwrap())
                        .map(|f| {
                            fields
                                .iter()
                                .find(|g| g.as_str() == f)
                                .copied()
                                .unwrap_or_else(|| panic!("{f} did not change: {event}"))
                        })
                        .collect();
                    assert_eq!(changed, fields, "{event}");
                    for (field, before) in d["previous"].as_object().unwrap() {
                        assert_eq!(current.get(field).unwrap_or(&Value::Null), before, "{event}");
                    }
                    *current = d["object"].clone();
                }
                "Object Deleted" => {
                    assert!(self.objects.remove(&key()).is_some(), "deleted but not live: {event}");
                }
                "Group Members Changed" => {
                    let members = self.members.entry(d["key"].as_str().unwrap().to_owned()).or_default();
                    for added in d["added"].as_array().unwrap() {
                        assert!(members.insert(added.as_str().unwrap().to_owned()), "added twice: {event}");
                    }
                    for removed in d["removed"].as_array().unwrap() {
                        assert!(members.remove(removed.as_str().unwrap()), "removed but not there: {event}");
                    }
                }
                other => {
                    let about = d["object_type"].as_str().unwrap_or_default();
                    others.push((other.to_owned(), about.to_owned()));
                }
            }
        }
        others.sort();
        others
    }

    /// The replica is the objects API's mirror: every live object, field for field, and every group's members.
    #[track_caller]
    fn assert_is(&self, mirror: &BTreeMap<(String, String), (bool, Value)>) {
        let live: BTreeMap<(String, String), Value> =
            mirror.iter().filter(|(_, (deleted, _))| !deleted).map(|(k, (_, r))| (k.clone(), r.clone())).collect();
        let missing: Vec<_> = live.keys().filter(|k| !self.objects.contains_key(*k)).collect();
        let extra: Vec<_> = self.objects.keys().filter(|k| !live.contains_key(*k)).collect();
        let differ: Vec<_> =
            live.iter().filter(|(k, r)| self.objects.get(*k).is_some_and(|o| o != *r)).map(|(k, _)| k).collect();
        assert!(
            missing.is_empty() && extra.is_empty() && differ.is_empty(),
            "missing {missing:?}; extra {extra:?}; differ {differ:?}"
        );
        for ((object_type, key), record) in &live {
            if object_type == "groups" {
                let want: std::collections::BTreeSet<String> = record["member_account_ids"]
                    .as_array()
                    .map(|m| m.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                assert_eq!(self.members.get(key).cloned().unwrap_or_default(), want, "members of {key}");
            }
        }
    }
}

fn runs() -> Vec<Seen> {
    let mut runs: Vec<Seen> = TYPES.iter().map(|t| ("Sync Run Finished".to_owned(), (*t).to_owned())).collect();
    runs.sort();
    runs
}

/// How many events a phase has at least: a first sync creates every live object.
fn at_least(mirror: &BTreeMap<(String, String), (bool, Value)>) -> usize {
    mirror.values().filter(|(deleted, _)| !deleted).count() + TYPES.len()
}

/// Invokes the event publisher with one stream record, as Lambda would (again, if it is a redelivery).
async fn deliver_record(stack: &Stack, record: &Value) {
    let url = stack.url("/2015-03-31/functions/event-publisher/invocations");
    let response = harness::client().post(url).json(&serde_json::json!({"Records": [record]})).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
}

#[tokio::test]
async fn a_connections_life_as_events_end_to_end() {
    let _org = ORG.lock().await;
    let stack = Stack::from_env();
    // The syncing test's admin: the two take turns on the org, and so on the account's one grant.
    let account = "5b10ac8d82e05b22cc7d0001";
    let consent = Consent { account_id: account.into(), ..Consent::default() };
    let tenant = unique("e2e-events");
    let (_, c) = connect(&stack, &tenant, None, &consent).await;
    let id = c.connection_id;
    let connected = events_of(&stack, &id, 1).await;
    let mut all_ids: Vec<String> =
        connected.iter().map(|e| e["detail"]["event_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(seen(&connected), [("Connection Connected".to_owned(), String::new())]);
    let detail = &connected[0]["detail"];
    assert_eq!(
        (connected[0]["source"].as_str(), detail["status"].as_str()),
        (Some("atlassian-connector"), Some("active"))
    );
    assert!(detail["tenant_id"].as_str().unwrap().starts_with("e2e-events"));

    // The customer's admin consents again (after a scope change, say): the same connection, one event.
    let (answer, again) = connect(&stack, &tenant, None, &consent).await;
    assert_eq!((answer.status, again.connection_id.as_str()), (200, id.as_str()), "{}", answer.body);
    let reconnected = events_of(&stack, &id, 1).await;
    assert_eq!(seen(&reconnected), [("Connection Reconnected".to_owned(), String::new())]);
    assert_eq!(reconnected[0]["detail"]["status"], "active");
    all_ids.extend(reconnected.iter().map(|e| e["detail"]["event_id"].as_str().unwrap().to_owned()));

    // The first sync: a consumer that applies the events alone ends with the mirror, and hears each type's run end.
    let mut replica = Replica::default();
    let (connection, _) = sync_all(&stack, &id, &Value::Null).await;
    let first = mirror(&stack, &id).await;
    let events = events_of(&stack, &id, at_least(&first)).await;
    let created = events.iter().find(|e| e["detail-type"] == "Object Created" && e["detail"]["object_type"] == "users");
    assert_eq!(created.unwrap()["source"], "atlassian-connector");
    let runs_ended: Vec<Value> = events.iter().filter(|e| e["detail-type"] == "Sync Run Finished").cloned().collect();
    assert!(runs_ended.iter().all(|r| r["detail"]["status"] == "succeeded"), "{runs_ended:?}");
    all_ids.extend(events.iter().map(|e| e["detail"]["event_id"].as_str().unwrap().to_owned()));
    assert_eq!(replica.apply(events), runs());
    replica.assert_is(&first);

    // The org changes (users added, renamed, deactivated, removed; groups, projects and spaces too): the next sync's
    // events bring the replica to the new mirror, each change with its fields and their previous values.
    harness::client().post(stack.atlassian_url.join("/__sandbox/org/mutate").unwrap()).send().await.unwrap();
    sync_all(&stack, &id, &connection["sync"]).await;
    let second = mirror(&stack, &id).await;
    let events = events_of(&stack, &id, TYPES.len() + 4).await;
    let kinds: std::collections::BTreeSet<&str> = events.iter().map(|e| e["detail-type"].as_str().unwrap()).collect();
    for kind in ["Object Created", "Object Updated", "Object Deleted", "Group Members Changed"] {
        assert!(kinds.contains(kind), "a mutation brings {kind}: {kinds:?}");
    }
    all_ids.extend(events.iter().map(|e| e["detail"]["event_id"].as_str().unwrap().to_owned()));
    assert_eq!(replica.apply(events), runs());
    replica.assert_is(&second);

    // A stream record delivered twice is one event: the publisher's ledger knows it is on the bus already.
    let replayed = serde_json::json!({
        "eventID": unique("replay"), "eventName": "INSERT", "eventSource": "aws:dynamodb",
        "dynamodb": {
            "ApproximateCreationDateTime": 1764633600.0,
            "Keys": {"pk": {"S": format!("{id}#users")}, "sk": {"S": "00#replayed-user"}},
            "NewImage": {
                "pk": {"S": format!("{id}#users")}, "sk": {"S": "00#replayed-user"}, "key": {"S": "replayed-user"},
                "record": {"M": {"account_id": {"S": "replayed-user"}}}, "hash": {"S": "h"}, "deleted": {"BOOL": false},
                "synced_at": {"S": "2026-12-01T00:00:00Z"}
            }
        }
    });
    deliver_record(&stack, &replayed).await;
    deliver_record(&stack, &replayed).await;
    let events = events_of(&stack, &id, 1).await;
    assert_eq!(events.len(), 1, "no duplicate on the bus: {events:?}");
    assert_eq!(events[0]["detail"]["event_id"], replayed["eventID"]);
    let replayed_id = replayed["eventID"].as_str().unwrap().to_owned();
    all_ids.extend(events.iter().map(|e| e["detail"]["event_id"].as_str().unwrap().to_owned()));

    // The customer revokes the grant: the next sync finds out.
    let revoke = stack.atlassian_url.join(&format!("/__sandbox/grants/{account}/revoke")).unwrap();
    harness::client().post(revoke).send().await.unwrap();
    let (status, _) =
        post(&stack, &format!("/connections/{id}/sync"), serde_json::json!({"object_types": ["users"]})).await;
    assert_eq!(status, 202);
    let events = events_of(&stack, &id, 2).await;
    assert_eq!(
        seen(&events),
        [("Connection Needs Reauth".to_owned(), String::new()), ("Sync Run Finished".to_owned(), "users".to_owned())]
    );
    let reauth = events.iter().find(|e| e["detail-type"] == "Connection Needs Reauth").unwrap();
    assert!(!reauth["detail"]["reason"].as_str().unwrap().is_empty());
    all_ids.extend(events.iter().map(|e| e["detail"]["event_id"].as_str().unwrap().to_owned()));

    // The product disconnects: one event, and nothing of the cleared mirror.
    assert_eq!(disconnect(&stack, &id).await.0, 200);
    let events = events_of(&stack, &id, 1).await;
    assert_eq!(seen(&events), [("Connection Revoked".to_owned(), String::new())]);
    all_ids.extend(events.iter().map(|e| e["detail"]["event_id"].as_str().unwrap().to_owned()));

    // Every one of them also reached the product's webhook endpoint, signed.
    let wanted: std::collections::BTreeSet<String> = all_ids.into_iter().collect();
    // (Behind whatever the other tests' syncs put on the webhook queue: up to a few minutes on a loaded machine.)
    let (mut missing, mut delivered) = (wanted.clone(), std::collections::BTreeSet::new());
    for _ in 0..360 {
        delivered = stack
            .webhook_deliveries()
            .await
            .unwrap()
            .iter()
            .filter(|d| d["verified"] == true && d["refused"] == false && d["connection_id"] == id.as_str())
            .filter_map(|d| d["event_id"].as_str().map(str::to_owned))
            .collect();
        missing = wanted.difference(&delivered).cloned().collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(missing.is_empty(), "{} of {} events never reached the webhook: {missing:?}", missing.len(), wanted.len());
    // And nothing else of this connection did: the webhook carries exactly the bus's events.
    let extra: Vec<_> = delivered.difference(&wanted).collect();
    assert!(extra.is_empty(), "the webhook got events the bus never carried: {extra:?}");
    let deliveries = stack.webhook_deliveries().await.unwrap();
    let taken = |id: &str| deliveries.iter().filter(|d| d["event_id"] == id && d["refused"] == false).count();
    assert_eq!(taken(&replayed_id), 1, "the replayed record reached the webhook once");
}
