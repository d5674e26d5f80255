//! The sync job over the in-memory store and a fake (empty) Atlassian.

use atlassian::fake::FakeAtlassian;
use atlassian::{AccessToken, RefreshToken};
use store::mirror::ObjectType;
use store::{ConnectionStore, MemoryStore, Product, RunCounts, RunRecord, RunStatus, RunStore, SessionStore, contract};
use sync::job::{self, Deps, Outcome};
use sync::queue::Job;
use time::{Duration, OffsetDateTime};
use tokens::credentials::{self, Credentials};
use tokens::refresh::RefreshPolicy;
use tokens::{KeyRing, scopes};

async fn connection(store: &MemoryStore, keys: &KeyRing, products: Vec<Product>) -> String {
    let session = contract::session("tenant");
    store.put_session(&session).await.unwrap();
    let mut connection = contract::connection("tenant", "con_1");
    connection.sites[0].products = products;
    connection.credentials = credentials::seal(
        keys,
        "con_1",
        &Credentials {
            access_token: AccessToken::new("access".into()),
            refresh_token: Some(RefreshToken::new("refresh".into())),
            expires_at: OffsetDateTime::now_utc() + Duration::hours(1),
        },
    )
    .unwrap();
    store.complete_connect(&session.id_hash, &connection).await.unwrap().connection_id
}

#[tokio::test]
async fn runs_are_recorded_and_never_overlap() {
    let store = MemoryStore::new();
    let keys = KeyRing::from_json(&KeyRing::generate_json("v1")).unwrap();
    let id = connection(&store, &keys, vec![Product::Jira]).await;
    let mut atlassian = FakeAtlassian::granting(&scopes::defaults());
    // The grant reaches the connection's one site, with Jira scopes only.
    atlassian.resources = vec![atlassian::fake::site("11111111-2222-3333-4444-555555555555", &["read:jira-user"])];
    let deps = Deps {
        store: &store,
        mirror: &store,
        atlassian: &atlassian,
        budget: &sync::budget::Unlimited,
        keys: &keys,
        refresh: &RefreshPolicy::default(),
        queue: &sync::queue::MemoryQueue::default(),
        pacing: sync::engine::Pacing::default(),
        guard: sync::engine::DeletionGuard::default(),
    };

    let outcome = job::run(&deps, &Job::new(&id, ObjectType::Users), "run-1", None).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Finished(RunStatus::Succeeded, RunCounts { pages: 1, points: 1, ..RunCounts::default() })
    );

    // Spaces come from Confluence, which this connection's site lacks: said, not silently empty.
    let outcome = job::run(&deps, &Job::new(&id, ObjectType::Spaces), "run-2", None).await.unwrap();
    assert!(matches!(outcome, Outcome::Finished(RunStatus::NotAvailable, _)));

    // While a run holds the lease, another is turned away.
    let now = OffsetDateTime::now_utc();
    let holder =
        RunRecord::running(ObjectType::Groups, "holder", now, store::budget::epoch_ms(now + Duration::minutes(5)));
    assert!(store.try_start_run(&id, &holder, now).await.unwrap());
    assert_eq!(
        job::run(&deps, &Job::new(&id, ObjectType::Groups), "run-3", None).await.unwrap(),
        Outcome::AlreadyRunning
    );

    let runs = store.list_runs(&id).await.unwrap();
    let status = |t| runs.iter().find(|r| r.object_type == t).map(|r| r.status);
    assert_eq!(status(ObjectType::Users), Some(RunStatus::Succeeded));
    assert_eq!(status(ObjectType::Spaces), Some(RunStatus::NotAvailable));
    assert!(
        runs.iter()
            .find(|r| r.object_type == ObjectType::Spaces)
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .contains("Confluence")
    );
    assert_eq!(status(ObjectType::Groups), Some(RunStatus::Running));

    assert_eq!(
        job::run(&deps, &Job::new("con_missing", ObjectType::Users), "run-4", None).await.unwrap(),
        Outcome::Skipped
    );
}
