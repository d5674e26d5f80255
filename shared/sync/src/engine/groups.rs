//! Groups: every group with all its members. A site's group pages feed one member pipeline (a few groups'
//! members fetched at once, applied in order). A group too big to read with the others (a "giant": every user is
//! in one) is only noted there and read after the site's listing, on its own, a segment at a time: a run can
//! pause between segments (its turn is spent, the quota is dry, the invocation ends), so a group of any size
//! finishes however many windows of the quota it costs. When a run pauses inside a giant, the members read so
//! far are staged beside the mirror (parts of [`SEGMENT_MEMBERS`] ids, keyed by the run) and the checkpoint says
//! where to go on; a giant read within one invocation stages nothing, so an unchanged re-sync writes nothing.

use super::{Flow, Run, State, SyncError};
use crate::records;
use crate::sources::{MEMBER_CONCURRENCY, MemberSource, Members, Next, SEGMENT_MEMBERS};
use atlassian::ApiError;
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

/// How a pass over a site's group listing ended.
enum Listing {
    Done,
    Paused,
    /// The listing moved under the run (see [`crate::sources::overlap`]), and the offset after the page that showed it.
    Moved(usize),
}

/// What a group's member fetch came back with.
enum Read {
    /// Its members, and the pages and points they took.
    Members(Vec<JiraUser>, u64, u64),
    /// Too many members to read with the others (the pages and points of finding out): read after the listing.
    Giant(u64, u64),
    /// An earlier site listed it: its members are in the mirror already.
    Known,
    /// This site listed it already in this run (the listing moved and is read again): counted once already.
    Again,
    /// Deleted since the listing named it.
    Gone,
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
            loop {
                match self.group_listing(scope, state, source, &cloud_id).await? {
                    Listing::Paused => return Ok(Flow::Paused),
                    Listing::Moved(after) => {
                        tracing::warn!(object_type = "groups", site = cloud_id, "the listing moved under the run");
                        state.progress.moved(after);
                    }
                    Listing::Done => break,
                }
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
    /// results are applied in page-sized chunks. Giants are noted for later. Like every offset listing, each page
    /// after the first starts at the last group read (the checkpoint's anchor): one that does not has moved under
    /// the run, which ends this pass with what it read so far.
    async fn group_listing(
        &self,
        scope: &Scope,
        state: &mut State,
        source: &dyn MemberSource,
        cloud_id: &str,
    ) -> Result<Listing, SyncError> {
        let group_pages = AtomicU64::new(0);
        let group_points = AtomicU64::new(0);
        // Set when this invocation is about to pause: no new group page or member fetch starts, and the fetches
        // already under way finish and are applied, rather than being paid for and read again after the pause.
        let stopping = &AtomicBool::new(false);
        // Groups are org-wide: one an earlier site listed already has its members in the mirror, and reading
        // them again would cost every one of its points again.
        let known = &state.seen.before(state.progress.site);
        // Groups this site listed before the listing moved, when it is read again.
        let again = &state.seen.at(state.progress.site);
        // Where the listing moved under the run: its page's groups are current and read all the same, and the
        // pass ends after them.
        let moved = &std::sync::Mutex::new(None::<usize>);
        let first = Some((state.progress.offset, state.progress.cursor.clone()));
        let groups = stream::try_unfold(first, |at| {
            let (group_pages, group_points) = (&group_pages, &group_points);
            async move {
                let Some((start, anchor)) = at.filter(|_| !stopping.load(Ordering::Relaxed)) else {
                    return Ok::<_, SyncError>(None);
                };
                let (page, next, points) = source.groups_page(cloud_id, start, anchor.as_deref()).await?;
                group_pages.fetch_add(1, Ordering::Relaxed);
                group_points.fetch_add(points, Ordering::Relaxed);
                let next = match next {
                    Next::After(start, anchor) => Some((start, Some(anchor))),
                    Next::Offset(start) => Some((start, None)),
                    Next::Moved(after) => {
                        *moved.lock().unwrap_or_else(|p| p.into_inner()) = Some(after);
                        None
                    }
                    Next::Last | Next::Cursor(_) => None,
                };
                Ok(Some((stream::iter(page.into_iter().map(Ok::<_, SyncError>)), next)))
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
                    let print = fingerprint(&group.group_id);
                    if again.contains(&print) {
                        return (index, Ok((group, Read::Again)));
                    }
                    if known.contains(&print) {
                        return (index, Ok((group, Read::Known)));
                    }
                    let read = source.group_members(cloud_id, &group.group_id).await.map(|members| match members {
                        Members::All(members, pages, points) => Read::Members(members, pages, points),
                        Members::Giant(pages, points) => Read::Giant(pages, points),
                        Members::Gone => Read::Gone,
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
                        Read::Known | Read::Again | Read::Gone | Read::Dropped => 0,
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
            let (mut records, mut again) = (Vec::with_capacity(done.len()), Vec::new());
            let (mut pages, mut points) = (0, 0);
            let anchor = done.last().map(|(group, _)| group.group_id.clone());
            let mut applied = 0;
            for (group, read) in done.drain(..) {
                applied += 1;
                match read {
                    Read::Members(members, member_pages, member_points) => {
                        pages += member_pages;
                        points += member_points;
                        records.push(records::group(&group, &members));
                    }
                    Read::Giant(probe_pages, probe_points) => {
                        pages += probe_pages;
                        points += probe_points;
                        // (Noted once: a listing read again after it moved meets its giants again.)
                        if !state.progress.giants.iter().any(|giant| giant.id == group.group_id) {
                            state.progress.giants.push(Giant::new(&group));
                        }
                    }
                    Read::Known => again.push(group.group_id),
                    Read::Again | Read::Gone => {}
                    Read::Dropped => applied -= 1,
                }
            }
            // The group pages read so far are charged with the groups that follow them.
            pages += group_pages.swap(0, Ordering::Relaxed);
            points += group_points.swap(0, Ordering::Relaxed);
            self.apply(scope, state, records, (pages, points)).await?;
            for key in &again {
                state.seen.insert(state.progress.site, key);
            }
            state.progress.counts.unchanged += again.len() as u64;
            state.progress.offset += applied;
            state.progress.cursor = anchor;
            if self.after_page(state).await?.is_some() {
                return Ok(Listing::Paused);
            }
            if stopping.load(Ordering::Relaxed) {
                // (Only a pause stops the fetches; should the pacing have changed its mind, pause all the same.)
                self.save(state).await?;
                return Ok(Listing::Paused);
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
        Ok(match moved.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(after) => Listing::Moved(after),
            None => Listing::Done,
        })
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
                if matches!(error, Some(SyncError::Atlassian(ApiError::NotFound))) {
                    // Deleted while the run read it: not seen, so the closing pass deletes it.
                    tracing::info!(group = giant.id, "a group was deleted while the run read its members");
                    state.progress.giants.remove(0);
                    self.drop_staged(scope, state, &key, giant.staged).await?;
                    return Ok(None);
                }
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
        self.drop_staged(scope, state, &key, giant.staged).await?;
        self.after_page(state).await
    }

    /// Removes a giant's `staged` parts, once the checkpoint has moved past the group (so that a crash between the
    /// two leaves only parts nobody reads).
    async fn drop_staged(&self, scope: &Scope, state: &mut State, key: &str, staged: u32) -> Result<(), SyncError> {
        if staged > 0 {
            self.save(state).await?;
            let parts: Vec<u32> = (0..staged).collect();
            self.mirror.write_members(scope, key, &[], &parts).await?;
        }
        Ok(())
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
