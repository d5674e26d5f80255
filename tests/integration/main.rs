//! Integration tests: the real DynamoDB store (moto, the stack's fresh table) and the real Atlassian client against
//! sandboxes of their own, with the functions' handlers called in-process. A file per subject; what they share (the
//! connect flow in-process, a sync job's surroundings) is here.

mod admin_key;
mod aws_faults;
mod big_groups;
mod connect_flow;
mod jobs;
mod real_orgs;
mod store_contract;
mod sync_runs;
mod token_refresh;

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

/// The connect and callback functions in-process, on the stack's table and a sandbox of the test's own.
struct Flow {
    store: DynamoStore,
    connect: connect_fn::Deps<DynamoStore>,
    callback: callback_fn::Deps<DynamoStore, AtlassianClient>,
    sessions: SessionSettings,
    sandbox: Url,
    /// The cookie each started flow set (by its state), as the browser that opened the link keeps it.
    cookies: std::sync::Mutex<HashMap<String, String>>,
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
            cookies: Default::default(),
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
        let authorize = response.headers()["location"].to_str().unwrap().to_owned();
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let state = harness::query(&authorize)["state"].clone();
        self.cookies.lock().unwrap().insert(state, cookie);
        (session_id, authorize)
    }

    /// The callback, from the browser that started the flow (with its cookie).
    async fn callback(&self, callback_url: &str) -> Response<Body> {
        let query = harness::query(callback_url);
        let cookie = query.get("state").and_then(|state| self.cookies.lock().unwrap().get(state).cloned());
        self.callback_from(callback_url, cookie.as_deref()).await
    }

    /// The callback from a browser holding `cookie` (none: another browser).
    async fn callback_from(&self, callback_url: &str, cookie: Option<&str>) -> Response<Body> {
        let query = harness::query(callback_url);
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut request = request(&pairs);
        if let Some(cookie) = cookie {
            request.headers_mut().insert("cookie", cookie.parse().unwrap());
        }
        callback_fn::handle(&self.callback, request).await.unwrap()
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

/// Connects `tenant` through the flow and returns its connection id.
async fn connected(flow: &Flow, tenant: &str) -> String {
    assert_eq!(flow.run(tenant, &Consent::default()).await.status(), 200);
    flow.store.list_connections(tenant).await.unwrap().remove(0).connection_id
}
