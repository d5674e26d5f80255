//! The connect flow against in-memory fakes: every outcome of `begin` and `complete`, and that failures store
//! nothing.

use atlassian::fake::{FakeAtlassian, grant, site};
use atlassian::{AuthorizationCode, OAuthError};
use secrecy::{ExposeSecret, SecretString};
use store::{ConnectionStatus, ConnectionStore, MemoryStore, Product, SessionStore};
use time::{Duration, OffsetDateTime};
use tokens::connect::{self, AuthorizeSettings, CallbackParams, CompleteSettings, ReturnUrlAllowList, SessionSettings};
use tokens::{ConnectError, KeyRing, credentials, scopes};
use url::Url;

struct Harness {
    store: MemoryStore,
    keys: KeyRing,
    now: OffsetDateTime,
    /// Each flow's browser binding, by state (what the browser's cookie jar would hold).
    browsers: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

fn required() -> Vec<String> {
    scopes::defaults()
}

fn session_settings() -> SessionSettings {
    SessionSettings {
        public_base_url: Url::parse("https://connector.example/").unwrap(),
        ttl: Duration::minutes(15),
        return_urls: ReturnUrlAllowList::parse("https://app.example/integrations/").unwrap(),
    }
}

fn authorize_settings() -> AuthorizeSettings {
    AuthorizeSettings {
        authorize_url: Url::parse("https://auth.example/authorize").unwrap(),
        audience: "api.atlassian.com".into(),
        client_id: "cid".into(),
        redirect_uri: Url::parse("https://connector.example/oauth/callback").unwrap(),
        scopes: scopes::defaults(),
        state_ttl: Duration::minutes(10),
    }
}

impl Harness {
    fn new() -> Self {
        Self {
            store: MemoryStore::new(),
            keys: KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap(),
            now: OffsetDateTime::now_utc(),
            browsers: Default::default(),
        }
    }

    async fn session(&self, tenant: &str, return_url: Option<&str>) -> SecretString {
        connect::create_session(&self.store, &session_settings(), tenant, return_url, self.now)
            .await
            .unwrap()
            .session_id
    }

    /// Opens a session and returns the state from the authorize URL; the browser binding is kept, as a browser
    /// keeps its cookie, and brought back by [`Harness::complete`].
    async fn begin(&self, session_id: &SecretString) -> SecretString {
        let begun = connect::begin(&self.store, &authorize_settings(), Some(session_id.expose_secret()), self.now)
            .await
            .unwrap();
        let state = begun.authorize_url.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
        self.browsers.lock().unwrap().insert(state.clone(), begun.browser.expose_secret().to_owned());
        SecretString::from(state)
    }

    /// The browser binding of the flow `state` belongs to, as its browser would bring it back.
    fn browser(&self, state: Option<&SecretString>) -> Option<SecretString> {
        let browsers = self.browsers.lock().unwrap();
        state.and_then(|s| browsers.get(s.expose_secret())).map(|b| SecretString::from(b.clone()))
    }

    async fn complete(
        &self,
        atlassian: &FakeAtlassian,
        state: Option<&SecretString>,
        code: Option<&str>,
        error: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<connect::Completed, connect::Failure> {
        let params = CallbackParams {
            code: code.map(|c| AuthorizationCode::new(c.into())),
            state: state.map(|s| SecretString::from(s.expose_secret().to_owned())),
            error: error.map(String::from),
            browser: self.browser(state),
        };
        let settings = CompleteSettings { required_scopes: required() };
        connect::complete(&self.store, atlassian, &self.keys, &settings, params, at).await
    }

    async fn flow_error(&self, atlassian: &FakeAtlassian) -> ConnectError {
        let session = self.session("tenant-1", None).await;
        let state = self.begin(&session).await;
        let failure = self.complete(atlassian, Some(&state), Some("the-code"), None, self.now).await.unwrap_err();
        assert!(self.store.connections().is_empty(), "a failed flow stores no connection");
        failure.error
    }
}

#[tokio::test]
async fn a_full_flow_stores_an_active_connection_with_sealed_tokens() {
    let h = Harness::new();
    let session = h.session("tenant-1", Some("https://app.example/integrations/done")).await;
    let state = h.begin(&session).await;
    let atlassian = FakeAtlassian::granting(&required());
    let done = h.complete(&atlassian, Some(&state), Some("the-code"), None, h.now).await.unwrap();

    assert_eq!(done.return_url.as_deref(), Some("https://app.example/integrations/done"));
    let c = done.connection;
    assert_eq!(c.status, ConnectionStatus::Active);
    assert_eq!(c.tenant_id, "tenant-1");
    assert_eq!(c.account_id, "acc-1");
    assert_eq!(c.sites.len(), 1);
    assert_eq!(c.sites[0].products, vec![Product::Jira, Product::Confluence]);
    assert_eq!(c.scopes, required());
    assert_eq!(c.credentials.key_version, "v1");
    let opened = credentials::open(&h.keys, &c.connection_id, &c.credentials).unwrap();
    assert_eq!(opened.access_token.secret(), "access-123");
    assert_eq!(opened.refresh_token.unwrap().secret(), "refresh-456");
    assert_eq!(opened.expires_at, h.now + Duration::hours(1));
    assert_eq!(h.store.connections(), vec![c]);
    assert_eq!(h.store.state_count(), 0);
}

#[tokio::test]
async fn the_authorize_url_has_every_parameter_atlassian_needs() {
    let h = Harness::new();
    let session = h.session("t", None).await;
    let begun = connect::begin(&h.store, &authorize_settings(), Some(session.expose_secret()), h.now).await.unwrap();
    let url = begun.authorize_url;
    assert!(begun.browser.expose_secret().len() >= 43, "the browser binding carries at least 128 bits too");
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(url.path(), "/authorize");
    assert_eq!(query["audience"], "api.atlassian.com");
    assert_eq!(query["client_id"], "cid");
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["prompt"], "consent");
    assert_eq!(query["redirect_uri"], "https://connector.example/oauth/callback");
    assert_eq!(query["scope"], scopes::DEFAULT_SCOPES.join(" "));
    assert!(query["state"].len() >= 43, "state carries at least 128 bits");
}

#[tokio::test]
async fn reconnecting_updates_the_same_connection() {
    let h = Harness::new();
    let first = {
        let state = h.begin(&h.session("tenant-1", None).await).await;
        h.complete(&FakeAtlassian::granting(&required()), Some(&state), Some("the-code"), None, h.now).await.unwrap()
    };
    let later = h.now + Duration::days(3);
    let h = Harness { now: later, ..h };
    let second = {
        let state = h.begin(&h.session("tenant-1", None).await).await;
        h.complete(&FakeAtlassian::granting(&required()), Some(&state), Some("the-code"), None, later).await.unwrap()
    };
    assert_eq!(first.connection.connection_id, second.connection.connection_id);
    assert_eq!(second.connection.created_at, first.connection.created_at);
    assert_eq!(second.connection.updated_at, later);
    assert_eq!(h.store.connections().len(), 1);
}

#[tokio::test]
async fn a_denied_consent_is_an_answer_and_consumes_the_state() {
    let h = Harness::new();
    let state = h.begin(&h.session("t", Some("https://app.example/integrations/x")).await).await;
    let atlassian = FakeAtlassian::granting(&required());
    let failure = h.complete(&atlassian, Some(&state), None, Some("access_denied"), h.now).await.unwrap_err();
    assert!(matches!(failure.error, ConnectError::ConsentDenied));
    assert_eq!(failure.return_url.as_deref(), Some("https://app.example/integrations/x"));
    assert!(atlassian.calls().is_empty());
    assert_eq!(h.store.state_count(), 0);
    assert!(h.store.connections().is_empty());
    // Another OAuth error is reported with its (sanitised) code.
    let failure = h.complete(&atlassian, None, None, Some("server_error<script>"), h.now).await.unwrap_err();
    assert!(matches!(failure.error, ConnectError::AuthorizationFailed { ref code } if code == "server_errorscript"));
}

#[tokio::test]
async fn state_problems_are_refused_before_any_atlassian_call() {
    let h = Harness::new();
    let atlassian = FakeAtlassian::granting(&required());
    let missing = h.complete(&atlassian, None, Some("the-code"), None, h.now).await.unwrap_err();
    assert!(matches!(missing.error, ConnectError::StateMissing));
    let unknown = SecretString::from("st_never-issued".to_string());
    let failure = h.complete(&atlassian, Some(&unknown), Some("the-code"), None, h.now).await.unwrap_err();
    assert!(matches!(failure.error, ConnectError::StateUnknown));

    let state = h.begin(&h.session("t", None).await).await;
    let late = h.now + Duration::minutes(11);
    let expired = h.complete(&atlassian, Some(&state), Some("the-code"), None, late).await.unwrap_err();
    assert!(matches!(expired.error, ConnectError::StateExpired));
    // The expired state was consumed all the same: replaying it is "unknown".
    let replay = h.complete(&atlassian, Some(&state), Some("the-code"), None, h.now).await.unwrap_err();
    assert!(matches!(replay.error, ConnectError::StateUnknown));
    assert!(atlassian.calls().is_empty());
    assert!(h.store.connections().is_empty());
}

#[tokio::test]
async fn a_replayed_state_fails_after_success() {
    let h = Harness::new();
    let state = h.begin(&h.session("t", None).await).await;
    h.complete(&FakeAtlassian::granting(&required()), Some(&state), Some("the-code"), None, h.now).await.unwrap();
    let replay = h.complete(&FakeAtlassian::granting(&required()), Some(&state), Some("the-code"), None, h.now).await;
    assert!(matches!(replay.unwrap_err().error, ConnectError::StateUnknown));
}

#[tokio::test]
async fn a_missing_code_is_refused() {
    let h = Harness::new();
    let state = h.begin(&h.session("t", None).await).await;
    let failure = h.complete(&FakeAtlassian::granting(&required()), Some(&state), None, None, h.now).await;
    assert!(matches!(failure.unwrap_err().error, ConnectError::CodeMissing));
    assert!(h.store.connections().is_empty());
}

#[tokio::test]
async fn token_endpoint_failures_are_told_apart() {
    let h = Harness::new();
    let rejected = FakeAtlassian::granting(&required()).with_exchange(Err(OAuthError::ClientRejected));
    let error = h.flow_error(&rejected).await;
    assert!(matches!(error, ConnectError::ClientRejected(_)));

    let invalid = FakeAtlassian::granting(&required())
        .with_exchange(Err(OAuthError::InvalidGrant { code: "invalid_grant".into() }));
    assert!(matches!(h.flow_error(&invalid).await, ConnectError::CodeRejected(_)));

    let broken = FakeAtlassian::granting(&required()).with_exchange(Err(OAuthError::Protocol));
    let error = h.flow_error(&broken).await;
    assert!(matches!(error, ConnectError::TokenEndpoint(_)));
}

#[tokio::test]
async fn a_grant_without_sites_is_refused() {
    let h = Harness::new();
    let mut atlassian = FakeAtlassian::granting(&required());
    atlassian.resources.clear();
    assert!(matches!(h.flow_error(&atlassian).await, ConnectError::NoSites));
}

#[tokio::test]
async fn missing_scopes_are_named() {
    let h = Harness::new();
    let granted: Vec<String> = required().into_iter().filter(|s| s != "read:jira-user" && s != "read:me").collect();
    let error = h.flow_error(&FakeAtlassian::granting(&granted)).await;
    match &error {
        ConnectError::MissingScopes(missing) => assert_eq!(missing, &["read:me", "read:jira-user"]),
        other => panic!("unexpected {other:?}"),
    }
    assert!(error.to_string().contains("read:me, read:jira-user"));
}

#[tokio::test]
async fn no_refresh_token_means_no_offline_access() {
    let h = Harness::new();
    let atlassian = FakeAtlassian::granting(&required()).with_exchange(Ok(grant(&required(), false)));
    assert!(matches!(h.flow_error(&atlassian).await, ConnectError::MissingScopes(ref m) if m == &["offline_access"]));
}

#[tokio::test]
async fn sessions_are_checked_when_opened() {
    let h = Harness::new();
    let settings = authorize_settings();
    let begin = |id: Option<String>, at| {
        let store = &h.store;
        let settings = &settings;
        async move { connect::begin(store, settings, id.as_deref(), at).await.unwrap_err() }
    };
    assert!(matches!(begin(None, h.now).await, ConnectError::SessionMissing));
    assert!(matches!(begin(Some("cs_unknown".into()), h.now).await, ConnectError::SessionUnknown));
    let session = h.session("t", None).await;
    let late = h.now + Duration::minutes(16);
    assert!(matches!(begin(Some(session.expose_secret().into()), late).await, ConnectError::SessionExpired));
    assert_eq!(h.store.state_count(), 0, "a refused session stores no state");

    // Used: the flow completed once; the link cannot start another.
    let state = h.begin(&session).await;
    let second_state = h.begin(&session).await;
    h.complete(&FakeAtlassian::granting(&required()), Some(&state), Some("the-code"), None, h.now).await.unwrap();
    assert!(matches!(begin(Some(session.expose_secret().into()), h.now).await, ConnectError::SessionUsed));
    // A second tab of the same link cannot complete either, and Atlassian is not asked.
    let atlassian = FakeAtlassian::granting(&required());
    let failure = h.complete(&atlassian, Some(&second_state), Some("the-code"), None, h.now).await.unwrap_err();
    assert!(matches!(failure.error, ConnectError::SessionUsed));
    assert!(atlassian.calls().is_empty());
}

#[tokio::test]
async fn creating_sessions_validates_the_tenant_and_return_url() {
    let h = Harness::new();
    let settings = session_settings();
    let create = |tenant: &'static str, url: Option<&'static str>| {
        let store = &h.store;
        let settings = &settings;
        async move { connect::create_session(store, settings, tenant, url, h.now).await }
    };
    let ok = create("tenant-1", Some("https://app.example/integrations/atlassian?x=1")).await.unwrap();
    assert!(ok.connect_url.as_str().starts_with("https://connector.example/connect?session=cs_"));
    assert_eq!(ok.expires_at, h.now + Duration::minutes(15));
    let stored = h.store.get_session(&tokens::ids::sha256_hex(ok.session_id.expose_secret())).await.unwrap().unwrap();
    assert_eq!(stored.tenant_id, "tenant-1");

    for bad in [
        "https://app.example/other",
        "https://app.example.evil.example/integrations/",
        "https://user:pw@app.example/integrations/",
        "http://app.example/integrations/",
        "https://app.example:8443/integrations/",
        "javascript:alert(1)",
        "/integrations/",
    ] {
        assert!(matches!(create("t", Some(bad)).await, Err(ConnectError::ReturnUrlNotAllowed)), "{bad}");
    }
    assert!(matches!(create("", None).await, Err(ConnectError::InvalidTenant)));
    assert!(matches!(create("bad\ntenant", None).await, Err(ConnectError::InvalidTenant)));
    assert!(create("t", None).await.is_ok());
}

#[tokio::test]
async fn sites_listed_twice_are_merged() {
    let h = Harness::new();
    let mut atlassian = FakeAtlassian::granting(&required());
    atlassian.resources =
        vec![site("c1", &["read:jira-user"]), site("c1", &["read:confluence-user"]), site("c2", &["read:jira-work"])];
    let state = h.begin(&h.session("t", None).await).await;
    let done = h.complete(&atlassian, Some(&state), Some("the-code"), None, h.now).await.unwrap();
    let sites = &done.connection.sites;
    assert_eq!(sites.len(), 2);
    assert_eq!(sites[0].products, vec![Product::Jira, Product::Confluence]);
    assert_eq!(sites[1].products, vec![Product::Jira]);
}

#[tokio::test]
async fn nothing_secret_shows_in_debug_output() {
    let h = Harness::new();
    let session = h.session("t", None).await;
    let state = h.begin(&session).await;
    let done = h.complete(&FakeAtlassian::granting(&required()), Some(&state), Some("the-code"), None, h.now).await;
    let debug = format!("{done:?} {session:?} {state:?}");
    for secret in ["access-123", "refresh-456", "the-code", session.expose_secret(), state.expose_secret()] {
        assert!(!debug.contains(secret), "{secret} leaked into Debug output");
    }
    let _ = h.store.list_connections("t").await.unwrap();
}

#[tokio::test]
async fn a_flow_ends_only_in_the_browser_that_opened_the_link() {
    let h = Harness::new();
    let atlassian = FakeAtlassian::granting(&required());
    for (browser, why) in [(None, "no cookie"), (Some("br_someone-else"), "another browser's cookie")] {
        let state = h.begin(&h.session("tenant-1", None).await).await;
        let params = CallbackParams {
            code: Some(AuthorizationCode::new("the-code".into())),
            state: Some(state),
            error: None,
            browser: browser.map(|b| SecretString::from(b.to_owned())),
        };
        let settings = CompleteSettings { required_scopes: required() };
        let failure = connect::complete(&h.store, &atlassian, &h.keys, &settings, params, h.now).await.unwrap_err();
        assert!(matches!(failure.error, ConnectError::OtherBrowser), "{why}: {:?}", failure.error);
        assert!(h.store.connections().is_empty(), "{why}: nothing stored");
    }
    assert!(atlassian.calls().is_empty(), "refused before any Atlassian call");
}

#[tokio::test]
async fn session_ids_and_states_it_never_issued_are_unknown_without_a_lookup() {
    let h = Harness::new();
    let long = "cs_".to_owned() + &"a".repeat(10_000);
    for session in [long.as_str(), "cs_<script>", "cs_a b"] {
        let error = connect::begin(&h.store, &authorize_settings(), Some(session), h.now).await.unwrap_err();
        assert!(matches!(error, ConnectError::SessionUnknown), "{error:?}");
    }
    let atlassian = FakeAtlassian::granting(&required());
    let state = SecretString::from("st_".to_owned() + &"b".repeat(10_000));
    let failure = h.complete(&atlassian, Some(&state), Some("the-code"), None, h.now).await.unwrap_err();
    assert!(matches!(failure.error, ConnectError::StateUnknown), "{:?}", failure.error);
    assert!(atlassian.calls().is_empty());
}
