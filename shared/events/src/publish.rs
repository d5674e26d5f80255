//! Publishing a stream batch's events: each names its tenant (read once per connection per batch), none speaks for
//! a connection that is gone or revoked (but the revocation itself), none that is already on the bus goes again
//! (the store's event ledger: a stream record delivered twice, or a batch retried after part of it went out), and
//! each goes to the bus in entries of ten, what the bus refuses retried; what still fails fails the batch, which
//! Lambda delivers again. (Only a crash between putting events and noting them can repeat one: consumers still
//! drop duplicates by `event_id`.)

use crate::stream::StreamBatch;
use crate::{CONNECTED, Event, NEEDS_REAUTH, RECONNECTED, REVOKED, SITE_ADDED, SITE_LOST, SOURCE, derive};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;
use store::{ConnectionStatus, ConnectionStore, EventLedger, StoreError};
use thiserror::Error;

/// EventBridge's limit per `PutEvents` entry is 256 KB; a detail past this loses its object (flagged `truncated`).
const MAX_DETAIL: usize = 240 * 1024;
/// `PutEvents` takes at most ten entries.
const ENTRIES_PER_PUT: usize = 10;
/// EventBridge's limit for a whole `PutEvents` request is 256 KB; the details, with room for each entry's source,
/// detail-type and bus name.
const MAX_PUT: usize = 250 * 1024;
const ENTRY_OVERHEAD: usize = 200;
const ATTEMPTS: u32 = 4;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("the connection store failed")]
    Store(#[from] StoreError),
    #[error("the event bus refused {0} events after retries")]
    Refused(usize),
    #[error("the event bus could not be reached")]
    Bus(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where events go.
pub trait Bus: Send + Sync {
    /// Puts up to ten events; answers the indexes of those the bus refused (to be tried again).
    fn put(&self, events: &[Event]) -> impl Future<Output = Result<Vec<usize>, PublishError>> + Send;
}

/// What a connection's events carry of it.
pub trait Tenants: Send + Sync {
    /// The connection's tenant and status, if it exists.
    fn tenant(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Option<(String, ConnectionStatus)>, StoreError>> + Send;
}

impl<S: ConnectionStore> Tenants for S {
    async fn tenant(&self, connection_id: &str) -> Result<Option<(String, ConnectionStatus)>, StoreError> {
        Ok(self.get_connection(connection_id).await?.map(|c| (c.tenant_id, c.status)))
    }
}

/// What a batch gave.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub events: usize,
    /// Events of connections that are gone or revoked, not published.
    pub dropped: usize,
    /// Stream records that could not be read (logged).
    pub unreadable: usize,
    /// Events already on the bus (a record delivered again), not published twice.
    pub repeated: usize,
}

fn is_connection_event(event: &Event) -> bool {
    [CONNECTED, RECONNECTED, NEEDS_REAUTH, REVOKED, SITE_LOST, SITE_ADDED].contains(&event.detail_type)
}

pub async fn publish<T: Tenants + EventLedger, B: Bus>(
    tenants: &T,
    bus: &B,
    batch: &StreamBatch,
) -> Result<Published, PublishError> {
    let mut events = Vec::new();
    let mut published = Published::default();
    for record in &batch.records {
        match derive(record) {
            Ok(derived) => events.extend(derived),
            // A record this version cannot read would otherwise hold up its shard for a day of retries: it is
            // logged (with its id, to find it) and passed over.
            Err(error) => {
                tracing::error!(error = %runtime::error_chain(&error), event_id = %record.event_id, "a stream record could not be read; its events are lost");
                published.unreadable += 1;
            }
        }
    }
    let mut known: HashMap<String, Option<(String, ConnectionStatus)>> = HashMap::new();
    let mut kept = Vec::with_capacity(events.len());
    for mut event in events {
        if is_connection_event(&event) {
            kept.push(event);
            continue;
        }
        let id = event.connection_id().to_owned();
        if !known.contains_key(&id) {
            let found = tenants.tenant(&id).await?;
            known.insert(id.clone(), found);
        }
        match &known[&id] {
            Some((tenant, status)) if *status != ConnectionStatus::Revoked => {
                event.detail.insert("tenant_id".into(), tenant.clone().into());
                kept.push(event);
            }
            _ => published.dropped += 1,
        }
    }
    // Once each: not again within the batch, nor what an earlier delivery already put on the bus.
    let ids: Vec<String> = kept.iter().map(|e| e.event_id().to_owned()).collect();
    let mut done: HashSet<String> = tenants.published(&ids).await?;
    let before = kept.len();
    kept.retain(|event| done.insert(event.event_id().to_owned()));
    published.repeated = before - kept.len();
    let sizes: Vec<usize> = kept.iter_mut().map(fit).collect();
    for entries in puts(&kept, &sizes) {
        let mut pending: Vec<Event> = entries.to_vec();
        for attempt in 0..ATTEMPTS {
            let refused = bus.put(&pending).await?;
            pending = refused.into_iter().filter_map(|i| pending.get(i).cloned()).collect();
            if pending.is_empty() {
                break;
            }
            tracing::warn!(refused = pending.len(), attempt, "the event bus refused some events; trying them again");
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        // What the bus took is noted even when some entries still failed: the batch's retry puts only the rest.
        let still: HashSet<&str> = pending.iter().map(Event::event_id).collect();
        let taken: Vec<String> =
            entries.iter().map(|e| e.event_id()).filter(|id| !still.contains(id)).map(str::to_owned).collect();
        tenants.note_published(&taken, time::OffsetDateTime::now_utc()).await?;
        published.events += taken.len();
        if !pending.is_empty() {
            return Err(PublishError::Refused(pending.len()));
        }
    }
    Ok(published)
}

/// The events in `PutEvents` calls: at most ten entries, and at most [`MAX_PUT`] bytes of details together (the bus
/// limits a whole request, not only an entry). `sizes`: each event's detail, serialised (what [`fit`] answers).
fn puts<'e>(events: &'e [Event], sizes: &[usize]) -> Vec<&'e [Event]> {
    let mut calls = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, detail) in sizes.iter().enumerate().take(events.len()) {
        let size = detail + ENTRY_OVERHEAD;
        if i > start && (i - start == ENTRIES_PER_PUT || bytes + size > MAX_PUT) {
            calls.push(&events[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < events.len() {
        calls.push(&events[start..]);
    }
    calls
}

fn detail_size(event: &Event) -> usize {
    serde_json::to_string(&event.detail).map_or(0, |s| s.len())
}

/// Keeps an event under the bus's size limit: past it, the object (and its previous values) are left out, and the
/// event says so; the product reads the object from the objects API. Answers the size of the detail as it goes out.
fn fit(event: &mut Event) -> usize {
    let size = detail_size(event);
    if size <= MAX_DETAIL {
        return size;
    }
    event.detail.remove("object");
    event.detail.remove("previous");
    event.detail.insert("truncated".into(), true.into());
    detail_size(event)
}

/// The stack's EventBridge bus.
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        Self { client, bus: bus.into() }
    }
}

impl Bus for EventBridgeBus {
    async fn put(&self, events: &[Event]) -> Result<Vec<usize>, PublishError> {
        use aws_sdk_eventbridge::types::PutEventsRequestEntry;
        let entries = events.iter().map(|event| {
            PutEventsRequestEntry::builder()
                .event_bus_name(&self.bus)
                .source(SOURCE)
                .detail_type(event.detail_type)
                .detail(serde_json::to_string(&event.detail).unwrap_or_default())
                .build()
        });
        let output = self
            .client
            .put_events()
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .map_err(|e| PublishError::Bus(Box::new(e)))?;
        Ok(output
            .entries()
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.error_code().is_some())
            .map(|(i, _)| i)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::tests::{conn, object, record};
    use std::sync::Mutex;
    use store::MemoryStore;

    /// Refuses each event the first time it sees it, then takes it.
    #[derive(Default)]
    struct Flaky {
        seen: Mutex<Vec<String>>,
        taken: Mutex<Vec<Event>>,
    }

    impl Bus for Flaky {
        async fn put(&self, events: &[Event]) -> Result<Vec<usize>, PublishError> {
            assert!(events.len() <= ENTRIES_PER_PUT);
            let mut seen = self.seen.lock().unwrap();
            let mut refused = Vec::new();
            for (i, event) in events.iter().enumerate() {
                if seen.contains(&event.event_id().to_owned()) {
                    self.taken.lock().unwrap().push(event.clone());
                } else {
                    seen.push(event.event_id().to_owned());
                    refused.push(i);
                }
            }
            Ok(refused)
        }
    }

    /// A store holding one active connection, `con_1` of `tenant-9`.
    async fn with_connection() -> (MemoryStore, store::Connection) {
        let store = MemoryStore::new();
        let connection = store::contract::connection("tenant-9", "con_1");
        store.upsert_connection(&connection).await.unwrap();
        (store, connection)
    }

    /// User `a{n}` as the mirror stores it.
    fn user(n: usize) -> serde_dynamo::Item {
        object(&format!("a{n}"), serde_json::json!({"account_id": format!("a{n}")}), false, 0)
    }

    #[tokio::test]
    async fn events_name_their_tenant_survive_refusals_and_a_revoked_connection_says_nothing_more() {
        let (store, connection) = with_connection().await;
        let mut records: Vec<_> = (0..12).map(|n| record(&format!("o{n}"), None, Some(user(n)))).collect();
        records.push(record("c1", None, Some(conn(&connection))));
        // A connection item this version cannot read: passed over, not a batch stuck for a day.
        let mut unreadable = conn(&connection);
        unreadable.remove("connection_id");
        records.push(record("c2", None, Some(unreadable)));
        let batch = StreamBatch { records };
        let bus = Flaky::default();
        let published = publish(&store, &bus, &batch).await.unwrap();
        assert_eq!(published, Published { events: 13, unreadable: 1, ..Published::default() });
        let taken = bus.taken.lock().unwrap().clone();
        assert_eq!(taken.len(), 13, "every refused event was tried again");
        assert!(taken.iter().all(|e| e.detail["tenant_id"] == "tenant-9"), "{taken:?}");

        store.revoke_connection("con_1", time::OffsetDateTime::now_utc()).await.unwrap();
        let late = StreamBatch { records: vec![record("o99", None, Some(user(99)))] };
        let published = publish(&store, &Flaky::default(), &late).await.unwrap();
        assert_eq!(
            published,
            Published { dropped: 1, ..Published::default() },
            "nothing of a revoked connection's data"
        );
    }

    #[tokio::test]
    async fn a_record_delivered_again_or_a_batch_retried_puts_nothing_twice() {
        let (store, _) = with_connection().await;
        // One record twice in a batch: one event.
        let twice = StreamBatch { records: vec![record("o1", None, Some(user(1))), record("o1", None, Some(user(1)))] };
        let bus = Flaky::default();
        let published = publish(&store, &bus, &twice).await.unwrap();
        assert_eq!((published.events, published.repeated), (1, 1));
        // The batch delivered again, with a record it did not have: only the new one goes.
        let again = StreamBatch { records: vec![record("o1", None, Some(user(1))), record("o2", None, Some(user(2)))] };
        let published = publish(&store, &bus, &again).await.unwrap();
        assert_eq!((published.events, published.repeated), (1, 1));
        let ids: Vec<String> = bus.taken.lock().unwrap().iter().map(|e| e.event_id().to_owned()).collect();
        assert_eq!(ids, ["o1", "o2"]);
    }

    #[test]
    fn a_put_holds_ten_entries_and_stays_under_the_requests_size_limit() {
        let sized = |bytes: usize| {
            let mut event = Event { detail_type: crate::OBJECT_CREATED, detail: serde_json::Map::new() };
            event.detail.insert("object".into(), "x".repeat(bytes).into());
            event
        };
        let sizes = |events: &[Event]| {
            let sizes: Vec<usize> = events.iter().map(detail_size).collect();
            puts(events, &sizes).iter().map(|call| call.len()).collect::<Vec<_>>()
        };
        assert_eq!(sizes(&vec![sized(10); 25]), [10, 10, 5]);
        // 100 KB details: two a request (three would pass 256 KB).
        assert_eq!(sizes(&vec![sized(100 * 1024); 5]), [2, 2, 1]);
        // One as big as an entry may be goes alone, between small ones.
        let mixed = [sized(20 * 1024), sized(MAX_DETAIL - 100), sized(20 * 1024), sized(20 * 1024)];
        assert_eq!(sizes(&mixed), [1, 1, 2]);
        assert!(puts(&[], &[]).is_empty());
    }

    #[test]
    fn an_event_past_the_bus_limit_leaves_its_object_out() {
        let mut event = Event { detail_type: crate::OBJECT_UPDATED, detail: serde_json::Map::new() };
        event.detail.insert("object".into(), "x".repeat(MAX_DETAIL + 1).into());
        event.detail.insert("previous".into(), serde_json::json!({}));
        event.detail.insert("key".into(), "k".into());
        fit(&mut event);
        assert_eq!(serde_json::Value::Object(event.detail), serde_json::json!({"key": "k", "truncated": true}));
    }
}
