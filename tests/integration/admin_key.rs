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
    let remove = admin.sandbox.join(&format!("/__sandbox/sites/{}/confluence", tests::sandbox::site_id(1))).unwrap();
    assert_eq!(harness::client().delete(remove).send().await.unwrap().status(), 204);
    let mut wants_confluence = admin.request(&tenant, good.clone(), Some(admin.login("acme-1").await));
    wants_confluence.products = Some(vec![Product::Jira, Product::Confluence]);
    let error = admin.refused(wants_confluence).await;
    assert!(matches!(error, AdminConnectError::ConfluenceMissing { .. }), "{error:?}");
    assert!(error.to_string().contains("Leave \"confluence\" out of \"products\""), "{error}");
    // Without asking for it, the same site connects with Jira only.
    let jira_only = admin.request(&tenant, good, Some(admin.login("acme-1").await));
    let now = OffsetDateTime::now_utc();
    let connection = tokens::admin::connect(&admin.store, &admin.client, &admin.keys, &jira_only, now).await.unwrap();
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
