//! Each connection's latest runs per type, and when each type is next due.

use super::*;

#[tokio::test]
async fn the_connection_shows_its_latest_runs() {
    use store::{RunCounts, RunRecord, RunStatus, RunStore, mirror::ObjectType};
    let deps = deps();
    connected(&deps, vec![store::Product::Jira]).await;
    let (_, before) = call(&deps, request(Method::GET, "/connections/con_1", Some(KEY), None)).await;
    assert_eq!(before["sync"]["users"], Value::Null, "never run");
    assert_eq!(before["sync"]["spaces"]["status"], "not_available", "no Confluence site");

    let now = time::OffsetDateTime::now_utc();
    let run = RunRecord {
        status: RunStatus::Succeeded,
        finished_at: Some(now),
        counts: RunCounts { pages: 2, created: 5, updated: 1, unchanged: 3, deleted: 1, points: 40, held: 0 },
        ..RunRecord::running(ObjectType::Users, "r1", now, 0)
    };
    deps.store.try_start_run("con_1", &run, now).await.unwrap();
    let (_, after) = call(&deps, request(Method::GET, "/connections/con_1", Some(KEY), None)).await;
    let users = &after["sync"]["users"];
    assert_eq!(users["status"], "succeeded");
    assert_eq!(
        users["counts"],
        json!({"pages": 2, "created": 5, "updated": 1, "unchanged": 3, "deleted": 1, "points": 40, "held": 0})
    );
    assert!(users["started_at"].is_string() && users["finished_at"].is_string());
    assert_eq!(users["error"], Value::Null);
    assert_eq!((users["last_succeeded_at"].clone(), users["next_due_at"].clone()), (Value::Null, Value::Null));

    // A run waiting for the quota says until when; the last success and the next due time follow the cadence.
    let waiting = RunRecord {
        status: RunStatus::Waiting,
        waiting_until: Some(now + time::Duration::minutes(3)),
        last_succeeded_at: Some(now - time::Duration::hours(7)),
        error: Some("waiting for the app's Atlassian points budget to refill".into()),
        ..RunRecord::running(ObjectType::Users, "r1", now, 0)
    };
    deps.store.save_run("con_1", &waiting).await.unwrap();
    let (_, after) = call(&deps, request(Method::GET, "/connections/con_1", Some(KEY), None)).await;
    let users = &after["sync"]["users"];
    assert_eq!(users["status"], "waiting");
    let at = |field: &str| {
        time::OffsetDateTime::parse(users[field].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert!((at("waiting_until") - now - time::Duration::minutes(3)).abs() < time::Duration::seconds(1));
    // Six hours after a success seven hours ago: an hour overdue, visibly.
    assert!((at("next_due_at") - (now - time::Duration::hours(1))).abs() < time::Duration::seconds(1));
}

#[test]
fn cadences_come_from_the_schedules() {
    let cadences =
        management::Cadences::parse("users=rate(30 minutes), groups=rate(1 hour),projects=cron(0 3 * * ? *)").unwrap();
    assert_eq!(cadences.0.get(&store::mirror::ObjectType::Users), Some(&time::Duration::minutes(30)));
    assert_eq!(cadences.0.get(&store::mirror::ObjectType::Groups), Some(&time::Duration::HOUR));
    assert_eq!(cadences.0.get(&store::mirror::ObjectType::Projects), None, "a cron has no fixed interval");
    assert!(management::Cadences::parse("users=rate(2 weeks)").is_err());
    assert!(management::Cadences::parse("widgets=rate(1 day)").is_err());
}
