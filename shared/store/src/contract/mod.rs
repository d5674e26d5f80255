//! The behaviour every store implementation must have, written once and run whole through [`run_all`] against
//! [`crate::MemoryStore`] here and against DynamoDB in `tests/integration`: a check added here runs on both. Each
//! check uses keys of its own, so checks share a table and run at once.

use crate::*;
use time::{Duration, OffsetDateTime};

mod mirror;
use mirror::{big_groups_keep_their_members_in_chunks, the_mirror_round_trips_compares_and_clears};

/// Every check of the contract, against `store` (state) and `mirror`.
pub async fn run_all<S, M>(store: std::sync::Arc<S>, mirror: &M)
where
    S: SessionStore + StateStore + ConnectionStore + CredentialStore + RunStore + CheckpointStore + BudgetStore,
    S: EventLedger,
    S: Send + Sync + 'static,
    M: MirrorStore,
{
    let state = store.as_ref();
    tokio::join!(
        sessions_round_trip_and_never_overwrite(state),
        a_state_is_taken_once(state),
        completing_marks_the_session_used_and_upserts(state),
        one_refresh_lease_at_a_time(state),
        credentials_are_saved_only_on_the_expected_version(state),
        a_replace_loses_to_any_change_in_between(state),
        the_active_connections_are_listed_and_no_others(state),
        one_run_per_type_at_a_time(state),
        checkpoints_append_and_refuse_a_stale_base(state),
        the_ledger_remembers_published_events(state),
        the_mirror_round_trips_compares_and_clears(mirror),
        big_groups_keep_their_members_in_chunks(mirror),
    );
    the_points_budget_is_shared(store.clone()).await;
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    format!("{prefix}-{nanos}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn now() -> OffsetDateTime {
    // Whole seconds: what RFC 3339 round-trips exactly in every store.
    OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).expect("valid timestamp")
}

pub fn session(tenant_id: &str) -> ConnectSession {
    let now = now();
    ConnectSession {
        id_hash: unique("session"),
        tenant_id: tenant_id.into(),
        return_url: Some("https://app.example/done".into()),
        created_at: now,
        expires_at: now + Duration::minutes(15),
        used_at: None,
    }
}

pub fn connection(tenant_id: &str, connection_id: &str) -> Connection {
    let now = now();
    Connection {
        connection_id: connection_id.into(),
        tenant_id: tenant_id.into(),
        mode: ConnectionMode::Oauth,
        status: ConnectionStatus::Active,
        status_reason: None,
        sites: vec![Site {
            cloud_id: "11111111-2222-3333-4444-555555555555".into(),
            url: "https://acme.atlassian.net".into(),
            name: "acme".into(),
            products: vec![Product::Jira, Product::Confluence],
            lost_at: None,
        }],
        scopes: vec!["read:jira-user".into(), "offline_access".into()],
        account_id: "557058:admin".into(),
        org_id: None,
        credentials: SealedCredentials { key_version: "v1".into(), blob: vec![1, 2, 3, 0, 255] },
        token_version: 0,
        created_at: now,
        updated_at: now,
        connected_at: Some(now),
    }
}

async fn sessions_round_trip_and_never_overwrite(store: &impl SessionStore) {
    let session = session(&unique("tenant"));
    store.put_session(&session).await.expect("put");
    assert_eq!(store.get_session(&session.id_hash).await.expect("get"), Some(session.clone()));
    assert!(store.put_session(&session).await.is_err(), "a second put of the same session must fail");
    assert_eq!(store.get_session("no-such-session").await.expect("get"), None);
}

async fn a_state_is_taken_once(store: &impl StateStore) {
    let state = OAuthState {
        browser_hash: Some("b".repeat(64)),
        state_hash: unique("state"),
        session_id_hash: unique("session"),
        tenant_id: unique("tenant"),
        return_url: None,
        expires_at: now() + Duration::minutes(10),
    };
    store.put_state(&state).await.expect("put");
    let (first, second) = tokio::join!(store.take_state(&state.state_hash), store.take_state(&state.state_hash));
    let taken: Vec<_> = [first.expect("take"), second.expect("take")].into_iter().flatten().collect();
    assert_eq!(taken, vec![state.clone()], "exactly one concurrent take wins");
    assert_eq!(store.take_state(&state.state_hash).await.expect("take"), None);
}

async fn completing_marks_the_session_used_and_upserts<S: SessionStore + ConnectionStore>(store: &S) {
    let tenant = unique("tenant");
    let id = unique("con");
    let first_session = session(&tenant);
    store.put_session(&first_session).await.expect("put session");
    let mut connection = connection(&tenant, &id);
    let stored = store.complete_connect(&first_session.id_hash, &connection).await.expect("complete");
    assert_eq!(stored.token_version, 1);
    assert_eq!(stored.sites, connection.sites);
    assert_eq!(stored.credentials, connection.credentials);
    let used = store.get_session(&first_session.id_hash).await.expect("get").expect("session");
    assert!(used.used_at.is_some());

    // The same session cannot complete twice, and the failed attempt writes nothing.
    connection.scopes = vec!["changed".into()];
    assert!(matches!(
        store.complete_connect(&first_session.id_hash, &connection).await,
        Err(CompleteError::SessionUsed)
    ));
    assert_eq!(store.get_connection(&id).await.expect("get").expect("connection").scopes, stored.scopes);
    // An unknown session is "used" too.
    assert!(matches!(store.complete_connect("no-such-session", &connection).await, Err(CompleteError::SessionUsed)));

    // Reconnecting updates in place: created_at stays, the version goes up, a cleared reason disappears.
    let second_session = session(&tenant);
    store.put_session(&second_session).await.expect("put session");
    connection.created_at = stored.created_at + Duration::hours(1);
    connection.updated_at = stored.updated_at + Duration::hours(1);
    let again = store.complete_connect(&second_session.id_hash, &connection).await.expect("reconnect");
    assert_eq!(again.created_at, stored.created_at);
    assert_eq!(again.updated_at, connection.updated_at);
    assert_eq!(again.token_version, 2);
    assert_eq!(again.scopes, vec!["changed".to_string()]);

    assert_eq!(store.list_connections(&tenant).await.expect("list"), vec![again.clone()]);

    // Sites change as syncs find them; a lost site keeps its mark.
    let mut sites = again.sites.clone();
    sites[0].lost_at = Some(again.updated_at);
    store.update_sites(&id, &sites, again.updated_at).await.expect("update sites");
    let again = store.get_connection(&id).await.expect("get").expect("connection");
    assert_eq!(again.sites, sites);
    assert_eq!(store.get_connection(&id).await.expect("get"), Some(again));
    assert_eq!(store.list_connections(&unique("tenant")).await.expect("list"), vec![]);
}

/// Stores a fresh connection for a new tenant and returns it as stored.
async fn stored_connection<S: SessionStore + ConnectionStore>(store: &S) -> Connection {
    let tenant = unique("tenant");
    let session = session(&tenant);
    store.put_session(&session).await.expect("put session");
    store.complete_connect(&session.id_hash, &connection(&tenant, &unique("con"))).await.expect("complete")
}

/// The scheduler's walk finds every active connection, in pages, and none that is not active.
async fn the_active_connections_are_listed_and_no_others<S: SessionStore + ConnectionStore + CredentialStore>(
    store: &S,
) {
    let active = [stored_connection(store).await, stored_connection(store).await];
    let revoked = stored_connection(store).await;
    assert!(store.revoke_connection(&revoked.connection_id, now()).await.expect("revoke"));
    let lapsed = stored_connection(store).await;
    let marked = store.mark_needs_reauth(&lapsed.connection_id, lapsed.token_version, "gone", now()).await;
    assert!(marked.expect("mark"));
    let admin = {
        let mut c = connection(&unique("tenant"), &unique("con"));
        c.mode = ConnectionMode::AdminApiKey;
        store.upsert_connection(&c).await.expect("upsert")
    };
    let (mut listed, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let (ids, next) = store.active_connections(cursor.as_deref()).await.expect("active connections");
        listed.extend(ids);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    for c in active.iter().chain([&admin]) {
        assert!(listed.contains(&c.connection_id), "{} is active", c.connection_id);
    }
    for c in [&revoked, &lapsed] {
        assert!(!listed.contains(&c.connection_id), "{} is not", c.connection_id);
    }
}

async fn one_refresh_lease_at_a_time<S: SessionStore + ConnectionStore + CredentialStore>(store: &S) {
    let c = stored_connection(store).await;
    let id = &c.connection_id;
    let now = now();
    let until = now + Duration::seconds(30);
    let (a, b) = tokio::join!(store.try_lease(id, "a", now, until), store.try_lease(id, "b", now, until));
    let (a, b) = (a.expect("lease"), b.expect("lease"));
    assert!(a ^ b, "exactly one of two concurrent takers gets the lease");
    let (holder, other) = if a { ("a", "b") } else { ("b", "a") };
    assert!(!store.try_lease(id, other, now, until).await.expect("lease"));
    // Releasing someone else's lease does nothing; the holder's release frees it.
    store.release_lease(id, other).await.expect("release");
    assert!(!store.try_lease(id, other, now, until).await.expect("lease"));
    store.release_lease(id, holder).await.expect("release");
    assert!(store.try_lease(id, other, now, until).await.expect("lease"));
    // An expired lease can be taken over.
    assert!(
        store.try_lease(id, holder, until + Duration::seconds(1), until + Duration::seconds(31)).await.expect("lease")
    );
    // No lease on a connection that does not exist.
    assert!(!store.try_lease("con_missing", "a", now, until).await.expect("lease"));
    // The holder renews its own lease (a refresh retrying a lost answer); nobody else can take it meanwhile.
    let renewed = until + Duration::seconds(60);
    assert!(store.try_lease(id, holder, now, renewed).await.expect("lease"));
    assert!(!store.try_lease(id, "intruder", until + Duration::seconds(45), renewed).await.expect("lease"));
}

/// A replace goes through only on the version the caller read, and never brings a revoked connection back.
async fn a_replace_loses_to_any_change_in_between<S: SessionStore + ConnectionStore + CredentialStore>(store: &S) {
    let c = stored_connection(store).await;
    let id = &c.connection_id;
    let mut newer = c.clone();
    newer.account_id = "someone-else".into();
    let replaced = store.replace_connection(&newer, c.token_version).await.expect("replace").expect("at its version");
    assert_eq!((replaced.account_id.as_str(), replaced.token_version), ("someone-else", c.token_version + 1));
    assert!(store.replace_connection(&newer, c.token_version).await.expect("replace").is_none(), "a stale version");
    assert!(store.revoke_connection(id, now()).await.expect("revoke"));
    let revoked = store.get_connection(id).await.expect("get").expect("connection");
    assert!(store.replace_connection(&newer, revoked.token_version).await.expect("replace").is_none(), "revoked wins");
    let after = store.get_connection(id).await.expect("get").expect("connection");
    assert_eq!(after.status, ConnectionStatus::Revoked);
}

async fn credentials_are_saved_only_on_the_expected_version<S: SessionStore + ConnectionStore + CredentialStore>(
    store: &S,
) {
    let c = stored_connection(store).await;
    let id = &c.connection_id;
    let now = now();
    assert!(store.try_lease(id, "w", now, now + Duration::seconds(30)).await.expect("lease"));
    let new = SealedCredentials { key_version: "v2".into(), blob: vec![9, 9, 9] };
    let later = now + Duration::minutes(5);
    assert!(store.save_credentials(id, c.token_version, &new, later).await.expect("save"));
    let saved = store.get_connection(id).await.expect("get").expect("connection");
    assert_eq!(saved.credentials, new);
    assert_eq!(saved.token_version, c.token_version + 1);
    assert_eq!(saved.updated_at, later);
    assert!(
        store.try_lease(id, "other", now, now + Duration::seconds(30)).await.expect("lease"),
        "saving drops the lease"
    );
    // A stale version writes nothing.
    let stale = SealedCredentials { key_version: "v1".into(), blob: vec![1] };
    assert!(!store.save_credentials(id, c.token_version, &stale, later).await.expect("save"));
    assert_eq!(store.get_connection(id).await.expect("get").expect("connection").credentials, new);

    // needs_reauth, on the current version only.
    assert!(!store.mark_needs_reauth(id, c.token_version, "stale", later).await.expect("mark"));
    assert!(store.mark_needs_reauth(id, saved.token_version, "revoked by the customer", later).await.expect("mark"));
    let marked = store.get_connection(id).await.expect("get").expect("connection");
    assert_eq!(marked.status, ConnectionStatus::NeedsReauth);
    assert_eq!(marked.status_reason.as_deref(), Some("revoked by the customer"));

    // Reconnecting brings it back to active and clears the reason.
    let session = session(&c.tenant_id);
    store.put_session(&session).await.expect("put session");
    let again = store.complete_connect(&session.id_hash, &connection(&c.tenant_id, id)).await.expect("reconnect");
    assert_eq!(again.status, ConnectionStatus::Active);
    assert_eq!(again.status_reason, None);
    assert_eq!(again.token_version, saved.token_version + 1);

    // Disconnecting destroys the credentials at once, and a refresh based on the old version cannot land.
    assert!(store.revoke_connection(id, later).await.expect("revoke"));
    let revoked = store.get_connection(id).await.expect("get").expect("connection");
    assert_eq!(revoked.status, ConnectionStatus::Revoked);
    assert_eq!(revoked.credentials, SealedCredentials::default());
    assert!(!store.save_credentials(id, again.token_version, &new, later).await.expect("save"));
    assert!(!store.revoke_connection("con_missing", later).await.expect("revoke"));
}

async fn the_points_budget_is_shared<S: BudgetStore + 'static>(store: std::sync::Arc<S>) {
    use crate::budget::{BudgetLimits, Draw};
    let name = unique("budget");
    let limits = BudgetLimits { points: 100, window: std::time::Duration::from_secs(3600) };
    // The start of the next window, so the whole check happens in one.
    let (_, now) = limits.window_of(OffsetDateTime::now_utc());
    let want = |wanted| Draw { wanted, ..Draw::default() };
    // Twenty workers ask for 10 points each at once: exactly the window's 100 are granted, never more.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (store, name) = (store.clone(), name.clone());
            tokio::spawn(async move { store.take_points(&name, limits, want(10), now).await })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += task.await.expect("task").expect("take").granted;
    }
    assert_eq!(granted, 100);
    let empty = store.take_points(&name, limits, want(5), now + Duration::seconds(100)).await.expect("take");
    assert_eq!(empty.granted, 0);
    assert_eq!(empty.wait, Some(std::time::Duration::from_secs(3500)), "until the window resets");
    let given_back = Draw { give_back: 5, ..want(5) };
    let back = store.take_points(&name, limits, given_back, now + Duration::seconds(100)).await.expect("take");
    assert_eq!(back.granted, 5, "what a worker gives back can be drawn again");
    let later = store.take_points(&name, limits, want(5), now + Duration::seconds(3600)).await.expect("take");
    assert_eq!(later.granted, 5);
}

async fn the_ledger_remembers_published_events(store: &impl EventLedger) {
    let (a, b, c) = (unique("evt"), unique("evt"), unique("evt"));
    assert!(store.published(&[a.clone(), b.clone()]).await.expect("published").is_empty());
    // 130 ids (more than one batch), one of them twice.
    let mut many: Vec<String> = (0..130).map(|_| unique("evt")).collect();
    many.push(many[0].clone());
    many.push(a.clone());
    store.note_published(&many, now()).await.expect("note");
    store.note_published(std::slice::from_ref(&c), now()).await.expect("note again");
    let mut asked = many.clone();
    asked.push(b.clone());
    let found = store.published(&asked).await.expect("published");
    assert_eq!(found.len(), 131, "every noted id, once");
    assert!(found.contains(&a) && found.contains(&many[129]) && !found.contains(&b));
    assert_eq!(store.published(std::slice::from_ref(&c)).await.expect("published").len(), 1);
}

async fn one_run_per_type_at_a_time(store: &impl RunStore) {
    use crate::mirror::ObjectType;
    use crate::runs::{RunCounts, RunRecord, RunStatus};
    let connection_id = unique("con");
    let now = now();
    let run = |run_id: &str, object_type| {
        RunRecord::running(object_type, run_id, now, crate::budget::epoch_ms(now + Duration::minutes(15)))
    };
    let first = run("run-1", ObjectType::Users);
    assert!(store.try_start_run(&connection_id, &first, now).await.expect("start"));
    assert!(!store.try_start_run(&connection_id, &run("run-2", ObjectType::Users), now).await.expect("start"));
    assert!(store.try_start_run(&connection_id, &first, now).await.expect("start"), "the same run resumes");
    assert!(
        store.try_start_run(&connection_id, &run("run-3", ObjectType::Groups), now).await.expect("start"),
        "types are independent"
    );
    // A lapsed lease can be taken over.
    let later = now + Duration::minutes(16);
    let takeover = RunRecord { started_at: later, ..run("run-4", ObjectType::Users) };
    assert!(store.try_start_run(&connection_id, &takeover, later).await.expect("start"));
    // The old run's results are refused; the new run's are kept.
    let mut stale = first.clone();
    stale.status = RunStatus::Succeeded;
    assert!(!store.save_run(&connection_id, &stale).await.expect("save"));
    let mut done = takeover.clone();
    done.status = RunStatus::Succeeded;
    done.finished_at = Some(later);
    done.counts = RunCounts { pages: 3, created: 10, updated: 1, unchanged: 5, deleted: 2, points: 77, held: 0 };
    assert!(store.save_run(&connection_id, &done).await.expect("save"));
    // A finished run does not block the next.
    assert!(store.try_start_run(&connection_id, &run("run-5", ObjectType::Users), later).await.expect("start"));
    // A waiting run (paused for the quota) keeps its lease like a running one, and is read back whole.
    let mut waiting = run("run-5", ObjectType::Users);
    waiting.status = RunStatus::Waiting;
    waiting.waiting_until = Some(later + Duration::minutes(20));
    waiting.lease_until_ms = crate::budget::epoch_ms(later + Duration::minutes(36));
    waiting.held_deletions = Some(crate::HeldDeletions { count: 40, of: 50, digest: "0123456789abcdef".into() });
    assert!(store.save_run(&connection_id, &waiting).await.expect("save"));
    let much_later = later + Duration::minutes(30);
    assert!(!store.try_start_run(&connection_id, &run("run-6", ObjectType::Users), much_later).await.expect("start"));
    assert_eq!(store.get_run(&connection_id, ObjectType::Users).await.expect("get"), Some(waiting));
    assert_eq!(store.get_run(&connection_id, ObjectType::Spaces).await.expect("get"), None);
    let mut runs = store.list_runs(&connection_id).await.expect("list");
    runs.sort_by_key(|r| r.object_type);
    assert_eq!(runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), vec!["run-5", "run-3"]);
    assert!(store.list_runs(&unique("con")).await.expect("list").is_empty());
}

async fn checkpoints_append_and_refuse_a_stale_base(store: &impl CheckpointStore) {
    use crate::mirror::ObjectType;
    let connection_id = unique("con");
    let now = now();
    assert_eq!(store.load_checkpoint(&connection_id, ObjectType::Users).await.expect("load"), None);
    // A first save of a run, then an append: the chunks come back in order, big ones split.
    let big = vec![7u8; checkpoint::CHUNK_BYTES + 10];
    let first = store
        .save_checkpoint(&connection_id, ObjectType::Users, &Checkpoint::fresh("run-1"), "s1", &big, now)
        .await
        .expect("save")
        .expect("a fresh run saves");
    assert_eq!((first.version, first.chunks.len()), (1, 2));
    let second = store
        .save_checkpoint(&connection_id, ObjectType::Users, &first, "s2", b"tail", now)
        .await
        .expect("save")
        .expect("the next version saves");
    let (loaded, chunks) =
        store.load_checkpoint(&connection_id, ObjectType::Users).await.expect("load").expect("saved");
    assert_eq!(loaded, second);
    assert_eq!((loaded.state.as_str(), loaded.version), ("s2", 2));
    assert_eq!(chunks.concat(), [big.as_slice(), b"tail"].concat());
    // A racing invocation that saves from the old base loses, and its bytes are not listed.
    let stale = store.save_checkpoint(&connection_id, ObjectType::Users, &first, "late", b"junk", now).await;
    assert_eq!(stale.expect("save"), None);
    let (_, chunks) = store.load_checkpoint(&connection_id, ObjectType::Users).await.expect("load").expect("saved");
    assert_eq!(chunks.concat(), [big.as_slice(), b"tail"].concat());
    // Saving an empty append works (no chunk); another type is independent.
    let third = store.save_checkpoint(&connection_id, ObjectType::Users, &second, "s3", b"", now).await;
    assert_eq!(third.expect("save").map(|c| c.chunks.len()), Some(3));
    assert_eq!(store.load_checkpoint(&connection_id, ObjectType::Groups).await.expect("load"), None);
    // A new run replaces an old run's checkpoint from scratch; the old run can no longer save.
    let other = store
        .save_checkpoint(&connection_id, ObjectType::Users, &Checkpoint::fresh("run-2"), "n1", b"new", now)
        .await
        .expect("save")
        .expect("a new run takes over");
    assert_eq!(other.chunks.len(), 1);
    let (_, chunks) = store.load_checkpoint(&connection_id, ObjectType::Users).await.expect("load").expect("saved");
    assert_eq!(chunks.concat(), b"new");
    assert_eq!(
        store.save_checkpoint(&connection_id, ObjectType::Users, &second, "x", b"", now).await.expect("save"),
        None
    );
    store.clear_checkpoint(&connection_id, ObjectType::Users).await.expect("clear");
    assert_eq!(store.load_checkpoint(&connection_id, ObjectType::Users).await.expect("load"), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_keeps_the_contract() {
        run_all(std::sync::Arc::new(MemoryStore::new()), &MemoryStore::new()).await;
    }
}
