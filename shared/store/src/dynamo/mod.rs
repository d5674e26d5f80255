//! The DynamoDB implementation. Key layout (one table, `pk`/`sk`, GSI `gsi1` on `gsi1pk`/`gsi1sk`, sparse GSI
//! `gsi2` on `gsi2pk`/`gsi2sk` that only active connections carry, TTL on `ttl`):
//!
//! | item            | pk                    | sk        | gsi1pk             | gsi1sk       | ttl |
//! |-----------------|-----------------------|-----------|--------------------|--------------|-----|
//! | connect session | `SESSION#<sha256>`    | `SESSION` |                    |              | yes |
//! | OAuth state     | `STATE#<sha256>`      | `STATE`   |                    |              | yes |
//! | connection      | `CONN#<connection id>`| `CONN`    | `TENANT#<tenant>`  | `CONN#<id>`  |     |
//! | (while active)  |                       |           | gsi2: `ACTIVE`     | `<id>`       |     |
//!
//! | run record      | `CONN#<connection id>`| `RUN#<type>` |                 |              |     |
//! | points budget   | `BUDGET#<name>`       | `BUDGET`  |                    |              |     |
//! | run checkpoint  | `CONN#<connection id>`| `CKPT#<type>` |                |              | yes |
//! | checkpoint chunk| `CONN#<connection id>`| `CKPT#<type>#<key>` |          |              | yes |
//! | published event | `EVENT#<event id>`    | `EVENT`   |                    |              | yes |
//!
//! Connections and their credentials are in [`connections`]; run records, checkpoints and the points pools in
//! [`runs`]; the ids of the events put on the bus in [`ledger`].
//!
//! A connection item also carries the refresh lease (`lease_owner`, `lease_until` in epoch milliseconds) outside
//! the record: only [`CredentialStore`] reads or writes it.

mod connections;
mod ledger;
mod runs;

use crate::{ConnectSession, OAuthState, SessionStore, StateStore, StoreError};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::HashMap;
use time::OffsetDateTime;

type Item = HashMap<String, AttributeValue>;

pub const GSI1: &str = "gsi1";
/// The sparse index of active connections: `gsi2pk` is [`ACTIVE`] on them and absent on every other item.
pub const GSI2: &str = "gsi2";
const ACTIVE: &str = "ACTIVE";

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

fn millis(at: OffsetDateTime) -> AttributeValue {
    AttributeValue::N((at.unix_timestamp_nanos() / 1_000_000).to_string())
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    error: &aws_sdk_dynamodb::error::SdkError<E>,
) -> bool {
    error.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}
