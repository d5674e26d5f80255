//! The sync against the sandbox with per-request latency: wall time next to the lower bound
//! (requests × latency / allowed concurrency), requests made, objects written, peak memory.
//!
//! `cargo bench -p tests --bench sync` (env: `USERS`, `GROUPS`, `PROJECTS`, `SPACES`, `LATENCY_MS`, `BIG_GROUP`: the
//! first group's members, 0 for as few as the others); results in
//! BENCHMARKS.md. The sandbox runs as its own process. DynamoDB is replaced by an in-memory mirror that keeps only
//! what a comparison needs (hash, deleted, users' sites), so the run measures the worker, not moto. A counting
//! allocator gives the worker's own peak heap: allocations made while the stand-in files objects into its map
//! (what would live in DynamoDB) are not counted; everything the engine, the HTTP client and the runtime hold is.

use atlassian::{AccessToken, AtlassianClient, ClientCredentials, ClientId, ClientSecret, Endpoints};
use serde_json::{Map, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use store::StoreError;
use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope, Stored};
use time::OffsetDateTime;
use url::Url;

/// Counts the heap in use and its peak, except on a thread while [`untracked`] runs.
struct CountingAlloc;

static IN_USE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
/// The heap the stand-in's entries take (allocated while untracked).
static STAND_IN: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    static UNTRACKED: Cell<bool> = const { Cell::new(false) };
}

fn track(delta: isize) {
    if UNTRACKED.try_with(Cell::get).unwrap_or(false) {
        STAND_IN.fetch_add(delta, Ordering::Relaxed);
        return;
    }
    let now = IN_USE.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is forwarded as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `realloc` on `System`, which allocated `ptr`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Runs `f` without counting its allocations (nor the frees of what it replaces).
fn untracked<T>(f: impl FnOnce() -> T) -> T {
    UNTRACKED.with(|u| u.set(true));
    let out = f();
    UNTRACKED.with(|u| u.set(false));
    out
}

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
        // What DynamoDB would hold is not the worker's memory.
        untracked(|| {
            for o in written {
                let entry = (o.hash.clone(), o.deleted, o.record.get("sites").cloned());
                objects.insert((scope_key(scope), o.key.clone()), entry);
            }
        });
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
    async fn objects(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, MirrorObject>, StoreError> {
        // The engine reads whole objects only to mark deletions and to diff a changed group's member chunks: what
        // this stand-in keeps (hash, deletion, sites) is enough for both.
        let objects = self.objects.lock().unwrap();
        let s = scope_key(scope);
        Ok(keys
            .iter()
            .filter_map(|k| {
                let (hash, deleted, sites) = objects.get(&(s.clone(), k.clone()))?;
                let mut record = Map::new();
                if let Some(sites) = sites {
                    record.insert("sites".into(), sites.clone());
                }
                let object = MirrorObject {
                    key: k.clone(),
                    record,
                    hash: hash.clone(),
                    deleted: *deleted,
                    synced_at: OffsetDateTime::UNIX_EPOCH,
                };
                Some((k.clone(), object))
            })
            .collect())
    }
    async fn write_members(
        &self,
        _: &Scope,
        _: &str,
        chunks: &[store::mirror::MemberChunk],
        _: &[u32],
    ) -> Result<(), StoreError> {
        self.written.fetch_add(chunks.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    async fn members(
        &self,
        _: &Scope,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        Ok((Vec::new(), None))
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A `/proc/self/status` figure in MiB (`VmRSS`, or `VmHWM`: the peak since the last [`reset_peak_rss`]).
fn rss_mib(field: &str) -> f64 {
    let kib: u64 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0);
    kib as f64 / 1024.0
}

/// Starts a new `VmHWM` window (Linux: writing 5 to `clear_refs`).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Sandbox(Child);
impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

/// The sandbox binary (its own crate), built in this bench's profile beside it: the sandbox runs in a process of
/// its own, so that the worker's heap and RSS figures are the worker's alone.
fn sandbox_binary() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo).args(["build", "--release", "-q", "-p", "atlassian-sandbox"]).status();
    assert!(built.is_ok_and(|s| s.success()), "building the sandbox failed");
    let deps = std::env::current_exe().expect("the bench's path");
    deps.parent().and_then(|d| d.parent()).expect("target/release").join("atlassian-sandbox")
}

#[tokio::main]
async fn main() {
    let (users, groups, projects, spaces) =
        (env("USERS", 20_000), env("GROUPS", 2_000), env("PROJECTS", 1_000), env("SPACES", 500));
    let latency = env("LATENCY_MS", 20) as u64;
    let big_group = env("BIG_GROUP", 0);
    let port = 19_000 + (std::process::id() % 1000) as u16;
    let _sandbox = Sandbox(
        Command::new(sandbox_binary())
            .args(["--port", &port.to_string(), "--sites", "1", "--latency-ms", &latency.to_string()])
            .args(["--users", &users.to_string(), "--groups", &groups.to_string()])
            .args(["--projects", &projects.to_string(), "--spaces", &spaces.to_string()])
            .args(["--big-group", &big_group.to_string()])
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
        let stats = tests::harness::sandbox_stats(&base).await.unwrap();
        stats["rest_requests"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect::<HashMap<_, _>>()
    };

    println!(
        "org: {users} users, {groups} groups (the first of {big_group} members), {projects} projects, {spaces} \
         spaces; {latency} ms a request\n"
    );
    let rss_at_start = rss_mib("VmRSS:");
    println!(
        "| run | wall | lower bound | ratio | requests | points | objects written | worker's peak heap | RSS growth |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for round in ["first sync", "unchanged re-sync"] {
        let before = stats().await;
        let written_before = mirror.written.load(Ordering::Relaxed);
        PEAK.store(IN_USE.load(Ordering::Relaxed), Ordering::Relaxed);
        let rss_before = rss_mib("VmRSS:");
        reset_peak_rss();
        let started = Instant::now();
        let mut points = 0;
        let pacing = sync::engine::Pacing::default();
        let source = sync::sources::OauthSource::new(&client, &sync::budget::Unlimited, &token, pacing);
        for object_type in ObjectType::ALL {
            let run = sync::engine::Run {
                source: &source,
                mirror: &mirror,
                checkpoints: &checkpoints,
                gate: &sync::engine::AlwaysOpen,
                connection_id: "con_bench",
                run_id: "bench",
                sites: vec![site.clone()],
                object_type,
                now: OffsetDateTime::now_utc(),
                pacing: sync::engine::Pacing::default(),
                guard: sync::engine::DeletionGuard::default(),
            };
            points += run.run(None).await.expect("sync").done().expect("one invocation").points;
        }
        let wall = started.elapsed();
        let after = stats().await;
        let delta = |route: &str| after.get(route).copied().unwrap_or(0) - before.get(route).copied().unwrap_or(0);
        let sequential = delta("users") + delta("group/bulk") + delta("project/search") + delta("spaces");
        let members = delta("group/member");
        let bound = Duration::from_millis(latency * sequential)
            + Duration::from_millis(latency * members) / sync::sources::MEMBER_CONCURRENCY as u32;
        println!(
            "| {round} | {:.2} s | {:.2} s | {:.2}× | {} | {points} | {} | {:.1} MiB | {:.1} MiB |",
            wall.as_secs_f64(),
            bound.as_secs_f64(),
            wall.as_secs_f64() / bound.as_secs_f64(),
            sequential + members,
            mirror.written.load(Ordering::Relaxed) - written_before,
            PEAK.load(Ordering::Relaxed) as f64 / 1048576.0,
            rss_mib("VmHWM:") - rss_before,
        );
    }
    let stand_in = STAND_IN.load(Ordering::Relaxed) as f64 / 1048576.0;
    println!(
        "\nRSS before the first sync (binary, runtime, HTTP client): {rss_at_start:.1} MiB; at the end {:.1} MiB, \
         of which the stand-in for DynamoDB holds {stand_in:.1} MiB of heap",
        rss_mib("VmRSS:")
    );
}
