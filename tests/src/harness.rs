//! Helpers shared by the integration and end-to-end tests: the stack's coordinates (set by `scripts/stack.py run`),
//! AWS clients on the local endpoint, a "browser" that follows the connect flow's redirects one at a time, and an
//! in-process sandbox for tests that need an Atlassian of their own.

use crate::sandbox::{Sandbox, SandboxConfig};
use anyhow::{Context, Result};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use serde_json::Value;
use std::collections::HashMap;
use url::Url;

/// What `scripts/stack.py run` exports.
pub struct Stack {
    pub aws_endpoint: String,
    pub functions_url: Url,
    pub atlassian_url: Url,
    pub table: String,
    pub mirror_table: String,
    pub management_key: String,
    pub token_keys_secret_id: String,
    pub function_log: String,
    pub client_id: String,
    pub client_secret: String,
    pub dead_letter_queue_url: String,
    /// A queue with every event of the stack's bus (`scripts/stack.py`'s tap).
    pub events_queue_url: String,
    /// The local webhook receiver (`scripts/stack.py`), and the webhook queue and its dead-letter queue.
    pub webhook_receiver: Url,
    pub webhook_queue_url: String,
    pub webhook_dead_letter_queue_url: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests run against the local stack, start them with `make test`")
    })
}

impl Stack {
    pub fn from_env() -> Self {
        Self {
            aws_endpoint: var("STACK_AWS_ENDPOINT"),
            functions_url: Url::parse(&var("STACK_FUNCTIONS_URL")).expect("STACK_FUNCTIONS_URL"),
            atlassian_url: Url::parse(&var("STACK_ATLASSIAN_URL")).expect("STACK_ATLASSIAN_URL"),
            table: var("STACK_STATE_TABLE"),
            mirror_table: var("STACK_MIRROR_TABLE"),
            management_key: var("STACK_MANAGEMENT_API_KEY"),
            token_keys_secret_id: var("STACK_TOKEN_KEYS_SECRET_ID"),
            function_log: var("STACK_FUNCTION_LOG"),
            client_id: var("STACK_CLIENT_ID"),
            client_secret: var("STACK_CLIENT_SECRET"),
            dead_letter_queue_url: var("STACK_SYNC_DLQ_URL"),
            events_queue_url: var("STACK_EVENTS_QUEUE_URL"),
            webhook_receiver: Url::parse(&var("STACK_WEBHOOK_RECEIVER")).expect("STACK_WEBHOOK_RECEIVER"),
            webhook_queue_url: var("STACK_WEBHOOK_QUEUE_URL"),
            webhook_dead_letter_queue_url: var("STACK_WEBHOOK_DLQ_URL"),
        }
    }

    /// The SDK configuration of the stack's moto endpoint.
    fn sdk_config(&self) -> aws_config::SdkConfig {
        Self::sdk_config_at(&self.aws_endpoint)
    }

    /// The stack's SDK configuration, with its endpoint at `endpoint` (a fault proxy in front of moto).
    pub fn sdk_config_at(endpoint: &str) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new("test", "test", None, None, "tests")))
            .build()
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config())
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config())
    }

    pub fn secretsmanager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config())
    }

    /// What the local webhook receiver got: `{event_id, verified, refused, detail_type, connection_id, t}` each.
    pub async fn webhook_deliveries(&self) -> Result<Vec<serde_json::Value>> {
        let url = self.webhook_receiver.join("/__receiver/deliveries")?;
        Ok(client().get(url).send().await?.json().await?)
    }

    /// Makes the local webhook receiver refuse (`500`) every delivery of one event (`refuse`), or take them again.
    pub async fn webhook_refuse(&self, event_id: &str, refuse: bool) -> Result<()> {
        let url = self.webhook_receiver.join("/__receiver/fail")?;
        client().post(url).json(&serde_json::json!({"event_id": event_id, "refuse": refuse})).send().await?;
        Ok(())
    }

    pub fn url(&self, path: &str) -> Url {
        self.functions_url.join(path).expect("a valid path")
    }

    /// `POST /connect-sessions` through the management API; returns the JSON answer.
    pub async fn create_session(&self, tenant_id: &str, return_url: Option<&str>) -> Result<serde_json::Value> {
        let response = client()
            .post(self.url("/connect-sessions"))
            .bearer_auth(&self.management_key)
            .json(&serde_json::json!({"tenant_id": tenant_id, "return_url": return_url}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 201, "creating a session answered {}", response.status());
        Ok(response.json().await?)
    }

    pub async fn api_get(&self, path: &str) -> Result<(u16, serde_json::Value)> {
        let response = client().get(self.url(path)).bearer_auth(&self.management_key).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }
}

/// A unique id for a test's tenant, so tests can share the stack's table.
pub fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 6];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    format!("{prefix}-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// An HTTP client that does not follow redirects, so each hop of the flow can be inspected.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// One answer: status, `Location` and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    /// The first cookie the answer set, as `name=value` (what a browser sends back).
    pub cookie: Option<String>,
    pub body: String,
}

pub async fn get(url: &str) -> Result<Answer> {
    get_with_cookie(url, None).await
}

/// A GET from a browser holding `cookie` (`name=value`).
pub async fn get_with_cookie(url: &str, cookie: Option<&str>) -> Result<Answer> {
    let mut request = client().get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let location = header("location");
    let cookie = header("set-cookie").and_then(|c| c.split(';').next().map(str::to_owned));
    Ok(Answer { status, location, cookie, body: response.text().await? })
}

pub fn query(url: &str) -> HashMap<String, String> {
    Url::parse(url).map(|u| u.query_pairs().into_owned().collect()).unwrap_or_default()
}

/// What the person does on the sandbox's consent page.
#[derive(Debug, Clone)]
pub struct Consent {
    pub accept: bool,
    pub account_id: String,
    /// `None`: every site offered.
    pub sites: Option<Vec<String>>,
    /// `None`: the scopes asked for.
    pub granted_scopes: Option<String>,
    pub fault: Option<&'static str>,
}

impl Default for Consent {
    fn default() -> Self {
        Self { accept: true, account_id: ADMIN.into(), sites: None, granted_scopes: None, fault: None }
    }
}

/// The seeded org's first admin.
pub const ADMIN: &str = "5b10ac8d82e05b22cc7d0000";

/// Submits the consent page the authorize URL shows; returns where the sandbox redirects (the callback URL).
pub async fn consent(authorize_url: &str, consent: &Consent) -> Result<String> {
    let page = get(authorize_url).await?;
    anyhow::ensure!(page.status == 200, "the consent page answered {}: {}", page.status, page.body);
    let q = query(authorize_url);
    let mut form: Vec<(String, String)> = ["client_id", "redirect_uri", "state", "scope"]
        .iter()
        .map(|k| (k.to_string(), q.get(*k).cloned().unwrap_or_default()))
        .collect();
    form.push(("account_id".into(), consent.account_id.clone()));
    let sites = match &consent.sites {
        Some(sites) => sites.clone(),
        None => (0..crate::sandbox::OrgSize::default().sites).map(crate::sandbox::site_id).collect(),
    };
    form.extend(sites.into_iter().map(|s| ("site".to_string(), s)));
    if let Some(granted) = &consent.granted_scopes {
        form.push(("granted_scopes".into(), granted.clone()));
    }
    if let Some(fault) = consent.fault {
        form.push(("fault".into(), fault.into()));
    }
    form.push(("decision".into(), if consent.accept { "accept" } else { "cancel" }.into()));
    let action = Url::parse(authorize_url)?.join("authorize")?;
    let response = client().post(action).form(&form).send().await?;
    anyhow::ensure!(response.status() == 302, "the consent answered {}", response.status());
    Ok(response.headers()["location"].to_str()?.to_owned())
}

/// A sandbox of the test's own on an ephemeral port.
pub async fn spawn_sandbox(config: SandboxConfig) -> Result<Url> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = Url::parse(&format!("http://{}", listener.local_addr()?))?;
    tokio::spawn(Sandbox::new(config).serve(listener));
    Ok(url)
}

/// An access token from a full consent on the sandbox at `base` (with `granted_scopes`, or all asked).
pub async fn sandbox_token(base: &Url, granted_scopes: Option<&str>) -> Result<String> {
    let config = SandboxConfig::default();
    let mut authorize = base.join("/authorize")?;
    authorize
        .query_pairs_mut()
        .append_pair("audience", "api.atlassian.com")
        .append_pair("client_id", &config.client_id)
        .append_pair(
            "scope",
            "offline_access read:me read:jira-user read:jira-work read:group:jira read:space:confluence",
        )
        .append_pair("redirect_uri", "https://connector.test/oauth/callback")
        .append_pair("state", "st_x")
        .append_pair("response_type", "code");
    let consent = Consent { granted_scopes: granted_scopes.map(String::from), ..Consent::default() };
    let callback = self::consent(authorize.as_str(), &consent).await?;
    let code = query(&callback).get("code").cloned().context("no code")?;
    let token: serde_json::Value = client()
        .post(base.join("/oauth/token")?)
        .json(&serde_json::json!({
            "grant_type": "authorization_code", "client_id": config.client_id, "client_secret": config.client_secret,
            "code": code, "redirect_uri": "https://connector.test/oauth/callback",
        }))
        .send()
        .await?
        .json()
        .await?;
    token["access_token"].as_str().map(String::from).context("no access token")
}

/// What the sandbox counted (`/__sandbox/stats`): requests by route, points, quota 429s, refreshes, …
pub async fn sandbox_stats(base: &Url) -> Result<serde_json::Value> {
    Ok(client().get(base.join("/__sandbox/stats")?).send().await?.json().await?)
}

/// Runs a sync job and its continuations as the queue would deliver them (their delays slept) until the run ends:
/// how it ended, how many invocations it took, and every `waiting` record the run showed on the way (each checked
/// against the outcome that queued it).
pub async fn run_through<S, M, A, B>(
    deps: &sync::job::Deps<'_, S, M, A, B, sync::queue::MemoryQueue>,
    job: sync::queue::Job,
) -> (sync::job::Outcome, usize, Vec<store::RunRecord>)
where
    S: store::ConnectionStore + store::CredentialStore + store::RunStore + store::CheckpointStore,
    M: store::MirrorStore,
    A: atlassian::AtlassianApi + atlassian::DirectoryApi + atlassian::AdminApi,
    B: sync::budget::Budget,
{
    use sync::job::Outcome;
    let (mut next, mut waits) = (job, Vec::new());
    for n in 1..1000 {
        match sync::job::run(deps, &next, &unique("message"), None).await.unwrap() {
            outcome @ (Outcome::Continued(_) | Outcome::Waiting(_)) => {
                if let Outcome::Waiting(until) = outcome {
                    let record = deps.store.get_run(&next.connection_id, next.object_type).await.unwrap().unwrap();
                    assert_eq!((record.status, record.waiting_until), (store::RunStatus::Waiting, Some(until)));
                    waits.push(record);
                }
                let mut queued = deps.queue.take();
                assert_eq!(queued.len(), 1, "one continuation");
                let (continuation, delay) = queued.remove(0);
                tokio::time::sleep(delay).await;
                next = continuation;
            }
            ended => return (ended, n, waits),
        }
    }
    panic!("the run did not end");
}

/// The sandbox's org as JSON (`/__sandbox/org`).
pub async fn sandbox_org(base: &Url) -> Result<serde_json::Value> {
    Ok(client().get(base.join("/__sandbox/org")?).send().await?.json().await?)
}

/// The org as the mirror must show it, for one object type (`users`, `groups`, `projects`, `spaces`): key → record,
/// with exactly the fields the objects API shows besides `deleted` and `synced_at`. Users are on every site given;
/// groups are the sandbox's small ones (members in the record).
pub fn expected_mirror(org: &Value, object_type: &str, sites: &[String]) -> HashMap<String, Value> {
    let list = |kind: &str| org[kind].as_array().unwrap().clone();
    match object_type {
        "users" => list("users")
            .iter()
            .map(|u| {
                let email = if u["email_visible"] == true { u["email"].clone() } else { Value::Null };
                let status = if u["active"] == true { "active" } else { "inactive" };
                let record = serde_json::json!({
                    "account_id": u["account_id"], "email": email, "display_name": u["name"], "status": status,
                    "account_type": u["account_type"], "sites": sites,
                });
                (u["account_id"].as_str().unwrap().to_owned(), record)
            })
            .collect(),
        "groups" => list("groups")
            .iter()
            .map(|g| {
                let mut members: Vec<&str> =
                    g["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
                members.sort_unstable();
                let record = serde_json::json!({
                    "group_id": g["id"], "name": g["name"], "member_count": members.len(), "member_account_ids": members,
                });
                (g["id"].as_str().unwrap().to_owned(), record)
            })
            .collect(),
        "projects" => list("projects")
            .iter()
            .map(|p| {
                let lead = list("users").into_iter().find(|u| u["account_id"] == p["lead"]).unwrap();
                let record = serde_json::json!({
                    "cloud_id": p["site"], "project_id": p["id"], "key": p["key"], "name": p["name"],
                    "lead_account_id": p["lead"], "lead_display_name": lead["name"],
                });
                (format!("{}#{}", p["site"].as_str().unwrap(), p["id"].as_str().unwrap()), record)
            })
            .collect(),
        "spaces" => list("spaces")
            .iter()
            .map(|s| {
                let record = serde_json::json!({
                    "cloud_id": s["site"], "space_id": s["id"], "key": s["key"], "name": s["name"],
                    "type": s["type"], "status": s["status"],
                });
                (format!("{}#{}", s["site"].as_str().unwrap(), s["id"].as_str().unwrap()), record)
            })
            .collect(),
        other => panic!("no object type {other}"),
    }
}

/// A new org admin API key from the sandbox: `{"org_id"?, "can_read_users"?, "expired"?}`.
pub async fn admin_key(base: &Url, options: serde_json::Value) -> Result<String> {
    let answer: Value = client().post(base.join("/__sandbox/admin/keys")?).json(&options).send().await?.json().await?;
    answer["key"].as_str().map(String::from).context("no key")
}

/// A new API token of an org account from the sandbox: `(email, token)`.
pub async fn api_token(base: &Url, account_id: &str) -> Result<(String, String)> {
    let body = serde_json::json!({"account_id": account_id});
    let answer: Value = client().post(base.join("/__sandbox/api-tokens")?).json(&body).send().await?.json().await?;
    Ok((
        answer["email"].as_str().context("no email")?.to_owned(),
        answer["token"].as_str().context("no token")?.to_owned(),
    ))
}

/// The URL a site of the sandbox is reached at with Basic auth (`acme`, `acme-1`, …, or `globex` of another org).
pub fn site_url(base: &Url, name: &str) -> Url {
    base.join(&format!("/site/{name}")).expect("a site URL")
}

/// The org as an admin-key connection's mirror must show it (the Admin API's view): Atlassian accounts only, each
/// with its email (hidden profiles included) and real status, no `sites`; group members likewise; projects and
/// spaces of the one site the site token reaches (`site`, a cloud id), if any.
pub fn expected_admin_mirror(org: &Value, object_type: &str, site: Option<&str>) -> HashMap<String, Value> {
    let people = |ids: &[Value]| -> Vec<String> {
        let mut ids: Vec<String> = ids
            .iter()
            .filter_map(|id| org["users"].as_array()?.iter().find(|u| u["account_id"] == *id))
            .filter(|u| u["account_type"] == "atlassian")
            .map(|u| u["account_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    match object_type {
        "users" => org["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["account_type"] == "atlassian")
            .map(|u| {
                let status = if u["suspended"] == true {
                    "suspended"
                } else if u["active"] == true {
                    "active"
                } else {
                    "inactive"
                };
                let record = serde_json::json!({
                    "account_id": u["account_id"], "email": u["email"], "display_name": u["name"], "status": status,
                    "account_type": "atlassian", "sites": [],
                });
                (u["account_id"].as_str().unwrap().to_owned(), record)
            })
            .collect(),
        "groups" => org["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let members = people(g["members"].as_array().unwrap());
                let record = serde_json::json!({
                    "group_id": g["id"], "name": g["name"], "member_count": members.len(), "member_account_ids": members,
                });
                (g["id"].as_str().unwrap().to_owned(), record)
            })
            .collect(),
        "projects" | "spaces" => {
            let Some(site) = site else { return HashMap::new() };
            expected_mirror(org, object_type, &[site.to_owned()])
                .into_iter()
                .filter(|(key, _)| key.starts_with(&format!("{site}#")))
                .collect()
        }
        other => panic!("no object type {other}"),
    }
}

/// The live (not deleted) objects of a mirror's scope by key, and how many are marked deleted.
pub async fn mirrored(mirror: &impl store::MirrorStore, scope: &store::Scope) -> (HashMap<String, Value>, usize) {
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

/// Every member the mirror holds under `key` in a groups scope (a group's chunks, or a run's staged parts), sorted.
pub async fn all_members(mirror: &impl store::MirrorStore, scope: &store::Scope, key: &str) -> Vec<String> {
    let (mut ids, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let (page, next) = mirror.members(scope, key, cursor.as_deref(), 1000).await.unwrap();
        ids.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    ids.sort();
    ids
}
