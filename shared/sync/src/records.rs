//! What the mirror keeps of each Atlassian object, under the names the management API shows.
//!
//! | type | key | fields |
//! |---|---|---|
//! | users | `account_id` | `account_id`, `email` (null when hidden), `display_name`, `status`, `account_type` (+ `sites`) |
//! | groups | `group_id` | `group_id`, `name`, `member_count`, `member_account_ids` (sorted; up to 1,000 members, else in chunks of their own) |
//! | projects | `<cloud_id>#<project_id>` | `cloud_id`, `project_id`, `key`, `name`, `lead_account_id`, `lead_display_name` |
//! | spaces | `<cloud_id>#<space_id>` | `cloud_id`, `space_id`, `key`, `name`, `type`, `status` |
//!
//! Users and groups are org-wide in Atlassian (an account or a group id is the same on every site), so they are
//! keyed without the site; a user's `sites` lists the cloud ids it was seen on and is kept out of the content hash,
//! because it is only known once every site has been read.

use atlassian::admin::{AdminGroup, AdminUser};
use atlassian::rest::{ConfluenceSpace, JiraGroup, JiraProject, JiraUser};
use serde_json::{Map, Value, json};
use store::mirror::{INLINE_MEMBERS, MemberChunk, member_chunks};

/// A record and the key it is stored under.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: String,
    pub fields: Map<String, Value>,
    /// A big group's members, in chunks stored beside its record (which keeps their hashes in `member_chunks`).
    pub chunks: Option<Vec<MemberChunk>>,
}

pub use store::mirror::MEMBER_CHUNKS;

fn record(key: String, value: Value) -> Record {
    let fields = match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    Record { key, fields, chunks: None }
}

pub fn user(user: &JiraUser) -> Record {
    record(
        user.account_id.clone(),
        json!({
            "account_id": user.account_id,
            "email": user.email_address.as_deref().filter(|e| !e.is_empty()),
            "display_name": user.display_name,
            "status": if user.active { "active" } else { "inactive" },
            "account_type": user.account_type.as_deref().unwrap_or("unknown"),
        }),
    )
}

/// A user as the Admin API shows it: the email even where the profile hides it, and the real status (`closed`,
/// `suspended`, `inactive` or `active`).
pub fn admin_user(user: &AdminUser) -> Record {
    record(
        user.account_id.clone(),
        json!({
            "account_id": user.account_id,
            "email": user.email.as_deref().filter(|e| !e.is_empty()),
            "display_name": user.name,
            "status": user.mirror_status(),
            "account_type": user.account_type.as_deref().unwrap_or("atlassian"),
        }),
    )
}

/// A group with all its members (from every page of `group/member`).
pub fn group(group: &JiraGroup, members: &[JiraUser]) -> Record {
    group_of(&group.group_id, &group.name, members.iter().map(|m| m.account_id.as_str()))
}

/// A group read a segment at a time, with its members' account ids.
pub fn group_with_ids(id: &str, name: &str, member_ids: &[String]) -> Record {
    group_of(id, name, member_ids.iter().map(String::as_str))
}

/// A group of the Admin API with its members' account ids.
pub fn admin_group(group: &AdminGroup, member_ids: &[String]) -> Record {
    group_of(&group.id, &group.name, member_ids.iter().map(String::as_str))
}

fn group_of<'a>(id: &str, name: &str, members: impl Iterator<Item = &'a str>) -> Record {
    let mut member_ids: Vec<&str> = members.collect();
    member_ids.sort_unstable();
    member_ids.dedup();
    let count = member_ids.len();
    if count <= INLINE_MEMBERS {
        let fields = json!({"group_id": id, "name": name, "member_count": count, "member_account_ids": member_ids});
        return record(id.to_owned(), fields);
    }
    let ids: Vec<String> = member_ids.into_iter().map(str::to_owned).collect();
    let chunks: Vec<MemberChunk> = member_chunks(&ids).into_iter().filter(|c| !c.ids.is_empty()).collect();
    let hashes: Map<String, Value> = chunks.iter().map(|c| (c.bucket.to_string(), Value::from(c.hash()))).collect();
    let mut big = record(id.to_owned(), json!({"group_id": id, "name": name, "member_count": count}));
    big.fields.insert(MEMBER_CHUNKS.into(), Value::Object(hashes));
    Record { chunks: Some(chunks), ..big }
}

pub fn project(cloud_id: &str, project: &JiraProject) -> Record {
    record(
        format!("{cloud_id}#{}", project.id),
        json!({
            "cloud_id": cloud_id,
            "project_id": project.id,
            "key": project.key,
            "name": project.name,
            "lead_account_id": project.lead.as_ref().map(|l| &l.account_id),
            "lead_display_name": project.lead.as_ref().and_then(|l| l.display_name.as_ref()),
        }),
    )
}

pub fn space(cloud_id: &str, space: &ConfluenceSpace) -> Record {
    record(
        format!("{cloud_id}#{}", space.id),
        json!({
            "cloud_id": cloud_id,
            "space_id": space.id,
            "key": space.key,
            "name": space.name,
            "type": space.space_type,
            "status": space.status,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jira_user(id: &str, email: Option<&str>, active: bool) -> JiraUser {
        JiraUser {
            account_id: id.into(),
            account_type: Some("atlassian".into()),
            active,
            display_name: Some(format!("User {id}")),
            email_address: email.map(String::from),
        }
    }

    #[test]
    fn users_keep_exactly_the_documented_fields() {
        let r = user(&jira_user("acc-1", None, false));
        assert_eq!(r.key, "acc-1");
        assert_eq!(
            Value::Object(r.fields),
            json!({"account_id": "acc-1", "email": null, "display_name": "User acc-1", "status": "inactive",
                   "account_type": "atlassian"})
        );
        assert_eq!(user(&jira_user("a", Some(""), true)).fields["email"], Value::Null, "a blank email is hidden");
    }

    #[test]
    fn groups_sort_and_dedupe_members() {
        let g = JiraGroup { group_id: "g-1".into(), name: "eng".into() };
        let members = [jira_user("b", None, true), jira_user("a", None, true), jira_user("b", None, true)];
        assert_eq!(group(&g, &members).fields["member_account_ids"], json!(["a", "b"]));
    }

    #[test]
    fn big_groups_keep_their_members_in_chunks() {
        let g = JiraGroup { group_id: "g-big".into(), name: "everyone".into() };
        let members: Vec<JiraUser> = (0..2500).map(|i| jira_user(&format!("acc-{i:05}"), None, true)).collect();
        let big = group(&g, &members);
        assert_eq!(big.fields["member_count"], 2500);
        assert!(big.fields.get("member_account_ids").is_none(), "not in the record");
        let chunks = big.chunks.expect("chunks");
        assert_eq!(chunks.iter().map(|c| c.ids.len()).sum::<usize>(), 2500);
        assert_eq!(big.fields[MEMBER_CHUNKS].as_object().unwrap().len(), chunks.len());
        // One member more changes one chunk's hash.
        let mut more = members.clone();
        more.push(jira_user("acc-extra", None, true));
        let bigger = group(&g, &more);
        let changed: Vec<_> = bigger.fields[MEMBER_CHUNKS]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(bucket, hash)| big.fields[MEMBER_CHUNKS].get(bucket.as_str()) != Some(hash))
            .collect();
        assert_eq!(changed.len(), 1);
        let small = group(&g, &members[..1000]);
        assert_eq!((small.chunks, small.fields["member_account_ids"].as_array().map(Vec::len)), (None, Some(1000)));
    }

    #[test]
    fn projects_and_spaces_are_keyed_by_site() {
        let p = JiraProject {
            id: "10000".into(),
            key: "P".into(),
            name: "Proj".into(),
            lead: Some(jira_user("lead", None, true)),
        };
        let r = project("cloud-1", &p);
        assert_eq!(r.key, "cloud-1#10000");
        assert_eq!(r.fields["lead_account_id"], "lead");
        assert_eq!(r.fields["lead_display_name"], "User lead");
        let no_lead = project("cloud-1", &JiraProject { lead: None, ..p });
        assert_eq!(no_lead.fields["lead_account_id"], Value::Null);
        let s = ConfluenceSpace {
            id: "65536".into(),
            key: "SP".into(),
            name: "Space".into(),
            space_type: "global".into(),
            status: "current".into(),
        };
        assert_eq!(space("cloud-2", &s).key, "cloud-2#65536");
        assert_eq!(space("cloud-2", &s).fields["type"], "global");
    }
}
