//! The sandbox's seeded org: users, groups with members, Jira projects and Confluence spaces over several sites,
//! all derived from the sizes so the same flags always give the same ids; and [`Org::mutate`], which changes it the
//! way a real org changes between two syncs (adds, renames, removals, membership changes).
//!
//! Project and space ids are numbered **per site**, as Jira and Confluence number them: every site's first project
//! is `10000` and its first space `65536`, so two sites of one org share ids and only `(cloud id, id)` names an
//! object. Keys stay unique on a site. New objects from [`Org::mutate`] take the next id of their site and never
//! reuse the id of one removed before.

use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct OrgSize {
    pub users: usize,
    pub groups: usize,
    pub projects: usize,
    pub spaces: usize,
    pub sites: usize,
}

impl Default for OrgSize {
    fn default() -> Self {
        Self { users: 25, groups: 6, projects: 5, spaces: 4, sites: 2 }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub account_id: String,
    pub name: String,
    pub email: String,
    /// Whether the profile shows the email (Jira omits `emailAddress` otherwise).
    pub email_visible: bool,
    pub active: bool,
    /// `atlassian`, `app` or `customer`.
    pub account_type: String,
    pub org_admin: bool,
    /// Suspended from the org (the Admin API says so; Jira's own view does not show it).
    pub suspended: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Project {
    pub site: String,
    pub id: String,
    pub key: String,
    pub name: String,
    pub lead: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Space {
    pub site: String,
    pub id: String,
    pub key: String,
    pub name: String,
    /// `global` or `personal`.
    pub r#type: String,
    /// `current` or `archived`.
    pub status: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SiteDef {
    pub id: String,
    pub url: String,
    pub name: String,
    /// Whether Confluence is one of the site's products (Jira always is).
    pub confluence: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Org {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub projects: Vec<Project>,
    pub spaces: Vec<Space>,
    pub sites: Vec<SiteDef>,
    /// How many times [`Org::mutate`] ran; new objects get ids past every seeded one.
    pub generation: u64,
    /// Users by account id, so member lookups stay O(1) in a 100,000-user org.
    #[serde(skip)]
    index: std::collections::HashMap<String, usize>,
    /// The highest project and space id each site has ever given (cloud id → id), so a new one never takes the id
    /// of one removed: Jira and Confluence do not reuse ids.
    #[serde(skip)]
    last_project_id: std::collections::BTreeMap<String, u64>,
    #[serde(skip)]
    last_space_id: std::collections::BTreeMap<String, u64>,
    /// In an org of many tenants ([`Org::tenants`]): what each site (cloud id) lists of the users and groups.
    #[serde(skip)]
    scopes: std::collections::HashMap<String, (std::ops::Range<usize>, std::ops::Range<usize>)>,
}

/// One tenant of a sandbox that serves many ([`Org::tenants`]): an org of its own on one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantSize {
    pub users: usize,
    pub groups: usize,
    pub projects: usize,
    pub spaces: usize,
}

const FIRST: &[&str] = &["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim"];
const LAST: &[&str] = &["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"];
const TEAMS: &[&str] = &["engineering", "design", "sales", "support", "finance", "legal", "ops", "research"];

pub fn site_id(i: usize) -> String {
    format!("{:08x}-5a4d-4b0c-8d1e-{:012x}", 0xacbe0000u32 + i as u32, i + 1)
}

fn user(i: usize) -> User {
    let first = FIRST[i % FIRST.len()];
    let last = LAST[(i / FIRST.len()) % LAST.len()];
    User {
        account_id: format!("5b10ac8d82e05b22cc7d{i:04x}"),
        name: if i == 0 { "Ada Admin".into() } else { format!("{first} {last} {i}") },
        email: format!("{}.{}{i}@acme.example", first.to_lowercase(), last.to_lowercase()),
        email_visible: i % 5 != 4,
        active: i % 17 != 16,
        account_type: if i > 0 && i % 50 == 49 { "app".into() } else { "atlassian".into() },
        org_admin: i < 3,
        suspended: i % 23 == 22,
    }
}

fn group(i: usize, users: &[User]) -> Group {
    let size = (3 + i % 40).min(users.len());
    let mut members: Vec<String> =
        (0..size).map(|k| users[(i * 13 + k * 97) % users.len()].account_id.clone()).collect();
    members.sort();
    members.dedup();
    Group {
        id: format!("{:08x}-6e0f-4a1b-9c2d-{:012x}", 0x9a000000u32 + i as u32, i + 1),
        name: format!("{}-{i}", TEAMS[i % TEAMS.len()]),
        members,
    }
}

/// The first project id and space id of every site.
const FIRST_PROJECT_ID: usize = 10000;
const FIRST_SPACE_ID: usize = 65536;

/// The `i`th project of the org: sites take turns, and each site numbers its own from [`FIRST_PROJECT_ID`].
fn project(i: usize, sites: &[SiteDef], users: &[User]) -> Project {
    Project {
        site: sites[i % sites.len()].id.clone(),
        id: (FIRST_PROJECT_ID + i / sites.len()).to_string(),
        key: format!("P{i}"),
        name: format!("Project {} {i}", TEAMS[i % TEAMS.len()]),
        lead: users[(i * 31) % users.len()].account_id.clone(),
    }
}

/// The `i`th space of the org, numbered per site like projects.
fn space(i: usize, sites: &[SiteDef]) -> Space {
    Space {
        site: sites[i % sites.len()].id.clone(),
        id: (FIRST_SPACE_ID + i / sites.len()).to_string(),
        key: format!("SP{i}"),
        name: format!("{} space {i}", TEAMS[i % TEAMS.len()]),
        r#type: if i % 4 == 3 { "personal".into() } else { "global".into() },
        status: if i % 9 == 8 { "archived".into() } else { "current".into() },
    }
}

impl Org {
    pub fn seeded(size: OrgSize) -> Self {
        let users: Vec<User> = (0..size.users.max(1)).map(user).collect();
        let sites: Vec<SiteDef> = (0..size.sites)
            .map(|i| {
                let name = if i == 0 { "acme".to_string() } else { format!("acme-{i}") };
                SiteDef { id: site_id(i), url: format!("https://{name}.atlassian.net"), name, confluence: true }
            })
            .collect();
        let groups = (0..size.groups).map(|i| group(i, &users)).collect();
        let (projects, spaces) = if sites.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            (
                (0..size.projects).map(|i| project(i, &sites, &users)).collect(),
                (0..size.spaces).map(|i| space(i, &sites)).collect(),
            )
        };
        let mut org = Self {
            users,
            groups,
            projects,
            spaces,
            sites,
            generation: 0,
            index: Default::default(),
            last_project_id: Default::default(),
            last_space_id: Default::default(),
            scopes: Default::default(),
        };
        for project in &org.projects {
            note_id(&mut org.last_project_id, &project.site, &project.id);
        }
        for space in &org.spaces {
            note_id(&mut org.last_space_id, &space.site, &space.id);
        }
        org.reindex();
        org
    }

    /// Many tenants in one sandbox, for load tests: tenant `t` is an org of its own on site `site_id(t)`, with its
    /// own users (the first of them its admin, who consents), groups, projects and spaces; its site lists only
    /// those. (Mutation is for single orgs.)
    pub fn tenants(sizes: &[TenantSize]) -> Self {
        let mut org = Self::seeded(OrgSize { users: 0, groups: 0, projects: 0, spaces: 0, sites: 0 });
        org.users.clear();
        for (t, size) in sizes.iter().enumerate() {
            let name = format!("tenant-{t}");
            let site = SiteDef { id: site_id(t), url: format!("https://{name}.atlassian.net"), name, confluence: true };
            let first_user = org.users.len();
            org.users.extend((first_user..first_user + size.users.max(1)).map(|i| User {
                org_admin: i == first_user,
                account_type: if i == first_user { "atlassian".into() } else { user(i).account_type },
                ..user(i)
            }));
            let first_group = org.groups.len();
            let members = &org.users[first_user..];
            let groups: Vec<Group> = (first_group..first_group + size.groups).map(|i| group(i, members)).collect();
            org.groups.extend(groups);
            let sites = std::slice::from_ref(&site);
            org.projects.extend(
                (0..size.projects)
                    .map(|i| Project { key: format!("T{t}P{i}"), ..project(i, sites, &org.users[first_user..]) }),
            );
            org.spaces.extend((0..size.spaces).map(|i| Space { key: format!("T{t}S{i}"), ..space(i, sites) }));
            org.scopes.insert(site.id.clone(), (first_user..org.users.len(), first_group..org.groups.len()));
            org.sites.push(site);
        }
        org.reindex();
        org
    }

    /// The users `users/search` lists on a site: its tenant's in an org of many, else everyone.
    pub fn users_on(&self, site: &str) -> &[User] {
        match self.scopes.get(site) {
            Some((users, _)) => &self.users[users.clone()],
            None => &self.users,
        }
    }

    /// The groups `group/bulk` lists on a site: its tenant's in an org of many, else all.
    pub fn groups_on(&self, site: &str) -> &[Group] {
        match self.scopes.get(site) {
            Some((_, groups)) => &self.groups[groups.clone()],
            None => &self.groups,
        }
    }

    fn reindex(&mut self) {
        self.index = self.users.iter().enumerate().map(|(i, u)| (u.account_id.clone(), i)).collect();
    }

    pub fn user(&self, account_id: &str) -> Option<&User> {
        self.index.get(account_id).and_then(|&i| self.users.get(i))
    }

    /// Makes the first group hold the first `members` users (0: leaves it as it is).
    pub fn grow_first_group(&mut self, members: usize) {
        if members == 0 || self.groups.is_empty() {
            return;
        }
        let mut ids: Vec<String> = self.users.iter().take(members).map(|u| u.account_id.clone()).collect();
        ids.sort();
        self.groups[0].members = ids;
    }

    /// Every user but the first `keep` leaves the org (and its groups; projects they led go to the first user).
    pub fn keep_users(&mut self, keep: usize) {
        self.users.truncate(keep.max(1));
        self.reindex();
        let index = &self.index;
        for group in &mut self.groups {
            group.members.retain(|m| index.contains_key(m));
        }
        let first = self.users[0].account_id.clone();
        for project in &mut self.projects {
            if !self.index.contains_key(&project.lead) {
                project.lead = first.clone();
            }
        }
    }

    /// One round of change: every kind of object gets an addition, a rename and a removal; a user is deactivated;
    /// group memberships change; a project gets a new lead. Admins (who consent) are never removed.
    pub fn mutate(&mut self) {
        self.generation += 1;
        let g = self.generation as usize;
        let fresh = 0x8000 + g * 16;

        // Users: two new ones, one renamed, one deactivated, one removed (from every group too).
        for k in 0..2 {
            let mut added = user(fresh + k);
            added.name = format!("New Hire {g}-{k}");
            added.org_admin = false;
            self.users.push(added);
        }
        self.reindex();
        let n = self.users.len();
        if n > 6 {
            let renamed = 3 + g % (n - 5);
            self.users[renamed].name = format!("{} (renamed {g})", self.users[renamed].name);
            let deactivated = 3 + (g * 7) % (n - 5);
            self.users[deactivated].active = !self.users[deactivated].active;
            let removed = self.users.remove(3 + (g * 11) % (n - 5)).account_id;
            self.reindex();
            for group in &mut self.groups {
                group.members.retain(|m| *m != removed);
            }
            for project in &mut self.projects {
                if project.lead == removed {
                    project.lead = self.users[0].account_id.clone();
                }
            }
        }

        // Groups: one added, one renamed, one removed, one gains and loses members.
        let new_member = self.users[self.users.len() - 1].account_id.clone();
        self.groups.push(Group {
            id: format!("{:08x}-6e0f-4a1b-9c2d-{:012x}", 0x9b000000u32 + g as u32, fresh),
            name: format!("new-team-{g}"),
            members: vec![self.users[0].account_id.clone(), new_member.clone()],
        });
        if self.groups.len() > 3 {
            let len = self.groups.len() - 1;
            self.groups[g % len].name = format!("{}-renamed-{g}", self.groups[g % len].name);
            let changed = &mut self.groups[(g + 1) % len];
            if !changed.members.is_empty() {
                changed.members.remove(0);
            }
            if !changed.members.contains(&new_member) {
                changed.members.push(new_member);
                changed.members.sort();
            }
            self.groups.remove((g + 2) % len);
        }

        // Projects and spaces: one added, one renamed, one removed; a project changes lead.
        if !self.sites.is_empty() {
            let users = self.users.clone();
            let mut added = project(fresh, &self.sites, &users);
            added.key = format!("NEW{g}");
            added.id = next_id(&mut self.last_project_id, &added.site, FIRST_PROJECT_ID).to_string();
            self.projects.push(added);
            let mut added = space(fresh, &self.sites);
            added.key = format!("NEWSP{g}");
            added.id = next_id(&mut self.last_space_id, &added.site, FIRST_SPACE_ID).to_string();
            self.spaces.push(added);
            if self.projects.len() > 2 {
                let len = self.projects.len() - 1;
                self.projects[g % len].name = format!("{} (renamed {g})", self.projects[g % len].name);
                self.projects[(g + 1) % len].lead = self.users[1].account_id.clone();
                self.projects.remove((g + 2) % len);
            }
            if self.spaces.len() > 2 {
                let len = self.spaces.len() - 1;
                self.spaces[g % len].name = format!("{} (renamed {g})", self.spaces[g % len].name);
                self.spaces.remove((g + 1) % len);
            }
        }
    }
}

/// Remembers `id` as given on `site`, if it is the highest yet.
fn note_id(last: &mut std::collections::BTreeMap<String, u64>, site: &str, id: &str) {
    if let Ok(id) = id.parse::<u64>() {
        let highest = last.entry(site.to_owned()).or_insert(id);
        *highest = (*highest).max(id);
    }
}

/// The next id of `site`: one past the highest it ever gave (`first` on a site that never gave one).
fn next_id(last: &mut std::collections::BTreeMap<String, u64>, site: &str, first: usize) -> u64 {
    let id = last.get(site).map_or(first as u64, |highest| highest + 1);
    last.insert(site.to_owned(), id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_is_deterministic_and_sized() {
        let size = OrgSize { users: 100, groups: 20, projects: 9, spaces: 7, sites: 3 };
        let org = Org::seeded(size);
        assert_eq!(org, Org::seeded(size));
        assert_eq!(
            (org.users.len(), org.groups.len(), org.projects.len(), org.spaces.len(), org.sites.len()),
            (100, 20, 9, 7, 3)
        );
        assert!(org.users.iter().any(|u| !u.email_visible) && org.users.iter().any(|u| !u.active));
        assert!(org.groups.iter().all(|g| !g.members.is_empty()));
        assert!(org.projects.iter().all(|p| org.user(&p.lead).is_some()));
        assert_eq!(org.projects.iter().filter(|p| p.site == site_id(2)).count(), 3);
    }

    #[test]
    fn many_tenants_each_see_only_their_own_users_and_groups() {
        let sizes = [
            TenantSize { users: 30, groups: 3, projects: 2, spaces: 1 },
            TenantSize { users: 200, groups: 5, projects: 4, spaces: 3 },
        ];
        let org = Org::tenants(&sizes);
        let (a, b) = (site_id(0), site_id(1));
        assert_eq!((org.users_on(&a).len(), org.users_on(&b).len(), org.users.len()), (30, 200, 230));
        assert_eq!((org.groups_on(&a).len(), org.groups_on(&b).len()), (3, 5));
        let b_users: std::collections::HashSet<&str> = org.users_on(&b).iter().map(|u| u.account_id.as_str()).collect();
        assert!(org.groups_on(&b).iter().all(|g| g.members.iter().all(|m| b_users.contains(m.as_str()))));
        assert!(org.users_on(&a)[0].org_admin && org.users_on(&b)[0].org_admin, "each tenant's admin consents");
        assert_eq!(org.users.iter().filter(|u| u.org_admin).count(), 2);
        assert_eq!(org.projects.iter().filter(|p| p.site == b).count(), 4);
        assert!(org.projects.iter().filter(|p| p.site == b).all(|p| b_users.contains(p.lead.as_str())));
        assert_eq!(Org::seeded(OrgSize::default()).users_on(&a).len(), 25, "a single org lists everyone everywhere");
    }

    #[test]
    fn mutation_adds_changes_and_removes_everything() {
        let mut org = Org::seeded(OrgSize::default());
        let before = org.clone();
        org.mutate();
        for (kind, added, removed) in [
            (
                "users",
                org.users.iter().filter(|u| before.user(&u.account_id).is_none()).count(),
                before.users.iter().filter(|u| org.user(&u.account_id).is_none()).count(),
            ),
            (
                "groups",
                org.groups.iter().filter(|g| !before.groups.iter().any(|b| b.id == g.id)).count(),
                before.groups.iter().filter(|g| !org.groups.iter().any(|b| b.id == g.id)).count(),
            ),
            // Project and space ids repeat across sites: only (site, id) names one.
            (
                "projects",
                org.projects
                    .iter()
                    .filter(|p| !before.projects.iter().any(|b| (&b.site, &b.id) == (&p.site, &p.id)))
                    .count(),
                before
                    .projects
                    .iter()
                    .filter(|p| !org.projects.iter().any(|b| (&b.site, &b.id) == (&p.site, &p.id)))
                    .count(),
            ),
            (
                "spaces",
                org.spaces
                    .iter()
                    .filter(|s| !before.spaces.iter().any(|b| (&b.site, &b.id) == (&s.site, &s.id)))
                    .count(),
                before
                    .spaces
                    .iter()
                    .filter(|s| !org.spaces.iter().any(|b| (&b.site, &b.id) == (&s.site, &s.id)))
                    .count(),
            ),
        ] {
            assert!(added >= 1 && removed >= 1, "{kind}: added {added}, removed {removed}");
        }
        assert!(org.users.iter().take(3).all(|u| u.org_admin), "admins stay");
        assert!(org.groups.iter().all(|g| g.members.iter().all(|m| org.user(m).is_some())), "no dangling members");
        let mut again = before.clone();
        again.mutate();
        assert_eq!(again, org, "mutation is deterministic");
    }

    #[test]
    fn project_and_space_ids_are_numbered_per_site() {
        let mut org = Org::seeded(OrgSize { users: 40, groups: 5, projects: 9, spaces: 7, sites: 3 });
        for site in 0..3 {
            let on = |id: &str| org.projects.iter().any(|p| p.site == site_id(site) && p.id == id);
            assert!(on("10000") && on("10001") && on("10002"), "site {site} numbers its own projects");
            assert!(org.spaces.iter().any(|s| s.site == site_id(site) && s.id == "65536"));
        }
        let mut ever = std::collections::HashSet::new();
        for round in 0..40 {
            let mut projects = std::collections::HashSet::new();
            let mut spaces = std::collections::HashSet::new();
            let mut keys = std::collections::HashSet::new();
            for p in &org.projects {
                assert!(projects.insert((p.site.clone(), p.id.clone())), "round {round}: project {} twice", p.id);
                assert!(keys.insert((p.site.clone(), p.key.clone())), "round {round}: key {} twice", p.key);
                ever.insert(("project", p.site.clone(), p.id.clone(), p.key.clone()));
            }
            for s in &org.spaces {
                assert!(spaces.insert((s.site.clone(), s.id.clone())), "round {round}: space {} twice", s.id);
                assert!(keys.insert((s.site.clone(), s.key.clone())), "round {round}: key {} twice", s.key);
                ever.insert(("space", s.site.clone(), s.id.clone(), s.key.clone()));
            }
            org.mutate();
        }
        // An id once given on a site always names the same object there: removed ones are not reused.
        let mut named = std::collections::HashMap::new();
        for (kind, site, id, key) in ever {
            assert_eq!(named.entry((kind, site, id.clone())).or_insert(key.clone()), &key, "{kind} {id} reused");
        }
    }
}
