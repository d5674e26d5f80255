//! Groups: every group with all its members. A site's group pages feed one member pipeline (a few groups'
//! members fetched at once, applied in order). A group too big to read with the others (a "giant": every user is
//! in one) is only noted there and read after the site's listing, on its own, a segment at a time: a run can
//! pause between segments (its turn is spent, the quota is dry, the invocation ends), so a group of any size
//! finishes however many windows of the quota it costs. When a run pauses inside a giant, the members read so
//! far are staged beside the mirror (parts of [`SEGMENT_MEMBERS`] ids, keyed by the run) and the checkpoint says
//! where to go on; a giant read within one invocation stages nothing, so an unchanged re-sync writes nothing.

use super::{Credential, Flow, MEMBER_CONCURRENCY, Run, State, SyncError};
use crate::access::TokenSource;
use crate::budget::Budget;
use crate::records;
use atlassian::DirectoryApi;
use atlassian::admin::{AdminApi, AdminGroup, AdminKey};
use atlassian::rest::{JiraGroup, JiraUser, Page};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use store::CheckpointStore;
use store::mirror::{MemberChunk, MirrorStore, Scope, fingerprint};

/// A group with more members than this is a giant: read after the site's listing, a segment at a time. (A
/// smaller group's points are drawn whole before its pages: about 2,000 at most, a small share of any pool.)
pub const GIANT_MEMBERS: usize = 1_000;

/// About how many members a giant's segment reads, and the most a staged part holds (2,500 ids are ~110 KB: well
/// inside a DynamoDB item).
pub const SEGMENT_MEMBERS: usize = 2_500;

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

/// A segment of a giant's members.
struct Segment {
    ids: Vec<String>,
    /// The offset after the last member read, and whether that was the last.
    next: usize,
    last: bool,
    pages: u64,
    points: u64,
}

/// Takes the pages read at `at` and after (each with the offset it was asked at) for as far as they follow on
/// from each other: a page shorter than `served` that is not the last means the list moved (or Jira served
/// less), so what comes after it is read again from where it ended. Answers the ids, the next offset and whether
/// the last page was among them.
fn contiguous(mut pages: Vec<(usize, Page<JiraUser>)>, at: usize, served: usize) -> (Vec<String>, usize, bool) {
    pages.sort_by_key(|(start, _)| *start);
    let (mut ids, mut next) = (Vec::new(), at);
    for (start, page) in pages {
        if start != next {
            break;
        }
        next += page.values.len();
        let (last, short) = (page.is_last() || page.values.is_empty(), page.values.len() < served);
        ids.extend(page.values.into_iter().map(|u| u.account_id));
        if last {
            return (ids, next, true);
        }
        if short {
            break;
        }
    }
    (ids, next, false)
}

impl<D: DirectoryApi + AdminApi, M: MirrorStore, B: Budget, C: CheckpointStore> Run<'_, D, M, B, C> {
    /// A site's groups: the listing (unless an earlier invocation finished it), then its giants one by one.
    pub(super) async fn groups(&self, scope: &Scope, state: &mut State) -> Result<Flow, SyncError> {
        let tokens = match self.credential {
            Credential::Oauth(tokens) => tokens,
            Credential::Admin { key, org_id, .. } => return self.admin_groups(scope, state, key, org_id).await,
        };
        let cloud_id = state.progress.sites[state.progress.site].clone();
        if !state.progress.listed {
            if let Flow::Paused = self.group_listing(scope, state, tokens, &cloud_id).await? {
                return Ok(Flow::Paused);
            }
            state.progress.listed = true;
        }
        while !state.progress.giants.is_empty() {
            if let Some(paused) = self.giant(scope, state, tokens, &cloud_id).await? {
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
        tokens: &dyn TokenSource,
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
                let token = self.token(tokens).await?;
                let call = self.directory.groups_page(&token, cloud_id, start);
                let estimate = 1 + 2 * atlassian::rest::GROUPS_PAGE as u64;
                let (page, points) =
                    self.metered(Some(cloud_id), estimate, call, |p| 1 + 2 * p.values.len() as u64).await?;
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
                    let read = self.members(tokens, cloud_id, &group.group_id).await;
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

    /// Every member of a group, with the pages and points it took; or, for a giant, only that it is one.
    async fn members(&self, tokens: &dyn TokenSource, cloud_id: &str, group_id: &str) -> Result<Read, SyncError> {
        let (first, mut points) = self.member_page(tokens, cloud_id, group_id, 0).await?;
        let (served, total, mut pages) = (first.values.len(), first.total, 1);
        let mut last = first.is_last();
        let mut members = first.values;
        // A big group (every user is in one): Jira says how many members there are, so the rest of its pages are
        // read a few at a time, at the page size it served. Any surprise (a short page, a list that changed under
        // us) falls back to reading on in order from the first page.
        if let Some(total) = total.filter(|_| !last && served > 0) {
            if total > GIANT_MEMBERS {
                return Ok(Read::Giant(pages, points));
            }
            // The whole group's points are drawn before its pages are read: a wait for the quota comes before the
            // first of them, not halfway, which would lose the pages read.
            let rest_cost = (total.saturating_sub(served)).div_ceil(served) as u64 * (1 + 2 * served as u64);
            if rest_cost > 4 * (1 + 2 * atlassian::rest::MEMBERS_PAGE as u64) {
                // Drawn, then handed back to this worker's balance for the pages to set aside one by one (in the
                // window they start in: a page that starts after the reset draws from the next window's pool).
                let drawn = self.budget.before(cloud_id, rest_cost, self.latest_sleep()).await?;
                self.budget.spent(cloud_id, drawn, 0);
            }
            let rest: Vec<_> = stream::iter((served..total).step_by(served))
                .map(|at| async move { self.member_page(tokens, cloud_id, group_id, at).await.map(|p| (at, p)) })
                .buffer_unordered(MEMBER_CONCURRENCY)
                .try_collect()
                .await?;
            let mut read = Vec::with_capacity(total / served);
            for (at, (page, cost)) in rest {
                (pages, points) = (pages + 1, points + cost);
                read.push((at, page));
            }
            read.sort_by_key(|(at, _)| *at);
            let whole = read.iter().enumerate().all(|(i, (_, page))| {
                if i + 1 == read.len() { page.is_last() } else { page.values.len() == served && !page.is_last() }
            });
            if whole {
                members.extend(read.into_iter().flat_map(|(_, page)| page.values));
                return Ok(Read::Members(members, pages, points));
            }
        }
        while !last {
            let (page, cost) = self.member_page(tokens, cloud_id, group_id, members.len()).await?;
            (pages, points, last) = (pages + 1, points + cost, page.is_last());
            members.extend(page.values);
        }
        Ok(Read::Members(members, pages, points))
    }

    /// One page of a group's members, and its points.
    async fn member_page(
        &self,
        tokens: &dyn TokenSource,
        cloud_id: &str,
        group_id: &str,
        start: usize,
    ) -> Result<(Page<JiraUser>, u64), SyncError> {
        let token = self.token(tokens).await?;
        let call = self.directory.group_members_page(&token, cloud_id, group_id, start);
        let estimate = 1 + 2 * atlassian::rest::MEMBERS_PAGE as u64;
        self.metered(Some(cloud_id), estimate, call, |p| 1 + 2 * p.values.len() as u64).await
    }

    /// Reads the site's first giant on from where the run is in it, a segment at a time, and applies it; or
    /// pauses inside it (the turn is spent, the invocation ends, the quota is dry, a read failed), staging what
    /// this invocation read so that the run resumes after it.
    async fn giant(
        &self,
        scope: &Scope,
        state: &mut State,
        tokens: &dyn TokenSource,
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
                let (segment, error) = self.segment(tokens, cloud_id, &giant.id, giant.at).await;
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

    /// About [`SEGMENT_MEMBERS`] members of a group from `at`: one page to learn the page size Jira serves and how
    /// many there are now, then the segment's other pages a few at a time. A failure (the quota ran dry, say) keeps
    /// the pages that follow on from `at`, so that even a segment costing more than a window's points moves the
    /// run on (the points are drawn page by page, not for the whole segment, for the same reason).
    async fn segment(
        &self,
        tokens: &dyn TokenSource,
        cloud_id: &str,
        group_id: &str,
        at: usize,
    ) -> (Segment, Option<SyncError>) {
        let (first, mut points) = match self.member_page(tokens, cloud_id, group_id, at).await {
            Ok(first) => first,
            Err(error) => {
                let nothing = Segment { ids: Vec::new(), next: at, last: false, pages: 0, points: 0 };
                return (nothing, Some(error));
            }
        };
        let served = first.values.len();
        let (mut pages, mut error) = (1, None);
        let (end, last) = (first.total.unwrap_or(0).min(at + SEGMENT_MEMBERS), first.is_last() || served == 0);
        let mut read = vec![(at, first)];
        if !last && end > at + served {
            let starts: Vec<usize> = (at + served..end).step_by(served).collect();
            // After a failure no page starts, and the pages under way finish: they are paid for, and those before
            // the failed one are kept.
            let failed = &AtomicBool::new(false);
            let mut rest = std::pin::pin!(
                stream::iter(starts)
                    .map(|start| async move {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(None);
                        }
                        self.member_page(tokens, cloud_id, group_id, start).await.map(|p| Some((start, p)))
                    })
                    .buffer_unordered(MEMBER_CONCURRENCY)
            );
            while let Some(page) = rest.next().await {
                match page {
                    Ok(Some((start, (page, cost)))) => {
                        (pages, points) = (pages + 1, points + cost);
                        read.push((start, page));
                    }
                    Ok(None) => {}
                    Err(failure) => {
                        failed.store(true, Ordering::Relaxed);
                        error.get_or_insert(failure);
                    }
                }
            }
        }
        let (ids, next, last) = contiguous(read, at, served);
        (Segment { ids, next, last, pages, points }, error)
    }

    /// The org's groups from the Admin API, a page (up to 100) at a time, each with its members (`users` filtered
    /// by `groupIds`), `MEMBER_CONCURRENCY` groups at once.
    async fn admin_groups(
        &self,
        scope: &Scope,
        state: &mut State,
        key: &AdminKey,
        org_id: &str,
    ) -> Result<Flow, SyncError> {
        loop {
            let page = self.directory.groups_v2(key, org_id, state.progress.cursor.as_deref()).await?;
            let with_members: Vec<(AdminGroup, Vec<String>, u64)> =
                stream::iter(page.data.into_iter().map(|group| async move {
                    let (members, pages) = self.admin_members(key, org_id, &group.id).await?;
                    Ok::<_, SyncError>((group, members, pages))
                }))
                .buffered(MEMBER_CONCURRENCY)
                .try_collect()
                .await?;
            let pages = 1 + with_members.iter().map(|(_, _, pages)| pages).sum::<u64>();
            let records = with_members.iter().map(|(group, members, _)| records::admin_group(group, members)).collect();
            self.apply(scope, state, records, (pages, 0)).await?;
            let last = page.next.is_none();
            match page.next {
                Some(next) => state.progress.cursor = Some(next),
                None => state.progress.next_site(),
            }
            if let Some(paused) = self.after_page(state).await? {
                return Ok(paused);
            }
            if last {
                return Ok(Flow::SiteDone);
            }
        }
    }

    /// A group's members' account ids, and the pages it took.
    async fn admin_members(
        &self,
        key: &AdminKey,
        org_id: &str,
        group_id: &str,
    ) -> Result<(Vec<String>, u64), SyncError> {
        let (mut members, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
        loop {
            let page = self.directory.users_v2(key, org_id, Some(group_id), cursor.as_deref()).await?;
            pages += 1;
            members.extend(page.data.into_iter().map(|u| u.account_id));
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok((members, pages)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(start: usize, len: usize, total: usize) -> (usize, Page<JiraUser>) {
        let values: Vec<serde_json::Value> =
            (start..start + len).map(|i| serde_json::json!({"accountId": format!("u{i}")})).collect();
        let page =
            serde_json::json!({"startAt": start, "total": total, "isLast": start + len >= total, "values": values});
        (start, serde_json::from_value(page).unwrap())
    }

    #[test]
    fn a_segment_is_taken_as_far_as_its_pages_follow_on() {
        // Whole pages, read out of order, up to the last.
        let (ids, next, last) = contiguous(vec![page(150, 50, 220), page(100, 50, 220), page(200, 20, 220)], 100, 50);
        assert_eq!((ids.len(), next, last), (120, 220, true));
        assert_eq!(ids.first().map(String::as_str), Some("u100"));
        // Not the last yet.
        let (ids, next, last) = contiguous(vec![page(0, 50, 500), page(50, 50, 500)], 0, 50);
        assert_eq!((ids.len(), next, last), (100, 100, false));
        // A short page mid-list: what follows it is read again from where it ended, not skipped or taken twice.
        let (ids, next, last) = contiguous(vec![page(0, 50, 500), page(50, 30, 500), page(100, 50, 500)], 0, 50);
        assert_eq!((ids.len(), next, last), (80, 80, false));
        // A page missing (its fetch failed over to a later one): stop before the gap.
        let (ids, next, _) = contiguous(vec![page(0, 50, 500), page(100, 50, 500)], 0, 50);
        assert_eq!((ids.len(), next), (50, 50));
        // An empty page ends the list whatever it says.
        let empty: Page<JiraUser> = serde_json::from_value(serde_json::json!({"isLast": false, "values": []})).unwrap();
        assert_eq!(contiguous(vec![(40, empty)], 40, 50), (Vec::new(), 40, true));
    }
}
