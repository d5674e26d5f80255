//! The DynamoDB implementation. Key layout (one table, `pk`/`sk`, GSI `gsi1` on `gsi1pk`/`gsi1sk`, TTL on `ttl`):
//!
//! | item            | pk                    | sk        | gsi1pk             | gsi1sk       | ttl |
//! |-----------------|-----------------------|-----------|--------------------|--------------|-----|
//! | connect session | `SESSION#<sha256>`    | `SESSION` |                    |              | yes |
//! | OAuth state     | `STATE#<sha256>`      | `STATE`   |                    |              | yes |
//! | connection      | `CONN#<connection id>`| `CONN`    | `TENANT#<tenant>`  | `CONN#<id>`  |     |
//!
//! | run record      | `CONN#<connection id>`| `RUN#<type>` |                 |              |     |
//! | points budget   | `BUDGET#<name>`       | `BUDGET`  |                    |              |     |
//! | run checkpoint  | `CONN#<connection id>`| `CKPT#<type>` |                |              | yes |
//! | checkpoint chunk| `CONN#<connection id>`| `CKPT#<type>#<key>` |          |              | yes |
//!
//! A connection item also carries the refresh lease (`lease_owner`, `lease_until` in epoch milliseconds) outside
//! the record: only [`CredentialStore`] reads or writes it.

use crate::{
    CompleteError, ConnectSession, Connection, ConnectionStore, CredentialStore, OAuthState, SealedCredentials,
    SessionStore, StateStore, StoreError,
};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem, Update};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::HashMap;
use time::OffsetDateTime;

type Item = HashMap<String, AttributeValue>;

pub const GSI1: &str = "gsi1";

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get<T: DeserializeOwned>(&self, pk: String, sk: &str) -> Result<Option<T>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::dynamo)?;
        output.item.map(from_item).transpose()
    }

    /// Puts an item whose key must be new (a `what`: session, state).
    async fn put_new(&self, item: Item, what: &'static str) -> Result<(), StoreError> {
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        match put.condition_expression("attribute_not_exists(pk)").send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(StoreError::Exists(what)),
            Err(e) => Err(StoreError::dynamo(e)),
        }
    }
}

/// An item as stored: the keys beside the record's own fields. (Connections get their `gsi1` keys from the
/// upsert's update expression; reading ignores attributes the record does not name.)
#[derive(Serialize, Deserialize)]
struct Keyed<T> {
    pk: String,
    sk: String,
    /// Epoch seconds after which DynamoDB may delete the item. Deletion is lazy, so readers check expiry too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<i64>,
    #[serde(flatten)]
    record: T,
}

/// The item of `record` under `pk`/`sk`, expiring at `ttl` if given.
fn to_item<T: Serialize>(pk: String, sk: &str, ttl: Option<i64>, record: T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(Keyed { pk, sk: sk.to_owned(), ttl, record }).map_err(StoreError::Corrupt)
}

fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    let keyed: Keyed<T> = serde_dynamo::from_item(item).map_err(StoreError::Corrupt)?;
    Ok(keyed.record)
}

fn session_pk(id_hash: &str) -> String {
    format!("SESSION#{id_hash}")
}
fn state_pk(state_hash: &str) -> String {
    format!("STATE#{state_hash}")
}
fn connection_pk(id: &str) -> String {
    format!("CONN#{id}")
}
fn tenant_gsi(tenant_id: &str) -> String {
    format!("TENANT#{tenant_id}")
}

fn ttl(at: OffsetDateTime) -> Option<i64> {
    Some(at.unix_timestamp())
}

fn rfc3339(at: OffsetDateTime) -> Result<String, StoreError> {
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| StoreError::Corrupt(serde::ser::Error::custom(e)))
}

impl SessionStore for DynamoStore {
    async fn put_session(&self, session: &ConnectSession) -> Result<(), StoreError> {
        let item = to_item(session_pk(&session.id_hash), "SESSION", ttl(session.expires_at), session)?;
        self.put_new(item, "session").await
    }

    async fn get_session(&self, id_hash: &str) -> Result<Option<ConnectSession>, StoreError> {
        self.get(session_pk(id_hash), "SESSION").await
    }
}

impl StateStore for DynamoStore {
    async fn put_state(&self, state: &OAuthState) -> Result<(), StoreError> {
        let item = to_item(state_pk(&state.state_hash), "STATE", ttl(state.expires_at), state)?;
        self.put_new(item, "state").await
    }

    async fn take_state(&self, state_hash: &str) -> Result<Option<OAuthState>, StoreError> {
        // A conditional delete that returns the old item: a replayed state finds nothing.
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(state_pk(state_hash)))
            .key("sk", AttributeValue::S("STATE".into()))
            .condition_expression("attribute_exists(pk)")
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => output.attributes.map(from_item).transpose(),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(StoreError::dynamo(e)),
        }
    }
}

impl ConnectionStore for DynamoStore {
    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        self.get(connection_pk(id), "CONN").await
    }

    async fn list_connections(&self, tenant_id: &str) -> Result<Vec<Connection>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("gsi1pk = :pk AND begins_with(gsi1sk, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(tenant_gsi(tenant_id)))
            .expression_attribute_values(":prefix", AttributeValue::S("CONN#".into()))
            .into_paginator()
            .items()
            .send();
        let mut connections = Vec::new();
        while let Some(item) = pages.next().await {
            connections.push(from_item(item.map_err(StoreError::dynamo)?)?);
        }
        Ok(connections)
    }

    async fn complete_connect(
        &self,
        session_id_hash: &str,
        connection: &Connection,
    ) -> Result<Connection, CompleteError> {
        let now = AttributeValue::S(rfc3339(connection.updated_at)?);
        let mark_used = Update::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(session_pk(session_id_hash)))
            .key("sk", AttributeValue::S("SESSION".into()))
            .update_expression("SET used_at = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(used_at)")
            .expression_attribute_values(":now", now)
            .build()
            .map_err(StoreError::dynamo)?;
        let upsert = connection_upsert(&self.table, connection)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(mark_used).build())
            .transact_items(TransactWriteItem::builder().update(upsert).build())
            .send()
            .await;
        if let Err(e) = result {
            let session_condition_failed = e
                .as_service_error()
                .and_then(|e| match e {
                    TransactWriteItemsError::TransactionCanceledException(e) => e.cancellation_reasons().first(),
                    _ => None,
                })
                .is_some_and(|reason| reason.code() == Some("ConditionalCheckFailed"));
            return Err(if session_condition_failed {
                CompleteError::SessionUsed
            } else {
                StoreError::dynamo(e).into()
            });
        }
        self.get_connection(&connection.connection_id)
            .await?
            .ok_or_else(|| StoreError::Inconsistent("the connection vanished right after it was written".into()).into())
    }

    async fn upsert_connection(&self, connection: &Connection) -> Result<Connection, StoreError> {
        let upsert = connection_upsert(&self.table, connection)?;
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(connection_pk(&connection.connection_id)))
            .key("sk", AttributeValue::S("CONN".into()))
            .update_expression(upsert.update_expression())
            .set_expression_attribute_names(upsert.expression_attribute_names().cloned())
            .set_expression_attribute_values(upsert.expression_attribute_values().cloned())
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(StoreError::dynamo)?;
        output
            .attributes
            .map(from_item)
            .transpose()?
            .ok_or(StoreError::Inconsistent("the upsert returned no item".into()))
    }

    async fn update_sites(&self, id: &str, sites: &[crate::Site], now: OffsetDateTime) -> Result<(), StoreError> {
        let sites = serde_dynamo::to_attribute_value(sites).map_err(StoreError::Corrupt)?;
        self.update_connection_if(
            id,
            "SET sites = :sites, updated_at = :now",
            "attribute_exists(pk)",
            vec![(":sites", sites), (":now", AttributeValue::S(rfc3339(now)?))],
            vec![],
        )
        .await
        .map(|_| ())
    }

    async fn active_connections(&self, after: Option<&str>) -> Result<(Vec<String>, Option<String>), StoreError> {
        // A scan of connection items: the scheduler's once-per-cadence walk over every tenant.
        let mut scan = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("sk = :conn AND #status = :active")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":conn", AttributeValue::S("CONN".into()))
            .expression_attribute_values(":active", AttributeValue::S("active".into()))
            .projection_expression("connection_id");
        if let Some(after) = after {
            // The cursor is the scan's last evaluated key, `pk\nsk`: a page may end on any kind of item.
            let (pk, sk) = after.split_once('\n').ok_or(StoreError::InvalidCursor)?;
            scan = scan
                .exclusive_start_key("pk", AttributeValue::S(pk.into()))
                .exclusive_start_key("sk", AttributeValue::S(sk.into()));
        }
        let output = scan.send().await.map_err(StoreError::dynamo)?;
        let ids = output
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| item.get("connection_id").and_then(|v| v.as_s().ok()).cloned())
            .collect();
        let next = output.last_evaluated_key.and_then(|k| {
            let pk = k.get("pk")?.as_s().ok()?;
            let sk = k.get("sk")?.as_s().ok()?;
            Some(format!("{pk}\n{sk}"))
        });
        Ok((ids, next))
    }

    async fn revoke_connection(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        self.revoke(id, now).await
    }
}

impl DynamoStore {
    /// See [`ConnectionStore::revoke_connection`].
    pub(crate) async fn revoke(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        self.update_connection_if(
            id,
            "SET #status = :revoked, status_reason = :reason, updated_at = :now, token_version = token_version + :one \
             REMOVE credentials, lease_owner, lease_until",
            "attribute_exists(pk)",
            vec![
                (":revoked", AttributeValue::S("revoked".into())),
                (":reason", AttributeValue::S("disconnected through the management API".into())),
                (":now", AttributeValue::S(rfc3339(now)?)),
                (":one", AttributeValue::N("1".into())),
            ],
            vec![("#status", "status")],
        )
        .await
    }
}

/// An update that creates or refreshes a connection from every field of the record, except that `created_at` is
/// kept when the item exists and `token_version` is incremented; fields that are `None` are removed.
fn connection_upsert(table: &str, connection: &Connection) -> Result<Update, StoreError> {
    let mut item = serde_dynamo::to_item::<_, Item>(connection).map_err(StoreError::Corrupt)?;
    item.insert("gsi1pk".into(), AttributeValue::S(tenant_gsi(&connection.tenant_id)));
    item.insert("gsi1sk".into(), AttributeValue::S(connection_pk(&connection.connection_id)));
    let created_at = item.remove("created_at");
    item.remove("token_version");

    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut sets = Vec::new();
    let mut removes = Vec::new();
    let mut fields: Vec<_> = item.into_iter().collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, value)) in fields.into_iter().enumerate() {
        names.insert(format!("#f{i}"), name);
        if matches!(value, AttributeValue::Null(_)) {
            removes.push(format!("#f{i}"));
        } else {
            sets.push(format!("#f{i} = :v{i}"));
            values.insert(format!(":v{i}"), value);
        }
    }
    names.insert("#created".into(), "created_at".into());
    names.insert("#version".into(), "token_version".into());
    if let Some(created_at) = created_at {
        values.insert(":created".into(), created_at);
    }
    values.insert(":zero".into(), AttributeValue::N("0".into()));
    values.insert(":one".into(), AttributeValue::N("1".into()));
    sets.push("#created = if_not_exists(#created, :created)".into());
    sets.push("#version = if_not_exists(#version, :zero) + :one".into());

    let mut expression = format!("SET {}", sets.join(", "));
    if !removes.is_empty() {
        expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    Update::builder()
        .table_name(table)
        .key("pk", AttributeValue::S(connection_pk(&connection.connection_id)))
        .key("sk", AttributeValue::S("CONN".into()))
        .update_expression(expression)
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .build()
        .map_err(StoreError::dynamo)
}

fn millis(at: OffsetDateTime) -> AttributeValue {
    AttributeValue::N((at.unix_timestamp_nanos() / 1_000_000).to_string())
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    error: &aws_sdk_dynamodb::error::SdkError<E>,
) -> bool {
    error.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

impl DynamoStore {
    /// A conditional update of a connection: `Ok(false)` when the condition does not hold.
    async fn update_connection_if(
        &self,
        connection_id: &str,
        update: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
        names: Vec<(&str, &str)>,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(connection_pk(connection_id)))
            .key("sk", AttributeValue::S("CONN".into()))
            .update_expression(update)
            .condition_expression(condition);
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        for (placeholder, name) in names {
            request = request.expression_attribute_names(placeholder, name);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(StoreError::dynamo(e)),
        }
    }
}

impl CredentialStore for DynamoStore {
    async fn try_lease(
        &self,
        connection_id: &str,
        owner: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.update_connection_if(
            connection_id,
            "SET lease_owner = :owner, lease_until = :until",
            "attribute_exists(pk) AND (attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :owner)",
            vec![(":owner", AttributeValue::S(owner.into())), (":until", millis(until)), (":now", millis(now))],
            vec![],
        )
        .await
    }

    async fn release_lease(&self, connection_id: &str, owner: &str) -> Result<(), StoreError> {
        self.update_connection_if(
            connection_id,
            "REMOVE lease_owner, lease_until",
            "lease_owner = :owner",
            vec![(":owner", AttributeValue::S(owner.into()))],
            vec![],
        )
        .await
        .map(|_| ())
    }

    async fn save_credentials(
        &self,
        connection_id: &str,
        expected_version: u64,
        credentials: &SealedCredentials,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let credentials = serde_dynamo::to_attribute_value(credentials).map_err(StoreError::Corrupt)?;
        self.update_connection_if(
            connection_id,
            "SET credentials = :credentials, token_version = token_version + :one, updated_at = :now \
             REMOVE lease_owner, lease_until",
            "token_version = :expected",
            vec![
                (":credentials", credentials),
                (":one", AttributeValue::N("1".into())),
                (":now", AttributeValue::S(rfc3339(now)?)),
                (":expected", AttributeValue::N(expected_version.to_string())),
            ],
            vec![],
        )
        .await
    }

    async fn mark_needs_reauth(
        &self,
        connection_id: &str,
        expected_version: u64,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.update_connection_if(
            connection_id,
            "SET #status = :status, status_reason = :reason, updated_at = :now REMOVE lease_owner, lease_until",
            "token_version = :expected",
            vec![
                (":status", AttributeValue::S("needs_reauth".into())),
                (":reason", AttributeValue::S(reason.into())),
                (":now", AttributeValue::S(rfc3339(now)?)),
                (":expected", AttributeValue::N(expected_version.to_string())),
            ],
            vec![("#status", "status")],
        )
        .await
    }
}

impl crate::BudgetStore for DynamoStore {
    async fn take_points(
        &self,
        name: &str,
        limits: crate::budget::BudgetLimits,
        draw: crate::budget::Draw,
        now: OffsetDateTime,
    ) -> Result<crate::budget::Take, StoreError> {
        // Read, compute, write back on the condition that nobody wrote in between; on a race, read again.
        for _ in 0..32 {
            let stored: Option<crate::budget::BucketState> = self.get(format!("BUDGET#{name}"), "BUDGET").await?;
            let (state, take) = crate::budget::take(stored, limits, draw, now);
            if stored == Some(state) {
                return Ok(take); // nothing to write (no refill, nothing granted)
            }
            let item = to_item(format!("BUDGET#{name}"), "BUDGET", None, state)?;
            let mut put = self.client.put_item().table_name(&self.table).set_item(Some(item));
            put = match stored {
                None => put.condition_expression("attribute_not_exists(pk)"),
                Some(old) => put
                    .condition_expression("#window = :window AND spent = :spent AND blocked_until_ms = :blocked")
                    .expression_attribute_names("#window", "window")
                    .expression_attribute_values(":window", AttributeValue::N(old.window.to_string()))
                    .expression_attribute_values(":spent", AttributeValue::N(old.spent.to_string()))
                    .expression_attribute_values(":blocked", AttributeValue::N(old.blocked_until_ms.to_string())),
            };
            match put.send().await {
                Ok(_) => return Ok(take),
                Err(e) if is_condition_failure(&e) => continue,
                Err(e) => return Err(StoreError::dynamo(e)),
            }
        }
        Err(StoreError::Contended(32))
    }
}

fn run_sk(object_type: crate::ObjectType) -> String {
    format!("RUN#{}", object_type.as_str())
}

impl DynamoStore {
    /// Writes a run record on a condition; `false` when the condition does not hold.
    async fn put_run_if(
        &self,
        connection_id: &str,
        run: &crate::RunRecord,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let item = to_item(connection_pk(connection_id), &run_sk(run.object_type), None, run)?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_values(":run_id", AttributeValue::S(run.run_id.clone()));
        if condition.contains("#status") {
            put = put.expression_attribute_names("#status", "status");
        }
        for (name, value) in values {
            put = put.expression_attribute_values(name, value);
        }
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(StoreError::dynamo(e)),
        }
    }
}

impl crate::RunStore for DynamoStore {
    async fn try_start_run(
        &self,
        connection_id: &str,
        run: &crate::RunRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.put_run_if(
            connection_id,
            run,
            "attribute_not_exists(pk) OR (#status <> :running AND #status <> :waiting) OR lease_until_ms < :now \
             OR run_id = :run_id",
            vec![
                (":running", AttributeValue::S("running".into())),
                (":waiting", AttributeValue::S("waiting".into())),
                (":now", AttributeValue::N(crate::budget::epoch_ms(now).to_string())),
            ],
        )
        .await
    }

    async fn save_run(&self, connection_id: &str, run: &crate::RunRecord) -> Result<bool, StoreError> {
        self.put_run_if(connection_id, run, "run_id = :run_id", vec![]).await
    }

    async fn get_run(
        &self,
        connection_id: &str,
        object_type: crate::ObjectType,
    ) -> Result<Option<crate::RunRecord>, StoreError> {
        self.get(connection_pk(connection_id), &run_sk(object_type)).await
    }

    async fn list_runs(&self, connection_id: &str) -> Result<Vec<crate::RunRecord>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :run)")
            .expression_attribute_values(":pk", AttributeValue::S(connection_pk(connection_id)))
            .expression_attribute_values(":run", AttributeValue::S("RUN#".into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::dynamo)?;
        output.items.unwrap_or_default().into_iter().map(from_item).collect()
    }
}

fn checkpoint_sk(object_type: crate::ObjectType) -> String {
    format!("CKPT#{}", object_type.as_str())
}

/// A chunk of a checkpoint as stored.
#[derive(Serialize, Deserialize)]
struct Chunk {
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

impl crate::checkpoint::CheckpointStore for DynamoStore {
    async fn load_checkpoint(
        &self,
        connection_id: &str,
        object_type: crate::ObjectType,
    ) -> Result<Option<crate::checkpoint::Saved>, StoreError> {
        let sk = checkpoint_sk(object_type);
        let Some(header) = self.get::<crate::Checkpoint>(connection_pk(connection_id), &sk).await? else {
            return Ok(None);
        };
        let mut chunks = Vec::with_capacity(header.chunks.len());
        for key in &header.chunks {
            let chunk: Chunk = self
                .get(connection_pk(connection_id), &format!("{sk}#{key}"))
                .await?
                .ok_or_else(|| StoreError::Inconsistent(format!("checkpoint chunk {key} is missing")))?;
            chunks.push(chunk.bytes);
        }
        Ok(Some((header, chunks)))
    }

    async fn save_checkpoint(
        &self,
        connection_id: &str,
        object_type: crate::ObjectType,
        base: &crate::Checkpoint,
        state: &str,
        seen: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<crate::Checkpoint>, StoreError> {
        let sk = checkpoint_sk(object_type);
        let expires = ttl(now + crate::checkpoint::CHECKPOINT_TTL);
        let mut keys = Vec::new();
        for (key, bytes) in crate::checkpoint::chunks(base, seen) {
            let item = to_item(
                connection_pk(connection_id),
                &format!("{sk}#{key}"),
                expires,
                Chunk { bytes: bytes.to_vec() },
            )?;
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(StoreError::dynamo)?;
            keys.push(key);
        }
        let header = crate::checkpoint::next(base, state, keys);
        let item = to_item(connection_pk(connection_id), &sk, expires, &header)?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_values(":run_id", AttributeValue::S(base.run_id.clone()));
        let put = if base.version == 0 {
            put.condition_expression("attribute_not_exists(pk) OR run_id <> :run_id")
        } else {
            put.condition_expression("run_id = :run_id AND version = :version")
                .expression_attribute_values(":version", AttributeValue::N(base.version.to_string()))
        };
        match put.send().await {
            Ok(_) => Ok(Some(header)),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(StoreError::dynamo(e)),
        }
    }

    async fn clear_checkpoint(&self, connection_id: &str, object_type: crate::ObjectType) -> Result<(), StoreError> {
        let mut keys = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(connection_pk(connection_id)))
            .expression_attribute_values(":prefix", AttributeValue::S(checkpoint_sk(object_type)))
            .projection_expression("pk, sk")
            .into_paginator()
            .items()
            .send();
        while let Some(key) = keys.next().await {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key.map_err(StoreError::dynamo)?))
                .send()
                .await
                .map_err(StoreError::dynamo)?;
        }
        Ok(())
    }
}
