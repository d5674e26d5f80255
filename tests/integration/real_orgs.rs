//! Syncs against an Atlassian that does not agree with the client by construction: pages shorter than asked, runs
//! cut short, mass departures, a points quota, tokens that run out and refresh answers that get lost.

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
    let deps = env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
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
    let full = env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
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
    let deps = env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
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
    // A users sync of ~4,400 points against a pool of 1,500 points per 6-second window, budgeted alike: at least
    // three windows' worth, so a run that does not wait would have to take 18 s on its own (with 3-second windows a
    // loaded machine let one pass without a wait).
    let window = std::time::Duration::from_secs(6);
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
    let started = std::time::Instant::now();
    let (outcome, _, waits) = harness::run_through(&deps, Job::new(&id, ObjectType::Users)).await;
    let Outcome::Finished(RunStatus::Succeeded, counts) = outcome else { panic!("{outcome:?}") };
    assert_eq!(counts.created, 1100);
    // The run waited for the quota; or, on a machine slow enough, it took the windows it needed on its own.
    let needed = window * (counts.points / 1350) as u32;
    assert!(!waits.is_empty() || started.elapsed() >= needed, "the run waited for the quota: {waits:?}");
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
    let deps = env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
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
    let deps = env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
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
