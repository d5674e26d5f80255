//! The management API's handler over the in-memory store.

use atlassian::fake::FakeAtlassian;
use jobs::MemoryQueue;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt};
use management::{Deps, handle};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::HashMap;
use store::{ConnectionStore, MemoryStore, SessionStore, contract};
use tokens::connect::{ReturnUrlAllowList, SessionSettings};

const KEY: &str = "mk_test_management_key";

fn deps() -> Deps<MemoryStore, MemoryStore, MemoryQueue, FakeAtlassian> {
    Deps {
        store: MemoryStore::new(),
        mirror: MemoryStore::new(),
        queue: MemoryQueue::default(),
        atlassian: FakeAtlassian::granting(&[]),
        keys: tokens::KeyRing::from_json(&tokens::KeyRing::generate_json("v1")).unwrap(),
        management_key: SecretString::from(KEY),
        cadences: management::Cadences::parse(management::Cadences::DEFAULT).unwrap(),
        sessions: SessionSettings {
            public_base_url: url::Url::parse("https://connector.example").unwrap(),
            ttl: time::Duration::minutes(15),
            return_urls: ReturnUrlAllowList::parse("https://app.example/").unwrap(),
        },
    }
}

fn request(method: Method, path_and_query: &str, key: Option<&str>, body: Option<Value>) -> Request {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut builder =
        lambda_http::http::Request::builder().method(method).uri(format!("https://connector.example{path}"));
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    let body = body.map(|b| Body::Text(b.to_string())).unwrap_or(Body::Empty);
    let query: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    builder.body(body).unwrap().with_query_string_parameters(query)
}

async fn call(
    deps: &Deps<MemoryStore, MemoryStore, MemoryQueue, FakeAtlassian>,
    request: Request,
) -> (StatusCode, Value) {
    let response = handle(deps, request).await.unwrap();
    let status = response.status();
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        _ => Value::Null,
    };
    (status, body)
}

#[tokio::test]
async fn every_route_needs_the_management_key() {
    let deps = deps();
    for (method, path) in [
        (Method::POST, "/connect-sessions"),
        (Method::GET, "/connections/x"),
        (Method::GET, "/connections?tenant_id=t"),
    ] {
        for key in [None, Some("wrong"), Some("")] {
            let (status, body) = call(&deps, request(method.clone(), path, key, Some(json!({"tenant_id": "t"})))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {key:?}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
}

#[tokio::test]
async fn creates_a_connect_session() {
    let deps = deps();
    let body = json!({"tenant_id": "tenant-1", "return_url": "https://app.example/settings"});
    let (status, body) = call(&deps, request(Method::POST, "/connect-sessions", Some(KEY), Some(body))).await;
    assert_eq!(status, StatusCode::CREATED);
    let session_id = body["session_id"].as_str().unwrap();
    assert!(session_id.starts_with("cs_"));
    assert_eq!(body["connect_url"], format!("https://connector.example/connect?session={session_id}"));
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    let stored = deps.store.get_session(&tokens::ids::sha256_hex(session_id)).await.unwrap().unwrap();
    assert_eq!(stored.return_url.as_deref(), Some("https://app.example/settings"));
}

#[tokio::test]
async fn bad_session_requests_are_answered_and_store_nothing() {
    let deps = deps();
    let cases = [
        (Some(json!({"return_url": "https://app.example/"})), "invalid_body"),
        (None, "invalid_body"),
        (Some(json!({"tenant_id": "t", "return_url": "https://evil.example/"})), "return_url_not_allowed"),
        (Some(json!({"tenant_id": ""})), "invalid_tenant"),
    ];
    for (body, code) in cases {
        let (status, answer) = call(&deps, request(Method::POST, "/connect-sessions", Some(KEY), body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["error"]["code"], code);
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(deps.store.session_count(), 0);
}

#[tokio::test]
async fn shows_connections_without_their_tokens() {
    let deps = deps();
    let session = contract::session("tenant-1");
    deps.store.put_session(&session).await.unwrap();
    let connection = contract::connection("tenant-1", "con_1");
    deps.store.complete_connect(&session.id_hash, &connection).await.unwrap();

    let (status, one) = call(&deps, request(Method::GET, "/connections/con_1", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["connection_id"], "con_1");
    assert_eq!(one["tenant_id"], "tenant-1");
    assert_eq!(one["mode"], "oauth");
    assert_eq!(one["status"], "active");
    assert_eq!(one["sites"][0]["products"], json!(["jira", "confluence"]));
    assert_eq!(one["sites"][0]["cloud_id"], "11111111-2222-3333-4444-555555555555");
    assert!(one["created_at"].is_string() && one["updated_at"].is_string());
    assert!(one.get("credentials").is_none() && one.get("token_version").is_none());

    let (status, list) = call(&deps, request(Method::GET, "/connections?tenant_id=tenant-1", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], json!([one]));
    let (_, empty) = call(&deps, request(Method::GET, "/connections?tenant_id=other", Some(KEY), None)).await;
    assert_eq!(empty, json!({"items": []}));
}

#[tokio::test]
async fn unknown_things_are_json_errors() {
    let deps = deps();
    let cases = [
        (Method::GET, "/connections/nope", StatusCode::NOT_FOUND, "connection_not_found"),
        (Method::GET, "/connections", StatusCode::BAD_REQUEST, "tenant_id_required"),
        (Method::GET, "/elsewhere", StatusCode::NOT_FOUND, "not_found"),
        (Method::DELETE, "/connect-sessions", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (method, path, status, code) in cases {
        let (got, body) = call(&deps, request(method, path, Some(KEY), None)).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{path}");
    }
    assert!(deps.store.list_connections("t").await.unwrap().is_empty());
}

async fn connected(deps: &Deps<MemoryStore, MemoryStore, MemoryQueue, FakeAtlassian>, products: Vec<store::Product>) {
    let session = contract::session("tenant-1");
    deps.store.put_session(&session).await.unwrap();
    let mut connection = contract::connection("tenant-1", "con_1");
    connection.sites[0].products = products;
    deps.store.complete_connect(&session.id_hash, &connection).await.unwrap();
}

#[tokio::test]
async fn the_connection_shows_its_latest_runs() {
    use store::{RunCounts, RunRecord, RunStatus, RunStore, mirror::ObjectType};
    let deps = deps();
    connected(&deps, vec![store::Product::Jira]).await;
    let (_, before) = call(&deps, request(Method::GET, "/connections/con_1", Some(KEY), None)).await;
    assert_eq!(before["sync"]["users"], Value::Null, "never run");
    assert_eq!(before["sync"]["spaces"]["status"], "not_available", "no Confluence site");

    let now = time::OffsetDateTime::now_utc();
    let run = RunRecord {
        status: RunStatus::Succeeded,
        finished_at: Some(now),
        counts: RunCounts { pages: 2, created: 5, updated: 1, unchanged: 3, deleted: 1, points: 40, held: 0 },
        ..RunRecord::running(ObjectType::Users, "r1", now, 0)
    };
    deps.store.try_start_run("con_1", &run, now).await.unwrap();
    let (_, after) = call(&deps, request(Method::GET, "/connections/con_1", Some(KEY), None)).await;
    let users = &after["sync"]["users"];
    assert_eq!(users["status"], "succeeded");
    assert_eq!(
        users["counts"],
        json!({"pages": 2, "created": 5, "updated": 1, "unchanged": 3, "deleted": 1, "points": 40, "held": 0})
    );
    assert!(users["started_at"].is_string() && users["finished_at"].is_string());
    assert_eq!(users["error"], Value::Null);
    assert_eq!((users["last_succeeded_at"].clone(), users["next_due_at"].clone()), (Value::Null, Value::Null));

    // A run waiting for the quota says until when; the last success and the next due time follow the cadence.
    let waiting = RunRecord {
        status: RunStatus::Waiting,
        waiting_until: Some(now + time::Duration::minutes(3)),
        last_succeeded_at: Some(now - time::Duration::hours(7)),
        error: Some("waiting for the app's Atlassian points budget to refill".into()),
        ..RunRecord::running(ObjectType::Users, "r1", now, 0)
    };
    deps.store.save_run("con_1", &waiting).await.unwrap();
    let (_, after) = call(&deps, request(Method::GET, "/connections/con_1", Some(KEY), None)).await;
    let users = &after["sync"]["users"];
    assert_eq!(users["status"], "waiting");
    let at = |field: &str| {
        time::OffsetDateTime::parse(users[field].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert!((at("waiting_until") - now - time::Duration::minutes(3)).abs() < time::Duration::seconds(1));
    // Six hours after a success seven hours ago: an hour overdue, visibly.
    assert!((at("next_due_at") - (now - time::Duration::hours(1))).abs() < time::Duration::seconds(1));
}

#[test]
fn cadences_come_from_the_schedules() {
    let cadences =
        management::Cadences::parse("users=rate(30 minutes), groups=rate(1 hour),projects=cron(0 3 * * ? *)").unwrap();
    assert_eq!(cadences.0.get(&store::mirror::ObjectType::Users), Some(&time::Duration::minutes(30)));
    assert_eq!(cadences.0.get(&store::mirror::ObjectType::Groups), Some(&time::Duration::HOUR));
    assert_eq!(cadences.0.get(&store::mirror::ObjectType::Projects), None, "a cron has no fixed interval");
    assert!(management::Cadences::parse("users=rate(2 weeks)").is_err());
    assert!(management::Cadences::parse("widgets=rate(1 day)").is_err());
}

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
async fn disconnecting_destroys_tokens_and_the_mirror() {
    use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope};
    let deps = deps();
    connected(&deps, vec![store::Product::Jira, store::Product::Confluence]).await;
    let object = MirrorObject::new(
        "g".into(),
        json!({"group_id": "g"}).as_object().unwrap().clone(),
        time::OffsetDateTime::now_utc(),
    );
    deps.mirror.write(&Scope::new("con_1", ObjectType::Groups), &[object]).await.unwrap();

    let (status, body) = call(&deps, request(Method::DELETE, "/connections/con_1", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "revoked");
    let stored = deps.store.get_connection("con_1").await.unwrap().unwrap();
    assert_eq!(stored.credentials, store::SealedCredentials::default(), "tokens destroyed");
    let (_, groups) = call(&deps, request(Method::GET, "/connections/con_1/objects/groups", Some(KEY), None)).await;
    assert_eq!(groups["items"], json!([]));
    let (status, _) = call(&deps, request(Method::DELETE, "/connections/nope", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_sync_is_queued_per_object_type() {
    use store::mirror::ObjectType;
    let deps = deps();
    connected(&deps, vec![store::Product::Jira, store::Product::Confluence]).await;
    let (status, body) = call(
        &deps,
        request(Method::POST, "/connections/con_1/sync", Some(KEY), Some(json!({"object_types": ["users", "spaces"]}))),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["enqueued"], json!(["users", "spaces"]));
    let (status, _) = call(&deps, request(Method::POST, "/connections/con_1/sync", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "no body: every type");
    let jobs = deps.queue.jobs.lock().unwrap().clone();
    let types: Vec<ObjectType> = jobs.iter().map(|j| j.object_type).collect();
    assert_eq!(
        types,
        vec![
            ObjectType::Users,
            ObjectType::Spaces,
            ObjectType::Users,
            ObjectType::Groups,
            ObjectType::Projects,
            ObjectType::Spaces
        ]
    );
    assert!(jobs.iter().all(|j| j.connection_id == "con_1"));

    for (path, body, status, code) in [
        (
            "/connections/con_1/sync",
            Some(json!({"object_types": ["widgets"]})),
            StatusCode::BAD_REQUEST,
            "unknown_object_type",
        ),
        ("/connections/con_1/sync", Some(json!({"object_types": []})), StatusCode::BAD_REQUEST, "unknown_object_type"),
        ("/connections/nope/sync", None, StatusCode::NOT_FOUND, "connection_not_found"),
    ] {
        let (got, answer) = call(&deps, request(Method::POST, path, Some(KEY), body)).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{path}");
    }
    deps.store.revoke_connection("con_1", time::OffsetDateTime::now_utc()).await.unwrap();
    let (status, answer) = call(&deps, request(Method::POST, "/connections/con_1/sync", Some(KEY), None)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("connection_not_active")));
    assert_eq!(deps.queue.jobs.lock().unwrap().len(), 6, "refused requests queue nothing");
}

#[tokio::test]
async fn admin_key_connections_are_checked_before_anything_is_asked_or_stored() {
    let deps = deps();
    let base = json!({
        "tenant_id": "t-admin", "mode": "admin_api_key", "org_id": "org-1", "admin_api_key": "ATCTT3xFfGN0-secret-key",
    });
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (with(json!({"mode": "oauth"})), "unsupported_mode"),
        (with(json!({"org_id": " "})), "missing_field"),
        (with(json!({"site_url": "https://acme.atlassian.net"})), "incomplete_site_token"),
        (
            with(json!({"site_url": "http://acme.atlassian.net", "site_email": "a@b.c", "site_api_token": "t"})),
            "invalid_site_url",
        ),
        (with(json!({"products": ["jira"]})), "products_need_site"),
        (
            with(
                json!({"site_url": "https://a.atlassian.net", "site_email": "a@b.c", "site_api_token": "t", "products": ["bitbucket"]}),
            ),
            "unknown_product",
        ),
        (json!({"tenant_id": 7}), "invalid_body"),
    ];
    for (body, code) in cases {
        let (status, answer) = call(&deps, request(Method::POST, "/connections", Some(KEY), Some(body))).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{answer}");
        assert!(!answer.to_string().contains("secret-key"), "the key is never echoed: {answer}");
    }
    // Well-formed, but the key administers no org by that id (the fake's key administers none): 422, nothing stored.
    let (status, answer) = call(&deps, request(Method::POST, "/connections", Some(KEY), Some(base))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("wrong_org_id")));
    assert!(deps.store.list_connections("t-admin").await.unwrap().is_empty());
}

#[tokio::test]
async fn oauth_users_take_email_and_status_from_the_tenants_admin_key_connection() {
    use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope};
    let deps = deps();
    connected(&deps, vec![store::Product::Jira]).await;
    let mut admin = contract::connection("tenant-1", "con_admin");
    admin.mode = store::ConnectionMode::AdminApiKey;
    deps.store.upsert_connection(&admin).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    let user = |id: &str, email: Value, status: &str, name: &str| {
        let record = json!({"account_id": id, "email": email, "status": status, "display_name": name, "sites": ["c1"]});
        MirrorObject::new(id.into(), record.as_object().unwrap().clone(), now)
    };
    let oauth = [user("a", Value::Null, "active", "Ada"), user("b", json!("b@jira.example"), "active", "Bo")];
    let from_admin =
        [user("a", json!("ada@acme.example"), "suspended", "Ada L."), user("b", Value::Null, "closed", "B")];
    deps.mirror.write(&Scope::new("con_1", ObjectType::Users), &oauth).await.unwrap();
    deps.mirror.write(&Scope::new("con_admin", ObjectType::Users), &from_admin).await.unwrap();

    let list = |id: &str| request(Method::GET, &format!("/connections/{id}/objects/users"), Some(KEY), None);
    let by_id = |page: &Value, id: &str| -> Value {
        page["items"].as_array().unwrap().iter().find(|u| u["account_id"] == id).cloned().unwrap()
    };
    let (_, page) = call(&deps, list("con_1")).await;
    let items = [by_id(&page, "a"), by_id(&page, "b")];
    // The hidden email and the real status come from the Admin API; a null admin email keeps Jira's; the rest is
    // the OAuth connection's own.
    assert_eq!(
        (items[0]["email"].as_str(), items[0]["status"].as_str()),
        (Some("ada@acme.example"), Some("suspended"))
    );
    assert_eq!((items[1]["email"].as_str(), items[1]["status"].as_str()), (Some("b@jira.example"), Some("closed")));
    assert_eq!((items[0]["display_name"].as_str(), &items[0]["sites"]), (Some("Ada"), &json!(["c1"])));
    // The admin-key connection's own objects are its own.
    let (_, own) = call(&deps, list("con_admin")).await;
    assert_eq!(by_id(&own, "a")["display_name"], "Ada L.");

    // Removing the admin-key connection leaves the OAuth one as its own sync made it.
    let (status, _) = call(&deps, request(Method::DELETE, "/connections/con_admin", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = call(&deps, list("con_1")).await;
    let ada = by_id(&page, "a");
    assert_eq!((ada["email"].clone(), ada["status"].as_str()), (Value::Null, Some("active")));
}

#[tokio::test]
async fn new_credentials_go_only_to_admin_key_connections() {
    let deps = deps();
    connected(&deps, vec![store::Product::Jira]).await;
    let patch = |id: &str, body: Value| request(Method::PATCH, &format!("/connections/{id}"), Some(KEY), Some(body));
    let key = json!({"admin_api_key": "ATCTT3xFfGN0-new-secret"});
    let cases = [
        (patch("con_1", json!({})), StatusCode::BAD_REQUEST, "nothing_to_update"),
        (patch("con_1", json!({"admin_api_key": "k", "extra": 1})), StatusCode::BAD_REQUEST, "invalid_body"),
        (
            patch("con_1", json!({"site_url": "https://a.atlassian.net"})),
            StatusCode::BAD_REQUEST,
            "incomplete_site_token",
        ),
        (patch("con_missing", key.clone()), StatusCode::NOT_FOUND, "connection_not_found"),
        (patch("con_1", key.clone()), StatusCode::CONFLICT, "not_an_admin_key_connection"),
    ];
    for (request, status, code) in cases {
        let (got, answer) = call(&deps, request).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{answer}");
        assert!(!answer.to_string().contains("new-secret"));
    }
    let unchanged = deps.store.get_connection("con_1").await.unwrap().unwrap();
    assert_eq!((unchanged.mode, unchanged.token_version), (store::ConnectionMode::Oauth, 1), "nothing was written");
}
