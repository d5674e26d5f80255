//! Connections (with the tenant index) and their sealed credentials and refresh lease.

use super::DynamoStore;
use super::{
    ACTIVE, GSI1, GSI2, Item, connection_pk, from_item, is_condition_failure, millis, rfc3339, session_pk, tenant_gsi,
};
use crate::{CompleteError, Connection, ConnectionStore, CredentialStore, SealedCredentials, StoreError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem, Update};
use std::collections::HashMap;
use time::OffsetDateTime;

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

    async fn replace_connection(
        &self,
        connection: &Connection,
        token_version: u64,
    ) -> Result<Option<Connection>, StoreError> {
        self.write_connection(connection, Some(token_version)).await
    }

    async fn upsert_connection(&self, connection: &Connection) -> Result<Connection, StoreError> {
        (self.write_connection(connection, None).await?)
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
        // The sparse index of active connections (only they carry `gsi2pk`), in connection id order: the scheduler's
        // once-per-cadence walk reads exactly them, never the table.
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI2)
            .key_condition_expression("gsi2pk = :active")
            .expression_attribute_values(":active", AttributeValue::S(ACTIVE.into()));
        if let Some(after) = after {
            query = query
                .exclusive_start_key("gsi2pk", AttributeValue::S(ACTIVE.into()))
                .exclusive_start_key("gsi2sk", AttributeValue::S(after.into()))
                .exclusive_start_key("pk", AttributeValue::S(connection_pk(after)))
                .exclusive_start_key("sk", AttributeValue::S("CONN".into()));
        }
        let output = query.send().await.map_err(StoreError::dynamo)?;
        let ids = output
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| item.get("gsi2sk").and_then(|v| v.as_s().ok()).cloned())
            .collect();
        let next = output.last_evaluated_key.and_then(|k| k.get("gsi2sk")?.as_s().ok().cloned());
        Ok((ids, next))
    }

    async fn revoke_connection(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        self.revoke(id, now).await
    }
}

impl DynamoStore {
    /// Writes a connection whole ([`connection_upsert`]) and answers it as stored. With `expected`, only while the
    /// stored one is still at that `token_version` and not revoked: `None` when it is not, and nothing is written.
    async fn write_connection(
        &self,
        connection: &Connection,
        expected: Option<u64>,
    ) -> Result<Option<Connection>, StoreError> {
        let upsert = connection_upsert(&self.table, connection)?;
        let mut names = upsert.expression_attribute_names().cloned().unwrap_or_default();
        let mut values = upsert.expression_attribute_values().cloned().unwrap_or_default();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(connection_pk(&connection.connection_id)))
            .key("sk", AttributeValue::S("CONN".into()))
            .update_expression(upsert.update_expression());
        if let Some(version) = expected {
            values.insert(":expected".into(), AttributeValue::N(version.to_string()));
            values.insert(":revoked".into(), AttributeValue::S("revoked".into()));
            names.insert("#state".into(), "status".into());
            request = request.condition_expression("#version = :expected AND #state <> :revoked");
        }
        let output = request
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match output {
            Ok(output) => output.attributes.map(from_item).transpose(),
            Err(e) if expected.is_some() && is_condition_failure(&e) => Ok(None),
            Err(e) => Err(StoreError::dynamo(e)),
        }
    }

    /// See [`ConnectionStore::revoke_connection`].
    pub(crate) async fn revoke(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        self.update_connection_if(
            id,
            "SET #status = :revoked, status_reason = :reason, updated_at = :now, token_version = token_version + :one \
             REMOVE credentials, lease_owner, lease_until, gsi2pk, gsi2sk",
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
    // In the active index while active; out of it otherwise (a null is removed below).
    let active = connection.status == crate::ConnectionStatus::Active;
    let (gsi2pk, gsi2sk) = match active {
        true => (AttributeValue::S(ACTIVE.into()), AttributeValue::S(connection.connection_id.clone())),
        false => (AttributeValue::Null(true), AttributeValue::Null(true)),
    };
    item.insert("gsi2pk".into(), gsi2pk);
    item.insert("gsi2sk".into(), gsi2sk);
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
            "SET #status = :status, status_reason = :reason, updated_at = :now \
             REMOVE lease_owner, lease_until, gsi2pk, gsi2sk",
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
