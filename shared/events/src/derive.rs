//! From one stream record to the events it means. Which item changed is read from its keys (the state table's
//! connections `CONN#{id}`/`CONN` and runs `CONN#{id}`/`RUN#{type}`; the mirror's objects `{id}#{type}`/`{bucket}#{key}`
//! and a big group's member chunks `{id}#groups#members#{group}`/`{bucket}`); every other item (sessions, states,
//! checkpoints, the points pools) means nothing to the product.
//!
//! What is not an event: a token refresh (the connection's credentials only), a run starting, pausing or waiting
//! (only its end), an object written again unchanged (`synced_at` only), and objects removed from the mirror (a
//! disconnect clears it: `Connection Revoked` says so once; [`crate::publish`] drops whatever a revoked
//! connection's items still say).

use crate::stream::StreamRecord;
use crate::{
    CONNECTED, Event, MEMBERS_CHANGED, NEEDS_REAUTH, OBJECT_CREATED, OBJECT_DELETED, OBJECT_UPDATED, RECONNECTED,
    REVOKED, RUN_FINISHED, SITE_ADDED, SITE_LOST,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use store::mirror::{MEMBER_CHUNKS, MirrorObject};
use store::{Connection, ConnectionStatus, RunRecord};
use thiserror::Error;
use time::OffsetDateTime;

#[derive(Debug, Error)]
pub enum DeriveError {
    #[error("a stream record's image could not be read as the item its keys name")]
    Unreadable(#[source] serde_dynamo::Error),
}

#[derive(Deserialize)]
struct Keys {
    pk: String,
    sk: String,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    ids: Vec<String>,
}

/// The events a stream record means, in the order they happened.
pub fn derive(record: &StreamRecord) -> Result<Vec<Event>, DeriveError> {
    let change = &record.dynamodb;
    let Some(keys) = change.keys.clone().or_else(|| change.new_image.clone()).or_else(|| change.old_image.clone())
    else {
        return Ok(Vec::new());
    };
    let Ok(Keys { pk, sk }) = serde_dynamo::from_item::<_, Keys>(keys) else { return Ok(Vec::new()) };
    let occurred_at = change
        .created
        .and_then(|s| OffsetDateTime::from_unix_timestamp_nanos((s * 1e9) as i128).ok())
        .unwrap_or_else(OffsetDateTime::now_utc);
    let old = change.old_image.clone();
    let new = change.new_image.clone();
    let mut events = match (pk.strip_prefix("CONN#"), sk.as_str()) {
        (Some(_), "CONN") => connection(read(old)?, read(new)?),
        (Some(connection_id), run) if run.starts_with("RUN#") => run_finished(connection_id, read(old)?, read(new)?),
        (Some(_), _) => Vec::new(),
        (None, _) => match pk.split_once("#groups#members#") {
            // A run's staged parts of a giant group are its own until it applies them.
            Some((_, staged)) if staged.starts_with("staged#") => Vec::new(),
            Some((connection_id, group)) => {
                members_of_chunk(connection_id, group, read::<Chunk>(old)?, read::<Chunk>(new)?)
            }
            None => match pk.split_once('#') {
                Some((connection_id, object_type))
                    if record.event_name != "REMOVE"
                        && ["users", "groups", "projects", "spaces"].contains(&object_type) =>
                {
                    object(connection_id, object_type, read(old)?, read(new)?)
                }
                _ => Vec::new(),
            },
        },
    };
    let occurred = time::format_description::well_known::Rfc3339;
    let occurred_at = occurred_at.format(&occurred).unwrap_or_default();
    for (n, event) in events.iter_mut().enumerate() {
        let id = if n == 0 { record.event_id.clone() } else { format!("{}:{n}", record.event_id) };
        let mut detail = Map::new();
        detail.insert("event_id".into(), Value::from(id));
        detail.insert("occurred_at".into(), Value::from(occurred_at.clone()));
        detail.append(&mut event.detail);
        event.detail = detail;
    }
    Ok(events)
}

fn read<T: DeserializeOwned>(image: Option<serde_dynamo::Item>) -> Result<Option<T>, DeriveError> {
    image.map(serde_dynamo::from_item).transpose().map_err(DeriveError::Unreadable)
}

fn event(detail_type: &'static str, detail: Value) -> Event {
    let Value::Object(detail) = detail else { unreachable!("details are objects") };
    Event { detail_type, detail }
}

/// A connection as events show it: never its credentials.
fn connection_detail(c: &Connection) -> Value {
    let sites: Vec<Value> = c.sites.iter().filter(|s| s.lost_at.is_none()).map(site).collect();
    json!({
        "connection_id": c.connection_id, "tenant_id": c.tenant_id, "mode": c.mode, "status": c.status,
        "account_id": c.account_id, "org_id": c.org_id, "sites": sites,
    })
}

fn site(s: &store::Site) -> Value {
    json!({"cloud_id": s.cloud_id, "url": s.url, "name": s.name, "products": s.products})
}

fn connection(old: Option<Connection>, new: Option<Connection>) -> Vec<Event> {
    let Some(new) = new else { return Vec::new() };
    let detail = connection_detail(&new);
    let Some(old) = old else { return vec![event(CONNECTED, detail)] };
    let mut events = Vec::new();
    let with = |mut detail: Value, field: &str, value: Value| {
        detail[field] = value;
        detail
    };
    match (old.status, new.status) {
        (before, ConnectionStatus::NeedsReauth) if before != ConnectionStatus::NeedsReauth => {
            let reason = Value::from(new.status_reason.clone().unwrap_or_default());
            events.push(event(NEEDS_REAUTH, with(detail.clone(), "reason", reason)));
        }
        (before, ConnectionStatus::Revoked) if before != ConnectionStatus::Revoked => {
            events.push(event(REVOKED, detail.clone()));
        }
        _ if new.status == ConnectionStatus::Active
            && (old.status != ConnectionStatus::Active || old.connected_at != new.connected_at) =>
        {
            events.push(event(RECONNECTED, detail.clone()));
        }
        _ => {}
    }
    if new.status == ConnectionStatus::Revoked {
        return events;
    }
    let reached = |c: &Connection| -> BTreeSet<String> {
        c.sites.iter().filter(|s| s.lost_at.is_none()).map(|s| s.cloud_id.clone()).collect()
    };
    let (before, after) = (reached(&old), reached(&new));
    for lost in old.sites.iter().filter(|s| before.contains(&s.cloud_id) && !after.contains(&s.cloud_id)) {
        events.push(event(SITE_LOST, with(detail.clone(), "site", site(lost))));
    }
    for added in new.sites.iter().filter(|s| after.contains(&s.cloud_id) && !before.contains(&s.cloud_id)) {
        events.push(event(SITE_ADDED, with(detail.clone(), "site", site(added))));
    }
    events
}

fn run_finished(connection_id: &str, old: Option<RunRecord>, new: Option<RunRecord>) -> Vec<Event> {
    let Some(new) = new else { return Vec::new() };
    if new.status.is_live() {
        return Vec::new();
    }
    // The same run's end written again (a record touched after it ended) is not a second end.
    if let Some(old) = old
        && old.run_id == new.run_id
        && !old.status.is_live()
    {
        return Vec::new();
    }
    vec![event(
        RUN_FINISHED,
        json!({
            "connection_id": connection_id, "object_type": new.object_type, "run_id": new.run_id,
            "status": new.status, "started_at": rfc3339(new.started_at), "finished_at": new.finished_at.map(rfc3339),
            "counts": new.counts, "error_code": new.error_code, "error": new.error,
        }),
    )]
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// What the product sees of an object: its record, without the mirror's own bookkeeping.
fn shown(object: &MirrorObject) -> Map<String, Value> {
    let mut record = object.record.clone();
    record.remove(MEMBER_CHUNKS);
    record
}

fn object(connection_id: &str, object_type: &str, old: Option<MirrorObject>, new: Option<MirrorObject>) -> Vec<Event> {
    let Some(new) = new else { return Vec::new() };
    let base = |object: &MirrorObject| json!({"connection_id": connection_id, "object_type": object_type, "key": new.key, "object": shown(object)});
    let live_before = old.as_ref().filter(|o| !o.deleted);
    match (live_before, new.deleted) {
        (None, true) => Vec::new(),
        (None, false) => {
            let mut events = vec![event(OBJECT_CREATED, base(&new))];
            events.extend(inline_members(connection_id, &new.key, None, &new));
            events
        }
        (Some(old), true) => vec![event(OBJECT_DELETED, base(old))],
        (Some(old), false) => {
            let (before, after) = (shown(old), shown(&new));
            let changed: Vec<&String> = after
                .keys()
                .chain(before.keys().filter(|k| !after.contains_key(*k)))
                .filter(|k| before.get(*k) != after.get(*k))
                .collect();
            let mut events = Vec::new();
            if !changed.is_empty() {
                // The previous values, but not a member list: `Group Members Changed` says who came and went.
                let previous: Map<String, Value> = changed
                    .iter()
                    .filter(|k| k.as_str() != "member_account_ids")
                    .map(|k| ((*k).clone(), before.get(*k).cloned().unwrap_or(Value::Null)))
                    .collect();
                let mut detail = base(&new);
                detail["changed"] = json!(changed);
                detail["previous"] = Value::Object(previous);
                events.push(event(OBJECT_UPDATED, detail));
            }
            events.extend(inline_members(connection_id, &new.key, Some(old), &new));
            events
        }
    }
}

fn member_ids(object: &MirrorObject) -> Option<BTreeSet<String>> {
    let ids = object.record.get("member_account_ids")?.as_array()?;
    Some(ids.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
}

/// A small group's members, kept in its record: who came and who went.
fn inline_members(connection_id: &str, key: &str, old: Option<&MirrorObject>, new: &MirrorObject) -> Option<Event> {
    let after = member_ids(new)?;
    let before = old.and_then(member_ids).unwrap_or_default();
    members_changed(connection_id, key, &before, &after)
}

/// A big group's chunk of members: who came and who went in it (its group key is the record's `{cloud}#{id}` or
/// the Admin API's id, as the chunk's key says).
fn members_of_chunk(connection_id: &str, group: &str, old: Option<Chunk>, new: Option<Chunk>) -> Vec<Event> {
    let set = |c: Option<Chunk>| -> BTreeSet<String> { c.map(|c| c.ids.into_iter().collect()).unwrap_or_default() };
    members_changed(connection_id, group, &set(old), &set(new)).into_iter().collect()
}

fn members_changed(
    connection_id: &str,
    key: &str,
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
) -> Option<Event> {
    let added: Vec<&String> = after.difference(before).collect();
    let removed: Vec<&String> = before.difference(after).collect();
    if added.is_empty() && removed.is_empty() {
        return None;
    }
    Some(event(
        MEMBERS_CHANGED,
        json!({"connection_id": connection_id, "object_type": "groups", "key": key, "added": added, "removed": removed}),
    ))
}

#[cfg(test)]
pub(crate) mod tests;
