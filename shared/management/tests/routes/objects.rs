//! The mirror through the API: objects in pages, a group's members however many.

use super::*;

#[tokio::test]
async fn objects_are_listed_in_pages_with_deleted_and_synced_at() {
    use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope};
    let deps = deps();
    connected(&deps, vec![store::Product::Jira]).await;
    let now = time::OffsetDateTime::now_utc();
    let objects: Vec<MirrorObject> = (0..5)
        .map(|i| {
            MirrorObject::new(
                format!("acc-{i}"),
                json!({"account_id": format!("acc-{i}")}).as_object().unwrap().clone(),
                now,
            )
        })
        .collect();
    deps.mirror.write(&Scope::new("con_1", ObjectType::Users), &objects).await.unwrap();

    let (status, first) =
        call(&deps, request(Method::GET, "/connections/con_1/objects/users?limit=3", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert_eq!(first["items"][0]["deleted"], false);
    assert!(first["items"][0]["synced_at"].is_string());
    let cursor = first["next_cursor"].as_str().unwrap();
    let path = format!(
        "/connections/con_1/objects/users?limit=3&cursor={}",
        url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>()
    );
    let (_, second) = call(&deps, request(Method::GET, &path, Some(KEY), None)).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert_eq!(second["next_cursor"], Value::Null);

    for (path, status, code) in [
        ("/connections/con_1/objects/widgets", StatusCode::NOT_FOUND, "unknown_object_type"),
        ("/connections/nope/objects/users", StatusCode::NOT_FOUND, "connection_not_found"),
        ("/connections/con_1/objects/users?limit=0", StatusCode::BAD_REQUEST, "invalid_limit"),
        ("/connections/con_1/objects/users?cursor=garbage", StatusCode::BAD_REQUEST, "invalid_cursor"),
    ] {
        let (got, body) = call(&deps, request(Method::GET, path, Some(KEY), None)).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{path}");
    }
}

#[tokio::test]
async fn a_groups_members_are_paged_however_big_it_is() {
    use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope};
    let deps = deps();
    connected(&deps, vec![store::Product::Jira]).await;
    let scope = Scope::new("con_1", ObjectType::Groups);
    let now = time::OffsetDateTime::now_utc();
    let jira_users = |n: usize| -> Vec<atlassian::rest::JiraUser> {
        (0..n)
            .map(|i| atlassian::rest::JiraUser {
                account_id: format!("acc-{i:05}"),
                account_type: None,
                active: true,
                display_name: None,
                email_address: None,
            })
            .collect()
    };
    // A big group as the sync stores it (members in chunks), and a small one (members in its record).
    for (id, members) in [("g-big", 2500), ("g-small", 7)] {
        let group = atlassian::rest::JiraGroup { group_id: id.into(), name: id.into() };
        let record = sync::records::group(&group, &jira_users(members));
        if let Some(chunks) = &record.chunks {
            deps.mirror.write_members(&scope, id, chunks, &[]).await.unwrap();
        }
        deps.mirror.write(&scope, &[MirrorObject::new(record.key, record.fields, now)]).await.unwrap();
    }
    let (_, listed) = call(&deps, request(Method::GET, "/connections/con_1/objects/groups", Some(KEY), None)).await;
    let big = listed["items"].as_array().unwrap().iter().find(|g| g["group_id"] == "g-big").unwrap();
    assert_eq!(big["member_count"], 2500);
    assert!(big.get("member_chunks").is_none() && big.get("member_account_ids").is_none(), "{big}");

    for (id, count, limit) in [("g-big", 2500, 1000), ("g-small", 7, 3)] {
        let (mut seen, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let mut path = format!("/connections/con_1/objects/groups/{id}/members?limit={limit}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let (status, page) = call(&deps, request(Method::GET, &path, Some(KEY), None)).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert_eq!(page["member_count"], count);
            seen.extend(page["items"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(seen, (0..count).map(|i| format!("acc-{i:05}")).collect::<Vec<_>>(), "{id}");
    }
    for (path, status, code) in [
        ("/connections/con_1/objects/groups/nope/members", StatusCode::NOT_FOUND, "group_not_found"),
        ("/connections/con_1/objects/groups/g-small/members?cursor=3.0", StatusCode::BAD_REQUEST, "invalid_cursor"),
        ("/connections/con_1/objects/groups/g-big/members?cursor=x", StatusCode::BAD_REQUEST, "invalid_cursor"),
        ("/connections/con_1/objects/groups/g-big/members?limit=5000", StatusCode::BAD_REQUEST, "invalid_limit"),
        ("/connections/nope/objects/groups/g-big/members", StatusCode::NOT_FOUND, "connection_not_found"),
    ] {
        let (got, body) = call(&deps, request(Method::GET, path, Some(KEY), None)).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{path}");
    }
}

#[tokio::test]
async fn a_cursor_is_taken_only_where_it_was_given() {
    use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope};
    let deps = deps();
    connected(&deps, vec![store::Product::Jira]).await;
    let session = contract::session("tenant-2");
    deps.store.put_session(&session).await.unwrap();
    deps.store.complete_connect(&session.id_hash, &contract::connection("tenant-2", "con_2")).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    let three = |prefix: &str| -> Vec<MirrorObject> {
        (0..3).map(|i| MirrorObject::new(format!("{prefix}-{i}"), serde_json::Map::new(), now)).collect()
    };
    for (id, object_type) in [("con_1", ObjectType::Users), ("con_1", ObjectType::Groups), ("con_2", ObjectType::Users)]
    {
        deps.mirror.write(&Scope::new(id, object_type), &three(object_type.as_str())).await.unwrap();
    }
    let get = |path: String| {
        let deps = &deps;
        async move { call(deps, request(Method::GET, &path, Some(KEY), None)).await }
    };
    let escaped = |c: &str| url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>();
    let (_, first) = get("/connections/con_1/objects/users?limit=1".into()).await;
    let cursor = escaped(first["next_cursor"].as_str().unwrap());
    assert!(cursor.len() <= 512, "bounded");
    let (status, _) = get(format!("/connections/con_1/objects/users?limit=1&cursor={cursor}")).await;
    assert_eq!(status, StatusCode::OK, "where it was given");
    let mut tampered = first["next_cursor"].as_str().unwrap().to_owned();
    tampered.replace_range(3..4, if &tampered[3..4] == "A" { "B" } else { "A" });
    for path in [
        format!("/connections/con_1/objects/groups?cursor={cursor}"),
        format!("/connections/con_2/objects/users?cursor={cursor}"),
        format!("/connections/con_1/objects/groups/groups-0/members?cursor={cursor}"),
        format!("/connections/con_1/objects/users?cursor={}", escaped(&tampered)),
    ] {
        let (status, body) = get(path.clone()).await;
        assert_eq!((status, &body["error"]["code"]), (StatusCode::BAD_REQUEST, &json!("invalid_cursor")), "{path}");
    }
}
