//! Reading with an org admin key: users and groups from the Admin API (the org's directory, one "site" of its own,
//! `org:<id>`); projects and spaces from the site that the site's API token signs in to. Neither draws on the app's
//! points quota: the Admin API has its own rate limits, and Atlassian keeps API-token traffic on burst limits. Their
//! points are counted, not drawn.

use super::{Fetched, MEMBER_CONCURRENCY, MemberSource, Next, Source};
use crate::engine::SyncError;
use crate::records;
use atlassian::admin::{AdminApi, AdminGroup, AdminKey, AdminPage, AdminUser, SiteLogin};
use atlassian::rest::{JiraProject, Page, SpacesPage};
use atlassian::{ApiError, DirectoryApi};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
use store::mirror::ObjectType;

pub struct AdminSource<'a, D> {
    directory: &'a D,
    key: &'a AdminKey,
    org_id: &'a str,
    /// The site token's login, if the connection has one: without it, projects and spaces are not available.
    site: Option<&'a SiteLogin>,
}

impl<'a, D: DirectoryApi + AdminApi> AdminSource<'a, D> {
    pub fn new(directory: &'a D, key: &'a AdminKey, org_id: &'a str, site: Option<&'a SiteLogin>) -> Self {
        Self { directory, key, org_id, site }
    }

    async fn read(
        &self,
        object_type: ObjectType,
        site: &str,
        offset: usize,
        cursor: Option<&str>,
    ) -> Result<Fetched, SyncError> {
        let fetched = |records, next, pages, points| Fetched { records, next, pages, points };
        match object_type {
            ObjectType::Users => {
                let page = self.users(cursor).await?;
                let records = page.data.iter().map(records::admin_user).collect();
                Ok(fetched(records, page.next.map_or(Next::Last, Next::Cursor), 1, 0))
            }
            ObjectType::Groups => {
                let page = self.directory.groups_v2(self.key, self.org_id, cursor).await?;
                let with_members: Vec<(AdminGroup, Vec<String>, u64)> =
                    stream::iter(page.data.into_iter().map(|group| async move {
                        let (members, pages) = self.group_members(&group.id).await?;
                        Ok::<_, SyncError>((group, members, pages))
                    }))
                    .buffered(MEMBER_CONCURRENCY)
                    .try_collect()
                    .await?;
                let pages = 1 + with_members.iter().map(|(_, _, pages)| pages).sum::<u64>();
                let records = with_members.iter().map(|(group, ids, _)| records::admin_group(group, ids)).collect();
                Ok(fetched(records, page.next.map_or(Next::Last, Next::Cursor), pages, 0))
            }
            ObjectType::Projects => {
                let login = self.site.ok_or(SyncError::NotAvailable)?;
                let (from, anchor) = super::overlap(offset, cursor);
                let page: Page<JiraProject> = self.directory.site_projects_page(login, from).await?;
                let (last, points) = (page.is_last(), 1 + page.values.len() as u64);
                let (projects, next) = super::settle(page.values, from, anchor, last, |p| p.id.as_str());
                let records = projects.iter().map(|p| records::project(site, p)).collect();
                Ok(fetched(records, next, 1, points))
            }
            ObjectType::Spaces => {
                let login = self.site.ok_or(SyncError::NotAvailable)?;
                let page: SpacesPage = self.directory.site_spaces_page(login, cursor).await?;
                let (records, points) =
                    (page.results.iter().map(|s| records::space(site, s)).collect(), 1 + page.results.len() as u64);
                Ok(fetched(records, page.next.map_or(Next::Last, Next::Cursor), 1, points))
            }
        }
    }

    /// The org's directory: v2 (every directory), or v1 (managed accounts) where the org has no v2. A v1 position is
    /// a full URL, so a resumed run stays on the generation it started with.
    async fn users(&self, cursor: Option<&str>) -> Result<AdminPage<AdminUser>, ApiError> {
        let (key, org_id) = (self.key, self.org_id);
        match cursor {
            Some(url) if url.starts_with("http") => self.directory.users_v1(key, org_id, Some(url)).await,
            cursor => match self.directory.users_v2(key, org_id, None, cursor).await {
                Err(ApiError::NotFound) if cursor.is_none() => self.directory.users_v1(key, org_id, None).await,
                other => other,
            },
        }
    }

    /// A group's members' account ids (`users` filtered by `groupIds`), and the pages it took.
    async fn group_members(&self, group_id: &str) -> Result<(Vec<String>, u64), SyncError> {
        let (mut members, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
        loop {
            let page = self.directory.users_v2(self.key, self.org_id, Some(group_id), cursor.as_deref()).await?;
            pages += 1;
            members.extend(page.data.into_iter().map(|u| u.account_id));
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok((members, pages)),
            }
        }
    }
}

impl<D: DirectoryApi + AdminApi> Source for AdminSource<'_, D> {
    fn page<'a>(
        &'a self,
        object_type: ObjectType,
        site: &'a str,
        offset: usize,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, SyncError>> {
        Box::pin(self.read(object_type, site, offset, cursor))
    }

    /// The Admin API lists a group with its members: pages come whole.
    fn members(&self) -> Option<&dyn MemberSource> {
        None
    }

    /// The Admin API lists the org's directory, not who is on which site: users carry no sites.
    fn user_sites(&self, _: Vec<String>) -> Value {
        Value::Array(Vec::new())
    }
}
