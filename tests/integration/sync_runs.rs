//! The engine against DynamoDB and a sandbox: the mirror is exactly the org, changes only are written, and runs
//! paused after every page or killed anywhere end with the same mirror.

use super::*;
use atlassian::AccessToken;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use store::CheckpointStore;
use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope, Stored};
use tests::sandbox::OrgSize;

/// The real DynamoDB mirror, counting the objects written through it, and the member chunks with the most ids
/// any one of them held.
pub(crate) struct Counting {
    pub(crate) inner: store::DynamoMirror,
    pub(crate) written: AtomicU64,
    pub(crate) chunks_written: AtomicU64,
    pub(crate) largest_chunk: AtomicU64,
}

impl Counting {
    pub(crate) fn new(inner: store::DynamoMirror) -> Self {
        let zero = || AtomicU64::new(0);
        Self { inner, written: zero(), chunks_written: zero(), largest_chunk: zero() }
    }
}

impl MirrorStore for Counting {
    async fn stored(&self, scope: &Scope, keys: &[String]) -> Result<HashMap<String, Stored>, store::StoreError> {
        self.inner.stored(scope, keys).await
    }
    async fn write(&self, scope: &Scope, objects: &[MirrorObject]) -> Result<(), store::StoreError> {
        self.written.fetch_add(objects.len() as u64, Ordering::SeqCst);
        self.inner.write(scope, objects).await
    }
    async fn list(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<MirrorObject>, Option<String>), store::StoreError> {
        self.inner.list(scope, after, limit).await
    }
    async fn clear(&self, scope: &Scope) -> Result<usize, store::StoreError> {
        self.inner.clear(scope).await
    }
    async fn objects(
        &self,
        scope: &Scope,
        keys: &[String],
    ) -> Result<HashMap<String, MirrorObject>, store::StoreError> {
        self.inner.objects(scope, keys).await
    }
    async fn write_members(
        &self,
        scope: &Scope,
        key: &str,
        chunks: &[store::mirror::MemberChunk],
        removed: &[u32],
    ) -> Result<(), store::StoreError> {
        self.chunks_written.fetch_add(chunks.len() as u64, Ordering::SeqCst);
        let largest = chunks.iter().map(|c| c.ids.len() as u64).max().unwrap_or(0);
        self.largest_chunk.fetch_max(largest, Ordering::SeqCst);
        self.inner.write_members(scope, key, chunks, removed).await
    }
    async fn members(
        &self,
        scope: &Scope,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), store::StoreError> {
        self.inner.members(scope, key, after, limit).await
    }
}

fn expected(org: &Value, object_type: ObjectType, sites: &[String]) -> HashMap<String, Value> {
    harness::expected_mirror(org, object_type.as_str(), sites)
}

pub(crate) use harness::mirrored;

#[tokio::test]
async fn syncing_mirrors_the_org_writes_only_changes_and_marks_deletions() {
    // Every endpoint needs more than one page: 1,100 users (1,000 a page), 210 projects (100), 520 spaces (250).
    let size = OrgSize { users: 1100, groups: 30, projects: 210, spaces: 520, sites: 2 };
    let base = harness::spawn_sandbox(SandboxConfig { org: size, ..SandboxConfig::default() }).await.unwrap();
    let token = AccessToken::new(harness::sandbox_token(&base, None).await.unwrap());
    let stack = Stack::from_env();
    let mirror = Counting::new(store::DynamoMirror::new(stack.dynamodb(), &stack.mirror_table));
    let directory = AtlassianClient::new(
        atlassian::http_client().unwrap(),
        Endpoints { auth_base: base.clone(), api_base: base.clone() },
        ClientCredentials { client_id: ClientId::new("x".into()), client_secret: ClientSecret::new("x".into()) },
        Url::parse(CALLBACK).unwrap(),
    );
    let connection_id = unique("con");
    let sites: Vec<String> = (0..size.sites).map(tests::sandbox::site_id).collect();
    let checkpoints = store();
    let pacing = sync::engine::Pacing::default();
    let source = sync::sources::OauthSource::new(&directory, &sync::budget::Unlimited, &token, pacing);
    let run = |object_type| sync::engine::Run {
        source: &source,
        mirror: &mirror,
        checkpoints: &checkpoints,
        gate: &sync::engine::AlwaysOpen,
        connection_id: &connection_id,
        run_id: "run",
        sites: sites.clone(),
        object_type,
        now: OffsetDateTime::now_utc(),
        pacing: sync::engine::Pacing::default(),
        guard: sync::engine::DeletionGuard::default(),
    };

    // First sync: everything is created, and the mirror is exactly the org.
    let org = harness::sandbox_org(&base).await.unwrap();
    for object_type in ObjectType::ALL {
        let counts = run(object_type).run(None).await.unwrap().done().unwrap();
        let expected = expected(&org, object_type, &sites);
        assert_eq!(counts.created as usize, expected.len(), "{object_type:?} created");
        let (live, deleted) = mirrored(&mirror, &Scope::new(&connection_id, object_type)).await;
        assert_eq!(deleted, 0);
        assert_eq!(live, expected, "{object_type:?}: the mirror is exactly the org");
    }

    // An unchanged re-sync reads everything and writes nothing.
    let before = mirror.written.load(Ordering::SeqCst);
    for object_type in ObjectType::ALL {
        let counts = run(object_type).run(None).await.unwrap().done().unwrap();
        assert_eq!((counts.created, counts.updated, counts.deleted), (0, 0, 0), "{object_type:?}");
        assert!(counts.unchanged > 0 && counts.pages > 0 && counts.points > counts.pages);
    }
    assert_eq!(mirror.written.load(Ordering::SeqCst), before, "an unchanged re-sync writes no object");

    // The org changes: adds, renames, removals and membership changes all show.
    harness::client().post(base.join("/__sandbox/org/mutate").unwrap()).send().await.unwrap();
    let org = harness::sandbox_org(&base).await.unwrap();
    for object_type in ObjectType::ALL {
        let counts = run(object_type).run(None).await.unwrap().done().unwrap();
        assert!(counts.created >= 1 && counts.deleted >= 1, "{object_type:?}: {counts:?}");
        let (live, deleted) = mirrored(&mirror, &Scope::new(&connection_id, object_type)).await;
        assert_eq!(live, expected(&org, object_type, &sites), "{object_type:?} after the change");
        assert_eq!(deleted as u64, counts.deleted, "{object_type:?}: removed upstream, marked deleted");
    }
}

/// Runs one object type to completion the way continuations and redeliveries do: each invocation resumes from
/// the saved checkpoint of `run_id`. `kill_after` cuts an invocation short (dropping it mid-flight, like a
/// crashed Lambda) after the given time; it grows each time, so the run always ends. Answers the counts and how
/// many invocations paused and were killed.
async fn run_to_completion<M: MirrorStore>(
    template: &sync::engine::Run<'_, M, DynamoStore>,
    run_id: &str,
    mut kill_after: Option<std::time::Duration>,
) -> (sync::engine::Counts, u32, u32) {
    use sync::engine::{Resume, Step};
    let (mut paused, mut killed) = (0, 0);
    loop {
        let saved = template.checkpoints.load_checkpoint(template.connection_id, template.object_type).await.unwrap();
        let resume = saved
            .filter(|(c, _)| c.run_id == run_id)
            .map(|(checkpoint, chunks)| Resume::parse(checkpoint, &chunks).expect("a readable checkpoint"));
        let run = sync::engine::Run {
            run_id,
            sites: template.sites.clone(),
            pacing: template.pacing.clone(),
            guard: template.guard.clone(),
            ..*template
        };
        let step = match kill_after {
            None => run.run(resume).await.unwrap(),
            Some(limit) => match tokio::time::timeout(limit, run.run(resume)).await {
                Ok(step) => step.unwrap(),
                Err(_) => {
                    killed += 1;
                    kill_after = Some(limit * 2);
                    continue;
                }
            },
        };
        match step {
            Step::Paused(_) => paused += 1,
            Step::Done(counts, _) => return (counts, paused, killed),
            Step::Waiting { .. } => panic!("no budget to wait for here"),
        }
    }
}

#[tokio::test]
async fn runs_paused_after_every_page_or_killed_anywhere_end_with_the_exact_mirror() {
    let size = OrgSize { users: 1100, groups: 60, projects: 210, spaces: 520, sites: 2 };
    let base = harness::spawn_sandbox(SandboxConfig { org: size, ..SandboxConfig::default() }).await.unwrap();
    let token = AccessToken::new(harness::sandbox_token(&base, None).await.unwrap());
    let stack = Stack::from_env();
    let mirror = store::DynamoMirror::new(stack.dynamodb(), &stack.mirror_table);
    let checkpoints = store();
    let directory = AtlassianClient::new(
        atlassian::http_client().unwrap(),
        Endpoints { auth_base: base.clone(), api_base: base.clone() },
        ClientCredentials { client_id: ClientId::new("x".into()), client_secret: ClientSecret::new("x".into()) },
        Url::parse(CALLBACK).unwrap(),
    );
    let connection_id = unique("con");
    let sites: Vec<String> = (0..size.sites).map(tests::sandbox::site_id).collect();
    let source = sync::sources::OauthSource::new(&directory, &sync::budget::Unlimited, &token, Default::default());
    let template = |object_type, pacing| sync::engine::Run {
        source: &source,
        mirror: &mirror,
        checkpoints: &checkpoints,
        gate: &sync::engine::AlwaysOpen,
        connection_id: &connection_id,
        run_id: "",
        sites: sites.clone(),
        object_type,
        now: OffsetDateTime::now_utc(),
        pacing,
        guard: sync::engine::DeletionGuard::default(),
    };
    let every_page = sync::engine::Pacing { max_pages: 1, ..sync::engine::Pacing::default() };
    let always_save =
        sync::engine::Pacing { checkpoint_every: std::time::Duration::ZERO, ..sync::engine::Pacing::default() };

    // A pause after every page: one invocation a page, and the counts still add up exactly.
    let org = harness::sandbox_org(&base).await.unwrap();
    for object_type in ObjectType::ALL {
        let (counts, paused, _) =
            run_to_completion(&template(object_type, every_page.clone()), &unique("run"), None).await;
        let expected = expected(&org, object_type, &sites);
        assert!(paused >= 3, "{object_type:?} paused {paused} times");
        assert_eq!(counts.created as usize, expected.len(), "{object_type:?}: nothing created twice");
        assert_eq!(mirrored(&mirror, &Scope::new(&connection_id, object_type)).await, (expected, 0));
        let saved = checkpoints.load_checkpoint(&connection_id, object_type).await.unwrap();
        assert!(saved.is_none(), "a finished run leaves no checkpoint");
    }

    // The org changes, then every run is killed at growing points (checkpointing every page) until it ends.
    harness::client().post(base.join("/__sandbox/org/mutate").unwrap()).send().await.unwrap();
    let org = harness::sandbox_org(&base).await.unwrap();
    for object_type in ObjectType::ALL {
        let kill = Some(std::time::Duration::from_millis(3));
        let (counts, _, killed) =
            run_to_completion(&template(object_type, always_save.clone()), &unique("run"), kill).await;
        assert!(killed >= 2, "{object_type:?} was killed {killed} times");
        let (live, deleted) = mirrored(&mirror, &Scope::new(&connection_id, object_type)).await;
        assert_eq!(live, expected(&org, object_type, &sites), "{object_type:?}: exact after the kills");
        assert!(deleted >= 1 && counts.pages > 0, "{object_type:?}: removals are marked");
    }
}
