//! The sync engine and its jobs against an in-process sandbox and the in-memory store: what plain `cargo test`
//! proves about the sync without the local stack — runs that pause and resume through their continuations, deletions
//! decided only by complete runs and held when too many at once, a group that costs more than a quota window, and
//! an admin key's directory. (The same behaviours against DynamoDB are in `integration/`.)

use atlassian::{AtlassianClient, ClientCredentials, ClientId, ClientSecret, Endpoints};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use store::mirror::{MirrorStore, ObjectType, Scope};
use store::{ConnectionStore, MemoryStore, RunStatus, RunStore};
use sync::budget::{Budget, QuotaConfig, SharedBudget, Unlimited};
use sync::engine::{DeletionGuard, Pacing};
use sync::job::{self, Deps, Outcome};
use sync::queue::{Job, MemoryQueue};
use tests::harness;
use tests::sandbox::{OrgSize, Quota, SandboxConfig};
use tokens::KeyRing;
use tokens::refresh::RefreshPolicy;
use url::Url;

/// A sandbox, a store and a queue in this process.
struct World {
    sandbox: Url,
    store: MemoryStore,
    queue: MemoryQueue,
    keys: KeyRing,
    policy: RefreshPolicy,
    client: AtlassianClient,
}

impl World {
    async fn new(config: SandboxConfig) -> Self {
        Self::with_http(config, atlassian::http_client().unwrap()).await
    }

    /// A world whose client talks through `http` (a shorter timeout, say).
    async fn with_http(config: SandboxConfig, http: reqwest::Client) -> Self {
        let sandbox = harness::spawn_sandbox(config).await.unwrap();
        let client = AtlassianClient::new(
            http,
            Endpoints { auth_base: sandbox.clone(), api_base: sandbox.clone() },
            ClientCredentials {
                client_id: ClientId::new("sandbox-client-id".into()),
                client_secret: ClientSecret::new("sandbox-client-secret".into()),
            },
            Url::parse("https://connector.test/oauth/callback").unwrap(),
        );
        Self {
            sandbox,
            store: MemoryStore::new(),
            queue: MemoryQueue::default(),
            keys: KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap(),
            policy: RefreshPolicy::default(),
            client,
        }
    }

    /// An OAuth connection of the org's first admin to the given sites, sealed and stored as the callback would.
    async fn connect(&self, sites: &[String]) -> String {
        let body =
            json!({"account_id": harness::ADMIN, "sites": sites, "scopes": tokens::scopes::defaults().join(" ")});
        let url = self.sandbox.join("/__sandbox/grants").unwrap();
        let grant: Value = harness::client().post(url).json(&body).send().await.unwrap().json().await.unwrap();
        let credentials = tokens::credentials::Credentials {
            access_token: atlassian::AccessToken::new(grant["access_token"].as_str().unwrap().into()),
            refresh_token: grant["refresh_token"].as_str().map(|t| atlassian::RefreshToken::new(t.into())),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        let id = harness::unique("con");
        let mut connection = store::contract::connection(&harness::unique("tenant"), &id);
        let template = connection.sites[0].clone();
        connection.sites = (sites.iter().enumerate())
            .map(|(i, cloud_id)| store::Site {
                cloud_id: cloud_id.clone(),
                url: format!("https://site-{i}.atlassian.net"),
                ..template.clone()
            })
            .collect();
        connection.scopes = tokens::scopes::defaults();
        connection.account_id = harness::ADMIN.into();
        connection.credentials = tokens::credentials::seal(&self.keys, &id, &credentials).unwrap();
        self.store.upsert_connection(&connection).await.unwrap();
        id
    }

    fn deps<'a, B: Budget>(
        &'a self,
        budget: &'a B,
        pacing: Pacing,
    ) -> Deps<'a, MemoryStore, MemoryStore, AtlassianClient, B, MemoryQueue> {
        Deps {
            store: &self.store,
            mirror: &self.store,
            atlassian: &self.client,
            budget,
            keys: &self.keys,
            refresh: &self.policy,
            queue: &self.queue,
            pacing,
            guard: DeletionGuard::default(),
        }
    }

    async fn org(&self) -> Value {
        harness::sandbox_org(&self.sandbox).await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) {
        let response = harness::client().post(self.sandbox.join(path).unwrap()).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
    }

    /// The live objects of a connection's type, and how many are marked deleted.
    async fn mirrored(&self, id: &str, object_type: ObjectType) -> (HashMap<String, Value>, usize) {
        harness::mirrored(&self.store, &Scope::new(id, object_type)).await
    }

    /// Every member the mirror holds under `key` (a group's chunks, or a run's staged parts), sorted.
    async fn members(&self, id: &str, key: &str) -> Vec<String> {
        harness::all_members(&self.store, &Scope::new(id, ObjectType::Groups), key).await
    }
}

fn sites(n: usize) -> Vec<String> {
    (0..n).map(tests::sandbox::site_id).collect()
}

/// Retries as the client makes them, quickly (for tests whose faults each cost a retry).
const QUICK_RETRIES: atlassian::RetryPolicy = atlassian::RetryPolicy {
    max_retries: 6,
    min_delay: Duration::from_millis(5),
    max_delay: Duration::from_millis(50),
};

/// Connects the default org's sites and syncs every type once: each ends exactly the org, each object counted once.
async fn every_type_ends_exactly_the_org(world: &World) {
    let sites = sites(OrgSize::default().sites);
    let id = world.connect(&sites).await;
    let deps = world.deps(&Unlimited, Pacing::default());
    let org = world.org().await;
    for object_type in ObjectType::ALL {
        let counts = succeeded(harness::run_through(&deps, Job::new(&id, object_type)).await.0);
        let expected = harness::expected_mirror(&org, object_type.as_str(), &sites);
        assert_eq!(counts.created as usize, expected.len(), "{object_type:?}: each object counted once");
        assert_eq!(world.mirrored(&id, object_type).await, (expected, 0), "{object_type:?}: exactly the org");
    }
}

fn succeeded(outcome: Outcome) -> store::RunCounts {
    match outcome {
        Outcome::Finished(RunStatus::Succeeded, counts) => counts,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn runs_pause_after_every_page_resume_from_their_checkpoints_and_end_exact() {
    // Users come 100 a page whatever is asked, every third page shorter still: a bare array ended only when empty.
    let org = OrgSize { users: 430, groups: 12, projects: 120, spaces: 130, sites: 2 };
    let world = World::new(SandboxConfig { org, short_pages_every: 3, ..SandboxConfig::default() }).await;
    let sites = sites(2);
    let id = world.connect(&sites).await;
    let deps = world.deps(&Unlimited, Pacing { max_pages: 1, ..Pacing::default() });
    let org = world.org().await;
    for object_type in ObjectType::ALL {
        let (outcome, invocations, _) = harness::run_through(&deps, Job::new(&id, object_type)).await;
        let counts = succeeded(outcome);
        let expected = harness::expected_mirror(&org, object_type.as_str(), &sites);
        assert!(invocations >= 3, "{object_type:?}: {invocations} invocations, one page each");
        assert_eq!(world.mirrored(&id, object_type).await, (expected, 0), "{object_type:?}: exactly the org");
        assert_eq!(counts.deleted, 0);
    }
    // A finished run leaves no checkpoint behind.
    for object_type in ObjectType::ALL {
        assert!(store::CheckpointStore::load_checkpoint(&world.store, &id, object_type).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_429_on_one_member_fetch_does_not_hold_up_the_others() {
    // Every fourth member request is a burst 429 with `Retry-After: 1`: its fetch sleeps a second and tries again
    // while the other member fetches go on. Taken one after another, the waits alone would add up to a second per
    // 429; in the pipeline they overlap.
    let faults = tests::sandbox::Faults {
        rate_limit_every: 4,
        retry_after_secs: 1,
        rate_limit_route: "group/member".into(),
        ..Default::default()
    };
    let org = OrgSize { groups: 32, sites: 1, ..OrgSize::default() };
    let mut world = World::new(SandboxConfig { org, faults, ..SandboxConfig::default() }).await;
    world.client =
        world.client.clone().with_retry(atlassian::RetryPolicy { max_delay: Duration::from_secs(2), ..QUICK_RETRIES });
    let sites = sites(1);
    let id = world.connect(&sites).await;
    let deps = world.deps(&Unlimited, Pacing::default());
    let started = std::time::Instant::now();
    succeeded(harness::run_through(&deps, Job::new(&id, ObjectType::Groups)).await.0);
    let took = started.elapsed();
    let expected = harness::expected_mirror(&world.org().await, "groups", &sites);
    assert_eq!(world.mirrored(&id, ObjectType::Groups).await, (expected, 0), "exactly the org");
    let stats = harness::sandbox_stats(&world.sandbox).await.unwrap();
    let limited = stats["burst_429s"].as_u64().unwrap();
    assert!(limited >= 6, "the member fetches met 429s: {stats}");
    let one_after_another = Duration::from_secs(limited);
    assert!(took < one_after_another * 3 / 4, "{took:?} for {limited} waits of a second: they did not overlap");
}

#[tokio::test]
async fn an_object_served_on_two_pages_is_mirrored_and_counted_once() {
    // Confluence's v2 spaces (250 a page): every second page after a first starts with the previous page's last
    // space again. It is mirrored once, counted once, and the run ends exactly the org.
    let faults = tests::sandbox::Faults { repeat_every: 2, ..Default::default() };
    let org = OrgSize { spaces: 1200, ..OrgSize::default() };
    let world = World::new(SandboxConfig { org, faults, ..SandboxConfig::default() }).await;
    let sites = sites(org.sites);
    let id = world.connect(&sites).await;
    let deps = world.deps(&Unlimited, Pacing::default());
    let counts = succeeded(harness::run_through(&deps, Job::new(&id, ObjectType::Spaces)).await.0);
    let expected = harness::expected_mirror(&world.org().await, "spaces", &sites);
    assert_eq!(counts.created as usize, expected.len(), "each space counted once: {counts:?}");
    assert_eq!(world.mirrored(&id, ObjectType::Spaces).await, (expected, 0), "exactly the org");
    let stats = harness::sandbox_stats(&world.sandbox).await.unwrap();
    assert!(stats["repeated"].as_u64().unwrap() >= 2, "records were served twice: {stats}");
}

#[tokio::test]
async fn a_continuation_delivered_twice_at_once_and_out_of_order_ends_exact_and_counted_once() {
    // SQS delivers at least once and in no particular order: a run's continuation arrives twice at the same moment,
    // and later ones are taken newest first. One delivery carries the run on and the other stands aside (or finds
    // nothing left to do); the run ends succeeded, with the exact mirror and every user counted once.
    let org = OrgSize { users: 430, groups: 6, projects: 5, spaces: 4, sites: 1 };
    let world = World::new(SandboxConfig { org, ..SandboxConfig::default() }).await;
    let sites = sites(1);
    let id = world.connect(&sites).await;
    let paced = world.deps(&Unlimited, Pacing { max_pages: 1, ..Pacing::default() });
    let first = job::run(&paced, &Job::new(&id, ObjectType::Users), "first", None).await.unwrap();
    assert!(matches!(first, Outcome::Continued(_)), "{first:?}");
    let (continuation, _) = world.queue.take().remove(0);
    let (a, b) = tokio::join!(
        job::run(&paced, &continuation, "twice-a", None),
        job::run(&paced, &continuation, "twice-b", None)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        matches!((&a, &b), (Outcome::Continued(_), Outcome::AlreadyRunning | Outcome::Skipped))
            || matches!((&a, &b), (Outcome::AlreadyRunning | Outcome::Skipped, Outcome::Continued(_))),
        "one delivery carries the run on: {a:?}, {b:?}"
    );
    // From here every continuation is delivered twice, the queue is taken newest first, and every third delivery
    // an early continuation comes back late (mid-run: it resumes the same run from its checkpoint, as a duplicate
    // does). Runs that find the run ended or taken over stand aside.
    let twice = |queued: Vec<(Job, std::time::Duration)>| queued.into_iter().flat_map(|(job, _)| [job.clone(), job]);
    let mut pending: Vec<Job> = twice(world.queue.take()).collect();
    let (mut early, mut stood_aside) = (None, 0);
    for n in 0.. {
        assert!(n < 400, "the run did not end");
        let Some(next) = pending.pop() else { break };
        early.get_or_insert_with(|| next.clone());
        let outcome = job::run(&paced, &next, &format!("delivery-{n}"), None).await.unwrap();
        stood_aside += usize::from(matches!(outcome, Outcome::AlreadyRunning | Outcome::Skipped));
        pending.extend(twice(world.queue.take()));
        if n % 3 == 2 {
            pending.push(early.clone().unwrap());
        }
    }
    assert!(stood_aside >= 2, "duplicates met a run that had moved on ({stood_aside})");
    let record = world.store.get_run(&id, ObjectType::Users).await.unwrap().unwrap();
    let expected = harness::expected_mirror(&world.org().await, "users", &sites);
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    assert_eq!(record.counts.created as usize, expected.len(), "each user counted once: {record:?}");
    assert_eq!(world.mirrored(&id, ObjectType::Users).await, (expected, 0), "exactly the org");
}

#[tokio::test]
async fn only_a_complete_run_decides_deletions_and_a_mass_departure_is_held_until_confirmed() {
    let world = World::new(SandboxConfig::default()).await;
    let sites = sites(OrgSize::default().sites);
    let id = world.connect(&sites).await;
    let whole = world.deps(&Unlimited, Pacing::default());
    succeeded(harness::run_through(&whole, Job::new(&id, ObjectType::Users)).await.0);

    // The org changes; a run reads one page and stops there (its continuation not yet run): nothing is deleted.
    world.post("/__sandbox/org/mutate", json!({})).await;
    let paced = world.deps(&Unlimited, Pacing { max_pages: 1, ..Pacing::default() });
    let first = job::run(&paced, &Job::new(&id, ObjectType::Users), "cut-short", None).await.unwrap();
    assert!(matches!(first, Outcome::Continued(_)), "{first:?}");
    assert_eq!(world.mirrored(&id, ObjectType::Users).await.1, 0, "a run cut short marks nothing deleted");
    // Its continuation reads on to the end: now the departed user is marked.
    let (continuation, _) = world.queue.take().remove(0);
    let counts = succeeded(harness::run_through(&whole, continuation).await.0);
    assert_eq!(counts.deleted, 1);
    let org = world.org().await;
    let expected = harness::expected_mirror(&org, "users", &sites);
    assert_eq!(world.mirrored(&id, ObjectType::Users).await, (expected, 1));

    // Most of the org leaves at once: held, and said; the next run sees the same and confirms it.
    let leaving = world.mirrored(&id, ObjectType::Users).await.0.len() as u64 - 5;
    world.post("/__sandbox/org/keep-users", json!({"keep": 5})).await;
    let counts = succeeded(harness::run_through(&whole, Job::new(&id, ObjectType::Users)).await.0);
    assert_eq!((counts.deleted, counts.held), (0, leaving), "{counts:?}");
    let record = world.store.get_run(&id, ObjectType::Users).await.unwrap().unwrap();
    assert!(record.held_deletions.is_some() && record.error.is_some_and(|e| e.contains("not marked deleted")));
    let counts = succeeded(harness::run_through(&whole, Job::new(&id, ObjectType::Users)).await.0);
    assert_eq!((counts.deleted, counts.held), (leaving, 0));
    let record = world.store.get_run(&id, ObjectType::Users).await.unwrap().unwrap();
    assert_eq!((record.held_deletions, record.error), (None, None));
}

#[tokio::test]
async fn a_group_costing_more_than_a_quota_window_finishes_across_windows_and_turns() {
    // 2,600 members at 40 a page cost ~5,300 points against a pool of 1,500 every second: a segment of the group
    // costs more than a window grants, and a turn is 1,000 points.
    let window = Duration::from_secs(1);
    let quota = Quota { global_points: Some(1500), window, ..Quota::default() };
    let org = OrgSize { users: 2_700, groups: 3, projects: 1, spaces: 1, sites: 1 };
    let config = SandboxConfig { org, big_group: 2_600, members_page_cap: 40, quota, ..SandboxConfig::default() };
    let world = World::new(config).await;
    let sites = sites(1);
    let id = world.connect(&sites).await;
    let config = QuotaConfig { points: 1500, window, reserve: 0.1, ..QuotaConfig::default() };
    let mut budget = SharedBudget::new(&world.store, "app", config);
    budget.max_wait = Duration::ZERO;
    let deps = world.deps(&budget, Pacing { points_per_turn: 1_000, ..Pacing::default() });
    let (outcome, invocations, waits) = harness::run_through(&deps, Job::new(&id, ObjectType::Groups)).await;
    let counts = succeeded(outcome);
    assert_eq!(counts.created, 3);
    assert!(counts.points > 3 * 1500 && !waits.is_empty() && invocations > 3, "{counts:?}, {invocations}");
    let stats = harness::sandbox_stats(&world.sandbox).await.unwrap();
    assert_eq!(stats["quota_429s"], 0, "{stats}");

    let org = world.org().await;
    let big = &org["groups"][0];
    let big_id = big["id"].as_str().unwrap();
    let mut expected: Vec<String> =
        big["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()).collect();
    expected.sort();
    assert_eq!(world.members(&id, big_id).await, expected, "every member, exactly");
    let run = world.store.get_run(&id, ObjectType::Groups).await.unwrap().unwrap();
    assert!(world.members(&id, &format!("staged#{}#{big_id}", run.run_id)).await.is_empty(), "nothing left staged");
    let (live, _) = world.mirrored(&id, ObjectType::Groups).await;
    assert_eq!(live[big_id]["member_count"], 2_600);
}

#[tokio::test]
async fn an_admin_key_reads_the_orgs_directory_and_its_sites() {
    // Several Admin API pages (100 a page) of users, of groups and of one group's members; several site pages.
    let org = OrgSize { users: 260, groups: 130, projects: 230, spaces: 600, sites: 2 };
    let world = World::new(SandboxConfig { org, ..SandboxConfig::default() }).await;
    let key = atlassian::AdminKey::new(harness::admin_key(&world.sandbox, json!({})).await.unwrap());
    let (email, token) = harness::api_token(&world.sandbox, harness::ADMIN).await.unwrap();
    let login =
        atlassian::SiteLogin { site_url: harness::site_url(&world.sandbox, "acme"), email, api_token: token.into() };
    let request = tokens::admin::AdminConnectRequest {
        tenant_id: harness::unique("tenant"),
        org_id: tests::sandbox::ORG_ID.into(),
        admin_api_key: key,
        site: Some(login),
        products: None,
    };
    let admin_client = AtlassianClient::without_oauth(
        atlassian::http_client().unwrap(),
        Endpoints { auth_base: world.sandbox.clone(), api_base: world.sandbox.clone() },
    );
    let now = time::OffsetDateTime::now_utc();
    let connection = tokens::admin::connect(&world.store, &admin_client, &world.keys, &request, now).await.unwrap();
    let id = connection.connection_id;
    let deps = world.deps(&Unlimited, Pacing { max_pages: 1, ..Pacing::default() });
    let org = world.org().await;
    let site = tests::sandbox::site_id(0);
    for object_type in ObjectType::ALL {
        let (outcome, invocations, _) = harness::run_through(&deps, Job::new(&id, object_type)).await;
        let counts = succeeded(outcome);
        let expected = harness::expected_admin_mirror(&org, object_type.as_str(), Some(&site));
        assert!(invocations >= 3, "{object_type:?}: {invocations} invocations");
        assert_eq!(counts.created as usize, expected.len(), "{object_type:?}");
        assert_eq!(world.mirrored(&id, object_type).await, (expected, 0), "{object_type:?}: the Admin API's view");
    }
}

#[tokio::test]
async fn a_disconnect_during_a_sync_wins_and_nothing_of_the_org_is_left() {
    // Slow pages (30 ms each), so the disconnect lands while the run is between them.
    let org = OrgSize { users: 1500, ..OrgSize::default() };
    let faults = tests::sandbox::Faults { latency_ms: 30, ..Default::default() };
    let world = World::new(SandboxConfig { org, faults, ..SandboxConfig::default() }).await;
    let id = world.connect(&sites(1)).await;
    let deps = world.deps(&Unlimited, Pacing::default());
    let scope = Scope::new(&id, ObjectType::Users);
    let job = Job::new(&id, ObjectType::Users);
    let sync = job::run(&deps, &job, "racing", None);
    let disconnect = async {
        // As soon as the run has written its first page, the tenant disconnects.
        while world.store.list(&scope, None, 1).await.unwrap().0.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            store::tenant::disconnect(&world.store, &world.store, &id, time::OffsetDateTime::now_utc()).await.unwrap()
        );
    };
    let (outcome, ()) = tokio::join!(sync, disconnect);
    assert_eq!(outcome.unwrap(), Outcome::Skipped, "the run stops at its next page");
    assert!(world.mirrored(&id, ObjectType::Users).await.0.is_empty(), "nothing it read is left in the mirror");
    assert!(store::CheckpointStore::load_checkpoint(&world.store, &id, ObjectType::Users).await.unwrap().is_none());
    // A continuation or a retry that arrives later does nothing, and leaves nothing either.
    let late = job::run(&deps, &Job::new(&id, ObjectType::Groups), "late", None).await.unwrap();
    assert_eq!(late, Outcome::Skipped);
    for object_type in ObjectType::ALL {
        assert!(world.mirrored(&id, object_type).await.0.is_empty(), "{object_type:?}");
    }
}

#[tokio::test]
async fn a_sync_through_every_fault_of_the_answers_ends_exact() {
    // A 500 every 7th request, a connection dropped mid-answer every 9th, JSON cut off every 11th, an HTML page
    // instead of JSON every 13th: each a transient failure the client retries (quickly, here), and the mirror ends
    // exactly the org, object by object.
    let faults = tests::sandbox::Faults {
        error_every: 7,
        drop_every: 9,
        truncate_every: 11,
        garbage_every: 13,
        ..Default::default()
    };
    let mut world = World::new(SandboxConfig { faults, ..SandboxConfig::default() }).await;
    world.client = world.client.clone().with_retry(QUICK_RETRIES);
    every_type_ends_exactly_the_org(&world).await;
    let stats = harness::sandbox_stats(&world.sandbox).await.unwrap();
    let requests: u64 = stats["rest_requests"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert!(requests >= 13, "every fault was met ({requests} requests)");
    assert!(stats["server_errors"].as_u64().unwrap() >= 3, "500, 502 and 503 were each met: {stats}");
}

#[tokio::test]
async fn a_storm_of_burst_429s_with_retry_after_zero_is_ridden_out_and_the_sync_ends_exact() {
    // Every third request is a burst 429 whose `Retry-After` is 0 (the client clamps it to a short floor rather
    // than hammering), on every route: each is retried, none is taken for the end of a listing or for a spent
    // quota, and the mirror ends exactly the org, object by object, with every run succeeded.
    // (Each 429 costs the client's one-second floor: the client may sleep that long here.)
    let faults = tests::sandbox::Faults { rate_limit_every: 3, retry_after_secs: 0, ..Default::default() };
    let mut world = World::new(SandboxConfig { faults, ..SandboxConfig::default() }).await;
    let retries = atlassian::RetryPolicy { max_delay: Duration::from_secs(2), ..QUICK_RETRIES };
    world.client = world.client.clone().with_retry(retries);
    every_type_ends_exactly_the_org(&world).await;
    let stats = harness::sandbox_stats(&world.sandbox).await.unwrap();
    let requests: u64 = stats["rest_requests"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert!(stats["burst_429s"].as_u64().unwrap() >= requests / 3 - 1, "a 429 every third request: {stats}");
}

#[tokio::test]
async fn an_org_changing_while_a_run_pages_through_it_misses_nobody_and_the_next_run_ends_exact() {
    // Users, groups and projects are offset listings. The org changes twice mid-run (each added, renamed and
    // removed, before and after the run's offset): a removal before the offset would shift a record past it unread,
    // never mirrored, or marked deleted. Every page starts at the last record read, sees the list moved, and the
    // site is read again: nobody of the org as it ends is missed, and the next run ends exactly the org.
    // (Users and groups are on every site: one site, so that another site's listing cannot hide what the first one
    // skipped.)
    for (object_type, every, site_count) in
        [(ObjectType::Users, 3, 1), (ObjectType::Groups, 3, 1), (ObjectType::Projects, 2, 2)]
    {
        let faults = tests::sandbox::Faults { mutate_every: every, mutations: 2, ..Default::default() };
        let org = OrgSize { users: 60, groups: 150, projects: 300, spaces: 4, sites: site_count };
        let config = SandboxConfig { org, faults, users_page_cap: 10, ..SandboxConfig::default() };
        let world = World::new(config).await;
        let sites = sites(org.sites);
        let id = world.connect(&sites).await;
        let deps = world.deps(&Unlimited, Pacing::default());
        let before = world.org().await;
        succeeded(harness::run_through(&deps, Job::new(&id, object_type)).await.0);
        let after = world.org().await;
        assert_ne!(
            before[object_type.as_str()],
            after[object_type.as_str()],
            "{object_type:?}: the org changed mid-run"
        );
        let expected = harness::expected_mirror(&after, object_type.as_str(), &sites);
        let (mirrored, _) = world.mirrored(&id, object_type).await;
        let missed: Vec<&String> = expected.keys().filter(|key| !mirrored.contains_key(*key)).collect();
        assert!(missed.is_empty(), "{object_type:?}: missed or marked deleted: {missed:?}");

        let counts = succeeded(harness::run_through(&deps, Job::new(&id, object_type)).await.0);
        assert_eq!(world.mirrored(&id, object_type).await.0, expected, "{object_type:?}: the next run ends exact");
        assert_eq!(counts.held, 0, "{object_type:?}: a settled run holds nothing");
    }
}

#[tokio::test]
async fn answers_slower_than_the_client_timeout_are_retried_and_the_sync_ends_exact() {
    // Every 4th request stalls a second; the client gives up after 250 ms (20 s in production), a transport error
    // it retries like a dropped connection. Every type ends exactly the org, each object counted once.
    let faults = tests::sandbox::Faults { stall_every: 4, stall_ms: 1000, ..Default::default() };
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(250)).build().unwrap();
    let mut world = World::with_http(SandboxConfig { faults, ..SandboxConfig::default() }, impatient).await;
    world.client = world.client.clone().with_retry(QUICK_RETRIES);
    every_type_ends_exactly_the_org(&world).await;
    let stats = harness::sandbox_stats(&world.sandbox).await.unwrap();
    assert!(stats["stalled"].as_u64().is_some_and(|n| n >= 5), "the client gave up on stalled answers: {stats}");
}
