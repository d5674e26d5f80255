//! Property test of the event publisher's input: whatever a stream batch holds (the tables' real key shapes with
//! any attributes of any DynamoDB type, unknown keys, missing images, absurd timestamps), reading it never panics,
//! every event it derives has a known detail-type and an id drawn from its record's, and publishing the batch
//! answers: each record's events reach the bus or the record is counted unreadable, never a failed batch that
//! would hold up its shard for a day of retries.

use events::{Bus, DETAIL_TYPES, Event, PublishError, derive, publish, stream::StreamBatch};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Mutex;
use store::MemoryStore;

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// A DynamoDB attribute value of any type, nested a little.
fn attribute() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        4 => prop::sample::select(vec!["active", "revoked", "needs_reauth", "succeeded", "failed", "users", "x", ""])
            .prop_map(|s| json!({"S": s})),
        1 => text(12).prop_map(|s| json!({"S": s})),
        1 => any::<i64>().prop_map(|n| json!({"N": n.to_string()})),
        1 => text(6).prop_map(|s| json!({"N": s})),
        1 => any::<bool>().prop_map(|b| json!({"BOOL": b})),
        1 => Just(json!({"NULL": true})),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|l| json!({"L": l})),
            btree_map(field(), inner, 0..4).prop_map(|m| json!({"M": m})),
        ]
    })
}

/// The attribute names the tables use, and a few they do not.
fn field() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "status",
        "tenant_id",
        "status_reason",
        "sites",
        "cloud_id",
        "lost_at",
        "connected_at",
        "record",
        "hash",
        "deleted",
        "key",
        "ids",
        "counts",
        "object_type",
        "finished_at",
        "error_code",
        "error",
        "run_id",
        "extra",
    ])
    .prop_map(str::to_owned)
}

/// An image with the record's keys (or not) and any attributes.
fn image(pk: String, sk: String) -> impl Strategy<Value = Option<Value>> {
    let attributes = btree_map(field(), attribute(), 0..8);
    prop_oneof![
        1 => Just(None),
        4 => (attributes, any::<bool>()).prop_map(move |(mut item, keyed)| {
            if keyed {
                item.insert("pk".into(), json!({"S": pk.clone()}));
                item.insert("sk".into(), json!({"S": sk.clone()}));
            }
            Some(Value::Object(item.into_iter().collect()))
        }),
    ]
}

fn record() -> impl Strategy<Value = Value> {
    let pk = prop_oneof![
        3 => prop::sample::select(vec![
            "CONN#c1", "c1#users", "c1#groups", "c1#projects", "c1#spaces", "c1#groups#members#g1",
            "c1#groups#members#staged#r1", "c1#nonsense", "CONN#",
        ])
        .prop_map(str::to_owned),
        1 => text(30),
    ];
    let sk = prop_oneof![
        3 => prop::sample::select(vec!["CONN", "RUN#users", "RUN#groups", "RUN#x", "00#k1", "01#chunk", ""])
            .prop_map(str::to_owned),
        1 => text(30),
    ];
    (pk, sk).prop_flat_map(|(pk, sk)| {
        let keys = prop_oneof![
            3 => Just(Some(json!({"pk": {"S": pk.clone()}, "sk": {"S": sk.clone()}}))),
            1 => Just(None),
            1 => attribute().prop_map(|a| Some(json!({"pk": a}))),
        ];
        let name = prop::sample::select(vec!["INSERT", "MODIFY", "REMOVE", "OTHER"]);
        let created = prop_oneof![
            Just(json!(1_764_633_600.5)),
            Just(json!(1e300)),
            Just(json!(-1e300)),
            Just(Value::Null),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ];
        // Ids from a small set, so that a batch often holds one record twice.
        let id = prop_oneof![3 => prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned), 1 => text(20)];
        (id, name, keys, image(pk.clone(), sk.clone()), image(pk, sk), created).prop_map(
            |(id, name, keys, new, old, created)| {
                let mut change = json!({"ApproximateCreationDateTime": created});
                for (field, value) in [("Keys", keys), ("NewImage", new), ("OldImage", old)] {
                    if let Some(value) = value {
                        change[field] = value;
                    }
                }
                json!({"eventID": format!("r-{id}"), "eventName": name, "dynamodb": change})
            },
        )
    })
}

/// A bus that takes everything, and keeps it.
#[derive(Default)]
struct Taken(Mutex<Vec<Event>>);

impl Bus for Taken {
    async fn put(&self, events: &[Event]) -> Result<Vec<usize>, PublishError> {
        self.0.lock().unwrap().extend(events.iter().cloned());
        Ok(Vec::new())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_stream_batch_is_read_without_panic_and_published_or_counted(
        records in vec(record(), 0..8),
        foreign in prop::option::weighted(0.05, text(4)),
    ) {
        let mut records = records;
        if let (Some(type_name), Some(first)) = (foreign, records.first_mut()) {
            // An attribute type DynamoDB does not have: the whole batch is refused by Lambda's deserialisation.
            let attribute: serde_json::Map<String, Value> = [(type_name, json!("x"))].into_iter().collect();
            first["dynamodb"]["NewImage"] = json!({"pk": attribute});
        }
        let Ok(batch) = serde_json::from_value::<StreamBatch>(json!({"Records": records})) else {
            // Not a stream batch at all: Lambda's own deserialisation refuses it before the handler runs.
            return Ok(());
        };
        let mut derived = 0;
        let mut unreadable = 0;
        for record in &batch.records {
            match derive(record) {
                Ok(events) => {
                    for event in &events {
                        prop_assert!(DETAIL_TYPES.contains(&event.detail_type), "{}", event.detail_type);
                        prop_assert!(event.event_id().starts_with(&record.event_id), "{:?}", event.detail);
                    }
                    derived += events.len();
                }
                Err(_) => unreadable += 1,
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let bus = Taken::default();
        let published = runtime.block_on(publish(&MemoryStore::new(), &bus, &batch));
        let published = published.map_err(|e| TestCaseError::fail(format!("a batch failed: {e}")))?;
        prop_assert_eq!(published.unreadable, unreadable);
        // No connection is known to the store here: a connection's own events go out, the others are dropped as an
        // unknown connection's; an id that came before in the batch goes once.
        prop_assert_eq!(published.events + published.dropped + published.repeated, derived);
        let taken = bus.0.lock().unwrap();
        let ids: std::collections::HashSet<&str> = taken.iter().map(|e| e.event_id()).collect();
        prop_assert_eq!(ids.len(), published.events, "no event id twice on the bus");
        prop_assert_eq!(taken.len(), published.events);
    }
}
