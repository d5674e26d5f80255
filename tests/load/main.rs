//! The load test: many tenants (most with 20–200 users, a few with thousands) synced through the real path — the
//! scheduler's handler puts one job per connection and type on the stack's SQS queue, worker threads receive them
//! and run the worker's handler (as Lambda's event source would, deleting what did not fail), continuations and
//! waits go back through the queue with their delays — against a sandbox serving every tenant, with Atlassian's
//! points quota compressed in time and one shared budget in DynamoDB.
//!
//! `make load-test` runs 1,000 tenants; `make test` runs a small version. Settings (environment): `LOAD_TENANTS`,
//! `LOAD_BIG` (how many big tenants) and `LOAD_BIG_USERS`, `LOAD_WORKERS`, `LOAD_QUOTA_POINTS` per
//! `LOAD_WINDOW_SECS` (less `LOAD_RESERVE_PERCENT`), `LOAD_TURN_POINTS`, `LOAD_TIMEOUT_SECS`, and `LOAD_REPORT` (a
//! file to write the report to).
//! It checks that every tenant's four runs succeed, that Atlassian's quota is never exceeded (no quota 429 at the
//! sandbox), that the queue and its dead-letter queue end empty, and that the small tenants' first syncs finish
//! within the bound below however big the others are; and it reports the figures BENCHMARKS.md keeps.

use anyhow::{Context, Result, ensure};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use store::mirror::ObjectType;
use store::{ConnectionStore, DynamoMirror, DynamoStore, RunStatus, RunStore};
use sync::budget::{QuotaConfig, SharedBudget};
use sync::engine::{DeletionGuard, Pacing};
use sync::queue::SqsQueue;
use tests::harness;
use tests::sandbox::{Quota, SandboxConfig, TenantSize};
use tokens::KeyRing;
use tokens::credentials::{self, Credentials};
use tokens::refresh::RefreshPolicy;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn var(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: run this under scripts/stack.py (make load-test)"))
}

/// Tenant `t`'s size: the first `big` are big; the others have 20–200 users, spread evenly.
fn size(t: usize, big: usize, big_users: usize) -> TenantSize {
    if t < big {
        TenantSize { users: big_users, groups: 20, projects: 20, spaces: 10 }
    } else {
        TenantSize { users: 20 + (t * 37) % 181, groups: 3 + t % 5, projects: 1 + t % 4, spaces: 1 + t % 3 }
    }
}

/// The least each tenant's sync of the four types can cost in Atlassian points: every object's points and one
/// request per page at the largest page Atlassian serves (100 users, 50 groups or members, 100 projects, 250 spaces).
fn least_points(org: &Value, sizes: &[TenantSize]) -> Vec<u64> {
    let pages = |n: usize, per: usize| n.div_ceil(per).max(1) as u64;
    let per_site = |kind: &str| {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for object in org[kind].as_array().into_iter().flatten() {
            *counts.entry(object["site"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        }
        counts
    };
    let (projects, spaces) = (per_site("projects"), per_site("spaces"));
    let groups = org["groups"].as_array().cloned().unwrap_or_default();
    let mut first_group = 0;
    sizes
        .iter()
        .enumerate()
        .map(|(t, size)| {
            let site = tests::sandbox::site_id(t);
            let users = size.users.max(1);
            let tenant_groups = &groups[first_group..first_group + size.groups];
            first_group += size.groups;
            let members: u64 = tenant_groups
                .iter()
                .map(|g| g["members"].as_array().map_or(0, Vec::len))
                .map(|m| 2 * m as u64 + pages(m, 50))
                .sum();
            let (p, s) = (projects.get(&site).copied().unwrap_or(0), spaces.get(&site).copied().unwrap_or(0));
            (2 * users as u64 + pages(users, 100))
                + (2 * size.groups as u64 + pages(size.groups, 50) + members)
                + (p as u64 + pages(p, 100))
                + (s as u64 + pages(s, 250))
        })
        .collect()
}

/// What a worker thread builds its clients from.
#[derive(Clone)]
struct Worker {
    sdk: aws_config::SdkConfig,
    tables: (String, String),
    queue_url: String,
    sandbox: url::Url,
    client: (String, String),
    keys: Arc<KeyRing>,
    quota: QuotaConfig,
    pool: String,
    turn: u64,
    stop: Arc<AtomicBool>,
}

impl Worker {
    /// Receives and handles messages until told to stop; answers how many it handled.
    async fn run(self) -> Result<u64> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.sdk);
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let store = DynamoStore::new(dynamodb.clone(), &self.tables.0);
        let mirror = DynamoMirror::new(dynamodb, &self.tables.1);
        let queue = SqsQueue::new(sqs.clone(), &self.queue_url);
        let watch = atlassian::QuotaWatch::default();
        let atlassian = atlassian::AtlassianClient::new(
            atlassian::http_client()?,
            atlassian::Endpoints { auth_base: self.sandbox.clone(), api_base: self.sandbox.clone() },
            atlassian::ClientCredentials {
                client_id: atlassian::ClientId::new(self.client.0.clone()),
                client_secret: atlassian::ClientSecret::new(self.client.1.clone()),
            },
            url::Url::parse("https://connector.test/oauth/callback")?,
        )
        .with_quota_watch(watch.clone());
        let budget = SharedBudget::new(&store, &self.pool, self.quota.clone()).watching(watch);
        let refresh = RefreshPolicy::default();
        let deps = sync::job::Deps {
            store: &store,
            mirror: &mirror,
            atlassian: &atlassian,
            budget: &budget,
            keys: &self.keys,
            refresh: &refresh,
            queue: &queue,
            pacing: Pacing { margin: Duration::from_secs(5), points_per_turn: self.turn, ..Pacing::default() },
            guard: DeletionGuard::default(),
        };
        let mut invocations = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let received =
                sqs.receive_message().queue_url(&self.queue_url).max_number_of_messages(1).wait_time_seconds(1);
            let Ok(received) = received.send().await else { continue };
            for message in received.messages.unwrap_or_default() {
                invocations += 1;
                let mut record = SqsMessage::default();
                record.message_id = message.message_id.clone();
                record.body = message.body.clone();
                let mut event = SqsEvent::default();
                event.records = vec![record];
                // Well inside the local queue's 20-second visibility timeout, as Lambda's 15 minutes are inside
                // the deployed queue's 16; and, as there, the message stays hidden for the whole invocation even
                // when one step runs past the deadline (Lambda would end it at its timeout, still inside the queue's
                // visibility): the worker keeps it hidden while it runs.
                let deadline = Some(Instant::now() + Duration::from_secs(15));
                let handled = sync_worker::handle(&deps, event, deadline);
                let response = match message.receipt_handle.as_deref() {
                    Some(handle) => {
                        let hidden = keep_hidden(&sqs, &self.queue_url, handle);
                        tokio::select! {
                            response = handled => response,
                            never = hidden => match never {},
                        }
                    }
                    None => handled.await,
                };
                if response.batch_item_failures.is_empty()
                    && let Some(handle) = message.receipt_handle
                {
                    let _ = sqs.delete_message().queue_url(&self.queue_url).receipt_handle(handle).send().await;
                }
            }
        }
        Ok(invocations)
    }
}

/// Keeps a received message hidden while its invocation runs (every 10 s, 20 s more).
async fn keep_hidden(sqs: &aws_sdk_sqs::Client, url: &str, handle: &str) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let change = sqs.change_message_visibility().queue_url(url).receipt_handle(handle).visibility_timeout(20);
        let _ = change.send().await;
    }
}

/// How many messages a queue holds: visible, in flight and delayed.
async fn waiting(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .ok()
        .and_then(|a| a.attributes)
        .unwrap_or_default();
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ]
    .iter()
    .map(|n| attributes.get(n).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
    .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::var("LOAD_TEST").as_deref() != Ok("1") {
        // `cargo test` runs every test target; this one needs a stack of its own (`make load-test`, `make test`).
        println!("load test skipped: set LOAD_TEST=1 in a stack of its own (make load-test)");
        return Ok(());
    }
    let tenants = setting("LOAD_TENANTS", 1000) as usize;
    let big = setting("LOAD_BIG", 5) as usize;
    let big_users = setting("LOAD_BIG_USERS", 5000) as usize;
    let workers = setting("LOAD_WORKERS", 8) as usize;
    let quota_points = setting("LOAD_QUOTA_POINTS", 30_000);
    let window = Duration::from_secs(setting("LOAD_WINDOW_SECS", 10));
    let turn = setting("LOAD_TURN_POINTS", 2_000);
    let timeout = Duration::from_secs(setting("LOAD_TIMEOUT_SECS", 1800));
    // The share of each window left unspent must cover the requests in flight when a window ends: with a window of
    // a thousand points, that is a larger share than of Atlassian's 65,000.
    let reserve = setting("LOAD_RESERVE_PERCENT", 10) as f64 / 100.0;
    let sizes: Vec<TenantSize> = (0..tenants).map(|t| size(t, big, big_users)).collect();

    // Atlassian: every tenant on its own site, with the app's points quota in compressed time.
    let quota = Quota { global_points: Some(quota_points), window, ..Quota::default() };
    let config = SandboxConfig { tenants: sizes.clone(), quota, ..SandboxConfig::default() };
    let sandbox = harness::spawn_sandbox(config.clone()).await?;
    let org: Value = harness::client().get(sandbox.join("/__sandbox/org")?).send().await?.json().await?;

    // AWS: the stack's tables and queue.
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(var("STACK_AWS_ENDPOINT")?)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "load"),
        ))
        .build();
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (queue_url, dead_letters) = (var("STACK_SYNC_QUEUE_URL")?, var("STACK_SYNC_DLQ_URL")?);
    let store = DynamoStore::new(dynamodb, var("STACK_STATE_TABLE")?);
    let queue = SqsQueue::new(sqs.clone(), &queue_url);
    let keys = KeyRing::from_json(&KeyRing::generate_json("v1"))?;

    // Connect every tenant: its admin's grant of its site, sealed and stored as the callback would.
    let started = Instant::now();
    let users = org["users"].as_array().context("users")?;
    let mut first_user = 0;
    let mut connections = Vec::with_capacity(tenants);
    for (t, size) in sizes.iter().enumerate() {
        let admin = users[first_user]["account_id"].as_str().context("account id")?.to_owned();
        first_user += size.users.max(1);
        let site = tests::sandbox::site_id(t);
        let body =
            serde_json::json!({"account_id": admin, "sites": [site], "scopes": tokens::scopes::defaults().join(" ")});
        let grant: Value =
            harness::client().post(sandbox.join("/__sandbox/grants")?).json(&body).send().await?.json().await?;
        let credentials = Credentials {
            access_token: atlassian::AccessToken::new(grant["access_token"].as_str().context("token")?.into()),
            refresh_token: grant["refresh_token"].as_str().map(|t| atlassian::RefreshToken::new(t.into())),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        let id = format!("con_load_{t:05}");
        let mut connection = store::contract::connection(&format!("load-tenant-{t}"), &id);
        connection.sites[0].cloud_id = site.clone();
        connection.sites[0].url = format!("https://tenant-{t}.atlassian.net");
        connection.scopes = tokens::scopes::defaults();
        connection.account_id = admin;
        connection.credentials = credentials::seal(&keys, &id, &credentials)?;
        store.upsert_connection(&connection).await?;
        connections.push((id, site, size.users));
    }
    let connected = started.elapsed();

    // The schedule fires for each type; the scheduler queues one job per connection.
    let scheduled = Instant::now();
    for object_type in ObjectType::ALL {
        let response = sync_scheduler::handle(&store, &queue, sync_scheduler::Request { object_type }).await?;
        ensure!(response.enqueued == tenants, "the scheduler queued {} {object_type:?} jobs", response.enqueued);
    }

    // The workers: Lambda's SQS event source, one message a batch, each worker a container of its own (its own
    // thread, runtime, clients and budget object, over the one shared pool in DynamoDB).
    let stop = Arc::new(AtomicBool::new(false));
    let worker = Worker {
        sdk: sdk.clone(),
        tables: (var("STACK_STATE_TABLE")?, var("STACK_MIRROR_TABLE")?),
        queue_url: queue_url.clone(),
        sandbox: sandbox.clone(),
        client: (config.client_id.clone(), config.client_secret.clone()),
        keys: Arc::new(keys),
        quota: QuotaConfig { points: quota_points, window, reserve, ..QuotaConfig::default() },
        pool: harness::unique("load-pool"),
        turn,
        stop: stop.clone(),
    };
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let worker = worker.clone();
            std::thread::spawn(move || -> Result<u64> {
                tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(worker.run())
            })
        })
        .collect();

    // Until the queue is empty (visible, in flight and delayed: a continuation is queued before its message is
    // deleted, so the queue never looks empty mid-run) twice in a row; then every tenant's four runs must have
    // succeeded. Each tenant's first sync ended when its last type's run did (the run records say when). Polling
    // the queue, not the runs, keeps the watching off the local DynamoDB, which serialises every request.
    let scheduled_at = time::OffsetDateTime::now_utc() - scheduled.elapsed();
    let monitor = async {
        loop {
            let mut quiet = 0;
            while quiet < 2 {
                ensure!(scheduled.elapsed() < timeout, "the tenants did not all sync within {timeout:?}");
                tokio::time::sleep(Duration::from_secs(2)).await;
                quiet = if waiting(&sqs, &queue_url).await == 0 { quiet + 1 } else { 0 };
            }
            // (A delayed continuation may not show in the local queue's counts: a run still live means not yet.)
            let mut finished: HashMap<String, f64> = HashMap::new();
            let mut live = false;
            for (id, _, _) in &connections {
                let runs = store.list_runs(id).await?;
                if let Some(failed) =
                    runs.iter().find(|r| matches!(r.status, RunStatus::Failed | RunStatus::NeedsReauth))
                {
                    stop.store(true, Ordering::Relaxed);
                    return Err(anyhow::anyhow!("{id}: a run did not succeed: {failed:?}"));
                }
                if runs.len() < 4 || runs.iter().any(|r| r.status != RunStatus::Succeeded) {
                    live = true;
                    break;
                }
                let last = runs.iter().filter_map(|r| r.finished_at).max().context("finished")?;
                finished.insert(id.clone(), (last - scheduled_at).as_seconds_f64());
            }
            if !live {
                stop.store(true, Ordering::Relaxed);
                let wall = finished.values().copied().fold(0.0, f64::max);
                return Ok((finished, Duration::from_secs_f64(wall), waiting(&sqs, &queue_url).await));
            }
        }
    };
    let monitored = monitor.await;
    stop.store(true, Ordering::Relaxed);
    let mut invocations = 0;
    for thread in threads {
        invocations += thread.join().map_err(|_| anyhow::anyhow!("a worker panicked"))??;
    }
    let (finished, wall, left) = monitored?;
    ensure!(finished.len() == tenants, "{} of {tenants} tenants synced after {timeout:?}", finished.len());
    let dead = waiting(&sqs, &dead_letters).await;

    // The figures.
    let stats = harness::sandbox_stats(&sandbox).await?;
    let points = stats["points"].as_u64().unwrap_or(0);
    let requests: u64 = stats["rest_requests"].as_object().map_or(0, |r| r.values().filter_map(Value::as_u64).sum());
    let mut objects = 0u64;
    for (id, _, _) in &connections {
        for run in store.list_runs(id).await? {
            objects += run.counts.created;
        }
    }
    let least_each = least_points(&org, &sizes);
    let least: u64 = least_each.iter().sum();
    let rate = quota_points as f64 * (1.0 - reserve) / window.as_secs_f64();
    let bound = points as f64 / rate;
    let (mut small, mut large): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    // Time to first sync by tenant size (users): 20–50, 51–100, 101–200, and the big ones.
    let mut by_size: [Vec<f64>; 4] = Default::default();
    for (id, _, users) in &connections {
        let at = finished[id];
        if *users <= 200 {
            small.push(at)
        } else {
            large.push(at)
        }
        by_size[match users {
            0..=50 => 0,
            51..=100 => 1,
            101..=200 => 2,
            _ => 3,
        }]
        .push(at);
    }
    for sorted in [&mut small, &mut large].into_iter().chain(by_size.iter_mut()) {
        sorted.sort_by(f64::total_cmp);
    }
    // The small tenants' bound: their own points plus two turns per type of every big tenant (a small run comes
    // around the queue behind each big run's turn when it is first queued, and again when it continues or waits
    // for the quota), at the rate achieved (the quota's, or less where the local stack's DynamoDB was the slower),
    // half as much again for the queue's order and the windows' granularity, and two windows. It does not grow with
    // the big tenants' size: they take turns. It tells fair from unfair only where the big tenants are most of the
    // work (LOAD_BIG_USERS large): the report gives it as a share of the wall time, which is small there.
    let achieved = (points as f64 / wall.as_secs_f64()).min(rate);
    let small_points: u64 = sizes.iter().zip(&least_each).filter(|(size, _)| size.users <= 200).map(|(_, p)| p).sum();
    let small_bound =
        1.5 * (small_points as f64 + (2 * big * 4) as f64 * turn as f64) / achieved + 2.0 * window.as_secs_f64();
    let buckets: Vec<String> = ["20–50", "51–100", "101–200", "big"]
        .iter()
        .zip(&by_size)
        .filter(|(_, at)| !at.is_empty())
        .map(|(name, at)| {
            format!("{name}: {} tenants, {:.1} s / {:.1} s", at.len(), percentile(at, 0.5), percentile(at, 1.0))
        })
        .collect();
    let report = format!(
        "| tenants | small (20–200 users) | big | workers | quota | wall | quota bound | wall ÷ bound | \
         small: median / worst (bound) | big: median / worst | points | least | points ÷ least | requests | \
         objects | requests / object | points / object | quota 429s | queue / DLQ left | invocations |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {tenants} | {} | {} × {big_users} users | {workers} | {quota_points} / {} s | {:.1} s | {:.1} s | {:.2}× | \
         {:.1} s / {:.1} s ({:.1} s, {:.0} % of the wall) | {:.1} s / {:.1} s | {points} | {least} | {:.3}× | {requests} | {objects} | \
         {:.3} | {:.2} | {} | {left} / {dead} | {invocations} |\n\n\
         Time to first sync by size (users: tenants, median / worst): {}.\n\n\
         Connecting the {tenants} tenants took {:.1} s; `max_window_points` {} of {quota_points}; requests by route {}.\n",
        small.len(),
        large.len(),
        window.as_secs(),
        wall.as_secs_f64(),
        bound,
        wall.as_secs_f64() / bound,
        percentile(&small, 0.5),
        percentile(&small, 1.0),
        small_bound,
        100.0 * small_bound / wall.as_secs_f64(),
        percentile(&large, 0.5),
        percentile(&large, 1.0),
        points as f64 / least as f64,
        requests as f64 / objects as f64,
        points as f64 / objects as f64,
        stats["quota_429s"],
        buckets.join("; "),
        connected.as_secs_f64(),
        stats["max_window_points"],
        stats["rest_requests"],
    );
    println!("{report}");
    if let Ok(path) = std::env::var("LOAD_REPORT") {
        std::fs::write(path, &report)?;
    }
    ensure!(stats["quota_429s"] == 0, "Atlassian's quota was exceeded: {stats}");
    if dead > 0 {
        let received = sqs.receive_message().queue_url(&dead_letters).max_number_of_messages(10).send().await?;
        let bodies: Vec<String> = received.messages.unwrap_or_default().into_iter().filter_map(|m| m.body).collect();
        anyhow::bail!("the dead-letter queue must end empty; it holds {dead}: {bodies:?}");
    }
    ensure!(left == 0, "the queue must end empty ({left} left)");
    ensure!(points as f64 <= 1.05 * least as f64, "the syncs spent {points} points, over 1.05× the least ({least})");
    ensure!(
        percentile(&small, 1.0) <= small_bound,
        "a small tenant waited {:.1} s for its first sync, past the bound of {small_bound:.1} s",
        percentile(&small, 1.0)
    );
    Ok(())
}
