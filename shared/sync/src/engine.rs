//! One complete run of one object type for one connection.
//!
//! For each site whose products cover the type, the run reads Atlassian page by page; each page is compared
//! with the stored hashes and only new or changed objects are written. Group members are fetched a few groups at a
//! time. When every site is read, one pass over the stored partition decides what is gone upstream (marked
//! `deleted`, never before a run is complete) and corrects users' `sites`. An unchanged org is read and nothing is
//! written.

use crate::budget::{Budget, BudgetError};
use crate::records::{self, Record};
use crate::seen::SeenSet;
use atlassian::rest::{JiraGroup, JiraUser};
use atlassian::{AccessToken, ApiError, DirectoryApi};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope, content_hash};
use store::{Connection, Product, StoreError};
use thiserror::Error;
use time::OffsetDateTime;

/// How many groups' members are fetched at once.
pub const MEMBER_CONCURRENCY: usize = 4;

#[derive(Debug, Error)]
pub enum SyncError {
    #[error("no site of this connection has the product this object type comes from")]
    NotAvailable,
    #[error("an Atlassian call failed")]
    Atlassian(#[from] ApiError),
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("the mirror store failed")]
    Store(#[from] StoreError),
}

pub use store::RunCounts as Counts;

/// The sites a type is read from: Jira sites for users, groups and projects; Confluence sites for spaces; never a
/// site the grant no longer reaches.
pub fn sites_for(connection: &Connection, object_type: ObjectType) -> Vec<String> {
    let product = if object_type == ObjectType::Spaces { Product::Confluence } else { Product::Jira };
    connection
        .sites
        .iter()
        .filter(|s| s.lost_at.is_none() && s.products.contains(&product))
        .map(|s| s.cloud_id.clone())
        .collect()
}

pub struct Run<'a, D, M, B> {
    pub directory: &'a D,
    pub mirror: &'a M,
    /// The app-wide points budget every request draws from.
    pub budget: &'a B,
    pub token: &'a AccessToken,
    pub connection_id: &'a str,
    pub sites: Vec<String>,
    pub object_type: ObjectType,
    pub now: OffsetDateTime,
}

impl<D: DirectoryApi, M: MirrorStore, B: Budget> Run<'_, D, M, B> {
    /// Reads every site and brings the mirror in line.
    pub async fn run(&self) -> Result<Counts, SyncError> {
        if self.sites.is_empty() {
            return Err(SyncError::NotAvailable);
        }
        let scope = Scope::new(self.connection_id, self.object_type);
        let mut seen = SeenSet::new(self.sites.len());
        let mut counts = Counts::default();
        for (site_index, cloud_id) in self.sites.iter().enumerate() {
            match self.object_type {
                ObjectType::Users => self.users(&scope, site_index, cloud_id, &mut seen, &mut counts).await?,
                ObjectType::Groups => self.groups(&scope, site_index, cloud_id, &mut seen, &mut counts).await?,
                ObjectType::Projects => self.projects(&scope, site_index, cloud_id, &mut seen, &mut counts).await?,
                ObjectType::Spaces => self.spaces(&scope, site_index, cloud_id, &mut seen, &mut counts).await?,
            }
        }
        seen.seal();
        self.close(&scope, &seen, &mut counts).await?;
        Ok(counts)
    }

    async fn users(
        &self,
        scope: &Scope,
        site: usize,
        cloud_id: &str,
        seen: &mut SeenSet,
        counts: &mut Counts,
    ) -> Result<(), SyncError> {
        let mut start = 0;
        loop {
            let (page, points) = self
                .metered(self.directory.users_page(self.token, cloud_id, start), |p| 1 + 2 * p.len() as u64)
                .await?;
            counts.pages += 1;
            counts.points += points;
            start += page.len();
            let done = page.len() < atlassian::rest::USERS_PAGE;
            let records: Vec<Record> = page.iter().map(records::user).collect();
            self.apply(scope, site, records, seen, counts).await?;
            if done {
                return Ok(());
            }
        }
    }

    /// Group pages feed one member pipeline: `MEMBER_CONCURRENCY` member fetches stay in flight across page
    /// boundaries (the next page of groups is read while the last members of the previous one are), and the
    /// results are applied in page-sized chunks.
    async fn groups(
        &self,
        scope: &Scope,
        site: usize,
        cloud_id: &str,
        seen: &mut SeenSet,
        counts: &mut Counts,
    ) -> Result<(), SyncError> {
        let group_pages = AtomicU64::new(0);
        let group_points = AtomicU64::new(0);
        let groups = stream::try_unfold(Some(0usize), |start| {
            let (group_pages, group_points) = (&group_pages, &group_points);
            async move {
                let Some(start) = start else { return Ok::<_, SyncError>(None) };
                let (page, points) = self
                    .metered(self.directory.groups_page(self.token, cloud_id, start), |p| 1 + 2 * p.values.len() as u64)
                    .await?;
                group_pages.fetch_add(1, Ordering::Relaxed);
                group_points.fetch_add(points, Ordering::Relaxed);
                let next = (!page.is_last()).then_some(start + page.values.len());
                Ok(Some((stream::iter(page.values.into_iter().map(Ok::<_, SyncError>)), next)))
            }
        })
        .try_flatten();
        let mut with_members = std::pin::pin!(
            groups
                .map_ok(|group| async move { self.members(cloud_id, &group).await.map(|members| (group, members)) })
                .try_buffered(MEMBER_CONCURRENCY)
                .try_chunks(atlassian::rest::GROUPS_PAGE)
        );
        while let Some(chunk) = with_members.next().await {
            let chunk = chunk.map_err(|e| e.1)?;
            let mut records = Vec::with_capacity(chunk.len());
            for (group, (members, pages, points)) in chunk {
                counts.pages += pages;
                counts.points += points;
                records.push(records::group(&group, &members));
            }
            self.apply(scope, site, records, seen, counts).await?;
        }
        counts.pages += group_pages.load(Ordering::Relaxed);
        counts.points += group_points.load(Ordering::Relaxed);
        Ok(())
    }

    /// Every member of a group, with the pages and points it took.
    async fn members(&self, cloud_id: &str, group: &JiraGroup) -> Result<(Vec<JiraUser>, u64, u64), SyncError> {
        let (mut members, mut pages, mut points) = (Vec::new(), 0, 0);
        loop {
            let call = self.directory.group_members_page(self.token, cloud_id, &group.group_id, members.len());
            let (page, cost) = self.metered(call, |p| 1 + 2 * p.values.len() as u64).await?;
            pages += 1;
            points += cost;
            let last = page.is_last();
            members.extend(page.values);
            if last {
                return Ok((members, pages, points));
            }
        }
    }

    async fn projects(
        &self,
        scope: &Scope,
        site: usize,
        cloud_id: &str,
        seen: &mut SeenSet,
        counts: &mut Counts,
    ) -> Result<(), SyncError> {
        let mut start = 0;
        loop {
            let (page, points) = self
                .metered(self.directory.projects_page(self.token, cloud_id, start), |p| 1 + p.values.len() as u64)
                .await?;
            counts.pages += 1;
            counts.points += points;
            start += page.values.len();
            let records = page.values.iter().map(|p| records::project(cloud_id, p)).collect();
            self.apply(scope, site, records, seen, counts).await?;
            if page.is_last() {
                return Ok(());
            }
        }
    }

    async fn spaces(
        &self,
        scope: &Scope,
        site: usize,
        cloud_id: &str,
        seen: &mut SeenSet,
        counts: &mut Counts,
    ) -> Result<(), SyncError> {
        let mut next: Option<String> = None;
        loop {
            let (page, points) = self
                .metered(self.directory.spaces_page(self.token, cloud_id, next.as_deref()), |p| {
                    1 + p.results.len() as u64
                })
                .await?;
            counts.pages += 1;
            counts.points += points;
            let records = page.results.iter().map(|s| records::space(cloud_id, s)).collect();
            self.apply(scope, site, records, seen, counts).await?;
            next = page.next;
            if next.is_none() {
                return Ok(());
            }
        }
    }

    /// One request under the points budget: waits for a balance, makes the call, charges what it cost (1 a request,
    /// +2 a user or group, +1 a project or space, as Atlassian counts); answers the page and its points.
    async fn metered<T>(
        &self,
        call: impl Future<Output = Result<T, ApiError>>,
        points: impl FnOnce(&T) -> u64,
    ) -> Result<(T, u64), SyncError> {
        self.budget.before().await?;
        let answer = call.await?;
        let cost = points(&answer);
        self.budget.spent(cost);
        Ok((answer, cost))
    }

    /// Compares a page with the mirror and writes what is new or changed.
    async fn apply(
        &self,
        scope: &Scope,
        site: usize,
        records: Vec<Record>,
        seen: &mut SeenSet,
        counts: &mut Counts,
    ) -> Result<(), SyncError> {
        let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
        let stored = self.mirror.stored(scope, &keys).await?;
        let mut writes = Vec::new();
        for record in records {
            seen.insert(site, &record.key);
            let hash = content_hash(&record.fields);
            match stored.get(&record.key) {
                Some(s) if s.hash == hash && !s.deleted => counts.unchanged += 1,
                previous => {
                    if matches!(previous, Some(s) if !s.deleted) {
                        counts.updated += 1;
                    } else {
                        counts.created += 1;
                    }
                    let mut fields = record.fields;
                    if self.object_type == ObjectType::Users {
                        // Provisional: the closing pass sets the sites every site saw it on.
                        fields.insert("sites".into(), Value::from(vec![self.sites[site].clone()]));
                    }
                    writes.push(MirrorObject {
                        key: record.key,
                        record: fields,
                        hash,
                        deleted: false,
                        synced_at: self.now,
                    });
                }
            }
        }
        if !writes.is_empty() {
            self.mirror.write(scope, &writes).await?;
        }
        Ok(())
    }

    /// After a complete read: marks what no site saw as deleted and corrects users' `sites`.
    async fn close(&self, scope: &Scope, seen: &SeenSet, counts: &mut Counts) -> Result<(), SyncError> {
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = self.mirror.list(scope, cursor.as_deref(), 1000).await?;
            let mut writes = Vec::new();
            for mut object in page {
                let on: Vec<usize> = seen.sites_of(&object.key);
                if on.is_empty() {
                    if !object.deleted {
                        object.deleted = true;
                        object.synced_at = self.now;
                        counts.deleted += 1;
                        writes.push(object);
                    }
                    continue;
                }
                if self.object_type == ObjectType::Users {
                    let sites = Value::from(on.iter().map(|&i| self.sites[i].clone()).collect::<Vec<_>>());
                    if object.record.get("sites") != Some(&sites) {
                        object.record.insert("sites".into(), sites);
                        object.synced_at = self.now;
                        writes.push(object);
                    }
                }
            }
            if !writes.is_empty() {
                self.mirror.write(scope, &writes).await?;
            }
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }
}
