//! Sync jobs: run records, continuations through the queue, and sites the grant no longer reaches.

use super::*;

#[tokio::test]
async fn sync_jobs_record_their_runs_and_stop_at_a_revoked_grant() {
    use store::RunStore;
    use store::mirror::{MirrorStore, ObjectType, Scope};
    use sync::job::{self, Outcome};
    use sync::queue::Job;
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let id = connected(&flow, &tenant).await;
    let env = JobEnv::new();
    let mirror = &env.mirror;
    let deps = env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
    let org = harness::sandbox_org(&flow.sandbox).await.unwrap();
    for (object_type, kind) in [
        (ObjectType::Users, "users"),
        (ObjectType::Groups, "groups"),
        (ObjectType::Projects, "projects"),
        (ObjectType::Spaces, "spaces"),
    ] {
        let outcome = job::run(&deps, &Job::new(&id, object_type), &unique("run"), None).await.unwrap();
        let Outcome::Finished(store::RunStatus::Succeeded, counts) = outcome else {
            panic!("{object_type:?}: {outcome:?}")
        };
        let expected = org[kind].as_array().unwrap().len();
        assert_eq!(counts.created as usize, expected, "{object_type:?}");
        let (objects, _) = mirror.list(&Scope::new(&id, object_type), None, 1000).await.unwrap();
        assert_eq!(objects.len(), expected);
    }
    let runs = flow.store.list_runs(&id).await.unwrap();
    assert_eq!(runs.len(), 4);
    assert!(
        runs.iter().all(|r| r.status == store::RunStatus::Succeeded && r.finished_at.is_some() && r.counts.points > 0)
    );

    // The customer revokes access: the next run ends needs_reauth, and so does the connection, while its access
    // token has not expired (Atlassian refuses it at once; the refresh the run then tries is refused too).
    let revoke = flow.sandbox.join(&format!("/__sandbox/grants/{}/revoke", harness::ADMIN)).unwrap();
    harness::client().post(revoke).send().await.unwrap();
    let outcome = job::run(&deps, &Job::new(&id, ObjectType::Users), &unique("run"), None).await.unwrap();
    assert!(matches!(outcome, Outcome::Finished(store::RunStatus::NeedsReauth, _)), "{outcome:?}");
    let connection = flow.store.get_connection(&id).await.unwrap().unwrap();
    assert_eq!(connection.status, store::ConnectionStatus::NeedsReauth);
    // Further jobs skip the connection until the tenant connects again.
    assert_eq!(
        job::run(&deps, &Job::new(&id, ObjectType::Groups), &unique("run"), None).await.unwrap(),
        Outcome::Skipped
    );
}

#[tokio::test]
async fn a_paused_run_continues_through_the_queue_and_stale_continuations_are_dropped() {
    use store::mirror::{MirrorStore, ObjectType, Scope};
    use store::{CheckpointStore, RunStore};
    use sync::job::{self, Outcome};
    use sync::queue::Job;
    let flow = Flow::new().await;
    let id = connected(&flow, &unique("tenant")).await;
    let env = JobEnv::new();
    let (mirror, queue) = (&env.mirror, &env.queue);
    let deps = env.deps(
        &flow.store,
        &flow.callback.atlassian,
        &flow.callback.keys,
        sync::engine::Pacing { max_pages: 1, ..sync::engine::Pacing::default() },
    );
    let take = || std::mem::take(&mut *queue.jobs.lock().unwrap());
    let org = harness::sandbox_org(&flow.sandbox).await.unwrap();

    // The first invocation reads one page (the first of two sites), pauses and queues its continuation.
    let outcome = job::run(&deps, &Job::new(&id, ObjectType::Users), "message-1", None).await.unwrap();
    assert!(matches!(outcome, Outcome::Continued(counts) if counts.pages == 1), "{outcome:?}");
    let running = flow.store.list_runs(&id).await.unwrap().remove(0);
    assert_eq!((running.status, running.run_id.as_str()), (store::RunStatus::Running, "message-1"));
    let mut continuation = take();
    assert_eq!(continuation, vec![Job { run_id: Some("message-1".into()), ..Job::new(&id, ObjectType::Users) }]);
    // A new run meanwhile is turned away: the paused run still holds the lease.
    let other = job::run(&deps, &Job::new(&id, ObjectType::Users), "message-2", None).await.unwrap();
    assert_eq!(other, Outcome::AlreadyRunning);

    // Continuations (each with a new message id) carry the run to its end.
    let mut invocations = 1;
    let counts = loop {
        let job = continuation.pop().expect("a continuation");
        invocations += 1;
        match job::run(&deps, &job, &format!("message-c{invocations}"), None).await.unwrap() {
            Outcome::Continued(_) => continuation = take(),
            Outcome::Finished(store::RunStatus::Succeeded, counts) => break counts,
            outcome => panic!("{outcome:?}"),
        }
    };
    assert!(invocations >= 3, "two sites, one page an invocation: {invocations}");
    assert_eq!(counts.created as usize, org["users"].as_array().unwrap().len(), "each user created once");
    let done = flow.store.list_runs(&id).await.unwrap().remove(0);
    assert_eq!((done.run_id.as_str(), done.started_at), ("message-1", running.started_at), "one run throughout");
    assert!(done.finished_at.is_some() && take().is_empty());
    assert!(flow.store.load_checkpoint(&id, ObjectType::Users).await.unwrap().is_none());
    let (objects, _) = mirror.list(&Scope::new(&id, ObjectType::Users), None, 1000).await.unwrap();
    assert_eq!(objects.len(), org["users"].as_array().unwrap().len());

    // A continuation delivered again after its run ended does nothing and leaves the record alone.
    let stale = Job { run_id: Some("message-1".into()), ..Job::new(&id, ObjectType::Users) };
    assert_eq!(job::run(&deps, &stale, "message-late", None).await.unwrap(), Outcome::Skipped);
    assert_eq!(flow.store.list_runs(&id).await.unwrap().remove(0), done);

    // A paused run whose continuation waits past its lease is replaced by the next new run, which drops the old
    // checkpoint: the late continuation then finds nothing to resume.
    assert!(matches!(
        job::run(&deps, &Job::new(&id, ObjectType::Users), "message-3", None).await.unwrap(),
        Outcome::Continued(_)
    ));
    let late = take().pop().expect("a continuation");
    let mut lapsed = flow.store.list_runs(&id).await.unwrap().remove(0);
    lapsed.lease_until_ms = store::budget::epoch_ms(OffsetDateTime::now_utc() - Duration::minutes(1));
    assert!(flow.store.save_run(&id, &lapsed).await.unwrap());
    // (The new run fits one invocation, so it saves no checkpoint of its own.)
    let unpaced = job::Deps { pacing: sync::engine::Pacing::default(), guard: deps.guard.clone(), ..deps };
    let takeover = job::run(&unpaced, &Job::new(&id, ObjectType::Users), "message-4", None).await.unwrap();
    assert!(matches!(takeover, Outcome::Finished(store::RunStatus::Succeeded, _)), "{takeover:?}");
    assert!(flow.store.load_checkpoint(&id, ObjectType::Users).await.unwrap().is_none(), "the old one is gone");
    assert_eq!(job::run(&deps, &late, "message-late-2", None).await.unwrap(), Outcome::Skipped);
    assert_eq!(flow.store.list_runs(&id).await.unwrap().remove(0).run_id, "message-4");
}

#[tokio::test]
async fn a_site_the_grant_no_longer_reaches_is_marked_and_its_objects_deleted() {
    use store::mirror::{MirrorStore, ObjectType, Scope};
    use sync::job::{self, Outcome};
    use sync::queue::Job;
    let flow = Flow::new().await;
    let id = connected(&flow, &unique("tenant")).await;
    let env = JobEnv::new();
    let mirror = &env.mirror;
    let deps = env.deps(&flow.store, &flow.callback.atlassian, &flow.callback.keys, sync::engine::Pacing::default());
    assert!(matches!(
        job::run(&deps, &Job::new(&id, ObjectType::Spaces), &unique("run"), None).await.unwrap(),
        Outcome::Finished(store::RunStatus::Succeeded, _)
    ));
    let lost = tests::sandbox::site_id(1);
    let remove = flow.sandbox.join(&format!("/__sandbox/grants/{}/sites/{lost}/remove", harness::ADMIN)).unwrap();
    assert_eq!(harness::client().post(remove).send().await.unwrap().status(), 204);

    let outcome = job::run(&deps, &Job::new(&id, ObjectType::Spaces), &unique("run"), None).await.unwrap();
    let Outcome::Finished(store::RunStatus::Succeeded, counts) = outcome else { panic!("{outcome:?}") };
    let connection = flow.store.get_connection(&id).await.unwrap().unwrap();
    let site = connection.sites.iter().find(|s| s.cloud_id == lost).expect("the lost site is kept, marked");
    assert!(site.lost_at.is_some());
    assert!(connection.sites.iter().filter(|s| s.cloud_id != lost).all(|s| s.lost_at.is_none()));
    let (objects, _) = mirror.list(&Scope::new(&id, ObjectType::Spaces), None, 1000).await.unwrap();
    let on_lost: Vec<_> = objects.iter().filter(|o| o.key.starts_with(&lost)).collect();
    assert!(!on_lost.is_empty() && on_lost.iter().all(|o| o.deleted), "its spaces are marked deleted");
    assert_eq!(counts.deleted as usize, on_lost.len());
    assert!(objects.iter().filter(|o| !o.key.starts_with(&lost)).all(|o| !o.deleted));
}
