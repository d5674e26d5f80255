//! End-to-end tests: the functions run under `cargo lambda watch` (the real Lambda runtime API), against the
//! stack's moto and Atlassian sandbox, driven over HTTP like a browser and the SaaS backend would.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use std::collections::HashMap;
use store::SealedCredentials;
use tests::harness::{self, Consent, Stack, unique};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokens::KeyRing;

mod events;
mod proxy;
mod webhooks;

struct Connected {
    connection_id: String,
    session_id: String,
    state: String,
    code: String,
    /// The browser binding the connect link set as a cookie.
    browser: String,
}

/// Runs the flow like a browser: connect link → Atlassian consent → callback; returns what the callback answered.
async fn connect(
    stack: &Stack,
    tenant: &str,
    return_url: Option<&str>,
    consent: &Consent,
) -> (harness::Answer, Connected) {
    let session = stack.create_session(tenant, return_url).await.unwrap();
    let connect_url = session["connect_url"].as_str().unwrap();
    assert!(connect_url.starts_with(stack.url("/connect").as_str()), "{connect_url}");

    let to_atlassian = harness::get(connect_url).await.unwrap();
    assert_eq!(to_atlassian.status, 302, "{}", to_atlassian.body);
    let authorize = to_atlassian.location.unwrap();
    assert!(authorize.starts_with(stack.atlassian_url.join("/authorize").unwrap().as_str()), "{authorize}");
    let q = harness::query(&authorize);
    assert_eq!(q["redirect_uri"], stack.url("/oauth/callback").as_str());
    for (key, value) in [("audience", "api.atlassian.com"), ("response_type", "code"), ("prompt", "consent")] {
        assert_eq!(q[key], value);
    }

    let callback = harness::consent(&authorize, consent).await.unwrap();
    assert!(callback.starts_with(stack.url("/oauth/callback").as_str()), "{callback}");
    let cq = harness::query(&callback);
    let cookie = to_atlassian.cookie.clone().expect("the connect link binds the flow to this browser");
    assert!(cookie.starts_with("atlassian_connect_browser="), "{cookie}");
    let answer = harness::get_with_cookie(&callback, Some(&cookie)).await.unwrap();
    let connection_id = answer
        .location
        .as_deref()
        .and_then(|l| harness::query(l).get("connection_id").cloned())
        .or_else(|| answer.body.split("Connection id: ").nth(1).map(|rest| rest[..28].to_owned()))
        .unwrap_or_default();
    let connected = Connected {
        connection_id,
        session_id: session["session_id"].as_str().unwrap().to_owned(),
        state: q["state"].clone(),
        code: cq.get("code").cloned().unwrap_or_default(),
        browser: cookie.split_once('=').map(|(_, value)| value.to_owned()).unwrap_or_default(),
    };
    (answer, connected)
}

async fn stored_item(stack: &Stack, connection_id: &str) -> HashMap<String, AttributeValue> {
    stack
        .dynamodb()
        .get_item()
        .table_name(&stack.table)
        .key("pk", AttributeValue::S(format!("CONN#{connection_id}")))
        .key("sk", AttributeValue::S("CONN".into()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the connection item")
}

async fn issued_secrets(stack: &Stack) -> Vec<String> {
    let url = stack.atlassian_url.join("/__sandbox/issued").unwrap();
    let body: serde_json::Value = harness::client().get(url).send().await.unwrap().json().await.unwrap();
    body["secrets"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn connecting_an_org_end_to_end() {
    let stack = Stack::from_env();
    let tenant = unique("e2e");
    let return_url = stack.url("/__return/atlassian").to_string();
    let (answer, c) = connect(&stack, &tenant, Some(&return_url), &Consent::default()).await;

    // Back to the app with the outcome.
    assert_eq!(answer.status, 302, "{}", answer.body);
    let back = answer.location.unwrap();
    assert!(back.starts_with(&return_url), "{back}");
    assert_eq!(harness::query(&back)["status"], "active");
    assert!(c.connection_id.starts_with("con_"));

    // The management API shows it active with its sites, and never its tokens.
    let (status, connection) = stack.api_get(&format!("/connections/{}", c.connection_id)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(connection["status"], "active");
    assert_eq!(connection["mode"], "oauth");
    assert_eq!(connection["tenant_id"], tenant.as_str());
    assert_eq!(connection["account_id"], harness::ADMIN);
    let sites = connection["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 2);
    assert_eq!(sites[0]["url"], "https://acme.atlassian.net");
    assert_eq!(sites[0]["products"], serde_json::json!(["jira", "confluence"]));
    assert!(connection["scopes"].as_array().unwrap().iter().any(|s| s == "offline_access"));
    let (_, list) = stack.api_get(&format!("/connections?tenant_id={tenant}")).await.unwrap();
    assert_eq!(list["items"], serde_json::json!([connection]));

    // Tokens are sealed in DynamoDB: no issued secret appears in any attribute, and the key ring opens them.
    let item = stored_item(&stack, &c.connection_id).await;
    let secrets = issued_secrets(&stack).await;
    let dump = format!("{item:?} {connection}");
    for secret in &secrets {
        assert!(!dump.contains(secret.as_str()), "a token is stored or shown in clear");
    }
    let credentials = item["credentials"].as_m().unwrap();
    let sealed = SealedCredentials {
        key_version: credentials["key_version"].as_s().unwrap().clone(),
        blob: credentials["blob"].as_b().unwrap().as_ref().to_vec(),
    };
    let key_ring = stack
        .secretsmanager()
        .get_secret_value()
        .secret_id(&stack.token_keys_secret_id)
        .send()
        .await
        .unwrap()
        .secret_string
        .unwrap();
    let keys = KeyRing::from_json(&key_ring).unwrap();
    let opened = tokens::credentials::open(&keys, &c.connection_id, &sealed).unwrap();
    assert!(secrets.contains(opened.access_token.secret()));
    assert!(secrets.contains(opened.refresh_token.as_ref().unwrap().secret()));
    let me = harness::client()
        .get(stack.atlassian_url.join("/me").unwrap())
        .bearer_auth(opened.access_token.secret())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "the stored access token works");

    // The functions' logs tell the story without a single secret.
    let mut logs = String::new();
    for _ in 0..50 {
        logs = std::fs::read_to_string(&stack.function_log).unwrap();
        if logs.contains(&c.connection_id) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logs.contains(&c.connection_id), "the log capture must see this flow for the check below to mean anything");
    let flow_secrets =
        [c.session_id.as_str(), c.state.as_str(), c.code.as_str(), c.browser.as_str(), stack.management_key.as_str()];
    for secret in secrets.iter().map(String::as_str).chain(flow_secrets) {
        assert!(!secret.is_empty());
        assert!(!logs.contains(secret), "a secret reached the function logs");
    }
    assert!(!logs.contains(opened.access_token.secret()));
}

#[tokio::test]
async fn cancelling_consent_end_to_end() {
    let stack = Stack::from_env();
    let tenant = unique("e2e-cancel");
    let (answer, _) = connect(&stack, &tenant, None, &Consent { accept: false, ..Consent::default() }).await;
    assert_eq!(answer.status, 403);
    assert!(answer.body.contains("Access not granted"), "{}", answer.body);
    let (_, list) = stack.api_get(&format!("/connections?tenant_id={tenant}")).await.unwrap();
    assert_eq!(list["items"], serde_json::json!([]));
}

#[tokio::test]
async fn reconnecting_updates_the_connection_end_to_end() {
    let stack = Stack::from_env();
    let tenant = unique("e2e-again");
    let (first, a) = connect(&stack, &tenant, None, &Consent::default()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let (_, before) = stack.api_get(&format!("/connections/{}", a.connection_id)).await.unwrap();
    let one_site = vec![tests::sandbox::site_id(0)];
    let (second, b) = connect(&stack, &tenant, None, &Consent { sites: Some(one_site), ..Consent::default() }).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(a.connection_id, b.connection_id);
    let (_, after) = stack.api_get(&format!("/connections/{}", b.connection_id)).await.unwrap();
    assert_eq!(after["status"], "active");
    assert_eq!(after["created_at"], before["created_at"]);
    assert_ne!(after["updated_at"], before["updated_at"]);
    assert_eq!(after["sites"].as_array().unwrap().len(), 2, "like Atlassian, a consent adds sites to the grant");
    let (_, list) = stack.api_get(&format!("/connections?tenant_id={tenant}")).await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn replaying_a_callback_end_to_end() {
    let stack = Stack::from_env();
    let tenant = unique("e2e-replay");
    let session = stack.create_session(&tenant, None).await.unwrap();
    let opened = harness::get(session["connect_url"].as_str().unwrap()).await.unwrap();
    let callback = harness::consent(&opened.location.unwrap(), &Consent::default()).await.unwrap();
    let cookie = opened.cookie.as_deref();
    assert_eq!(harness::get_with_cookie(&callback, cookie).await.unwrap().status, 200);
    let replay = harness::get_with_cookie(&callback, cookie).await.unwrap();
    assert_eq!(replay.status, 400);
    assert!(replay.body.contains("unknown or was already completed"), "{}", replay.body);
    let again = harness::get(session["connect_url"].as_str().unwrap()).await.unwrap();
    assert_eq!(again.status, 410, "a used connect link cannot start another flow");
}

#[tokio::test]
async fn the_management_api_refuses_without_its_key() {
    let stack = Stack::from_env();
    let response = harness::client()
        .post(stack.url("/connect-sessions"))
        .bearer_auth("not-the-key")
        .json(&serde_json::json!({"tenant_id": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_the_functions_to_refuse_end_to_end() {
    // API Gateway may hand a body over base64-encoded (`isBase64Encoded`), and so does the local emulator for a
    // content type it does not take for text: a mixed-case `Application/JSON`, which the function does take for
    // JSON (media types are case-insensitive). Invalid UTF-8 inside a string then reaches the function, which
    // answers it 400 in its JSON shape. (The emulator answers such a body sent as `application/json` with a 500 of
    // its own before any function runs: see README, "Input limits".)
    let stack = Stack::from_env();
    let tenant = unique("e2e-utf8");
    let (start, end) = (format!(r#"{{"tenant_id": "{tenant}"#), br#""}"#.as_slice());
    let body = [start.as_bytes(), b"\xff\xfe".as_slice(), end].concat();
    let response = harness::client()
        .post(stack.url("/connect-sessions"))
        .bearer_auth(&stack.management_key)
        .header("content-type", "Application/JSON")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_body")), "{answer}");
}

/// Every object of a type through the objects API, following `next_cursor`.
async fn all_objects(stack: &Stack, connection_id: &str, object_type: &str) -> Vec<Value> {
    let (mut objects, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let mut path = format!("/connections/{connection_id}/objects/{object_type}?limit=7");
        if let Some(cursor) = &cursor {
            path.push_str(&format!(
                "&cursor={}",
                url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>()
            ));
        }
        let (status, page) = stack.api_get(&path).await.unwrap();
        assert_eq!(status, 200, "{page}");
        objects.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return objects,
        }
    }
}

/// The key an object has in the sandbox's org (as `harness::expected_mirror` keys it).
fn key_of(object_type: &str, object: &Value) -> String {
    let id = |field: &str| object[field].as_str().unwrap().to_owned();
    match object_type {
        "users" => id("account_id"),
        "groups" => id("group_id"),
        "projects" => format!("{}#{}", id("cloud_id"), id("project_id")),
        _ => format!("{}#{}", id("cloud_id"), id("space_id")),
    }
}

/// Asks for a sync of every type and waits until each has a succeeded run that started after `after`. No run may
/// fail on the way; answers the connection and the waits the status API showed (a `waiting` run and when it said
/// it would resume).
async fn sync_all(stack: &Stack, connection_id: &str, after: &Value) -> (Value, Vec<(String, String)>) {
    let response = harness::client()
        .post(stack.url(&format!("/connections/{connection_id}/sync")))
        .bearer_auth(&stack.management_key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let (mut connection, mut waits) = (Value::Null, Vec::new());
    for _ in 0..3000 {
        connection = stack.api_get(&format!("/connections/{connection_id}")).await.unwrap().1;
        for t in TYPES {
            let run = &connection["sync"][t];
            assert_ne!(run["status"], "failed", "{t}: the quota is a wait, never a failure: {run}");
            if run["status"] == "waiting" {
                let until = run["waiting_until"].as_str().expect("a waiting run says when it resumes");
                waits.push((t.to_owned(), until.to_owned()));
            }
        }
        let fresh = |t: &str| {
            connection["sync"][t]["status"] == "succeeded"
                && connection["sync"][t]["started_at"] != after[t]["started_at"]
        };
        if TYPES.iter().all(|t| fresh(t)) {
            return (connection, waits);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the syncs did not all succeed: {connection}");
}

/// Records in the stack's shared pool what a worker records when Atlassian answers a quota 429: the app's pool
/// grants nothing for `how_long`.
async fn block_the_apps_quota(stack: &Stack, how_long: std::time::Duration) {
    use sync::budget::{APP_POOL, Budget, QuotaConfig, SharedBudget};
    let store = store::DynamoStore::new(stack.dynamodb(), &stack.table);
    // The quota `make test` gives the functions is in this process's environment too.
    let quota = QuotaConfig::from_env(&runtime::config::Env(runtime::config::ProcessEnv)).unwrap();
    let until = OffsetDateTime::now_utc() + how_long;
    SharedBudget::new(&store, APP_POOL, quota).blocked("any-site", "jira-quota-global-based", until).await;
}

const TYPES: [&str; 4] = ["users", "groups", "projects", "spaces"];

/// The tests that compare the mirror with the sandbox's org take turns: one of them changes the org.
static ORG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn syncing_and_reading_the_mirror_end_to_end() {
    let _org = ORG.lock().await;
    let stack = Stack::from_env();
    let tenant = unique("e2e-sync");
    // An admin of its own: other tests' consents must not touch this grant.
    let consent = Consent { account_id: "5b10ac8d82e05b22cc7d0001".into(), ..Consent::default() };
    let (answer, c) = connect(&stack, &tenant, None, &consent).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Ask for a sync: four jobs go on the queue and the worker (under cargo lambda watch) runs them, each across
    // several invocations (`make test` pauses runs after every page). The org's first sync costs several times the
    // points quota `make test` gives the stack in a window, so runs wait for the next window and resume.
    // And Atlassian keeps answering someone quota 429s (another deployment of the app, say): the app's pool grants
    // nothing for 4 s at a time, three times over, so however fast or slow this machine is, runs wait where the
    // status API shows it. (4 s at most each: the proxy test, running alongside, takes a Retry-After of up to 4.)
    let blocking = {
        let stack = Stack::from_env();
        tokio::spawn(async move {
            for _ in 0..3 {
                block_the_apps_quota(&stack, std::time::Duration::from_secs(4)).await;
                tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
            }
        })
    };
    let stats_before = sandbox_stats(&stack).await;
    let (connection, waits) = sync_all(&stack, &c.connection_id, &Value::Null).await;
    blocking.await.unwrap();
    let stats = sandbox_stats(&stack).await;
    let spent = stats["points"].as_u64().unwrap() - stats_before["points"].as_u64().unwrap();
    let quota = stats["quota"]["global_points"].as_u64().expect("make test gives the sandbox a quota");
    assert!(spent > 2 * quota, "the first sync costs several windows' quota: {spent} points, {quota} a window");
    assert!(!waits.is_empty(), "the status API showed the runs waiting for the quota");
    for (_, until) in &waits {
        OffsetDateTime::parse(until, &Rfc3339).expect("an RFC 3339 time");
    }
    let sites: Vec<String> =
        connection["sites"].as_array().unwrap().iter().map(|s| s["cloud_id"].as_str().unwrap().to_owned()).collect();
    assert!(sites.len() >= 2, "the sandbox grants several sites: {connection}");

    // The objects API serves exactly the sandbox's org: every object, every field, every member list.
    let org = harness::sandbox_org(&stack.atlassian_url).await.unwrap();
    let mut before = HashMap::new();
    for object_type in TYPES {
        let objects = all_objects(&stack, &c.connection_id, object_type).await;
        let mut live = HashMap::new();
        for object in &objects {
            let mut record = object.as_object().unwrap().clone();
            assert_eq!(record.remove("deleted"), Some(Value::Bool(false)), "{object}");
            let synced_at = record.remove("synced_at").expect("synced_at");
            before.insert((object_type, key_of(object_type, object)), (Value::Object(record.clone()), synced_at));
            live.insert(key_of(object_type, object), Value::Object(record));
        }
        assert_eq!(live.len(), objects.len(), "{object_type}: no object twice across pages");
        assert_eq!(live, harness::expected_mirror(&org, object_type, &sites), "{object_type}");
    }

    // The org changes; a second sync shows the adds, changes and deletions, and rewrites nothing else.
    harness::client().post(stack.atlassian_url.join("/__sandbox/org/mutate").unwrap()).send().await.unwrap();
    let org = harness::sandbox_org(&stack.atlassian_url).await.unwrap();
    let (connection, _) = sync_all(&stack, &c.connection_id, &connection["sync"]).await;
    for object_type in TYPES {
        let counts = &connection["sync"][object_type]["counts"];
        let expected = harness::expected_mirror(&org, object_type, &sites);
        let (mut live, mut unchanged, mut rewritten, mut deleted) = (HashMap::new(), 0, 0, 0);
        for object in all_objects(&stack, &c.connection_id, object_type).await {
            let key = key_of(object_type, &object);
            let mut record = object.as_object().unwrap().clone();
            let gone = record.remove("deleted") == Some(Value::Bool(true));
            let synced_at = record.remove("synced_at").expect("synced_at");
            let record = Value::Object(record);
            match before.get(&(object_type, key.clone())) {
                Some((old, old_synced_at)) if *old == record && !gone => {
                    assert_eq!(&synced_at, old_synced_at, "{object_type} {key}: unchanged, so not rewritten");
                    unchanged += 1;
                }
                Some(_) => rewritten += 1,
                None => assert!(!gone, "{object_type} {key}: new and deleted at once"),
            }
            if gone {
                assert!(!expected.contains_key(&key), "{object_type} {key} is in the org but marked deleted");
                deleted += 1;
            } else {
                live.insert(key, record);
            }
        }
        assert_eq!(live, expected, "{object_type} after the change");
        assert!(deleted >= 1 && rewritten >= 1 && unchanged >= 1, "{object_type}: {deleted} {rewritten} {unchanged}");
        assert_eq!(counts["deleted"], deleted, "{object_type}: {counts}");
    }

    // Disconnecting destroys the tokens at once and empties the mirror.
    let (status, body) = disconnect(&stack, &c.connection_id).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "revoked");
    let item = stored_item(&stack, &c.connection_id).await;
    assert!(!item.contains_key("credentials"), "tokens destroyed");
    let (status, users) = stack.api_get(&format!("/connections/{}/objects/users", c.connection_id)).await.unwrap();
    assert_eq!((status, &users["error"]["code"]), (409, &serde_json::json!("connection_revoked")), "never served");
    let mirror = store::DynamoMirror::new(stack.dynamodb(), &stack.mirror_table);
    for object_type in store::ObjectType::ALL {
        let scope = store::Scope::new(&c.connection_id, object_type);
        let (left, _) = store::MirrorStore::list(&mirror, &scope, None, 10).await.unwrap();
        assert!(left.is_empty(), "{object_type:?}: the mirror is empty");
    }

    // Atlassian's quota was never exceeded (the budget paced every run), and nothing went to the dead-letter queue.
    let stats = sandbox_stats(&stack).await;
    assert_eq!(stats["quota_429s"], 0, "{stats}");
    assert_eq!(dead_letters(&stack).await, 0);
}

async fn sandbox_stats(stack: &Stack) -> Value {
    harness::sandbox_stats(&stack.atlassian_url).await.unwrap()
}

/// How many messages the sync queue's dead-letter queue holds.
async fn dead_letters(stack: &Stack) -> u64 {
    let attributes = stack
        .sqs()
        .get_queue_attributes()
        .queue_url(&stack.dead_letter_queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    let count = attributes
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .cloned()
        .unwrap_or_default();
    count.parse().unwrap()
}

/// `DELETE /connections/{id}`: (status, the answer).
async fn disconnect(stack: &Stack, connection_id: &str) -> (u16, Value) {
    let response = harness::client()
        .delete(stack.url(&format!("/connections/{connection_id}")))
        .bearer_auth(&stack.management_key)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn post(stack: &Stack, path: &str, body: Value) -> (u16, Value) {
    let response =
        harness::client().post(stack.url(path)).bearer_auth(&stack.management_key).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_admin_key_connection_end_to_end() {
    let _org = ORG.lock().await;
    let stack = Stack::from_env();
    let tenant = unique("e2e-admin");
    let sandbox = &stack.atlassian_url;
    let key = harness::admin_key(sandbox, serde_json::json!({})).await.unwrap();
    let (email, token) = harness::api_token(sandbox, harness::ADMIN).await.unwrap();
    let site_url = harness::site_url(sandbox, "acme");
    let body = serde_json::json!({
        "tenant_id": tenant, "mode": "admin_api_key", "org_id": tests::sandbox::ORG_ID, "admin_api_key": key,
        "site_url": site_url.as_str(), "site_email": email, "site_api_token": token,
    });

    // A wrong org id is its own answer, and nothing is stored.
    let mut wrong = body.clone();
    wrong["org_id"] = Value::from("00000000-0000-0000-0000-000000000000");
    let (status, answer) = post(&stack, "/connections", wrong).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("wrong_org_id")), "{answer}");
    let (_, listed) = stack.api_get(&format!("/connections?tenant_id={tenant}")).await.unwrap();
    assert_eq!(listed["items"], serde_json::json!([]));

    // The right credentials make an active connection that never shows them.
    let (status, connection) = post(&stack, "/connections", body).await;
    assert_eq!(status, 201, "{connection}");
    assert_eq!((connection["mode"].as_str(), connection["status"].as_str()), (Some("admin_api_key"), Some("active")));
    assert_eq!(connection["org_id"], tests::sandbox::ORG_ID);
    let shown = connection.to_string();
    assert!(!shown.contains(&key) && !shown.contains(&token), "credentials are never returned");
    let id = connection["connection_id"].as_str().unwrap().to_owned();

    // The proxy reaches the Admin API with the org key and the site with its token; not the OAuth gateway.
    for (path, status) in [
        (format!("/connections/{id}/proxy/admin/v1/orgs"), 200),
        (format!("/connections/{id}/proxy/site/rest/api/3/myself"), 200),
        (format!("/connections/{id}/proxy/jira/rest/api/3/myself"), 400),
    ] {
        let response = harness::client().get(stack.url(&path)).bearer_auth(&stack.management_key).send().await.unwrap();
        let got = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "{path}: {answer}");
        if path.ends_with("/orgs") {
            assert_eq!(answer["data"][0]["id"], tests::sandbox::ORG_ID, "{answer}");
        }
        if path.ends_with("/myself") && status == 200 {
            assert_eq!(answer["accountId"], harness::ADMIN, "{answer}");
        }
    }

    // All four syncs; the objects API serves the Admin API's view of the org, hidden emails included.
    let (connection, _) = sync_all(&stack, &id, &Value::Null).await;
    let org = harness::sandbox_org(sandbox).await.unwrap();
    let site = tests::sandbox::site_id(0);
    for object_type in TYPES {
        let mut live = HashMap::new();
        for object in all_objects(&stack, &id, object_type).await {
            let mut record = object.as_object().unwrap().clone();
            assert_eq!(record.remove("deleted"), Some(Value::Bool(false)));
            record.remove("synced_at");
            live.insert(key_of(object_type, &object), Value::Object(record));
        }
        assert_eq!(live, harness::expected_admin_mirror(&org, object_type, Some(&site)), "{object_type}");
    }
    let hidden = org["users"].as_array().unwrap().iter().find(|u| u["email_visible"] == false).unwrap();
    let users = all_objects(&stack, &id, "users").await;
    let user = users.iter().find(|u| u["account_id"] == hidden["account_id"]).unwrap();
    assert_eq!(user["email"], hidden["email"], "the Admin API shows what the profile hides");

    // The key expires: the next sync turns the connection needs_reauth; PATCH with a new key brings it back, with
    // its mirror.
    let expire = sandbox.join(&format!("/__sandbox/admin/keys/{key}/expire")).unwrap();
    harness::client().post(expire).send().await.unwrap();
    let (status, _) =
        post(&stack, &format!("/connections/{id}/sync"), serde_json::json!({"object_types": ["users"]})).await;
    assert_eq!(status, 202);
    let mut current = Value::Null;
    for _ in 0..300 {
        current = stack.api_get(&format!("/connections/{id}")).await.unwrap().1;
        if current["status"] == "needs_reauth" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(current["status"], "needs_reauth", "{current}");
    assert!(current["status_reason"].as_str().unwrap().contains("expired"));
    let new_key = harness::admin_key(sandbox, serde_json::json!({})).await.unwrap();
    let response = harness::client()
        .patch(stack.url(&format!("/connections/{id}")))
        .bearer_auth(&stack.management_key)
        .json(&serde_json::json!({"admin_api_key": new_key}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["status"], "active", "{patched}");
    assert_eq!(all_objects(&stack, &id, "users").await.len(), users.len(), "the mirror is kept");
    let (again, _) = sync_all(&stack, &id, &connection["sync"]).await;
    assert_eq!(again["sync"]["users"]["counts"]["created"], 0, "nothing new after the key changed: {again}");

    // No function logged a key or a token.
    let log = std::fs::read_to_string(&stack.function_log).unwrap_or_default();
    for secret in [&key, &new_key, &token] {
        assert!(!log.contains(secret.as_str()), "a secret reached the logs");
    }
}
