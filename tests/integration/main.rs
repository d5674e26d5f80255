//! Integration tests: the real DynamoDB store (moto, the stack's fresh table) and the real Atlassian client against
//! sandboxes of their own, with the functions' handlers called in-process. Every failure of the connect flow has a
//! test that checks the answer and that nothing was stored.

use atlassian::{AtlassianClient, ClientCredentials, ClientId, ClientSecret, Endpoints};
use lambda_http::{Body, Request, RequestExt, Response};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use store::{ConnectionStore, DynamoStore, OAuthState, SessionStore, StateStore, contract};
use tests::harness::{self, Consent, Stack, unique};
use tests::sandbox::SandboxConfig;
use time::{Duration, OffsetDateTime};
use tokens::connect::{self, AuthorizeSettings, CompleteSettings, ReturnUrlAllowList, SessionSettings};
use tokens::refresh::{self, RefreshError, RefreshPolicy};
use tokens::{KeyRing, ids, scopes};
use url::Url;

fn store() -> DynamoStore {
    let stack = Stack::from_env();
    DynamoStore::new(stack.dynamodb(), stack.table)
}

#[tokio::test]
async fn dynamo_stores_keep_the_contract() {
    let stack = Stack::from_env();
    let mirror = store::DynamoMirror::new(stack.dynamodb(), &stack.mirror_table);
    contract::run_all(std::sync::Arc::new(store()), &mirror).await;
}

#[tokio::test]
async fn sessions_and_states_are_stored_hashed_with_a_ttl() {
    let stack = Stack::from_env();
    let store = store();
    let session = contract::session(&unique("tenant"));
    store.put_session(&session).await.unwrap();
    let item = stack
        .dynamodb()
        .get_item()
        .table_name(&stack.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("SESSION#{}", session.id_hash)))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("SESSION".into()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the session item");
    let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
    assert_eq!(ttl, session.expires_at.unix_timestamp());
    assert!(!item.contains_key("used_at"), "an unused session has no used_at attribute");
}

/// The connect and callback functions in-process, on the stack's table and a sandbox of the test's own.
struct Flow {
    store: DynamoStore,
    connect: connect_fn::Deps<DynamoStore>,
    callback: callback_fn::Deps<DynamoStore, AtlassianClient>,
    sessions: SessionSettings,
    sandbox: Url,
}

use ::connect as connect_fn;
use callback as callback_fn;

const CALLBACK: &str = "https://connector.test/oauth/callback";

impl Flow {
    async fn new() -> Self {
        Self::with_secret(&SandboxConfig::default().client_secret).await
    }

    async fn with_secret(client_secret: &str) -> Self {
        Self::with(SandboxConfig::default(), client_secret).await
    }

    /// A flow through a sandbox of its own, shaped by `config`.
    async fn with_sandbox(config: SandboxConfig) -> Self {
        let secret = config.client_secret.clone();
        Self::with(config, &secret).await
    }

    async fn with(config: SandboxConfig, client_secret: &str) -> Self {
        let sandbox = harness::spawn_sandbox(config).await.unwrap();
        let endpoints = Endpoints { auth_base: sandbox.clone(), api_base: sandbox.clone() };
        let store = store();
        let atlassian = AtlassianClient::new(
            atlassian::http_client().unwrap(),
            endpoints.clone(),
            ClientCredentials {
                client_id: ClientId::new(SandboxConfig::default().client_id),
                client_secret: ClientSecret::new(client_secret.into()),
            },
            Url::parse(CALLBACK).unwrap(),
        );
        Self {
            connect: connect_fn::Deps {
                store: store.clone(),
                authorize: AuthorizeSettings {
                    authorize_url: endpoints.authorize_url(),
                    audience: "api.atlassian.com".into(),
                    client_id: SandboxConfig::default().client_id,
                    redirect_uri: Url::parse(CALLBACK).unwrap(),
                    scopes: scopes::defaults(),
                    state_ttl: Duration::minutes(10),
                },
            },
            callback: callback_fn::Deps {
                store: store.clone(),
                atlassian,
                keys: KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap(),
                settings: CompleteSettings { required_scopes: scopes::defaults() },
            },
            sessions: SessionSettings {
                public_base_url: Url::parse("https://connector.test").unwrap(),
                ttl: Duration::minutes(15),
                return_urls: ReturnUrlAllowList::parse("https://app.test/").unwrap(),
            },
            store,
            sandbox,
        }
    }

    async fn sandbox_stats(&self) -> serde_json::Value {
        harness::sandbox_stats(&self.sandbox).await.unwrap()
    }

    /// Makes the stored access token look expired (same tokens, expiry in the past).
    async fn expire_access_token(&self, connection_id: &str) {
        use store::CredentialStore;
        let connection = self.store.get_connection(connection_id).await.unwrap().unwrap();
        let keys = &self.callback.keys;
        let mut credentials = tokens::credentials::open(keys, connection_id, &connection.credentials).unwrap();
        credentials.expires_at = OffsetDateTime::now_utc() - Duration::minutes(1);
        let sealed = tokens::credentials::seal(keys, connection_id, &credentials).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(self.store.save_credentials(connection_id, connection.token_version, &sealed, now).await.unwrap());
    }

    async fn access_token(&self, connection_id: &str, owner: &str) -> Result<String, RefreshError> {
        refresh::access_token(
            &self.store,
            &self.callback.atlassian,
            &self.callback.keys,
            &RefreshPolicy::default(),
            connection_id,
            owner,
        )
        .await
        .map(|token| token.secret().clone())
    }

    async fn session(&self, tenant: &str, return_url: Option<&str>) -> String {
        let session =
            connect::create_session(&self.store, &self.sessions, tenant, return_url, OffsetDateTime::now_utc())
                .await
                .unwrap();
        session.session_id.expose_secret().to_owned()
    }

    async fn open(&self, session_id: &str) -> Response<Body> {
        connect_fn::handle(&self.connect, request(&[("session", session_id)])).await.unwrap()
    }

    /// Creates a session for `tenant`, opens it and returns the authorize URL.
    async fn start(&self, tenant: &str, return_url: Option<&str>) -> (String, String) {
        let session_id = self.session(tenant, return_url).await;
        let response = self.open(&session_id).await;
        assert_eq!(response.status(), 302);
        (session_id, response.headers()["location"].to_str().unwrap().to_owned())
    }

    async fn callback(&self, callback_url: &str) -> Response<Body> {
        let query = harness::query(callback_url);
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        callback_fn::handle(&self.callback, request(&pairs)).await.unwrap()
    }

    /// The whole flow for `tenant` with the given consent; the callback's answer.
    async fn run(&self, tenant: &str, consent: &Consent) -> Response<Body> {
        let (_, authorize) = self.start(tenant, None).await;
        let callback = harness::consent(&authorize, consent).await.unwrap();
        self.callback(&callback).await
    }

    async fn assert_nothing_stored(&self, tenant: &str) {
        assert!(self.store.list_connections(tenant).await.unwrap().is_empty(), "no connection may be stored");
    }

    async fn assert_session_unused(&self, session_id: &str) {
        let session = self.store.get_session(&ids::sha256_hex(session_id)).await.unwrap().expect("session");
        assert_eq!(session.used_at, None, "the session must stay usable");
    }
}

fn request(query: &[(&str, &str)]) -> Request {
    let map: HashMap<String, String> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    lambda_http::http::Request::builder()
        .uri("https://connector.test/")
        .body(Body::Empty)
        .unwrap()
        .with_query_string_parameters(map)
}

fn body(response: &Response<Body>) -> String {
    match response.body() {
        Body::Text(text) => text.clone(),
        _ => String::new(),
    }
}

/// Asserts a browser-facing error page: status, a phrase of its message, and a reconnect hint.
fn assert_page(response: &Response<Body>, status: u16, phrase: &str) {
    let html = body(response);
    assert_eq!(response.status(), status, "{html}");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(html.contains(phrase), "the page should say {phrase:?}: {html}");
}

#[tokio::test]
async fn the_flow_connects_with_the_sandbox() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let response = flow.run(&tenant, &Consent::default()).await;
    assert_page(&response, 200, "Your Atlassian organization is connected");
    let connections = flow.store.list_connections(&tenant).await.unwrap();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].sites.len(), 2);
    assert_eq!(connections[0].account_id, harness::ADMIN);
}

#[tokio::test]
async fn a_cancelled_consent_stores_nothing() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let (session, authorize) = flow.start(&tenant, Some("https://app.test/back")).await;
    let callback = harness::consent(&authorize, &Consent { accept: false, ..Consent::default() }).await.unwrap();
    assert_eq!(harness::query(&callback).get("error").map(String::as_str), Some("access_denied"));
    let response = flow.callback(&callback).await;
    assert_page(&response, 403, "Access not granted");
    assert!(body(&response).contains("https://app.test/back?status=error&amp;error=access_denied"));
    flow.assert_nothing_stored(&tenant).await;
    flow.assert_session_unused(&session).await;
}

#[tokio::test]
async fn a_callback_without_state_is_refused() {
    let flow = Flow::new().await;
    let response = flow.callback("https://connector.test/oauth/callback?code=abc").await;
    assert_page(&response, 400, "missing its state");
}

#[tokio::test]
async fn an_unknown_state_is_refused() {
    let flow = Flow::new().await;
    let response = flow.callback("https://connector.test/oauth/callback?code=abc&state=st_forged").await;
    assert_page(&response, 400, "unknown or was already completed");
}

#[tokio::test]
async fn an_expired_state_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let session_id = flow.session(&tenant, None).await;
    let state = &unique("st_expired");
    flow.store
        .put_state(&OAuthState {
            state_hash: ids::sha256_hex(state),
            session_id_hash: ids::sha256_hex(&session_id),
            tenant_id: tenant.clone(),
            return_url: None,
            expires_at: OffsetDateTime::now_utc() - Duration::seconds(1),
        })
        .await
        .unwrap();
    let response = flow.callback(&format!("https://connector.test/oauth/callback?code=abc&state={state}")).await;
    assert_page(&response, 400, "took too long and expired");
    flow.assert_nothing_stored(&tenant).await;
    flow.assert_session_unused(&session_id).await;
}

#[tokio::test]
async fn a_replayed_state_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let (_, authorize) = flow.start(&tenant, None).await;
    let callback = harness::consent(&authorize, &Consent::default()).await.unwrap();
    assert_eq!(flow.callback(&callback).await.status(), 200);
    let replay = flow.callback(&callback).await;
    assert_page(&replay, 400, "unknown or was already completed");
    assert_eq!(flow.store.list_connections(&tenant).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_callback_without_code_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let (session, authorize) = flow.start(&tenant, None).await;
    let state = &harness::query(&authorize)["state"];
    let response = flow.callback(&format!("https://connector.test/oauth/callback?state={state}")).await;
    assert_page(&response, 400, "no authorization code");
    flow.assert_nothing_stored(&tenant).await;
    flow.assert_session_unused(&session).await;
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_configuration_error() {
    let flow = Flow::with_secret("not-the-secret").await;
    let tenant = unique("tenant");
    let response = flow.run(&tenant, &Consent::default()).await;
    assert_page(&response, 500, "configuration problem on the connector");
    assert!(body(&response).contains("contact the administrator"), "no re-consent loop for a config error");
    flow.assert_nothing_stored(&tenant).await;
}

#[tokio::test]
async fn a_failing_token_endpoint_is_reported() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let response = flow.run(&tenant, &Consent { fault: Some("token_500"), ..Consent::default() }).await;
    assert_page(&response, 502, "token service failed");
    flow.assert_nothing_stored(&tenant).await;
}

#[tokio::test]
async fn a_rejected_code_is_reported() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let response = flow.run(&tenant, &Consent { fault: Some("token_invalid_grant"), ..Consent::default() }).await;
    assert_page(&response, 400, "did not accept the authorization code");
    flow.assert_nothing_stored(&tenant).await;
}

#[tokio::test]
async fn a_grant_without_sites_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let response = flow.run(&tenant, &Consent { sites: Some(vec![]), ..Consent::default() }).await;
    assert_page(&response, 403, "reaches no Atlassian site");
    flow.assert_nothing_stored(&tenant).await;
}

#[tokio::test]
async fn missing_scopes_are_named() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let granted: Vec<&str> =
        scopes::DEFAULT_SCOPES.iter().copied().filter(|s| *s != "read:group:jira" && *s != "offline_access").collect();
    let consent = Consent { granted_scopes: Some(granted.join(" ")), ..Consent::default() };
    let response = flow.run(&tenant, &consent).await;
    assert_page(&response, 403, "Missing: offline_access, read:group:jira.");
    flow.assert_nothing_stored(&tenant).await;
}

#[tokio::test]
async fn an_unknown_session_is_refused() {
    let flow = Flow::new().await;
    assert_page(&flow.open("cs_not-a-session").await, 404, "not valid");
    assert_page(&connect_fn::handle(&flow.connect, request(&[])).await.unwrap(), 400, "carries no session");
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let session_id = &unique("cs_expired");
    let mut session = contract::session(&tenant);
    session.id_hash = ids::sha256_hex(session_id);
    session.expires_at = OffsetDateTime::now_utc() - Duration::seconds(1);
    flow.store.put_session(&session).await.unwrap();
    assert_page(&flow.open(session_id).await, 410, "has expired");
    flow.assert_nothing_stored(&tenant).await;
}

#[tokio::test]
async fn a_used_session_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let (session, authorize) = flow.start(&tenant, None).await;
    let callback = harness::consent(&authorize, &Consent::default()).await.unwrap();
    assert_eq!(flow.callback(&callback).await.status(), 200);
    assert_page(&flow.open(&session).await, 410, "already used");
}

/// Connects `tenant` through the flow and returns its connection id.
/// What a sync job needs besides a connection's store, client and keys: the stack's mirror table, an in-memory
/// queue (whose continuations a test can take) and the default refresh policy.
struct JobEnv {
    mirror: store::DynamoMirror,
    queue: sync::queue::MemoryQueue,
    policy: RefreshPolicy,
}

impl JobEnv {
    fn new() -> Self {
        let stack = Stack::from_env();
        Self {
            mirror: store::DynamoMirror::new(stack.dynamodb(), &stack.mirror_table),
            queue: sync::queue::MemoryQueue::default(),
            policy: RefreshPolicy::default(),
        }
    }

    fn deps<'a, A>(
        &'a self,
        store: &'a DynamoStore,
        atlassian: &'a A,
        keys: &'a KeyRing,
        pacing: sync::engine::Pacing,
    ) -> sync::job::Deps<'a, DynamoStore, store::DynamoMirror, A, sync::budget::Unlimited, sync::queue::MemoryQueue>
    {
        sync::job::Deps {
            store,
            mirror: &self.mirror,
            atlassian,
            budget: &sync::budget::Unlimited,
            keys,
            refresh: &self.policy,
            queue: &self.queue,
            pacing,
            guard: sync::engine::DeletionGuard::default(),
        }
    }
}

async fn connected(flow: &Flow, tenant: &str) -> String {
    assert_eq!(flow.run(tenant, &Consent::default()).await.status(), 200);
    flow.store.list_connections(tenant).await.unwrap().remove(0).connection_id
}

#[tokio::test]
async fn twenty_concurrent_workers_refresh_an_expired_token_once() {
    let flow = std::sync::Arc::new(Flow::new().await);
    let tenant = unique("tenant");
    let id = connected(&flow, &tenant).await;
    flow.expire_access_token(&id).await;

    let workers: Vec<_> = (0..20)
        .map(|i| {
            let (flow, id) = (flow.clone(), id.clone());
            tokio::spawn(async move { flow.access_token(&id, &format!("worker-{i}")).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for worker in workers {
        tokens.push(worker.await.unwrap().expect("every worker gets a token"));
    }
    assert_eq!(flow.sandbox_stats().await["refreshes"], 1, "exactly one refresh call reached Atlassian");
    assert!(tokens.windows(2).all(|w| w[0] == w[1]), "every worker got the same, new token");

    // No grant was lost: the new token works, and the stored refresh token still refreshes.
    let me = harness::client().get(flow.sandbox.join("/me").unwrap()).bearer_auth(&tokens[0]).send().await.unwrap();
    assert_eq!(me.status(), 200);
    flow.expire_access_token(&id).await;
    let again = flow.access_token(&id, "later").await.expect("the rotated refresh token works");
    assert_ne!(again, tokens[0]);
    assert_eq!(flow.sandbox_stats().await["refreshes"], 2);
}

#[tokio::test]
async fn a_revoked_grant_needs_reauth_until_the_tenant_connects_again() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let id = connected(&flow, &tenant).await;
    let revoke = flow.sandbox.join(&format!("/__sandbox/grants/{}/revoke", harness::ADMIN)).unwrap();
    assert_eq!(harness::client().post(revoke).send().await.unwrap().status(), 204);
    flow.expire_access_token(&id).await;

    let error = flow.access_token(&id, "worker").await.unwrap_err();
    assert!(matches!(error, RefreshError::NeedsReauth { .. }), "{error:?}");
    let connection = flow.store.get_connection(&id).await.unwrap().unwrap();
    assert_eq!(connection.status, store::ConnectionStatus::NeedsReauth);
    assert!(connection.status_reason.is_some());

    // The tenant's next connect brings the same connection back.
    assert_eq!(connected(&flow, &tenant).await, id);
    let connection = flow.store.get_connection(&id).await.unwrap().unwrap();
    assert_eq!(connection.status, store::ConnectionStatus::Active);
    assert_eq!(connection.status_reason, None);
    flow.expire_access_token(&id).await;
    assert!(flow.access_token(&id, "worker").await.is_ok());
}

#[tokio::test]
async fn the_client_maps_token_endpoint_errors() {
    // Straight against the sandbox: the real client's error mapping of Atlassian's answers.
    let sandbox = harness::spawn_sandbox(SandboxConfig::default()).await.unwrap();
    let endpoints = Endpoints { auth_base: sandbox.clone(), api_base: sandbox };
    let client = |secret: &str| {
        AtlassianClient::new(
            atlassian::http_client().unwrap(),
            endpoints.clone(),
            ClientCredentials {
                client_id: ClientId::new(SandboxConfig::default().client_id),
                client_secret: ClientSecret::new(secret.into()),
            },
            Url::parse(CALLBACK).unwrap(),
        )
    };
    use atlassian::{AtlassianApi, AuthorizationCode, OAuthError};
    let code = AuthorizationCode::new("sbx-code-unknown".into());
    let wrong_secret = client("wrong").exchange_code(&code).await.unwrap_err();
    assert!(matches!(wrong_secret, OAuthError::ClientRejected), "{wrong_secret:?}");
    let unknown_code = client(&SandboxConfig::default().client_secret).exchange_code(&code).await.unwrap_err();
    assert!(matches!(unknown_code, OAuthError::InvalidGrant { .. }), "{unknown_code:?}");
    let bad_token = atlassian::AccessToken::new("sbx-at-forged".into());
    let denied = client("x").me(&bad_token).await.unwrap_err();
    assert!(matches!(denied, atlassian::ApiError::Unauthorized { status: 401, .. }), "{denied:?}");
}

mod sync_runs {
    use super::*;
    use atlassian::AccessToken;
    use serde_json::Value;
    use std::sync::atomic::{AtomicU64, Ordering};
    use store::CheckpointStore;
    use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope, Stored};
    use tests::sandbox::OrgSize;

    /// The real DynamoDB mirror, counting the objects written through it, and the member chunks with the most ids
    /// any one of them held.
    pub(crate) struct Counting {
        pub(crate) inner: store::DynamoMirror,
        pub(crate) written: AtomicU64,
        pub(crate) chunks_written: AtomicU64,
        pub(crate) largest_chunk: AtomicU64,
    }

    impl Counting {
        pub(crate) fn new(inner: store::DynamoMirror) -> Self {
            let zero = || AtomicU64::new(0);
            Self { inner, written: zero(), chunks_written: zero(), largest_chunk: zero() }
        }
    }

    impl MirrorStore for Counting {
        async fn stored(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, Stored>, store::StoreError> {
            self.inner.stored(scope, keys).await
        }
        async fn write(&self, scope: &Scope, objects: &[MirrorObject]) -> Result<(), store::StoreError> {
            self.written.fetch_add(objects.len() as u64, Ordering::SeqCst);
            self.inner.write(scope, objects).await
        }
        async fn list(
            &self,
            scope: &Scope,
            after: Option<&str>,
            limit: usize,
        ) -> Result<(Vec<MirrorObject>, Option<String>), store::StoreError> {
            self.inner.list(scope, after, limit).await
        }
        async fn clear(&self, scope: &Scope) -> Result<usize, store::StoreError> {
            self.inner.clear(scope).await
        }
        async fn objects(
            &self,
            scope: &Scope,
            keys: &[String],
        ) -> Result<HashMap<String, MirrorObject>, store::StoreError> {
            self.inner.objects(scope, keys).await
        }
        async fn write_members(
            &self,
            scope: &Scope,
            key: &str,
            chunks: &[store::mirror::MemberChunk],
            removed: &[u32],
        ) -> Result<(), store::StoreError> {
            self.chunks_written.fetch_add(chunks.len() as u64, Ordering::SeqCst);
            let largest = chunks.iter().map(|c| c.ids.len() as u64).max().unwrap_or(0);
            self.largest_chunk.fetch_max(largest, Ordering::SeqCst);
            self.inner.write_members(scope, key, chunks, removed).await
        }
        async fn members(
            &self,
            scope: &Scope,
            key: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<(Vec<String>, Option<String>), store::StoreError> {
            self.inner.members(scope, key, after, limit).await
        }
    }

    fn expected(org: &Value, object_type: ObjectType, sites: &[String]) -> HashMap<String, Value> {
        harness::expected_mirror(org, object_type.as_str(), sites)
    }

    /// The live (not deleted) objects of the mirror, and how many are marked deleted.
    pub(crate) async fn mirrored(mirror: &impl MirrorStore, scope: &Scope) -> (HashMap<String, Value>, usize) {
        let (mut live, mut deleted, mut cursor) = (HashMap::new(), 0, None);
        loop {
            let (page, next) = mirror.list(scope, cursor.as_deref(), 500).await.unwrap();
            for object in page {
                if object.deleted {
                    deleted += 1;
                } else {
                    live.insert(object.key, Value::Object(object.record));
                }
            }
            cursor = next;
            if cursor.is_none() {
                return (live, deleted);
            }
        }
    }

    #[tokio::test]
    async fn syncing_mirrors_the_org_writes_only_changes_and_marks_deletions() {
        // Every endpoint needs more than one page: 1,100 users (1,000 a page), 210 projects (100), 520 spaces (250).
        let size = OrgSize { users: 1100, groups: 30, projects: 210, spaces: 520, sites: 2 };
        let base = harness::spawn_sandbox(SandboxConfig { org: size, ..SandboxConfig::default() }).await.unwrap();
        let token = AccessToken::new(harness::sandbox_token(&base, None).await.unwrap());
        let stack = Stack::from_env();
        let mirror = Counting::new(store::DynamoMirror::new(stack.dynamodb(), &stack.mirror_table));
        let directory = AtlassianClient::new(
            atlassian::http_client().unwrap(),
            Endpoints { auth_base: base.clone(), api_base: base.clone() },
            ClientCredentials { client_id: ClientId::new("x".into()), client_secret: ClientSecret::new("x".into()) },
            Url::parse(CALLBACK).unwrap(),
        );
        let connection_id = unique("con");
        let sites: Vec<String> = (0..size.sites).map(tests::sandbox::site_id).collect();
        let checkpoints = store();
        let pacing = sync::engine::Pacing::default();
        let source = sync::sources::OauthSource::new(&directory, &sync::budget::Unlimited, &token, pacing);
        let run = |object_type| sync::engine::Run {
            source: &source,
            mirror: &mirror,
            checkpoints: &checkpoints,
            connection_id: &connection_id,
            run_id: "run",
            sites: sites.clone(),
            object_type,
            now: OffsetDateTime::now_utc(),
            pacing: sync::engine::Pacing::default(),
            guard: sync::engine::DeletionGuard::default(),
        };

        // First sync: everything is created, and the mirror is exactly the org.
        let org = harness::sandbox_org(&base).await.unwrap();
        for object_type in ObjectType::ALL {
            let counts = run(object_type).run(None).await.unwrap().done().unwrap();
            let expected = expected(&org, object_type, &sites);
            assert_eq!(counts.created as usize, expected.len(), "{object_type:?} created");
            let (live, deleted) = mirrored(&mirror, &Scope::new(&connection_id, object_type)).await;
            assert_eq!(deleted, 0);
            assert_eq!(live, expected, "{object_type:?}: the mirror is exactly the org");
        }

        // An unchanged re-sync reads everything and writes nothing.
        let before = mirror.written.load(Ordering::SeqCst);
        for object_type in ObjectType::ALL {
            let counts = run(object_type).run(None).await.unwrap().done().unwrap();
            assert_eq!((counts.created, counts.updated, counts.deleted), (0, 0, 0), "{object_type:?}");
            assert!(counts.unchanged > 0 && counts.pages > 0 && counts.points > counts.pages);
        }
        assert_eq!(mirror.written.load(Ordering::SeqCst), before, "an unchanged re-sync writes no object");

        // The org changes: adds, renames, removals and membership changes all show.
        harness::client().post(base.join("/__sandbox/org/mutate").unwrap()).send().await.unwrap();
        let org = harness::sandbox_org(&base).await.unwrap();
        for object_type in ObjectType::ALL {
            let counts = run(object_type).run(None).await.unwrap().done().unwrap();
            assert!(counts.created >= 1 && counts.deleted >= 1, "{object_type:?}: {counts:?}");
            let (live, deleted) = mirrored(&mirror, &Scope::new(&connection_id, object_type)).await;
            assert_eq!(live, expected(&org, object_type, &sites), "{object_type:?} after the change");
            assert_eq!(deleted as u64, counts.deleted, "{object_type:?}: removed upstream, marked deleted");
        }
    }

    /// Runs one object type to completion the way continuations and redeliveries do: each invocation resumes from
    /// the saved checkpoint of `run_id`. `kill_after` cuts an invocation short (dropping it mid-flight, like a
    /// crashed Lambda) after the given time; it grows each time, so the run always ends. Answers the counts and how
    /// many invocations paused and were killed.
    async fn run_to_completion<M: MirrorStore>(
        template: &sync::engine::Run<'_, M, DynamoStore>,
        run_id: &str,
        mut kill_after: Option<std::time::Duration>,
    ) -> (sync::engine::Counts, u32, u32) {
        use sync::engine::{Resume, Step};
        let (mut paused, mut killed) = (0, 0);
        loop {
            let saved =
                template.checkpoints.load_checkpoint(template.connection_id, template.object_type).await.unwrap();
            let resume = saved
                .filter(|(c, _)| c.run_id == run_id)
                .map(|(checkpoint, chunks)| Resume::parse(checkpoint, &chunks).expect("a readable checkpoint"));
            let run = sync::engine::Run {
                run_id,
                sites: template.sites.clone(),
                pacing: template.pacing.clone(),
                guard: template.guard.clone(),
                ..*template
            };
            let step = match kill_after {
                None => run.run(resume).await.unwrap(),
                Some(limit) => match tokio::time::timeout(limit, run.run(resume)).await {
                    Ok(step) => step.unwrap(),
                    Err(_) => {
                        killed += 1;
                        kill_after = Some(limit * 2);
                        continue;
                    }
                },
            };
            match step {
                Step::Paused(_) => paused += 1,
                Step::Done(counts, _) => return (counts, paused, killed),
                Step::Waiting { .. } => panic!("no budget to wait for here"),
            }
        }
    }

    #[tokio::test]
    async fn runs_paused_after_every_page_or_killed_anywhere_end_with_the_exact_mirror() {
        let size = OrgSize { users: 1100, groups: 60, projects: 210, spaces: 520, sites: 2 };
        let base = harness::spawn_sandbox(SandboxConfig { org: size, ..SandboxConfig::default() }).await.unwrap();
        let token = AccessToken::new(harness::sandbox_token(&base, None).await.unwrap());
        let stack = Stack::from_env();
        let mirror = store::DynamoMirror::new(stack.dynamodb(), &stack.mirror_table);
        let checkpoints = store();
        let directory = AtlassianClient::new(
            atlassian::http_client().unwrap(),
            Endpoints { auth_base: base.clone(), api_base: base.clone() },
            ClientCredentials { client_id: ClientId::new("x".into()), client_secret: ClientSecret::new("x".into()) },
            Url::parse(CALLBACK).unwrap(),
        );
        let connection_id = unique("con");
        let sites: Vec<String> = (0..size.sites).map(tests::sandbox::site_id).collect();
        let source = sync::sources::OauthSource::new(&directory, &sync::budget::Unlimited, &token, Default::default());
        let template = |object_type, pacing| sync::engine::Run {
            source: &source,
            mirror: &mirror,
            checkpoints: &checkpoints,
            connection_id: &connection_id,
            run_id: "",
            sites: sites.clone(),
            object_type,
            now: OffsetDateTime::now_utc(),
            pacing,
            guard: sync::engine::DeletionGuard::default(),
        };
        let every_page = sync::engine::Pacing { max_pages: 1, ..sync::engine::Pacing::default() };
        let always_save =
            sync::engine::Pacing { checkpoint_every: std::time::Duration::ZERO, ..sync::engine::Pacing::default() };

        // A pause after every page: one invocation a page, and the counts still add up exactly.
        let org = harness::sandbox_org(&base).await.unwrap();
        for object_type in ObjectType::ALL {
            let (counts, paused, _) =
                run_to_completion(&template(object_type, every_page.clone()), &unique("run"), None).await;
            let expected = expected(&org, object_type, &sites);
            assert!(paused >= 3, "{object_type:?} paused {paused} times");
            assert_eq!(counts.created as usize, expected.len(), "{object_type:?}: nothing created twice");
            assert_eq!(mirrored(&mirror, &Scope::new(&connection_id, object_type)).await, (expected, 0));
            let saved = checkpoints.load_checkpoint(&connection_id, object_type).await.unwrap();
            assert!(saved.is_none(), "a finished run leaves no checkpoint");
        }

        // The org changes, then every run is killed at growing points (checkpointing every page) until it ends.
        harness::client().post(base.join("/__sandbox/org/mutate").unwrap()).send().await.unwrap();
        let org = harness::sandbox_org(&base).await.unwrap();
        for object_type in ObjectType::ALL {
            let kill = Some(std::time::Duration::from_millis(3));
            let (counts, _, killed) =
                run_to_completion(&template(object_type, always_save.clone()), &unique("run"), kill).await;
            assert!(killed >= 2, "{object_type:?} was killed {killed} times");
            let (live, deleted) = mirrored(&mirror, &Scope::new(&connection_id, object_type)).await;
            assert_eq!(live, expected(&org, object_type, &sites), "{object_type:?}: exact after the kills");
            assert!(deleted >= 1 && counts.pages > 0, "{object_type:?}: removals are marked");
        }
    }
}

#[tokio::test]
async fn sync_jobs_record_their_runs_and_stop_at_a_revoked_grant() {
    use store::RunStore;
    use store::mirror::{MirrorStore, ObjectType, Scope};
    use sync::job::{self, Outcome};
    use sync::queue::Job;
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let id = connected(&flow, &tenant).await;
    let env = JobEnv::new();
    let mirror = &env.mirror;
    let deps = env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
    let org = harness::sandbox_org(&flow.sandbox).await.unwrap();
    for (object_type, kind) in [
        (ObjectType::Users, "users"),
        (ObjectType::Groups, "groups"),
        (ObjectType::Projects, "projects"),
        (ObjectType::Spaces, "spaces"),
    ] {
        let outcome = job::run(&deps, &Job::new(&id, object_type), &unique("run"), None).await.unwrap();
        let Outcome::Finished(store::RunStatus::Succeeded, counts) = outcome else {
            panic!("{object_type:?}: {outcome:?}")
        };
        let expected = org[kind].as_array().unwrap().len();
        assert_eq!(counts.created as usize, expected, "{object_type:?}");
        let (objects, _) = mirror.list(&Scope::new(&id, object_type), None, 1000).await.unwrap();
        assert_eq!(objects.len(), expected);
    }
    let runs = flow.store.list_runs(&id).await.unwrap();
    assert_eq!(runs.len(), 4);
    assert!(
        runs.iter().all(|r| r.status == store::RunStatus::Succeeded && r.finished_at.is_some() && r.counts.points > 0)
    );

    // The customer revokes access: the next run ends needs_reauth, and so does the connection.
    let revoke = flow.sandbox.join(&format!("/__sandbox/grants/{}/revoke", harness::ADMIN)).unwrap();
    harness::client().post(revoke).send().await.unwrap();
    flow.expire_access_token(&id).await;
    let outcome = job::run(&deps, &Job::new(&id, ObjectType::Users), &unique("run"), None).await.unwrap();
    assert!(matches!(outcome, Outcome::Finished(store::RunStatus::NeedsReauth, _)), "{outcome:?}");
    let connection = flow.store.get_connection(&id).await.unwrap().unwrap();
    assert_eq!(connection.status, store::ConnectionStatus::NeedsReauth);
    // Further jobs skip the connection until the tenant connects again.
    assert_eq!(
        job::run(&deps, &Job::new(&id, ObjectType::Groups), &unique("run"), None).await.unwrap(),
        Outcome::Skipped
    );
}

#[tokio::test]
async fn a_paused_run_continues_through_the_queue_and_stale_continuations_are_dropped() {
    use store::mirror::{MirrorStore, ObjectType, Scope};
    use store::{CheckpointStore, RunStore};
    use sync::job::{self, Outcome};
    use sync::queue::Job;
    let flow = Flow::new().await;
    let id = connected(&flow, &unique("tenant")).await;
    let env = JobEnv::new();
    let (mirror, queue) = (&env.mirror, &env.queue);
    let deps = env.deps(
        &flow.store,
        &flow.callback.atlassian,
        &flow.callback.keys,
        sync::engine::Pacing { max_pages: 1, ..sync::engine::Pacing::default() },
    );
    let take = || std::mem::take(&mut *queue.jobs.lock().unwrap());
    let org = harness::sandbox_org(&flow.sandbox).await.unwrap();

    // The first invocation reads one page (the first of two sites), pauses and queues its continuation.
    let outcome = job::run(&deps, &Job::new(&id, ObjectType::Users), "message-1", None).await.unwrap();
    assert!(matches!(outcome, Outcome::Continued(counts) if counts.pages == 1), "{outcome:?}");
    let running = flow.store.list_runs(&id).await.unwrap().remove(0);
    assert_eq!((running.status, running.run_id.as_str()), (store::RunStatus::Running, "message-1"));
    let mut continuation = take();
    assert_eq!(continuation, vec![Job { run_id: Some("message-1".into()), ..Job::new(&id, ObjectType::Users) }]);
    // A new run meanwhile is turned away: the paused run still holds the lease.
    let other = job::run(&deps, &Job::new(&id, ObjectType::Users), "message-2", None).await.unwrap();
    assert_eq!(other, Outcome::AlreadyRunning);

    // Continuations (each with a new message id) carry the run to its end.
    let mut invocations = 1;
    let counts = loop {
        let job = continuation.pop().expect("a continuation");
        invocations += 1;
        match job::run(&deps, &job, &format!("message-c{invocations}"), None).await.unwrap() {
            Outcome::Continued(_) => continuation = take(),
            Outcome::Finished(store::RunStatus::Succeeded, counts) => break counts,
            outcome => panic!("{outcome:?}"),
        }
    };
    assert!(invocations >= 3, "two sites, one page an invocation: {invocations}");
    assert_eq!(counts.created as usize, org["users"].as_array().unwrap().len(), "each user created once");
    let done = flow.store.list_runs(&id).await.unwrap().remove(0);
    assert_eq!((done.run_id.as_str(), done.started_at), ("message-1", running.started_at), "one run throughout");
    assert!(done.finished_at.is_some() && take().is_empty());
    assert!(flow.store.load_checkpoint(&id, ObjectType::Users).await.unwrap().is_none());
    let (objects, _) = mirror.list(&Scope::new(&id, ObjectType::Users), None, 1000).await.unwrap();
    assert_eq!(objects.len(), org["users"].as_array().unwrap().len());

    // A continuation delivered again after its run ended does nothing and leaves the record alone.
    let stale = Job { run_id: Some("message-1".into()), ..Job::new(&id, ObjectType::Users) };
    assert_eq!(job::run(&deps, &stale, "message-late", None).await.unwrap(), Outcome::Skipped);
    assert_eq!(flow.store.list_runs(&id).await.unwrap().remove(0), done);

    // A paused run whose continuation waits past its lease is replaced by the next new run, which drops the old
    // checkpoint: the late continuation then finds nothing to resume.
    assert!(matches!(
        job::run(&deps, &Job::new(&id, ObjectType::Users), "message-3", None).await.unwrap(),
        Outcome::Continued(_)
    ));
    let late = take().pop().expect("a continuation");
    let mut lapsed = flow.store.list_runs(&id).await.unwrap().remove(0);
    lapsed.lease_until_ms = store::budget::epoch_ms(OffsetDateTime::now_utc() - Duration::minutes(1));
    assert!(flow.store.save_run(&id, &lapsed).await.unwrap());
    // (The new run fits one invocation, so it saves no checkpoint of its own.)
    let unpaced = job::Deps { pacing: sync::engine::Pacing::default(), guard: deps.guard.clone(), ..deps };
    let takeover = job::run(&unpaced, &Job::new(&id, ObjectType::Users), "message-4", None).await.unwrap();
    assert!(matches!(takeover, Outcome::Finished(store::RunStatus::Succeeded, _)), "{takeover:?}");
    assert!(flow.store.load_checkpoint(&id, ObjectType::Users).await.unwrap().is_none(), "the old one is gone");
    assert_eq!(job::run(&deps, &late, "message-late-2", None).await.unwrap(), Outcome::Skipped);
    assert_eq!(flow.store.list_runs(&id).await.unwrap().remove(0).run_id, "message-4");
}

#[tokio::test]
async fn a_site_the_grant_no_longer_reaches_is_marked_and_its_objects_deleted() {
    use store::mirror::{MirrorStore, ObjectType, Scope};
    use sync::job::{self, Outcome};
    use sync::queue::Job;
    let flow = Flow::new().await;
    let id = connected(&flow, &unique("tenant")).await;
    let env = JobEnv::new();
    let mirror = &env.mirror;
    let deps = env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
    assert!(matches!(
        job::run(&deps, &Job::new(&id, ObjectType::Spaces), &unique("run"), None).await.unwrap(),
        Outcome::Finished(store::RunStatus::Succeeded, _)
    ));
    let lost = tests::sandbox::site_id(1);
    let remove = flow.sandbox.join(&format!("/__sandbox/grants/{}/sites/{lost}/remove", harness::ADMIN)).unwrap();
    assert_eq!(harness::client().post(remove).send().await.unwrap().status(), 204);

    let outcome = job::run(&deps, &Job::new(&id, ObjectType::Spaces), &unique("run"), None).await.unwrap();
    let Outcome::Finished(store::RunStatus::Succeeded, counts) = outcome else { panic!("{outcome:?}") };
    let connection = flow.store.get_connection(&id).await.unwrap().unwrap();
    let site = connection.sites.iter().find(|s| s.cloud_id == lost).expect("the lost site is kept, marked");
    assert!(site.lost_at.is_some());
    assert!(connection.sites.iter().filter(|s| s.cloud_id != lost).all(|s| s.lost_at.is_none()));
    let (objects, _) = mirror.list(&Scope::new(&id, ObjectType::Spaces), None, 1000).await.unwrap();
    let on_lost: Vec<_> = objects.iter().filter(|o| o.key.starts_with(&lost)).collect();
    assert!(!on_lost.is_empty() && on_lost.iter().all(|o| o.deleted), "its spaces are marked deleted");
    assert_eq!(counts.deleted as usize, on_lost.len());
    assert!(objects.iter().filter(|o| !o.key.starts_with(&lost)).all(|o| !o.deleted));
}

mod admin_key {
    //! The admin-key connect mode against the sandbox's Admin API and sites: every way the credentials can be wrong
    //! is told apart, and nothing is stored unless all of them are right.
    use super::*;
    use atlassian::{AdminKey, SiteLogin};
    use serde_json::json;
    use store::Product;
    use tokens::admin::{AdminConnectError, AdminConnectRequest};

    struct Admin {
        sandbox: Url,
        client: AtlassianClient,
        store: DynamoStore,
        keys: KeyRing,
    }

    impl Admin {
        async fn new() -> Self {
            Self::with(SandboxConfig::default()).await
        }

        async fn with(config: SandboxConfig) -> Self {
            let sandbox = harness::spawn_sandbox(config).await.unwrap();
            let endpoints = Endpoints { auth_base: sandbox.clone(), api_base: sandbox.clone() };
            let client = AtlassianClient::without_oauth(atlassian::http_client().unwrap(), endpoints);
            let keys = KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap();
            Self { sandbox, client, store: store(), keys }
        }

        async fn key(&self, options: serde_json::Value) -> AdminKey {
            AdminKey::new(harness::admin_key(&self.sandbox, options).await.unwrap())
        }

        async fn login(&self, site: &str) -> SiteLogin {
            let (email, token) = harness::api_token(&self.sandbox, harness::ADMIN).await.unwrap();
            SiteLogin { site_url: harness::site_url(&self.sandbox, site), email, api_token: token.into() }
        }

        fn request(&self, tenant: &str, key: AdminKey, site: Option<SiteLogin>) -> AdminConnectRequest {
            AdminConnectRequest {
                tenant_id: tenant.into(),
                org_id: tests::sandbox::ORG_ID.into(),
                admin_api_key: key,
                site,
                products: None,
            }
        }

        /// Connects, expecting a failure, and checks that nothing was stored for the tenant.
        async fn refused(&self, request: AdminConnectRequest) -> AdminConnectError {
            let now = OffsetDateTime::now_utc();
            let error = tokens::admin::connect(&self.store, &self.client, &self.keys, &request, now).await.unwrap_err();
            assert!(self.store.list_connections(&request.tenant_id).await.unwrap().is_empty(), "nothing stored");
            error
        }
    }

    #[tokio::test]
    async fn a_valid_key_and_site_token_make_an_active_connection_with_sealed_secrets() {
        let admin = Admin::new().await;
        let tenant = unique("tenant");
        let request = admin.request(&tenant, admin.key(json!({})).await, Some(admin.login("acme").await));
        let now = OffsetDateTime::now_utc();
        let connection = tokens::admin::connect(&admin.store, &admin.client, &admin.keys, &request, now).await.unwrap();
        assert_eq!(connection.mode, store::ConnectionMode::AdminApiKey);
        assert_eq!(connection.status, store::ConnectionStatus::Active);
        assert_eq!(connection.org_id.as_deref(), Some(tests::sandbox::ORG_ID));
        assert_eq!(connection.account_id, harness::ADMIN);
        let site = &connection.sites[0];
        assert_eq!((site.cloud_id.as_str(), site.name.as_str()), (tests::sandbox::site_id(0).as_str(), "acme"));
        assert_eq!(site.products, vec![Product::Jira, Product::Confluence]);
        // The secrets are sealed to this connection, and open to exactly what was given.
        let stored = admin.store.get_connection(&connection.connection_id).await.unwrap().unwrap();
        let opened = tokens::credentials::open_admin(&admin.keys, &stored.connection_id, &stored.credentials).unwrap();
        assert_eq!(opened.key().expose(), request.admin_api_key.expose());
        let login = opened.site_login(&harness::site_url(&admin.sandbox, "acme")).unwrap();
        assert_eq!(login.email, request.site.as_ref().unwrap().email);
        let blob = String::from_utf8_lossy(&stored.credentials.blob).into_owned();
        assert!(!blob.contains(request.admin_api_key.expose()), "the key is not stored in clear");
        // Connecting again with a new key updates the same connection.
        let again = admin.request(&tenant, admin.key(json!({})).await, None);
        let updated = tokens::admin::connect(&admin.store, &admin.client, &admin.keys, &again, now).await.unwrap();
        assert_eq!(updated.connection_id, connection.connection_id);
        assert_eq!(updated.created_at, connection.created_at);
        assert!(updated.token_version > connection.token_version);
    }

    #[tokio::test]
    async fn a_key_alone_connects_for_users_and_groups() {
        let admin = Admin::new().await;
        let request = admin.request(&unique("tenant"), admin.key(json!({})).await, None);
        let now = OffsetDateTime::now_utc();
        let connection = tokens::admin::connect(&admin.store, &admin.client, &admin.keys, &request, now).await.unwrap();
        assert!(connection.sites.is_empty() && connection.account_id.is_empty());
        use store::mirror::ObjectType;
        assert!(connection.availability(ObjectType::Users).is_ok());
        assert!(connection.availability(ObjectType::Groups).is_ok());
        let why = connection.availability(ObjectType::Projects).unwrap_err();
        assert!(why.to_string().contains("no site token"), "said, not silently empty: {why}");
    }

    #[tokio::test]
    async fn each_wrong_credential_has_its_own_answer_and_stores_nothing() {
        let admin = Admin::new().await;
        let tenant = unique("tenant");
        let good = admin.key(json!({})).await;

        let forged = admin.refused(admin.request(&tenant, AdminKey::new("ATCTT3xFfGN0-forged".into()), None)).await;
        assert!(matches!(forged, AdminConnectError::KeyRejected), "{forged:?}");
        assert!(forged.to_string().contains("admin.atlassian.com → Settings → API keys"));

        let expired = admin.refused(admin.request(&tenant, admin.key(json!({"expired": true})).await, None)).await;
        assert!(matches!(expired, AdminConnectError::KeyExpired), "{expired:?}");
        assert!(expired.to_string().contains("expired"));

        let mut wrong_org = admin.request(&tenant, good.clone(), None);
        wrong_org.org_id = "00000000-0000-0000-0000-000000000000".into();
        let error = admin.refused(wrong_org).await;
        assert!(matches!(error, AdminConnectError::WrongOrg { .. }), "{error:?}");
        assert!(error.to_string().contains(tests::sandbox::ORG_ID), "names the org the key administers: {error}");

        let scoped = admin.key(json!({"can_read_users": false})).await;
        let error = admin.refused(admin.request(&tenant, scoped, None)).await;
        assert!(matches!(error, AdminConnectError::NoAdminRights), "{error:?}");
        assert!(error.to_string().contains("admin.atlassian.com → Settings → API keys"));

        let foreign = admin.login(tests::sandbox::FOREIGN_SITE).await;
        let error = admin.refused(admin.request(&tenant, good.clone(), Some(foreign))).await;
        assert!(matches!(error, AdminConnectError::SiteNotInOrg { .. }), "{error:?}");
        assert!(error.to_string().contains("/site/acme"), "lists the org's sites: {error}");

        let mut bad_token = admin.login("acme").await;
        bad_token.api_token = "ATATT3x-not-a-token".to_string().into();
        let error = admin.refused(admin.request(&tenant, good.clone(), Some(bad_token))).await;
        assert!(matches!(error, AdminConnectError::SiteTokenRejected { .. }), "{error:?}");
        assert!(error.to_string().contains("id.atlassian.com"));

        // The sandbox's other sites all have Confluence; ask for it on a site without it by dropping it first.
        let remove =
            admin.sandbox.join(&format!("/__sandbox/sites/{}/confluence", tests::sandbox::site_id(1))).unwrap();
        assert_eq!(harness::client().delete(remove).send().await.unwrap().status(), 204);
        let mut wants_confluence = admin.request(&tenant, good.clone(), Some(admin.login("acme-1").await));
        wants_confluence.products = Some(vec![Product::Jira, Product::Confluence]);
        let error = admin.refused(wants_confluence).await;
        assert!(matches!(error, AdminConnectError::ConfluenceMissing { .. }), "{error:?}");
        assert!(error.to_string().contains("Leave \"confluence\" out of \"products\""), "{error}");
        // Without asking for it, the same site connects with Jira only.
        let jira_only = admin.request(&tenant, good, Some(admin.login("acme-1").await));
        let now = OffsetDateTime::now_utc();
        let connection =
            tokens::admin::connect(&admin.store, &admin.client, &admin.keys, &jira_only, now).await.unwrap();
        assert_eq!(connection.sites[0].products, vec![Product::Jira]);
    }

    #[tokio::test]
    async fn users_are_read_from_v1_where_v2_is_not_available() {
        let admin = Admin::new().await;
        let off = admin.sandbox.join("/__sandbox/admin").unwrap();
        assert_eq!(harness::client().post(off).json(&json!({"v2": false})).send().await.unwrap().status(), 204);
        let request = admin.request(&unique("tenant"), admin.key(json!({})).await, None);
        let now = OffsetDateTime::now_utc();
        tokens::admin::connect(&admin.store, &admin.client, &admin.keys, &request, now).await.unwrap();
        let scoped = admin.key(json!({"can_read_users": false})).await;
        let error = admin.refused(admin.request(&unique("tenant"), scoped, None)).await;
        assert!(matches!(error, AdminConnectError::NoAdminRights), "v1 says so too: {error:?}");

        // The sync reads v1 too: every managed account, with its email.
        use store::mirror::{MirrorStore, ObjectType, Scope};
        let id = tokens::admin::connection_id(&request.tenant_id, &request.org_id);
        let env = JobEnv::new();
        let mirror = &env.mirror;
        let deps = env.deps(&admin.store, &admin.client, &admin.keys, sync::engine::Pacing::default());
        let job = sync::queue::Job::new(&id, ObjectType::Users);
        let outcome = sync::job::run(&deps, &job, "m-v1", None).await.unwrap();
        assert!(matches!(outcome, sync::job::Outcome::Finished(store::RunStatus::Succeeded, _)), "{outcome:?}");
        let org = harness::sandbox_org(&admin.sandbox).await.unwrap();
        let expected = harness::expected_admin_mirror(&org, "users", None);
        let (objects, _) = mirror.list(&Scope::new(&id, ObjectType::Users), None, 1000).await.unwrap();
        let got: std::collections::HashMap<String, serde_json::Value> =
            objects.into_iter().map(|o| (o.key, o.record["email"].clone())).collect();
        let want: std::collections::HashMap<String, serde_json::Value> =
            expected.into_iter().map(|(k, v)| (k, v["email"].clone())).collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn an_admin_key_connection_syncs_the_org_through_the_admin_api_and_its_site() {
        use store::mirror::{MirrorStore, ObjectType, Scope};
        use sync::job::{self, Outcome};
        use sync::queue::Job;
        // Several Admin API pages (100 a page) of users, of groups and of one group's members; several site pages.
        let org = tests::sandbox::OrgSize { users: 260, groups: 130, projects: 230, spaces: 600, sites: 2 };
        let admin = Admin::with(SandboxConfig { org, ..SandboxConfig::default() }).await;
        let request = admin.request(&unique("tenant"), admin.key(json!({})).await, Some(admin.login("acme").await));
        let now = OffsetDateTime::now_utc();
        let connection = tokens::admin::connect(&admin.store, &admin.client, &admin.keys, &request, now).await.unwrap();
        let id = connection.connection_id.clone();
        let env = JobEnv::new();
        let (mirror, queue) = (&env.mirror, &env.queue);
        let deps = env.deps(
            &admin.store,
            &admin.client,
            &admin.keys,
            sync::engine::Pacing { max_pages: 1, ..sync::engine::Pacing::default() },
        );
        let org = harness::sandbox_org(&admin.sandbox).await.unwrap();
        let site = tests::sandbox::site_id(0);
        for object_type in ObjectType::ALL {
            let mut job = Job::new(&id, object_type);
            let mut n = 0;
            let counts = loop {
                n += 1;
                match job::run(&deps, &job, &format!("m-{object_type:?}-{n}"), None).await.unwrap() {
                    Outcome::Continued(_) => job = queue.jobs.lock().unwrap().pop().expect("a continuation"),
                    Outcome::Finished(store::RunStatus::Succeeded, counts) => break counts,
                    other => panic!("{object_type:?}: {other:?}"),
                }
            };
            let expected = harness::expected_admin_mirror(&org, object_type.as_str(), Some(&site));
            assert!(n >= 3, "{object_type:?} took {n} invocations: several pages");
            assert_eq!(counts.created as usize, expected.len(), "{object_type:?}");
            let (objects, _) = mirror.list(&Scope::new(&id, object_type), None, 1000).await.unwrap();
            let live: std::collections::HashMap<String, serde_json::Value> =
                objects.into_iter().map(|o| (o.key, serde_json::Value::Object(o.record))).collect();
            assert_eq!(live, expected, "{object_type:?}: the mirror is the Admin API's view of the org");
        }
        // Emails the OAuth path sees as hidden are there.
        let hidden = org["users"].as_array().unwrap().iter().find(|u| u["email_visible"] == false).unwrap();
        let (users, _) = mirror.list(&Scope::new(&id, ObjectType::Users), None, 1000).await.unwrap();
        let user = users.iter().find(|u| u.key == hidden["account_id"].as_str().unwrap()).unwrap();
        assert_eq!(user.record["email"], hidden["email"]);

        // The key expires: the next run turns the connection needs_reauth with the reason.
        let expire = format!("/__sandbox/admin/keys/{}/expire", request.admin_api_key.expose());
        harness::client().post(admin.sandbox.join(&expire).unwrap()).send().await.unwrap();
        let outcome = job::run(&deps, &Job::new(&id, ObjectType::Users), "m-expired", None).await.unwrap();
        assert!(matches!(outcome, Outcome::Finished(store::RunStatus::NeedsReauth, _)), "{outcome:?}");
        let connection = admin.store.get_connection(&id).await.unwrap().unwrap();
        assert_eq!(connection.status, store::ConnectionStatus::NeedsReauth);
        assert!(connection.status_reason.unwrap().contains("expired"));
    }

    #[tokio::test]
    async fn a_key_that_loses_its_rights_turns_the_connection_needs_reauth() {
        use store::mirror::ObjectType;
        use sync::job::{self, Outcome};
        let admin = Admin::new().await;
        let request = admin.request(&unique("tenant"), admin.key(json!({})).await, None);
        let now = OffsetDateTime::now_utc();
        let connection = tokens::admin::connect(&admin.store, &admin.client, &admin.keys, &request, now).await.unwrap();
        let restrict = format!("/__sandbox/admin/keys/{}/restrict", request.admin_api_key.expose());
        harness::client().post(admin.sandbox.join(&restrict).unwrap()).send().await.unwrap();
        let env = JobEnv::new();
        let deps = env.deps(&admin.store, &admin.client, &admin.keys, sync::engine::Pacing::default());
        let job = sync::queue::Job::new(&connection.connection_id, ObjectType::Groups);
        let outcome = job::run(&deps, &job, "m-403", None).await.unwrap();
        assert!(matches!(outcome, Outcome::Finished(store::RunStatus::NeedsReauth, _)), "{outcome:?}");
        let stored = admin.store.get_connection(&connection.connection_id).await.unwrap().unwrap();
        assert_eq!(stored.status, store::ConnectionStatus::NeedsReauth, "scheduled runs stop until a new key");
        assert!(stored.status_reason.unwrap().contains("may no longer read"));
    }
}

/// Syncs against an Atlassian that does not agree with the client by construction: pages shorter than asked, runs
/// cut short, mass departures, a points quota, tokens that run out and refresh answers that get lost.
mod real_orgs {
    use super::sync_runs::mirrored;
    use super::*;
    use store::mirror::{ObjectType, Scope};
    use store::{RunStatus, RunStore};
    use sync::job::{self, Outcome};
    use sync::queue::Job;
    use tests::sandbox::{Faults, OrgSize, Quota};

    async fn post(url: Url, body: serde_json::Value) -> serde_json::Value {
        let response = harness::client().post(url).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.unwrap_or_default()
    }

    async fn set_faults(flow: &Flow, faults: &Faults) {
        let response =
            harness::client().post(flow.sandbox.join("/__sandbox/faults").unwrap()).json(faults).send().await.unwrap();
        assert_eq!(response.status(), 204);
    }

    fn sites() -> Vec<String> {
        (0..OrgSize::default().sites).map(tests::sandbox::site_id).collect()
    }

    #[tokio::test]
    async fn users_pages_shorter_than_asked_miss_nobody() {
        // Jira serves 100 users a page whatever maxResults asks, and every third page only half of that.
        let org = OrgSize { users: 1234, ..OrgSize::default() };
        let flow = Flow::with_sandbox(SandboxConfig {
            org,
            users_page_cap: 100,
            short_pages_every: 3,
            ..SandboxConfig::default()
        })
        .await;
        let id = connected(&flow, &unique("tenant")).await;
        let env = JobEnv::new();
        let deps =
            env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
        let outcome = job::run(&deps, &Job::new(&id, ObjectType::Users), &unique("run"), None).await.unwrap();
        let Outcome::Finished(RunStatus::Succeeded, counts) = outcome else { panic!("{outcome:?}") };
        assert_eq!((counts.created, counts.deleted), (1234, 0), "{counts:?}");
        let org = harness::sandbox_org(&flow.sandbox).await.unwrap();
        let (live, deleted) = mirrored(&env.mirror, &Scope::new(&id, ObjectType::Users)).await;
        assert_eq!((live, deleted), (harness::expected_mirror(&org, "users", &sites()), 0));
        // Pages of 100 and 50 over two sites, each ending on an empty page: near the bound, not one per user.
        assert!(counts.pages <= 2 * (1234 / 75 + 2), "{counts:?}");
    }

    #[tokio::test]
    async fn a_run_cut_short_decides_no_deletion() {
        let flow = Flow::new().await;
        let id = connected(&flow, &unique("tenant")).await;
        let env = JobEnv::new();
        let scope = Scope::new(&id, ObjectType::Users);
        let full =
            env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
        let first = job::run(&full, &Job::new(&id, ObjectType::Users), &unique("run"), None).await.unwrap();
        assert!(matches!(first, Outcome::Finished(RunStatus::Succeeded, _)), "{first:?}");
        post(flow.sandbox.join("/__sandbox/org/mutate").unwrap(), serde_json::json!({})).await;

        // The next run reads one page, then Atlassian fails (past the client's own retries): it stops short.
        let paced = env.deps(
            &flow.store,
            &flow.callback.atlassian,
            &flow.callback.keys,
            sync::engine::Pacing { max_pages: 1, ..sync::engine::Pacing::default() },
        );
        let outcome = job::run(&paced, &Job::new(&id, ObjectType::Users), "cut-short", None).await.unwrap();
        assert!(matches!(outcome, Outcome::Continued(_)), "{outcome:?}");
        let (continuation, _) = env.queue.take().remove(0);
        set_faults(&flow, &Faults { error_every: 1, ..Faults::default() }).await;
        let outcome = job::run(&paced, &continuation, "cut-short-2", None).await.unwrap();
        assert!(matches!(outcome, Outcome::Waiting(_)), "a transient failure waits to resume: {outcome:?}");
        let record = flow.store.get_run(&id, ObjectType::Users).await.unwrap().unwrap();
        assert!(record.error.as_deref().is_some_and(|e| e.starts_with("retrying")), "{record:?}");
        assert_eq!(mirrored(&env.mirror, &scope).await.1, 0, "a run cut short marks nothing deleted");

        // The retry resumes where the run was and finishes it: now the departed user is marked.
        set_faults(&flow, &Faults::default()).await;
        let (retry, delay) = env.queue.take().remove(0);
        assert_eq!((retry.attempt, delay), (1, sync::job::FIRST_BACKOFF));
        let unpaced = job::Deps { pacing: sync::engine::Pacing::default(), guard: paced.guard.clone(), ..paced };
        let outcome = job::run(&unpaced, &retry, "cut-short-3", None).await.unwrap();
        let Outcome::Finished(RunStatus::Succeeded, counts) = outcome else { panic!("{outcome:?}") };
        assert_eq!(counts.deleted, 1);
        let org = harness::sandbox_org(&flow.sandbox).await.unwrap();
        assert_eq!(mirrored(&env.mirror, &scope).await, (harness::expected_mirror(&org, "users", &sites()), 1));
    }

    #[tokio::test]
    async fn a_mass_departure_is_held_until_the_next_run_sees_it_too() {
        let flow = Flow::new().await;
        let id = connected(&flow, &unique("tenant")).await;
        let env = JobEnv::new();
        let deps =
            env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
        let scope = Scope::new(&id, ObjectType::Users);
        let first = job::run(&deps, &Job::new(&id, ObjectType::Users), &unique("run"), None).await.unwrap();
        assert!(matches!(first, Outcome::Finished(RunStatus::Succeeded, c) if c.created == 25), "{first:?}");

        // 80 % of the org leaves at once: the run holds the deletions and says why.
        post(flow.sandbox.join("/__sandbox/org/keep-users").unwrap(), serde_json::json!({"keep": 5})).await;
        let held = job::run(&deps, &Job::new(&id, ObjectType::Users), &unique("run"), None).await.unwrap();
        let Outcome::Finished(RunStatus::Succeeded, counts) = held else { panic!("{held:?}") };
        assert_eq!((counts.deleted, counts.held), (0, 20), "{counts:?}");
        let record = flow.store.get_run(&id, ObjectType::Users).await.unwrap().unwrap();
        let guard = record.held_deletions.clone().expect("the held deletions are recorded");
        assert_eq!((guard.count, guard.of), (20, 25));
        assert!(record.error.as_deref().is_some_and(|e| e.contains("not marked deleted")), "{record:?}");
        assert_eq!(mirrored(&env.mirror, &scope).await.0.len(), 25, "nothing is marked yet");

        // The next run sees the same departures: confirmed, marked, and the hold is cleared.
        let confirmed = job::run(&deps, &Job::new(&id, ObjectType::Users), &unique("run"), None).await.unwrap();
        let Outcome::Finished(RunStatus::Succeeded, counts) = confirmed else { panic!("{confirmed:?}") };
        assert_eq!((counts.deleted, counts.held), (20, 0));
        let record = flow.store.get_run(&id, ObjectType::Users).await.unwrap().unwrap();
        assert_eq!((record.held_deletions, record.error), (None, None));
        let org = harness::sandbox_org(&flow.sandbox).await.unwrap();
        assert_eq!(mirrored(&env.mirror, &scope).await, (harness::expected_mirror(&org, "users", &sites()), 20));
    }

    #[tokio::test]
    async fn a_spent_quota_is_waited_for_and_never_exceeded() {
        // A users sync of ~4,400 points against a pool of 1,500 points per 3-second window, budgeted alike.
        let window = std::time::Duration::from_secs(3);
        let quota = Quota { global_points: Some(1500), window, ..Quota::default() };
        let org = OrgSize { users: 1100, ..OrgSize::default() };
        let flow = Flow::with_sandbox(SandboxConfig { org, quota, ..SandboxConfig::default() }).await;
        let id = connected(&flow, &unique("tenant")).await;
        let env = JobEnv::new();
        let config = sync::budget::QuotaConfig { points: 1500, window, reserve: 0.1, ..Default::default() };
        let mut budget = sync::budget::SharedBudget::new(&flow.store, &unique("pool"), config);
        budget.max_wait = std::time::Duration::ZERO;
        let deps = job::Deps {
            store: &flow.store,
            mirror: &env.mirror,
            atlassian: &flow.callback.atlassian,
            budget: &budget,
            keys: &flow.callback.keys,
            refresh: &env.policy,
            queue: &env.queue,
            pacing: sync::engine::Pacing::default(),
            guard: sync::engine::DeletionGuard::default(),
        };
        let (outcome, _, waits) = harness::run_through(&deps, Job::new(&id, ObjectType::Users)).await;
        let Outcome::Finished(RunStatus::Succeeded, counts) = outcome else { panic!("{outcome:?}") };
        assert_eq!(counts.created, 1100);
        assert!(waits.len() >= 2, "the run waited for the quota: {waits:?}");
        assert!(waits.iter().all(|w| w.error.as_deref().is_some_and(|e| e.contains("points budget"))));
        let stats = flow.sandbox_stats().await;
        assert_eq!(stats["quota_429s"], 0, "the budget kept the run inside Atlassian's quota: {stats}");
        assert!(stats["max_window_points"].as_u64().unwrap() <= 1500, "{stats}");
        let org = harness::sandbox_org(&flow.sandbox).await.unwrap();
        let (live, _) = mirrored(&env.mirror, &Scope::new(&id, ObjectType::Users)).await;
        assert_eq!(live, harness::expected_mirror(&org, "users", &sites()));
    }

    #[tokio::test]
    async fn a_quota_429_pauses_the_run_until_the_window_resets() {
        // No local budget: Atlassian's 429 is the only word on the quota.
        let window = std::time::Duration::from_secs(3);
        let quota = Quota { global_points: Some(800), window, ..Quota::default() };
        let org = OrgSize { users: 600, ..OrgSize::default() };
        let flow = Flow::with_sandbox(SandboxConfig { org, quota, ..SandboxConfig::default() }).await;
        let id = connected(&flow, &unique("tenant")).await;
        let env = JobEnv::new();
        let deps =
            env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
        let (outcome, _, waits) = harness::run_through(&deps, Job::new(&id, ObjectType::Users)).await;
        let Outcome::Finished(RunStatus::Succeeded, counts) = outcome else { panic!("{outcome:?}") };
        assert_eq!(counts.created, 600);
        assert!(!waits.is_empty());
        for wait in &waits {
            assert!(wait.error.as_deref().is_some_and(|e| e.contains("jira-quota-global-based")), "{wait:?}");
            let until = wait.waiting_until.unwrap() - OffsetDateTime::now_utc();
            assert!(until <= Duration::seconds(4), "no longer than the window: {until}");
        }
        assert!(flow.sandbox_stats().await["quota_429s"].as_u64().unwrap() >= 1);
    }

    #[tokio::test]
    async fn a_run_outlives_its_tokens_and_a_lost_refresh_answer_keeps_the_grant() {
        // Tokens live 3 seconds and every request takes 60 ms: a groups run outlasts one. (Tokens of a second made
        // this flaky: under load a refresh, waiting its turn on the lease, could hand out a token already spent.)
        let org = OrgSize { users: 200, groups: 100, ..OrgSize::default() };
        let faults = Faults { latency_ms: 60, ..Faults::default() };
        let ttl = std::time::Duration::from_secs(3);
        let config = SandboxConfig { org, faults, access_token_ttl: ttl, ..SandboxConfig::default() };
        let flow = Flow::with_sandbox(config).await;
        let id = connected(&flow, &unique("tenant")).await;
        let env = JobEnv::new();
        let deps =
            env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
        let started = std::time::Instant::now();
        let outcome = job::run(&deps, &Job::new(&id, ObjectType::Groups), &unique("run"), None).await.unwrap();
        assert!(matches!(outcome, Outcome::Finished(RunStatus::Succeeded, c) if c.created == 100), "{outcome:?}");
        assert!(started.elapsed() > ttl, "the run outlived a token: {:?}", started.elapsed());
        assert!(flow.sandbox_stats().await["refreshes"].as_u64().unwrap() >= 2);

        // Atlassian rotates the token but its answer is lost: the refresh is sent again at once, and the grant
        // survives (reused after the 10-minute leeway, the sandbox would revoke it, as Atlassian does).
        let faults = Faults { lose_refresh_replies: 1, ..Faults::default() };
        set_faults(&flow, &faults).await;
        flow.expire_access_token(&id).await;
        let outcome = job::run(&deps, &Job::new(&id, ObjectType::Projects), &unique("run"), None).await.unwrap();
        assert!(matches!(outcome, Outcome::Finished(RunStatus::Succeeded, _)), "{outcome:?}");
        let stats = flow.sandbox_stats().await;
        assert_eq!(stats["lost_refresh_replies"], 1, "{stats}");
        let connection = flow.store.get_connection(&id).await.unwrap().unwrap();
        assert_eq!(connection.status, store::ConnectionStatus::Active);
        flow.expire_access_token(&id).await;
        assert!(flow.access_token(&id, "later").await.is_ok(), "the stored refresh token still works");
    }
}

mod big_groups {
    use super::sync_runs::Counting;
    use super::*;
    use std::sync::atomic::Ordering;
    use store::mirror::{MirrorStore, ObjectType, Scope};
    use store::{RunStatus, RunStore};
    use sync::job::{self, Outcome};
    use sync::queue::Job;
    use tests::sandbox::{OrgSize, Quota};

    /// Every member the mirror holds for `group` (chunk by chunk, or staged parts), sorted.
    async fn all_members(mirror: &impl MirrorStore, scope: &Scope, group: String) -> Vec<String> {
        let (mut ids, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let (page, next) = mirror.members(scope, &group, cursor.as_deref(), 1000).await.unwrap();
            ids.extend(page);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn a_group_costing_more_than_a_quota_window_finishes_across_windows_and_turns() {
        // 5,000 members at 40 a page (Jira serving fewer than asked) cost ~10,100 points; the pool grants 3,000
        // every 2 seconds (a segment of the group costs more than that), and a turn is 2,000 points.
        let window = std::time::Duration::from_secs(2);
        let quota = Quota { global_points: Some(3000), window, ..Quota::default() };
        let org = OrgSize { users: 5_200, groups: 3, projects: 1, spaces: 1, sites: 1 };
        let config = SandboxConfig { org, big_group: 5_000, members_page_cap: 40, quota, ..SandboxConfig::default() };
        let flow = Flow::with_sandbox(config).await;
        let id = connected(&flow, &unique("tenant")).await;
        let stack = Stack::from_env();
        let mirror = Counting::new(store::DynamoMirror::new(stack.dynamodb(), &stack.mirror_table));
        let env = JobEnv::new();
        let config = sync::budget::QuotaConfig { points: 3000, window, reserve: 0.1, ..Default::default() };
        let mut budget = sync::budget::SharedBudget::new(&flow.store, &unique("pool"), config);
        budget.max_wait = std::time::Duration::ZERO;
        let deps = job::Deps {
            store: &flow.store,
            mirror: &mirror,
            atlassian: &flow.callback.atlassian,
            budget: &budget,
            keys: &flow.callback.keys,
            refresh: &env.policy,
            queue: &env.queue,
            pacing: sync::engine::Pacing { points_per_turn: 2_000, ..sync::engine::Pacing::default() },
            guard: sync::engine::DeletionGuard::default(),
        };
        let (outcome, _, waits) = harness::run_through(&deps, Job::new(&id, ObjectType::Groups)).await;
        let Outcome::Finished(RunStatus::Succeeded, counts) = outcome else { panic!("{outcome:?}") };
        assert_eq!(counts.created, 3, "{counts:?}");
        assert!(counts.points > 3 * 3000, "the group costs more than three windows: {counts:?}");
        assert!(!waits.is_empty(), "the run waited for the quota");
        let stats = flow.sandbox_stats().await;
        assert_eq!(stats["quota_429s"], 0, "{stats}");
        assert!(stats["max_window_points"].as_u64().unwrap() <= 3000, "{stats}");

        let scope = Scope::new(&id, ObjectType::Groups);
        let org = harness::sandbox_org(&flow.sandbox).await.unwrap();
        let big = &org["groups"][0];
        let big_id = big["id"].as_str().unwrap().to_owned();
        let mut expected: Vec<String> =
            big["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()).collect();
        expected.sort();
        assert_eq!(all_members(&mirror, &scope, big_id.clone()).await, expected, "every member, exactly");
        let record = mirror.objects(&scope, std::slice::from_ref(&big_id)).await.unwrap().remove(&big_id).unwrap();
        assert_eq!(record.record["member_count"], 5_000);
        // The run paused inside the group (its parts were staged), and nothing staged is left behind.
        let run = flow.store.get_run(&id, ObjectType::Groups).await.unwrap().unwrap();
        let staged = format!("staged#{}#{big_id}", run.run_id);
        assert!(mirror.chunks_written.load(Ordering::SeqCst) > 64, "the members read before each pause were staged");
        assert!(all_members(&mirror, &scope, staged).await.is_empty(), "the staged parts are gone");
        // Points: the members' and the pages', and little more (a page or two read again after each pause).
        let least: u64 = (org["groups"].as_array().unwrap().iter())
            .map(|g| g["members"].as_array().unwrap().len() as u64)
            .map(|members| 2 * members + members.div_ceil(40).max(1))
            .sum::<u64>()
            + 1
            + 2 * 3;
        assert!(
            counts.points <= least * 11 / 10,
            "{} points against {least}: {counts:?}, {} waits",
            counts.points,
            waits.len()
        );

        // A member more, and turns of 2,000 points with the quota to spare: the run pauses inside the group turn
        // after turn (staging what it read) and ends with the exact list again.
        let newcomer = org["users"][5_100]["account_id"].as_str().unwrap().to_owned();
        let url = flow.sandbox.join(&format!("/__sandbox/org/groups/{big_id}/members")).unwrap();
        let added = harness::client().post(url).json(&serde_json::json!({"account_id": newcomer})).send().await;
        assert_eq!(added.unwrap().status(), 204);
        let turns = job::Deps {
            store: &flow.store,
            mirror: &mirror,
            atlassian: &flow.callback.atlassian,
            budget: &sync::budget::Unlimited,
            keys: &flow.callback.keys,
            refresh: &env.policy,
            queue: &env.queue,
            pacing: sync::engine::Pacing { points_per_turn: 2_000, ..sync::engine::Pacing::default() },
            guard: sync::engine::DeletionGuard::default(),
        };
        let staged_before = mirror.chunks_written.load(Ordering::SeqCst);
        let (outcome, invocations, _) = harness::run_through(&turns, Job::new(&id, ObjectType::Groups)).await;
        let Outcome::Finished(RunStatus::Succeeded, counts) = outcome else { panic!("{outcome:?}") };
        assert_eq!((counts.updated, counts.unchanged), (1, 2), "{counts:?}");
        assert!(invocations > 2, "the run paused inside the group: {invocations} invocations");
        assert!(mirror.chunks_written.load(Ordering::SeqCst) > staged_before + 2, "parts were staged at each pause");
        expected.push(newcomer);
        expected.sort();
        assert_eq!(all_members(&mirror, &scope, big_id.clone()).await, expected);
        let run = flow.store.get_run(&id, ObjectType::Groups).await.unwrap().unwrap();
        assert!(all_members(&mirror, &scope, format!("staged#{}#{big_id}", run.run_id)).await.is_empty());
    }

    #[tokio::test]
    async fn a_16000_member_group_syncs_exactly_and_one_member_more_rewrites_one_small_chunk() {
        // Every real org has a group that holds nearly everyone: 16,000 members are 540 KB of ids, past an item.
        let org = OrgSize { users: 20_000, groups: 3, projects: 2, spaces: 2, sites: 2 };
        let flow = Flow::with_sandbox(SandboxConfig { org, big_group: 16_000, ..SandboxConfig::default() }).await;
        let id = connected(&flow, &unique("tenant")).await;
        let stack = Stack::from_env();
        let mirror = Counting::new(store::DynamoMirror::new(stack.dynamodb(), &stack.mirror_table));
        let env = JobEnv::new();
        let deps = job::Deps {
            store: &flow.store,
            mirror: &mirror,
            atlassian: &flow.callback.atlassian,
            budget: &sync::budget::Unlimited,
            keys: &flow.callback.keys,
            refresh: &env.policy,
            queue: &env.queue,
            pacing: sync::engine::Pacing::default(),
            guard: sync::engine::DeletionGuard::default(),
        };
        let sync = || async {
            let outcome = job::run(&deps, &Job::new(&id, ObjectType::Groups), &unique("run"), None).await.unwrap();
            let Outcome::Finished(RunStatus::Succeeded, counts) = outcome else { panic!("{outcome:?}") };
            counts
        };
        let scope = Scope::new(&id, ObjectType::Groups);
        let all_members = |group: String| all_members(&mirror, &scope, group);

        let counts = sync().await;
        assert_eq!(counts.created, 3);
        let sandbox_org = harness::sandbox_org(&flow.sandbox).await.unwrap();
        let big = &sandbox_org["groups"][0];
        let big_id = big["id"].as_str().unwrap().to_owned();
        let expected: Vec<String> =
            big["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()).collect();
        assert_eq!(expected.len(), 16_000);
        let record = mirror.objects(&scope, std::slice::from_ref(&big_id)).await.unwrap().remove(&big_id).unwrap();
        assert_eq!(record.record["member_count"], 16_000);
        assert!(record.record.get("member_account_ids").is_none(), "the members are not in the record");
        assert_eq!(all_members(big_id.clone()).await, expected, "every member, exactly");
        assert!(mirror.largest_chunk.load(Ordering::SeqCst) < 250, "chunks stay small");
        // The small groups keep their members in their records, as the expected mirror says.
        let (listed, _) = mirror.list(&scope, None, 10).await.unwrap();
        let small = harness::expected_mirror(&sandbox_org, "groups", &[]);
        for object in listed.iter().filter(|o| o.key != big_id) {
            assert_eq!(serde_json::Value::Object(object.record.clone()), small[&object.key]);
        }

        // An unchanged re-sync writes nothing; one member more rewrites the group's record and one small chunk.
        let (records, chunks) = (mirror.written.load(Ordering::SeqCst), mirror.chunks_written.load(Ordering::SeqCst));
        let counts = sync().await;
        // (Groups are org-wide: each of the two sites lists the same three.)
        assert_eq!((counts.created, counts.updated, counts.unchanged), (0, 0, 6));
        assert_eq!(mirror.written.load(Ordering::SeqCst), records);
        assert_eq!(mirror.chunks_written.load(Ordering::SeqCst), chunks);
        let newcomer = sandbox_org["users"][19_999]["account_id"].as_str().unwrap().to_owned();
        let url = flow.sandbox.join(&format!("/__sandbox/org/groups/{big_id}/members")).unwrap();
        let added = harness::client().post(url).json(&serde_json::json!({"account_id": newcomer})).send().await;
        assert_eq!(added.unwrap().status(), 204);
        let counts = sync().await;
        assert_eq!((counts.updated, counts.unchanged), (1, 5));
        assert_eq!(mirror.written.load(Ordering::SeqCst), records + 1, "the group's record");
        assert_eq!(mirror.chunks_written.load(Ordering::SeqCst), chunks + 1, "one chunk of ~125 ids, not 16,001");
        let mut expected = expected;
        expected.push(newcomer);
        expected.sort();
        assert_eq!(all_members(big_id).await, expected);
    }
}
