//! [`MirrorStore`] on DynamoDB: `pk = <connection id>#<type>`, `sk = <bucket>#<key>`; a big group's member chunks
//! under `pk = <connection id>#groups#members#<group id>`, `sk = <bucket, 8 hex digits>`, attribute `ids`.

use crate::StoreError;
use crate::mirror::{Cursor, MemberChunk, MirrorObject, MirrorStore, Scope, Stored, bucket};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::builders::KeysAndAttributesBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, WriteRequest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

/// DynamoDB's limits per call.
const BATCH_GET: usize = 100;
const BATCH_WRITE: usize = 25;
/// Unprocessed keys or items are retried with exponential backoff, this many times.
const BATCH_RETRIES: u32 = 8;

#[derive(Debug, Clone)]
pub struct DynamoMirror {
    client: Client,
    table: String,
}

#[derive(Serialize, Deserialize)]
struct MirrorItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    object: MirrorObject,
}

fn pk(scope: &Scope) -> String {
    format!("{}#{}", scope.connection_id, scope.object_type.as_str())
}

fn members_pk(scope: &Scope, key: &str) -> String {
    format!("{}#members#{key}", pk(scope))
}

fn members_sk(bucket: u32) -> String {
    format!("{bucket:08x}")
}

#[derive(Serialize, Deserialize)]
struct ChunkItem {
    pk: String,
    sk: String,
    ids: Vec<String>,
}

fn sk(key: &str) -> String {
    format!("{:02x}#{key}", bucket(key))
}

fn key_of(scope: &Scope, key: &str) -> Item {
    HashMap::from([("pk".to_owned(), AttributeValue::S(pk(scope))), ("sk".to_owned(), AttributeValue::S(sk(key)))])
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(50u64 << attempt.min(6))).await;
}

impl DynamoMirror {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        batch_write(&self.client, &self.table, requests).await
    }

    /// The items of `keys` in `scope`: only what a comparison reads when `compare`.
    async fn batch_get(&self, scope: &Scope, keys: &[String], compare: bool) -> Result<Vec<Item>, StoreError> {
        let mut unique: Vec<&String> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        let keys = unique.iter().map(|k| key_of(scope, k)).collect();
        batch_get(&self.client, &self.table, keys, |request| {
            if compare {
                request
                    .projection_expression("#k, #h, deleted")
                    .expression_attribute_names("#k", "key")
                    .expression_attribute_names("#h", "hash")
            } else {
                request
            }
        })
        .await
    }
}

/// BatchWriteItem in chunks of 25, retrying what DynamoDB leaves unprocessed.
pub(crate) async fn batch_write(client: &Client, table: &str, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
    for chunk in requests.chunks(BATCH_WRITE) {
        let mut pending = chunk.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            let output =
                client.batch_write_item().request_items(table, pending).send().await.map_err(StoreError::dynamo)?;
            pending = output.unprocessed_items.and_then(|mut u| u.remove(table)).unwrap_or_default();
            if !pending.is_empty() {
                attempt += 1;
                if attempt > BATCH_RETRIES {
                    return Err(StoreError::Unprocessed("items"));
                }
                backoff(attempt).await;
            }
        }
    }
    Ok(())
}

/// BatchGetItem of `keys` (100 a call, strongly consistent, unprocessed keys retried), each call's request shaped
/// by `shape` (a projection).
pub(crate) async fn batch_get(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    shape: impl Fn(KeysAndAttributesBuilder) -> KeysAndAttributesBuilder,
) -> Result<Vec<Item>, StoreError> {
    let mut found = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(BATCH_GET) {
        let request = shape(KeysAndAttributes::builder().set_keys(Some(chunk.to_vec())).consistent_read(true));
        let mut pending = Some(request.build().map_err(StoreError::dynamo)?);
        let mut attempt = 0;
        while let Some(request) = pending.take() {
            let output =
                client.batch_get_item().request_items(table, request).send().await.map_err(StoreError::dynamo)?;
            found.extend(output.responses.and_then(|mut r| r.remove(table)).unwrap_or_default());
            pending = output.unprocessed_keys.and_then(|mut u| u.remove(table)).filter(|k| !k.keys().is_empty());
            if pending.is_some() {
                attempt += 1;
                if attempt > BATCH_RETRIES {
                    return Err(StoreError::Unprocessed("keys"));
                }
                backoff(attempt).await;
            }
        }
    }
    Ok(found)
}

impl MirrorStore for DynamoMirror {
    async fn stored(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, Stored>, StoreError> {
        let items = self.batch_get(scope, keys, true).await?;
        let mut found = HashMap::with_capacity(items.len());
        for item in items {
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            if let (Some(key), Some(hash)) = (text("key"), text("hash")) {
                let deleted = item.get("deleted").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
                found.insert(key, Stored { hash, deleted });
            }
        }
        Ok(found)
    }

    async fn objects(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, MirrorObject>, StoreError> {
        self.batch_get(scope, keys, false)
            .await?
            .into_iter()
            .map(|item| {
                let object = serde_dynamo::from_item::<_, MirrorItem>(item).map_err(StoreError::Corrupt)?.object;
                Ok((object.key.clone(), object))
            })
            .collect()
    }

    async fn write(&self, scope: &Scope, objects: &[MirrorObject]) -> Result<(), StoreError> {
        let mut requests = Vec::with_capacity(objects.len());
        for object in objects {
            let item: Item =
                serde_dynamo::to_item(MirrorItem { pk: pk(scope), sk: sk(&object.key), object: object.clone() })
                    .map_err(StoreError::Corrupt)?;
            let put = PutRequest::builder().set_item(Some(item)).build().map_err(StoreError::dynamo)?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        self.batch_write(requests).await
    }

    async fn list(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<MirrorObject>, Option<Cursor>), StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(pk(scope)))
            .limit(limit.clamp(1, 1000) as i32);
        if let Some(after) = after {
            let sk = URL_SAFE_NO_PAD
                .decode(after)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|sk| sk.len() > 3 && sk.as_bytes()[2] == b'#')
                .ok_or(StoreError::InvalidCursor)?;
            let mut start = key_of(scope, "");
            start.insert("sk".into(), AttributeValue::S(sk));
            query = query.set_exclusive_start_key(Some(start));
        }
        let output = query.send().await.map_err(StoreError::dynamo)?;
        let objects = output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item::<_, MirrorItem>(item).map(|i| i.object).map_err(StoreError::Corrupt))
            .collect::<Result<Vec<_>, _>>()?;
        let next = output
            .last_evaluated_key
            .and_then(|k| k.get("sk").and_then(|v| v.as_s().ok()).map(|sk| URL_SAFE_NO_PAD.encode(sk)));
        Ok((objects, next))
    }

    async fn write_members(
        &self,
        scope: &Scope,
        key: &str,
        chunks: &[MemberChunk],
        removed: &[u32],
    ) -> Result<(), StoreError> {
        let pk = members_pk(scope, key);
        let mut requests = Vec::with_capacity(chunks.len() + removed.len());
        for chunk in chunks {
            let item = ChunkItem { pk: pk.clone(), sk: members_sk(chunk.bucket), ids: chunk.ids.clone() };
            let item: Item = serde_dynamo::to_item(item).map_err(StoreError::Corrupt)?;
            let put = PutRequest::builder().set_item(Some(item)).build().map_err(StoreError::dynamo)?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        for bucket in removed {
            let key = HashMap::from([
                ("pk".to_owned(), AttributeValue::S(pk.clone())),
                ("sk".to_owned(), AttributeValue::S(members_sk(*bucket))),
            ]);
            let delete = DeleteRequest::builder().set_key(Some(key)).build().map_err(StoreError::dynamo)?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        self.batch_write(requests).await
    }

    async fn members(
        &self,
        scope: &Scope,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<Cursor>), StoreError> {
        let from = match after {
            None => (0, 0),
            Some(cursor) => crate::mirror::parse_members_cursor(cursor).ok_or(StoreError::InvalidCursor)?,
        };
        // Chunks hold about CHUNK_MEMBERS ids: read a few more than the page needs.
        let wanted = (limit / crate::mirror::CHUNK_MEMBERS + 2) as i32;
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk >= :sk")
            .expression_attribute_values(":pk", AttributeValue::S(members_pk(scope, key)))
            .expression_attribute_values(":sk", AttributeValue::S(members_sk(from.0)))
            .limit(wanted)
            .send()
            .await
            .map_err(StoreError::dynamo)?;
        let chunks = output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                let item: ChunkItem = serde_dynamo::from_item(item).map_err(StoreError::Corrupt)?;
                let bucket = u32::from_str_radix(&item.sk, 16)
                    .map_err(|_| StoreError::Inconsistent(format!("member chunk key {} is not hex", item.sk)))?;
                Ok(MemberChunk { bucket, ids: item.ids })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(crate::mirror::members_page(&chunks, from, limit, output.last_evaluated_key.is_some()))
    }

    async fn clear(&self, scope: &Scope) -> Result<usize, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(pk(scope)))
            .projection_expression("pk, sk")
            .into_paginator()
            .items()
            .send();
        let mut deletes = Vec::new();
        let mut groups = Vec::new();
        while let Some(item) = pages.next().await {
            let key = item.map_err(StoreError::dynamo)?;
            if scope.object_type == crate::ObjectType::Groups
                && let Some(sk) = key.get("sk").and_then(|v| v.as_s().ok())
            {
                groups.push(sk.get(3..).unwrap_or_default().to_owned());
            }
            let delete = DeleteRequest::builder().set_key(Some(key)).build().map_err(StoreError::dynamo)?;
            deletes.push(WriteRequest::builder().delete_request(delete).build());
        }
        let count = deletes.len();
        for group in groups {
            // A big group's member chunks go with it.
            let mut chunks = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(members_pk(scope, &group)))
                .projection_expression("pk, sk")
                .into_paginator()
                .items()
                .send();
            while let Some(item) = chunks.next().await {
                let key = item.map_err(StoreError::dynamo)?;
                let delete = DeleteRequest::builder().set_key(Some(key)).build().map_err(StoreError::dynamo)?;
                deletes.push(WriteRequest::builder().delete_request(delete).build());
            }
        }
        self.batch_write(deletes).await?;
        Ok(count)
    }
}
