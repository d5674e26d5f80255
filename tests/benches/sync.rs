//! The sync against the sandbox with per-request latency: wall time next to the lower bound
//! (requests × latency / allowed concurrency), requests made, objects written, peak memory.
//!
//! `cargo bench -p tests --bench sync` (env: `USERS`, `GROUPS`, `PROJECTS`, `SPACES`, `LATENCY_MS`); results in
//! BENCHMARKS.md. The sandbox runs as its own process, so the peak RSS is the worker's. DynamoDB is replaced by an
//! in-memory mirror that keeps only what a comparison needs (hash, deleted, users' sites), so the run measures the
//! worker, not moto; its size is reported too.

use atlassian::{AccessToken, AtlassianClient, ClientCredentials, ClientId, ClientSecret, Endpoints};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use store::StoreError;
use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope, Stored};
use time::OffsetDateTime;
use url::Url;

/// Per (scope, key): the hash, `deleted`, and a user's `sites`.
type Entries = BTreeMap<(String, String), (String, bool, Option<Value>)>;

/// What DynamoDB would hold, minus what no comparison reads.
#[derive(Default)]
struct HashMirror {
    objects: Mutex<Entries>,
    written: AtomicU64,
}

fn scope_key(scope: &Scope) -> String {
    format!("{}#{}", scope.connection_id, scope.object_type.as_str())
}

impl MirrorStore for HashMirror {
    async fn stored(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, Stored>, StoreError> {
        let objects = self.objects.lock().unwrap();
        let s = scope_key(scope);
        Ok(keys
            .iter()
            .filter_map(|k| {
                objects
                    .get(&(s.clone(), k.clone()))
                    .map(|(hash, deleted, _)| (k.clone(), Stored { hash: hash.clone(), deleted: *deleted }))
            })
            .collect())
    }
    async fn write(&self, scope: &Scope, written: &[MirrorObject]) -> Result<(), StoreError> {
        self.written.fetch_add(written.len() as u64, Ordering::Relaxed);
        let mut objects = self.objects.lock().unwrap();
        for o in written {
            objects
                .insert((scope_key(scope), o.key.clone()), (o.hash.clone(), o.deleted, o.record.get("sites").cloned()));
        }
        Ok(())
    }
    async fn list(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<MirrorObject>, Option<String>), StoreError> {
        let objects = self.objects.lock().unwrap();
        let s = scope_key(scope);
        let start = (s.clone(), after.map(|a| format!("{a}\0")).unwrap_or_default());
        let page: Vec<MirrorObject> = objects
            .range(start..)
            .take_while(|((scope, _), _)| *scope == s)
            .take(limit)
            .map(|((_, key), (hash, deleted, sites))| {
                let mut record = Map::new();
                if let Some(sites) = sites {
                    record.insert("sites".into(), sites.clone());
                }
                MirrorObject {
                    key: key.clone(),
                    record,
                    hash: hash.clone(),
                    deleted: *deleted,
                    synced_at: OffsetDateTime::UNIX_EPOCH,
                }
            })
            .collect();
        let next = (page.len() == limit).then(|| page.last().map(|o| o.key.clone())).flatten();
        Ok((page, next))
    }
    async fn clear(&self, _: &Scope) -> Result<usize, StoreError> {
        Ok(0)
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Sandbox(Child);
impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[tokio::main]
async fn main() {
    let (users, groups, projects, spaces) =
        (env("USERS", 20_000), env("GROUPS", 2_000), env("PROJECTS", 1_000), env("SPACES", 500));
    let latency = env("LATENCY_MS", 20) as u64;
    let port = 19_000 + (std::process::id() % 1000) as u16;
    let _sandbox = Sandbox(
        Command::new(env!("CARGO_BIN_EXE_atlassian-sandbox"))
            .args(["--port", &port.to_string(), "--sites", "1", "--latency-ms", &latency.to_string()])
            .args(["--users", &users.to_string(), "--groups", &groups.to_string()])
            .args(["--projects", &projects.to_string(), "--spaces", &spaces.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("the sandbox binary"),
    );
    let base = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let mut token = None;
    for _ in 0..100 {
        if let Ok(t) = tests::harness::sandbox_token(&base, None).await {
            token = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = AccessToken::new(token.expect("a token from the sandbox"));
    let client = AtlassianClient::new(
        atlassian::http_client().unwrap(),
        Endpoints { auth_base: base.clone(), api_base: base.clone() },
        ClientCredentials { client_id: ClientId::new("x".into()), client_secret: ClientSecret::new("x".into()) },
        Url::parse("https://connector.test/oauth/callback").unwrap(),
    );
    let mirror = HashMirror::default();
    // A run that fits its invocation never checkpoints; this store only has to exist.
    let checkpoints = store::MemoryStore::new();
    let site = tests::sandbox::site_id(0);
    let stats = || async {
        let stats: Value = tests::harness::client()
            .get(base.join("/__sandbox/stats").unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["rest_requests"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect::<HashMap<_, _>>()
    };

    println!("org: {users} users, {groups} groups, {projects} projects, {spaces} spaces; {latency} ms a request\n");
    println!("| run | wall | lower bound | ratio | requests | points | objects written |");
    println!("|---|---|---|---|---|---|---|");
    for round in ["first sync", "unchanged re-sync"] {
        let before = stats().await;
        let written_before = mirror.written.load(Ordering::Relaxed);
        let started = Instant::now();
        let mut points = 0;
        for object_type in ObjectType::ALL {
            let run = sync::engine::Run {
                directory: &client,
                mirror: &mirror,
                budget: &sync::budget::Unlimited,
                checkpoints: &checkpoints,
                token: &token,
                connection_id: "con_bench",
                run_id: "bench",
                sites: vec![site.clone()],
                object_type,
                now: OffsetDateTime::now_utc(),
                pacing: sync::engine::Pacing::default(),
            };
            points += run.run(None).await.expect("sync").done().expect("one invocation").points;
        }
        let wall = started.elapsed();
        let after = stats().await;
        let delta = |route: &str| after.get(route).copied().unwrap_or(0) - before.get(route).copied().unwrap_or(0);
        let sequential = delta("users") + delta("group/bulk") + delta("project/search") + delta("spaces");
        let members = delta("group/member");
        let bound = Duration::from_millis(latency * sequential)
            + Duration::from_millis(latency * members) / sync::engine::MEMBER_CONCURRENCY as u32;
        println!(
            "| {round} | {:.2} s | {:.2} s | {:.2}× | {} | {points} | {} |",
            wall.as_secs_f64(),
            bound.as_secs_f64(),
            wall.as_secs_f64() / bound.as_secs_f64(),
            sequential + members,
            mirror.written.load(Ordering::Relaxed) - written_before,
        );
    }
    let mirror_bytes: usize = mirror
        .objects
        .lock()
        .unwrap()
        .iter()
        .map(|((s, k), (h, _, sites))| {
            s.len() + k.len() + h.len() + 64 + sites.as_ref().map_or(0, |v| v.to_string().len() + 48)
        })
        .sum();
    println!(
        "\npeak RSS of the worker process: {:.1} MiB (of which the in-memory stand-in for DynamoDB: ~{:.1} MiB)",
        peak_rss_kib() as f64 / 1024.0,
        mirror_bytes as f64 / 1048576.0
    );
}
