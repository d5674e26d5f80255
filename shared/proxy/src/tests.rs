use super::*;
use atlassian::fake::FakeAtlassian;
use atlassian::{AccessToken, RefreshToken};
use store::{MemoryStore, Site, contract};
use time::OffsetDateTime;

const ID: &str = "con_1";
const CLOUD: &str = "11111111-2222-3333-4444-555555555555";

fn keys() -> KeyRing {
    KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap()
}

/// An OAuth connection whose access token expired a minute ago.
async fn oauth(store: &MemoryStore, keys: &KeyRing, sites: &[&str]) {
    let mut connection = contract::connection("tenant-1", ID);
    let first = connection.sites[0].clone();
    connection.sites = sites.iter().map(|id| Site { cloud_id: (*id).into(), ..first.clone() }).collect();
    let credentials = tokens::credentials::Credentials {
        access_token: AccessToken::new("expired-token".into()),
        refresh_token: Some(RefreshToken::new("refresh-1".into())),
        expires_at: OffsetDateTime::now_utc() - time::Duration::minutes(1),
    };
    connection.credentials = tokens::credentials::seal(keys, ID, &credentials).unwrap();
    store.upsert_connection(&connection).await.unwrap();
}

async fn admin(store: &MemoryStore, keys: &KeyRing) {
    let mut connection = contract::connection("tenant-1", ID);
    connection.mode = ConnectionMode::AdminApiKey;
    connection.sites[0].url = "https://acme.example/site/acme".into();
    let key = AdminKey::new("org-admin-key".into());
    let login = atlassian::SiteLogin {
        site_url: url::Url::parse("https://acme.example/site/acme").unwrap(),
        email: "bot@acme.example".into(),
        api_token: secrecy::SecretString::from("site-token"),
    };
    let credentials = tokens::credentials::AdminCredentials::new(&key, Some(&login));
    connection.credentials = tokens::credentials::seal_admin(keys, ID, &credentials).unwrap();
    store.upsert_connection(&connection).await.unwrap();
}

fn get<'a>(product: &'a str, path: &'a str, query: Option<&'a str>) -> Request<'a> {
    Request {
        method: reqwest::Method::GET,
        product,
        path,
        query,
        cloud_id: None,
        headers: request_headers([("accept", "application/json"), ("authorization", "Bearer mk")]),
        body: Vec::new(),
        owner: "test".into(),
    }
}

fn settings(points: u64) -> Settings {
    Settings::new(false, QuotaConfig { points, reserve: 0.0, ..QuotaConfig::default() })
}

fn answering(status: u16, headers: &[(&str, &str)], body: &str) -> FakeAtlassian {
    let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    FakeAtlassian::granting(&[]).answering(Ok(atlassian::Forwarded { status, headers, body: body.as_bytes().to_vec() }))
}

#[tokio::test]
async fn a_call_with_an_expired_token_refreshes_once_and_passes_atlassians_answer_back() {
    let (store, keys) = (MemoryStore::new(), keys());
    oauth(&store, &keys, &[CLOUD]).await;
    let atlassian = answering(
        200,
        &[
            ("content-type", "application/json"),
            ("set-cookie", "xsrf=1"),
            ("ratelimit", "\"global-app-quota\";r=9;t=5"),
        ],
        r#"{"issues": [{"key": "A-1"}, {"key": "A-2"}], "isLast": true}"#,
    );
    let answer = forward(
        &store,
        &atlassian,
        &keys,
        &settings(1000),
        ID,
        get("jira", "/rest/api/3/search/jql", Some("jql=project%3DA&cloud_id=".to_owned().leak())),
    )
    .await;
    // `cloud_id=` with no value names no site this connection has.
    assert!(matches!(answer, Err(ProxyError::UnknownSite { .. })), "{answer:?}");
    let answer = forward(
        &store,
        &atlassian,
        &keys,
        &settings(1000),
        ID,
        get("jira", "/rest/api/3/search/jql", Some("jql=project%3DA")),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.points, 3, "1 a request, +1 an issue");
    let names: Vec<&str> = answer.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["content-type", "ratelimit"], "never Set-Cookie");
    assert_eq!(atlassian.refresh_count(), 1);
    let sent = atlassian.forwarded();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].target,
        format!("gateway:jira:{CLOUD}:access-refreshed-1"),
        "the refreshed token, not the expired one"
    );
    assert_eq!(sent[0].path_and_query, "/rest/api/3/search/jql?jql=project%3DA");
    assert_eq!(
        sent[0].headers,
        vec![("accept".to_string(), "application/json".to_string())],
        "never our Authorization"
    );
    // A second call uses the token the first one stored.
    forward(&store, &atlassian, &keys, &settings(1000), ID, get("confluence", "/wiki/api/v2/pages", None))
        .await
        .unwrap();
    assert_eq!(atlassian.refresh_count(), 1);
}

#[tokio::test]
async fn refusals_reach_neither_atlassian_nor_the_token() {
    let (store, keys) = (MemoryStore::new(), keys());
    oauth(&store, &keys, &[CLOUD, "cloud-2"]).await;
    let atlassian = FakeAtlassian::granting(&[]);
    let settings = settings(1000);
    let post = Request { method: reqwest::Method::POST, ..get("jira", "/rest/api/3/issue", None) };
    let header_site = Request { cloud_id: Some("cloud-9"), ..get("jira", "/rest/api/3/myself", None) };
    let cases: Vec<(Request<'_>, &str)> = vec![
        (get("bitbucket", "/2.0/repositories", None), "UnknownProduct"),
        (get("jira", "/rest/../../other/rest", None), "UnsafePath"),
        (get("jira", "/rest/%2e%2e/x", None), "UnsafePath"),
        (post, "WritesDisabled"),
        (Request { method: reqwest::Method::PATCH, ..get("jira", "/rest/api/3/x", None) }, "MethodNotAllowed"),
        (get("jira", "/rest/api/3/myself", None), "SiteRequired"),
        (header_site, "UnknownSite"),
        (get("admin", "/v1/orgs", None), "WrongMode"),
        (get("jira", "/rest/api/3/myself", Some(&*"q".repeat(MAX_QUERY + 1).leak())), "QueryTooLong"),
    ];
    for (request, expected) in cases {
        let answer = forward(&store, &atlassian, &keys, &settings, ID, request).await;
        let shown = format!("{answer:?}");
        assert!(shown.starts_with(&format!("Err({expected}")), "{expected}: {shown}");
    }
    assert!(matches!(
        forward(&store, &atlassian, &keys, &settings, "con_none", get("jira", "/rest/api/3/myself", None)).await,
        Err(ProxyError::NotFound)
    ));
    store.revoke_connection(ID, OffsetDateTime::now_utc()).await.unwrap();
    let answer =
        forward(&store, &atlassian, &keys, &settings, ID, get("jira", "/rest/api/3/myself", Some("cloud_id=cloud-2")))
            .await;
    assert!(matches!(answer, Err(ProxyError::Revoked)), "{answer:?}");
    assert!(atlassian.forwarded().is_empty() && atlassian.refresh_count() == 0);
}

#[tokio::test]
async fn a_dry_pool_is_a_429_with_its_wait_and_atlassians_quota_429_blocks_the_pool() {
    let (store, keys) = (MemoryStore::new(), keys());
    oauth(&store, &keys, &[CLOUD]).await;
    // 3 points a window: a 2-issue search costs them all.
    let atlassian = answering(200, &[], r#"{"issues": [{}, {}]}"#);
    let tight = settings(3);
    forward(&store, &atlassian, &keys, &tight, ID, get("jira", "/rest/api/3/search/jql", None)).await.unwrap();
    let answer = forward(&store, &atlassian, &keys, &tight, ID, get("jira", "/rest/api/3/search/jql", None)).await;
    let Err(ProxyError::QuotaExhausted { retry_after }) = answer else { panic!("{answer:?}") };
    assert!(retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(3600), "{retry_after:?}");
    assert_eq!(atlassian.forwarded().len(), 1, "the dry pool sent nothing");

    // Atlassian's own quota 429 comes back as it came, and blocks the pool for everyone until it resets.
    let (store, atlassian) = (
        MemoryStore::new(),
        answering(429, &[("retry-after", "120"), ("ratelimit-reason", "jira-quota-global-based")], "{}"),
    );
    oauth(&store, &keys, &[CLOUD]).await;
    let answer =
        forward(&store, &atlassian, &keys, &settings(1000), ID, get("jira", "/rest/api/3/myself", None)).await.unwrap();
    assert_eq!(answer.status, 429);
    assert!(answer.headers.contains(&("retry-after".into(), "120".into())));
    let answer = forward(&store, &atlassian, &keys, &settings(1000), ID, get("jira", "/rest/api/3/myself", None)).await;
    assert!(
        matches!(answer, Err(ProxyError::QuotaExhausted { retry_after }) if retry_after > Duration::from_secs(100)),
        "{answer:?}"
    );
    assert_eq!(atlassian.forwarded().len(), 1);
}

#[tokio::test]
async fn admin_key_connections_reach_the_admin_api_and_their_site_unmetered() {
    let (store, keys) = (MemoryStore::new(), keys());
    admin(&store, &keys).await;
    let atlassian = FakeAtlassian::granting(&[]);
    let settings = settings(1);
    let answer = forward(&store, &atlassian, &keys, &settings, ID, get("admin", "/v1/orgs", None)).await.unwrap();
    assert_eq!((answer.status, answer.points), (200, 0));
    forward(&store, &atlassian, &keys, &settings, ID, get("site", "/rest/api/3/myself", None)).await.unwrap();
    let targets: Vec<String> = atlassian.forwarded().into_iter().map(|f| f.target).collect();
    assert_eq!(targets, ["admin:org-admin-key", "site:bot@acme.example:site-token"]);
    let answer = forward(&store, &atlassian, &keys, &settings, ID, get("jira", "/rest/api/3/myself", None)).await;
    assert!(matches!(answer, Err(ProxyError::WrongMode { .. })), "{answer:?}");
}

#[tokio::test]
async fn writes_pass_with_their_body_when_the_deployment_allows_them() {
    let (store, keys) = (MemoryStore::new(), keys());
    oauth(&store, &keys, &[CLOUD]).await;
    let atlassian = answering(201, &[("content-type", "application/json")], r#"{"id": "10001"}"#);
    let settings = Settings { allow_writes: true, ..settings(1000) };
    let request = Request {
        method: reqwest::Method::POST,
        headers: request_headers([("content-type", "application/json"), ("cookie", "a=b")]),
        body: br#"{"fields": {}}"#.to_vec(),
        ..get("jira", "/rest/api/3/issue", None)
    };
    let answer = forward(&store, &atlassian, &keys, &settings, ID, request).await.unwrap();
    assert_eq!((answer.status, answer.points), (201, 1));
    let sent = &atlassian.forwarded()[0];
    assert_eq!((sent.method.as_str(), sent.body.as_slice()), ("POST", br#"{"fields": {}}"#.as_slice()));
    assert_eq!(sent.headers, vec![("content-type".to_string(), "application/json".to_string())]);
}
