//! Where a run's records come from. The engine knows positions (a site, an offset or a cursor there), pages of
//! records and when to pause; a [`Source`] knows how to read the next page at a position: with an OAuth grant
//! through Atlassian's API gateway, under the app's points quota ([`OauthSource`]), or with an org admin key from
//! the Admin API and a site's own API token ([`AdminSource`]).
//!
//! Groups are the one type whose shape differs between the two: the Admin API lists a group with its members
//! (one more call per group), while Jira lists groups bare and serves each one's members page by page. A source
//! that lists them bare hands the engine a [`MemberSource`], and the engine runs its member pipeline (a few groups
//! at once; a group of any size read a segment at a time across invocations) over it.

mod admin;
mod oauth;

pub use admin::AdminSource;
pub use oauth::OauthSource;

use crate::engine::SyncError;
use crate::records::Record;
use atlassian::rest::{JiraGroup, JiraUser};
use futures_util::future::BoxFuture;
use serde_json::Value;
use store::mirror::ObjectType;

/// A group with more members than this is a giant: read after the site's listing, a segment at a time. (A
/// smaller group's points are drawn whole before its pages: about 2,000 at most, a small share of any pool.)
pub const GIANT_MEMBERS: usize = 1_000;

/// About how many members a giant's segment reads, and the most a staged part holds (2,500 ids are ~110 KB: well
/// inside a DynamoDB item).
pub const SEGMENT_MEMBERS: usize = 2_500;

/// How many groups' members (or a giant's member pages) are fetched at once.
pub const MEMBER_CONCURRENCY: usize = 4;

/// Where a site's next page is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Offset(usize),
    /// At an offset, after the record with this key (the anchor, see [`overlap`]).
    After(usize, String),
    Cursor(String),
    Last,
    /// The list moved under the run (the page did not start with its anchor): its position is lost. The page's
    /// records are current all the same; the offset after them, were the run to read on from there.
    Moved(usize),
}

/// Offset listings move under a run: a user removed before the run's offset shifts every later one down a place,
/// and one of them would never be read (then marked deleted); one added before it is read twice. So every page after
/// a site's first asks from one record earlier, the last one read (its key kept as the position's anchor), and
/// [`settle`] checks that it comes back first. Answers the offset to ask from, and the anchor to check.
pub fn overlap(offset: usize, anchor: Option<&str>) -> (usize, Option<&str>) {
    match anchor {
        Some(anchor) if offset > 0 => (offset - 1, Some(anchor)),
        _ => (offset, None),
    }
}

/// A page asked for with [`overlap`]: the records after the anchor and where the next page is (after the last of
/// them; the end if none is left, or if `last` says so), or [`Next::Moved`] if the page did not start with the
/// anchor.
pub fn settle<T>(
    mut values: Vec<T>,
    asked_from: usize,
    anchor: Option<&str>,
    last: bool,
    key: impl Fn(&T) -> &str,
) -> (Vec<T>, Next) {
    if let Some(anchor) = anchor {
        if values.first().is_none_or(|first| key(first) != anchor) {
            let after = asked_from + values.len();
            return (values, Next::Moved(after));
        }
        values.remove(0);
    }
    let next = match values.last() {
        Some(record) if !last => {
            Next::After(asked_from + usize::from(anchor.is_some()) + values.len(), key(record).to_owned())
        }
        _ => Next::Last,
    };
    (values, next)
}

/// A page read from a source.
#[derive(Debug)]
pub struct Fetched {
    pub records: Vec<Record>,
    pub next: Next,
    /// The requests it took (an admin group page takes one more per group, for its members) and their points.
    pub pages: u64,
    pub points: u64,
}

/// What a group's member fetch came back with.
#[derive(Debug)]
pub enum Members {
    /// All its members, and the pages and points they took.
    All(Vec<JiraUser>, u64, u64),
    /// Too many to read with the others (the pages and points of finding out): read after the listing.
    Giant(u64, u64),
    /// Deleted since the listing named it (Jira answers its members `404`): not seen, so the closing pass deletes
    /// it.
    Gone,
}

/// A segment of a giant's members.
#[derive(Debug)]
pub struct Segment {
    pub ids: Vec<String>,
    /// The offset after the last member read, and whether that was the last.
    pub next: usize,
    pub last: bool,
    pub pages: u64,
    pub points: u64,
}

/// How a run reads Atlassian.
pub trait Source: Send + Sync {
    /// The page of `object_type` on `site` (a cloud id, or `org:…` for an org's directory) at `offset` or
    /// `cursor`, whichever the type pages by. Groups come here only from a source without a [`MemberSource`].
    fn page<'a>(
        &'a self,
        object_type: ObjectType,
        site: &'a str,
        offset: usize,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, SyncError>>;

    /// Where groups are listed without their members, the reads the engine's member pipeline makes.
    fn members(&self) -> Option<&dyn MemberSource>;

    /// A user's `sites`, from the sites the run saw it on.
    fn user_sites(&self, seen_on: Vec<String>) -> Value;
}

/// A page of groups (without members), where the next one is, and its points.
pub type GroupsPage = (Vec<JiraGroup>, Next, u64);

/// The reads of a group listing that comes without members (Jira's).
pub trait MemberSource: Send + Sync {
    /// A page of `site`'s groups from `start`, which must begin after `anchor` (the last group read: see
    /// [`overlap`]); where the next page is, and its points.
    fn groups_page<'a>(
        &'a self,
        site: &'a str,
        start: usize,
        anchor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<GroupsPage, SyncError>>;

    /// Every member of a group; or, past [`GIANT_MEMBERS`], only that it is a giant.
    fn group_members<'a>(&'a self, site: &'a str, group_id: &'a str) -> BoxFuture<'a, Result<Members, SyncError>>;

    /// About [`SEGMENT_MEMBERS`] of a giant's members from `at`. A failure keeps the pages that follow on from
    /// `at`, and comes back beside them.
    fn segment<'a>(
        &'a self,
        site: &'a str,
        group_id: &'a str,
        at: usize,
    ) -> BoxFuture<'a, (Segment, Option<SyncError>)>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_must_start_at_its_anchor() {
        fn key<'a>(s: &'a &'static str) -> &'a str {
            s
        }
        assert_eq!(overlap(0, Some("a")), (0, None), "a site's first page has nothing to overlap");
        assert_eq!(overlap(20, Some("u19")), (19, Some("u19")));
        // It starts with the anchor: the rest is the page, and the next one starts after its last.
        assert_eq!(
            settle(vec!["u19", "u20", "u21"], 19, Some("u19"), false, key),
            (vec!["u20", "u21"], Next::After(22, "u21".into()))
        );
        // Only the anchor came back: the end of a bare array.
        assert_eq!(settle(vec!["u19"], 19, Some("u19"), false, key), (vec![], Next::Last));
        // Something else first (a record removed or added before it), or nothing at all: the list moved.
        assert_eq!(settle(vec!["u20", "u21"], 19, Some("u19"), false, key), (vec!["u20", "u21"], Next::Moved(21)));
        assert_eq!(settle(Vec::<&str>::new(), 19, Some("u19"), false, key), (vec![], Next::Moved(19)));
        // A first page, and a last one.
        assert_eq!(settle(vec!["u0", "u1"], 0, None, false, key), (vec!["u0", "u1"], Next::After(2, "u1".into())));
        assert_eq!(settle(vec!["u19", "u20"], 19, Some("u19"), true, key), (vec!["u20"], Next::Last));
    }
}
