//! The mirror: `GET /connections/{id}/objects/{type}` pages through a type, and
//! `GET /connections/{id}/objects/groups/{group_id}/members` through any group's members.

use super::{Answer, connection, page_limit};
use crate::Deps;
use lambda_http::{Request, RequestExt};
use runtime::answers::ApiError;
use runtime::http;
use store::mirror::{MEMBER_CHUNKS, MemberChunk, MirrorStore, ObjectType, Scope, members_page, parse_members_cursor};
use store::{ConnectionStore, StoreError};

/// The store's cursor inside a signed one given for `binding` (this connection, this listing); a 400 for any other.
fn opened(keys: &tokens::KeyRing, binding: &str, cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    cursor.map(|signed| keys.open_cursor(binding, signed).ok_or(StoreError::InvalidCursor.into())).transpose()
}

/// The connection whose mirror is asked for: a revoked one's is never served (a sync that was writing when it was
/// disconnected cleans up after itself, and nothing it wrote meanwhile is shown).
async fn readable<S: ConnectionStore>(store: &S, id: &str) -> Result<store::Connection, ApiError> {
    let connection = connection(store, id).await?;
    if connection.status == store::ConnectionStatus::Revoked {
        return Err(ApiError::new(409, "connection_revoked", "This connection was disconnected: its data is gone."));
    }
    Ok(connection)
}

pub async fn list<S: ConnectionStore, M: MirrorStore, Q, A>(
    deps: &Deps<S, M, Q, A>,
    id: &str,
    object_type: &str,
    request: &Request,
) -> Answer {
    let Some(object_type) = ObjectType::parse(object_type) else {
        return Err(ApiError::new(404, "unknown_object_type", "Object types are users, groups, projects and spaces."));
    };
    let connection = readable(&deps.store, id).await?;
    let query = request.query_string_parameters();
    let limit = page_limit(&query, 100)?;
    let binding = format!("{id}/{}", object_type.as_str());
    let cursor = opened(&deps.keys, &binding, query.first("cursor"))?;
    let (mut objects, next) = deps.mirror.list(&Scope::new(id, object_type), cursor.as_deref(), limit).await?;
    let next = next.map(|next| deps.keys.sign_cursor(&binding, &next));
    if object_type == ObjectType::Users {
        store::tenant::enrich_users(&deps.store, &deps.mirror, &connection, &mut objects).await?;
    }
    let items: Vec<serde_json::Value> = objects
        .into_iter()
        .map(|object| {
            let mut item = object.record;
            // A big group's chunk hashes are the mirror's bookkeeping; its members are behind `/members`.
            item.remove(MEMBER_CHUNKS);
            item.insert("deleted".into(), object.deleted.into());
            let synced_at = object.synced_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
            item.insert("synced_at".into(), synced_at.into());
            serde_json::Value::Object(item)
        })
        .collect();
    Ok(http::json(200, &serde_json::json!({"items": items, "next_cursor": next})))
}

/// A page of a group's member account ids, however the mirror keeps them: in the group's record (up to 1,000) or in
/// chunks beside it. The cursor is the mirror's own (`<bucket>.<index>`; a small group is one bucket).
pub async fn members<S: ConnectionStore, M: MirrorStore, Q, A>(
    deps: &Deps<S, M, Q, A>,
    id: &str,
    group_id: &str,
    request: &Request,
) -> Answer {
    readable(&deps.store, id).await?;
    let query = request.query_string_parameters();
    let limit = page_limit(&query, 1000)?;
    let scope = Scope::new(id, ObjectType::Groups);
    let Some(group) = deps.mirror.objects(&scope, &[group_id.to_owned()]).await?.remove(group_id) else {
        return Err(ApiError::new(404, "group_not_found", "The mirror has no group with this id."));
    };
    let binding = format!("{id}/groups/{group_id}/members");
    let cursor = opened(&deps.keys, &binding, query.first("cursor"))?;
    let cursor = cursor.as_deref();
    let (items, next) = match group.record.get("member_account_ids").and_then(|ids| ids.as_array()) {
        Some(ids) => {
            let ids = ids.iter().filter_map(|id| id.as_str().map(str::to_owned)).collect();
            let inline = [MemberChunk { bucket: 0, ids }];
            match cursor.map(parse_members_cursor) {
                None => members_page(&inline, (0, 0), limit, false),
                Some(Some(from)) if from.0 == 0 => members_page(&inline, from, limit, false),
                Some(_) => return Err(StoreError::InvalidCursor.into()),
            }
        }
        None => deps.mirror.members(&scope, group_id, cursor, limit).await?,
    };
    let next = next.map(|next| deps.keys.sign_cursor(&binding, &next));
    Ok(http::json(
        200,
        &serde_json::json!({
            "group_id": group_id,
            "member_count": group.record.get("member_count"),
            "deleted": group.deleted,
            "items": items,
            "next_cursor": next,
        }),
    ))
}
