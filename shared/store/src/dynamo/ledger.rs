//! The event ledger (`pk = EVENT#<event id>`, `sk = EVENT`, `ttl` two days on): the ids of the events put on the
//! bus, so that a stream record delivered again gives no second event. The state table's stream filter passes only
//! connections and run records, so these items never reach the event publisher themselves.

use super::{DynamoStore, Item, ttl};
use crate::mirror_dynamo::{batch_get, batch_write};
use crate::{EventLedger, StoreError};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use std::collections::HashSet;
use time::OffsetDateTime;

/// Longer than DynamoDB Streams keeps a record (24 hours).
const KEPT: time::Duration = time::Duration::days(2);
const SK: &str = "EVENT";

fn key(id: &str) -> Item {
    Item::from([
        ("pk".to_owned(), AttributeValue::S(format!("EVENT#{id}"))),
        ("sk".to_owned(), AttributeValue::S(SK.into())),
    ])
}

impl EventLedger for DynamoStore {
    async fn published(&self, ids: &[String]) -> Result<HashSet<String>, StoreError> {
        let unique: HashSet<&String> = ids.iter().collect();
        let keys = unique.into_iter().map(|id| key(id)).collect();
        let items = batch_get(&self.client, &self.table, keys, |request| request.projection_expression("pk")).await?;
        Ok(items
            .iter()
            .filter_map(|item| item.get("pk")?.as_s().ok()?.strip_prefix("EVENT#").map(str::to_owned))
            .collect())
    }

    async fn note_published(&self, ids: &[String], now: OffsetDateTime) -> Result<(), StoreError> {
        let expires = ttl(now + KEPT).unwrap_or_default();
        let unique: HashSet<&String> = ids.iter().collect();
        let mut requests = Vec::with_capacity(unique.len());
        for id in unique {
            let mut item = key(id);
            item.insert("ttl".into(), AttributeValue::N(expires.to_string()));
            let put = PutRequest::builder().set_item(Some(item)).build().map_err(StoreError::dynamo)?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        batch_write(&self.client, &self.table, requests).await
    }
}
