//! Run records (one per connection and type, the run's lease in a condition), checkpoints and their chunks, and
//! the points pools.

use super::{DynamoStore, connection_pk, from_item, is_condition_failure, to_item, ttl};
use crate::StoreError;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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
