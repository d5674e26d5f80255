//! Groups: every group with all its members. A site's group pages feed one member pipeline (a few groups'
//! members fetched at once, applied in order). A group too big to read with the others (a "giant": every user is
//! in one) is only noted there and read after the site's listing, on its own, a segment at a time: a run can
//! pause between segments (its turn is spent, the quota is dry, the invocation ends), so a group of any size
//! finishes however many windows of the quota it costs. When a run pauses inside a giant, the members read so
//! far are staged beside the mirror (parts of [`SEGMENT_MEMBERS`] ids, keyed by the run) and the checkpoint says
//! where to go on; a giant read within one invocation stages nothing, so an unchanged re-sync writes nothing.

use super::{Flow, Run, State, SyncError};
use crate::records;
use crate::sources::{MEMBER_CONCURRENCY, MemberSource, Members, SEGMENT_MEMBERS};
use atlassian::rest::{JiraGroup, JiraUser};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use store::CheckpointStore;
use store::mirror::{MemberChunk, MirrorStore, Scope, fingerprint};

/// A giant group of the site being read, as the checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Giant {
    id: String,
    name: String,
    /// The next member offset to read.
    #[serde(default)]
    at: usize,
    /// The parts staged beside the mirror (numbered from 0) and how many ids they hold.
    #[serde(default)]
    staged: u32,
    #[serde(default)]
    staged_members: usize,
}

impl Giant {
    fn new(group: &JiraGroup) -> Self {
        Self { id: group.group_id.clone(), name: group.name.clone(), at: 0, staged: 0, staged_members: 0 }
    }

    /// Where this run stages the group's members: another run (an abandoned one) never reads them.
    fn staging_key(&self, run_id: &str) -> String {
        format!("staged#{run_id}#{}", self.id)
    }
}

/// What a group's member fetch came back with.
enum Read {
    /// Its members, and the pages and points they took.
    Members(Vec<JiraUser>, u64, u64),
    /// Too many members to read with the others (the pages and points of finding out): read after the listing.
    Giant(u64, u64),
    /// An earlier site listed it: its members are in the mirror already.
    Known,
    /// Not fetched: the invocation was pausing.
    Dropped,
}

impl<M: MirrorStore, C: CheckpointStore> Run<'_, M, C> {
    /// A site's groups: the listing (unless an earlier invocation finished it), then its giants one by one.
    pub(super) async fn groups(
        &self,
        scope: &Scope,
        state: &mut State,
        source: &dyn MemberSource,
    ) -> Result<Flow, SyncError> {
        let cloud_id = state.progress.sites[state.progress.site].clone();
        if !state.progress.listed {
            if let Flow::Paused = self.group_listing(scope, state, source, &cloud_id).await? {
                return Ok(Flow::Paused);
            }
            state.progress.listed = true;
        }
        while !state.progress.giants.is_empty() {
            if let Some(paused) = self.giant(scope, state, source, &cloud_id).await? {
                return Ok(paused);
            }
        }
        state.progress.next_site();
        Ok(Flow::SiteDone)
    }

    /// Group pages feed one member pipeline: `MEMBER_CONCURRENCY` member fetches stay in flight across page
    /// boundaries (the next page of groups is read while the last members of the previous one are), and the
    /// results are applied in page-sized chunks. Giants are noted for later.
    async fn group_listing(
        &self,
        scope: &Scope,
        state: &mut State,
        source: &dyn MemberSource,
        cloud_id: &str,
    ) -> Result<Flow, SyncError> {
        let group_pages = AtomicU64::new(0);
        let group_points = AtomicU64::new(0);
        // Set when this invocation is about to pause: no new group page or member fetch starts, and the fetches
        // already under way finish and are applied, rather than being paid for and read again after the pause.
        let stopping = &AtomicBool::new(false);
        // Groups are org-wide: one an earlier site listed already has its members in the mirror, and reading
        // them again would cost every one of its points again.
        let known = &state.seen.before(state.progress.site);
        let groups = stream::try_unfold(Some(state.progress.offset), |start| {
            let (group_pages, group_points) = (&group_pages, &group_points);
            async move {
                let Some(start) = start.filter(|_| !stopping.load(Ordering::Relaxed)) else {
                    return Ok::<_, SyncError>(None);
                };
                let (page, points) = source.groups_page(cloud_id, start).await?;
                group_pages.fetch_add(1, Ordering::Relaxed);
                group_points.fetch_add(points, Ordering::Relaxed);
                let next = (!page.is_last()).then_some(start + page.values.len());
                Ok(Some((stream::iter(page.values.into_iter().map(Ok::<_, SyncError>)), next)))
            }
        })
        .try_flatten();
        // Members are fetched `MEMBER_CONCURRENCY` groups at a time, finishing in any order, so a group whose
        // fetch waits (a burst 429's Retry-After) does not hold the others up; they are applied in order.
        let mut with_members = std::pin::pin!(
            groups
                .enumerate()
                .map(|(index, group)| async move {
                    let group = match group {
                        Ok(group) => group,
                        Err(error) => return (index, Err(error)),
                    };
                    if stopping.load(Ordering::Relaxed) {
                        return (index, Ok((group, Read::Dropped)));
                    }
                    if known.contains(&fingerprint(&group.group_id)) {
                        return (index, Ok((group, Read::Known)));
                    }
                    let read = source.group_members(cloud_id, &group.group_id).await.map(|members| match members {
                        Members::All(members, pages, points) => Read::Members(members, pages, points),
                        Members::Giant(pages, points) => Read::Giant(pages, points),
                    });
                    (index, read.map(|read| (group, read)))
                })
                .buffer_unordered(MEMBER_CONCURRENCY)
        );
        let (mut arrived, mut next_index) = (std::collections::BTreeMap::new(), 0);
        // Groups are applied in order, a page's worth at a time, and whatever is complete when a fetch fails (the
        // quota ran dry, say) is applied before the error goes up: the run resumes after the last whole group
        // instead of fetching the page's members again, which could otherwise never fit one window's points.
        let mut done: Vec<(JiraGroup, Read)> = Vec::with_capacity(atlassian::rest::GROUPS_PAGE);
        loop {
            let next = match arrived.remove(&next_index) {
                Some(result) => {
                    next_index += 1;
                    Some(result)
                }
                None => match with_members.next().await {
                    Some((index, result)) => {
                        arrived.insert(index, result);
                        continue;
                    }
                    None => None,
                },
            };
            let (error, finished) = match next {
                Some(Ok((_, Read::Dropped))) => (None, true),
                Some(Ok(group)) => {
                    done.push(group);
                    if done.len() < atlassian::rest::GROUPS_PAGE {
                        continue;
                    }
                    (None, false)
                }
                Some(Err(error)) => (Some(error), false),
                None => (None, true),
            };
            if done.is_empty() {
                if let Some(error) = error {
                    return Err(error);
                }
                if finished {
                    break;
                }
                continue;
            }
            let points_of = |done: &[(JiraGroup, Read)]| {
                (done.iter())
                    .map(|(_, read)| match read {
                        Read::Members(_, _, p) | Read::Giant(_, p) => *p,
                        Read::Known | Read::Dropped => 0,
                    })
                    .sum::<u64>()
                    + group_points.load(Ordering::Relaxed)
            };
            let spent = state.progress.counts.points - state.points_before + points_of(&done);
            if error.is_none() && !finished && self.pacing.must_pause(state.pages + 1, spent) {
                // This page ends the invocation: let the fetches under way finish and join it.
                stopping.store(true, Ordering::Relaxed);
                while let Some((index, result)) = with_members.next().await {
                    arrived.insert(index, result);
                }
                while let Some(Ok((group, read))) = arrived.remove(&next_index) {
                    if matches!(read, Read::Dropped) {
                        break;
                    }
                    next_index += 1;
                    done.push((group, read));
                }
            }
            let (mut records, mut again, mut giants) = (Vec::with_capacity(done.len()), Vec::new(), 0);
            let (mut pages, mut points) = (0, 0);
            for (group, read) in done.drain(..) {
                match read {
                    Read::Members(members, member_pages, member_points) => {
                        pages += member_pages;
                        points += member_points;
                        records.push(records::group(&group, &members));
                    }
                    Read::Giant(probe_pages, probe_points) => {
                        pages += probe_pages;
                        points += probe_points;
                        state.progress.giants.push(Giant::new(&group));
                        giants += 1;
                    }
                    Read::Known => again.push(group.group_id),
                    Read::Dropped => {}
                }
            }
            // The group pages read so far are charged with the groups that follow them.
            pages += group_pages.swap(0, Ordering::Relaxed);
            points += group_points.swap(0, Ordering::Relaxed);
            let applied = records.len() + again.len() + giants;
            self.apply(scope, state, records, (pages, points)).await?;
            for key in &again {
                state.seen.insert(state.progress.site, key);
            }
            state.progress.counts.unchanged += again.len() as u64;
            state.progress.offset += applied;
            if let Some(paused) = self.after_page(state).await? {
                return Ok(paused);
            }
            if stopping.load(Ordering::Relaxed) {
                // (Only a pause stops the fetches; should the pacing have changed its mind, pause all the same.)
                self.save(state).await?;
                return Ok(Flow::Paused);
            }
            if let Some(error) = error {
                return Err(error);
            }
            if finished {
                break;
            }
        }
        state.progress.counts.pages += group_pages.load(Ordering::Relaxed);
        state.progress.counts.points += group_points.load(Ordering::Relaxed);
        Ok(Flow::SiteDone)
    }

    /// Reads the site's first giant on from where the run is in it, a segment at a time, and applies it; or
    /// pauses inside it (the turn is spent, the invocation ends, the quota is dry, a read failed), staging what
    /// this invocation read so that the run resumes after it.
    async fn giant(
        &self,
        scope: &Scope,
        state: &mut State,
        source: &dyn MemberSource,
        cloud_id: &str,
    ) -> Result<Option<Flow>, SyncError> {
        let mut giant = state.progress.giants[0].clone();
        let key = giant.staging_key(self.run_id);
        let mut members = match self.staged(scope, &key, giant.staged_members).await? {
            Some(members) => members,
            None => {
                // What was staged is gone (a run that crashed after finishing the group): read it again.
                (giant.at, giant.staged, giant.staged_members) = (0, 0, 0);
                Vec::new()
            }
        };
        let unstaged = members.len();
        let mut segments = 0;
        loop {
            // Every invocation reads at least one segment, so a run always moves on.
            let spent = state.progress.counts.points - state.points_before;
            let stop = if segments > 0 && self.pacing.must_pause(state.pages + 1, spent) {
                None
            } else {
                let (segment, error) = source.segment(cloud_id, &giant.id, giant.at).await;
                state.progress.counts.pages += segment.pages;
                state.progress.counts.points += segment.points;
                members.extend(segment.ids);
                giant.at = segment.next;
                segments += 1;
                if segment.last {
                    break;
                }
                match error {
                    None => continue,
                    Some(error) => Some(error),
                }
            };
            if members.len() > unstaged {
                self.stage(scope, &key, &mut giant, &members[unstaged..]).await?;
            }
            state.progress.giants[0] = giant;
            return match stop {
                None => {
                    self.save(state).await?;
                    Ok(Some(Flow::Paused))
                }
                Some(error) => {
                    // The run's error path saves the checkpoint, with the staged members in it.
                    state.unsaved += 1;
                    Err(error)
                }
            };
        }
        let record = records::group_with_ids(&giant.id, &giant.name, &members);
        state.progress.giants.remove(0);
        self.apply(scope, state, vec![record], (0, 0)).await?;
        if giant.staged > 0 {
            // The checkpoint moves past the group before its staged parts go, so a crash between the two leaves
            // only parts nobody reads.
            self.save(state).await?;
            let parts: Vec<u32> = (0..giant.staged).collect();
            self.mirror.write_members(scope, &key, &[], &parts).await?;
        }
        self.after_page(state).await
    }

    /// The `count` members staged in earlier invocations; `None` if they are not all there.
    async fn staged(&self, scope: &Scope, key: &str, count: usize) -> Result<Option<Vec<String>>, SyncError> {
        let (mut ids, mut cursor) = (Vec::with_capacity(count), None::<String>);
        while ids.len() < count {
            let (page, next) = self.mirror.members(scope, key, cursor.as_deref(), SEGMENT_MEMBERS).await?;
            ids.extend(page);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        if ids.len() < count {
            return Ok(None);
        }
        // Parts past the count are a duplicate delivery's, never the checkpoint's.
        ids.truncate(count);
        Ok(Some(ids))
    }

    /// Stages `ids` as the giant's next parts.
    async fn stage(&self, scope: &Scope, key: &str, giant: &mut Giant, ids: &[String]) -> Result<(), SyncError> {
        let parts: Vec<MemberChunk> = (ids.chunks(SEGMENT_MEMBERS).zip(giant.staged..))
            .map(|(ids, bucket)| MemberChunk { bucket, ids: ids.to_vec() })
            .collect();
        self.mirror.write_members(scope, key, &parts, &[]).await?;
        giant.staged += parts.len() as u32;
        giant.staged_members += ids.len();
        Ok(())
    }
}
