//! Reading with an OAuth grant: every type through Atlassian's API gateway, per cloud id, with an access token
//! that lasts what the invocation may still read, and every request under the app's points quota: a request
//! waits for a balance in its site's pool that covers what it will likely cost, and is charged what it did cost
//! (1 a request, +2 a user or group, +1 a project or space, as Atlassian counts).

use super::{
    Fetched, GIANT_MEMBERS, MEMBER_CONCURRENCY, MemberSource, Members, Next, SEGMENT_MEMBERS, Segment, Source,
};
use crate::access::TokenSource;
use crate::budget::Budget;
use crate::engine::{DEFAULT_RATE_LIMIT_WAIT, Pacing, SyncError};
use crate::records;
use atlassian::rest::{JiraProject, JiraUser, Page, SpacesPage};
use atlassian::{AccessToken, ApiError, DirectoryApi};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use store::mirror::ObjectType;
use time::OffsetDateTime;

/// What a users page is budgeted for before the run has seen one: Jira serves 100 a page whatever it is asked.
const USERS_SERVED_GUESS: u64 = 100;

pub struct OauthSource<'a, D, B> {
    directory: &'a D,
    /// The app-wide points budget every request draws from.
    budget: &'a B,
    tokens: &'a dyn TokenSource,
    /// The invocation's pacing: how long a token must last, and how late a wait for the quota may end.
    pacing: Pacing,
    /// The users page size Jira actually serves, learned as pages come, so a page's budget is what it will cost.
    served: AtomicU64,
}

impl<'a, D: DirectoryApi, B: Budget> OauthSource<'a, D, B> {
    pub fn new(directory: &'a D, budget: &'a B, tokens: &'a dyn TokenSource, pacing: Pacing) -> Self {
        Self { directory, budget, tokens, pacing, served: AtomicU64::new(USERS_SERVED_GUESS) }
    }

    /// An access token that lasts what this invocation may still read.
    async fn token(&self) -> Result<AccessToken, SyncError> {
        self.tokens.token(self.pacing.token_horizon()).await
    }

    /// The latest a wait for the quota may last inside this invocation: past it, Lambda would cut the run short.
    fn latest_sleep(&self) -> Option<Instant> {
        let margin = self.pacing.margin.min(Duration::from_secs(30));
        self.pacing.deadline.and_then(|deadline| deadline.checked_sub(margin))
    }

    /// One request under the points quota: waits for a balance in `site`'s pool that covers `estimate`, makes the
    /// call, charges what it cost; answers the answer and its points. A quota 429 blocks the pool it names for
    /// every worker.
    async fn metered<T>(
        &self,
        site: &str,
        estimate: u64,
        call: impl Future<Output = Result<T, ApiError>>,
        points: impl FnOnce(&T) -> u64,
    ) -> Result<(T, u64), SyncError> {
        let reserved = self.budget.before(site, estimate, self.latest_sleep()).await?;
        let answer = match call.await {
            Ok(answer) => answer,
            Err(error) => {
                self.budget.spent(site, reserved, 0);
                if let ApiError::RateLimited { retry_after, reason: Some(reason) } = &error
                    && error.is_quota_exhausted()
                {
                    let until = OffsetDateTime::now_utc() + retry_after.unwrap_or(DEFAULT_RATE_LIMIT_WAIT);
                    self.budget.blocked(site, reason, until).await;
                }
                return Err(error.into());
            }
        };
        let cost = points(&answer);
        self.budget.spent(site, reserved, cost);
        Ok((answer, cost))
    }

    async fn read(
        &self,
        object_type: ObjectType,
        cloud: &str,
        offset: usize,
        cursor: Option<&str>,
    ) -> Result<Fetched, SyncError> {
        let token = self.token().await?;
        let fetched = |records, next, points| Fetched { records, next, pages: 1, points };
        match object_type {
            ObjectType::Users => {
                let estimate = 1 + 2 * self.served.load(Ordering::Relaxed);
                let (from, anchor) = super::overlap(offset, cursor);
                let call = self.directory.users_page(&token, cloud, from);
                let (page, points) = self.metered(cloud, estimate, call, |p| 1 + 2 * p.len() as u64).await?;
                self.served.fetch_max(page.len() as u64, Ordering::Relaxed);
                // A bare array: only an empty page ends it, and the next page starts after what came back (Jira
                // serves 100 users a page whatever `maxResults` asks, and may serve fewer mid-list).
                let (users, next) = super::settle(page, from, anchor, false, |u| u.account_id.as_str());
                Ok(fetched(users.iter().map(records::user).collect(), next, points))
            }
            ObjectType::Projects => {
                let estimate = 1 + atlassian::rest::PROJECTS_PAGE as u64;
                let (from, anchor) = super::overlap(offset, cursor);
                let call = self.directory.projects_page(&token, cloud, from);
                let (page, points) =
                    self.metered(cloud, estimate, call, |p: &Page<JiraProject>| 1 + p.values.len() as u64).await?;
                let last = page.is_last();
                let (projects, next) = super::settle(page.values, from, anchor, last, |p| p.id.as_str());
                Ok(fetched(projects.iter().map(|p| records::project(cloud, p)).collect(), next, points))
            }
            ObjectType::Spaces => {
                let estimate = 1 + atlassian::rest::SPACES_PAGE as u64;
                let call = self.directory.spaces_page(&token, cloud, cursor);
                let (page, points) =
                    self.metered(cloud, estimate, call, |p: &SpacesPage| 1 + p.results.len() as u64).await?;
                let records = page.results.iter().map(|s| records::space(cloud, s)).collect();
                Ok(fetched(records, page.next.map_or(Next::Last, Next::Cursor), points))
            }
            // Jira lists groups without their members: the engine reads them through `members()`.
            ObjectType::Groups => Err(SyncError::NotAvailable),
        }
    }

    /// Every member of a group, with the pages and points it took; or, for a giant, only that it is one; or that
    /// it is gone.
    async fn read_members(&self, cloud_id: &str, group_id: &str) -> Result<Members, SyncError> {
        match self.members_of(cloud_id, group_id).await {
            Err(SyncError::Atlassian(ApiError::NotFound)) => Ok(Members::Gone),
            other => other,
        }
    }

    async fn members_of(&self, cloud_id: &str, group_id: &str) -> Result<Members, SyncError> {
        let (first, mut points) = self.member_page(cloud_id, group_id, 0).await?;
        let (served, total, mut pages) = (first.values.len(), first.total, 1);
        let mut last = first.is_last();
        let mut members = first.values;
        // A big group (every user is in one): Jira says how many members there are, so the rest of its pages are
        // read a few at a time, at the page size it served. Any surprise (a short page, a list that changed under
        // us) falls back to reading on in order from the first page.
        if let Some(total) = total.filter(|_| !last && served > 0) {
            if total > GIANT_MEMBERS {
                return Ok(Members::Giant(pages, points));
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
                .map(|at| async move { self.member_page(cloud_id, group_id, at).await.map(|p| (at, p)) })
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
                return Ok(Members::All(members, pages, points));
            }
        }
        while !last {
            let (page, cost) = self.member_page(cloud_id, group_id, members.len()).await?;
            (pages, points, last) = (pages + 1, points + cost, page.is_last());
            members.extend(page.values);
        }
        Ok(Members::All(members, pages, points))
    }

    /// One page of a group's members, and its points.
    async fn member_page(
        &self,
        cloud_id: &str,
        group_id: &str,
        start: usize,
    ) -> Result<(Page<JiraUser>, u64), SyncError> {
        let token = self.token().await?;
        let call = self.directory.group_members_page(&token, cloud_id, group_id, start);
        let estimate = 1 + 2 * atlassian::rest::MEMBERS_PAGE as u64;
        self.metered(cloud_id, estimate, call, |p| 1 + 2 * p.values.len() as u64).await
    }

    /// About [`SEGMENT_MEMBERS`] members of a group from `at`: one page to learn the page size Jira serves and how
    /// many there are now, then the segment's other pages a few at a time. A failure (the quota ran dry, say) keeps
    /// the pages that follow on from `at`, so that even a segment costing more than a window's points moves the
    /// run on (the points are drawn page by page, not for the whole segment, for the same reason).
    async fn read_segment(&self, cloud_id: &str, group_id: &str, at: usize) -> (Segment, Option<SyncError>) {
        let (first, mut points) = match self.member_page(cloud_id, group_id, at).await {
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
                        self.member_page(cloud_id, group_id, start).await.map(|p| Some((start, p)))
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
}

impl<D: DirectoryApi, B: Budget> Source for OauthSource<'_, D, B> {
    fn page<'a>(
        &'a self,
        object_type: ObjectType,
        site: &'a str,
        offset: usize,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, SyncError>> {
        Box::pin(self.read(object_type, site, offset, cursor))
    }

    fn members(&self) -> Option<&dyn MemberSource> {
        Some(self)
    }

    fn user_sites(&self, seen_on: Vec<String>) -> Value {
        Value::from(seen_on)
    }
}

impl<D: DirectoryApi, B: Budget> MemberSource for OauthSource<'_, D, B> {
    fn groups_page<'a>(
        &'a self,
        site: &'a str,
        start: usize,
        anchor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<super::GroupsPage, SyncError>> {
        Box::pin(async move {
            let token = self.token().await?;
            let (from, anchor) = super::overlap(start, anchor);
            let call = self.directory.groups_page(&token, site, from);
            let estimate = 1 + 2 * atlassian::rest::GROUPS_PAGE as u64;
            let (page, points) = self.metered(site, estimate, call, |p| 1 + 2 * p.values.len() as u64).await?;
            let last = page.is_last();
            let (groups, next) = super::settle(page.values, from, anchor, last, |g| g.group_id.as_str());
            Ok((groups, next, points))
        })
    }

    fn group_members<'a>(&'a self, site: &'a str, group_id: &'a str) -> BoxFuture<'a, Result<Members, SyncError>> {
        Box::pin(self.read_members(site, group_id))
    }

    fn segment<'a>(
        &'a self,
        site: &'a str,
        group_id: &'a str,
        at: usize,
    ) -> BoxFuture<'a, (Segment, Option<SyncError>)> {
        Box::pin(self.read_segment(site, group_id, at))
    }
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
