//! Groups of any size: a group costing more than a quota window finishes across windows and turns, and a
//! 16,000-member group syncs exactly, a member more rewriting one small chunk.

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
    harness::all_members(mirror, scope, &group).await
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
