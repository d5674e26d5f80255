//! The sandbox's REST API behaves like Atlassian's: pagination styles and page caps (users pages capped below
//! `maxResults`, short pages mid-list), scopes, sites, project and space ids repeated across sites, faults (lost
//! refresh replies too), the points quota and its headers, and mutation. Paging every endpoint the way a client must
//! gives back exactly the seeded org.

use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tests::harness;
use tests::sandbox::{Faults, OrgSize, SandboxConfig};
use url::Url;

const SIZE: OrgSize = OrgSize { users: 1234, groups: 120, projects: 230, spaces: 300, sites: 2 };

/// A sandbox of its own and an access token from a full consent (with `scopes` granted, or all asked).
async fn sandbox(granted_scopes: Option<&str>) -> (Url, String) {
    sandbox_with(SandboxConfig { org: SIZE, ..SandboxConfig::default() }, granted_scopes).await
}

async fn sandbox_with(config: SandboxConfig, granted_scopes: Option<&str>) -> (Url, String) {
    let base = harness::spawn_sandbox(config).await.unwrap();
    let token = harness::sandbox_token(&base, granted_scopes).await.unwrap();
    (base, token)
}

async fn stats(base: &Url) -> Value {
    harness::sandbox_stats(base).await.unwrap()
}

/// Every user of a site, paged as a client must: advance by what came back, stop only on an empty page. Answers the
/// users and the length of every non-empty page.
async fn all_users(base: &Url, token: &str, site: &str, max_results: usize) -> (Vec<Value>, Vec<usize>) {
    let (mut users, mut pages) = (Vec::new(), Vec::new());
    loop {
        let path = format!("/ex/jira/{site}/rest/api/3/users/search?startAt={}&maxResults={max_results}", users.len());
        let (status, _, page) = get(base, token, &path).await;
        assert_eq!(status, 200);
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            return (users, pages);
        }
        pages.push(page.len());
        users.extend(page);
    }
}

async fn get(base: &Url, token: &str, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = harness::client().get(base.join(path).unwrap()).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn paging_every_endpoint_gives_back_the_org() {
    let (base, token) = sandbox(None).await;
    let value: Value =
        harness::client().get(base.join("/__sandbox/org").unwrap()).send().await.unwrap().json().await.unwrap();
    let site = tests::sandbox::site_id(0);
    let jira = format!("/ex/jira/{site}/rest/api/3");

    // Users: a bare array; ask for more than the cap, advance by what came back and stop on an empty page.
    let (users, pages) = all_users(&base, &token, &site, 5000).await;
    assert!(pages.iter().all(|&n| n <= 100), "users pages are capped at 100 whatever maxResults asks: {pages:?}");
    let ids: Vec<&str> = users.iter().map(|u| u["accountId"].as_str().unwrap()).collect();
    let expected: Vec<&str> =
        value["users"].as_array().unwrap().iter().map(|u| u["account_id"].as_str().unwrap()).collect();
    assert_eq!(ids, expected);
    assert!(users.iter().any(|u| u.get("emailAddress").is_none()), "hidden emails are absent");

    // Groups: PageBean capped at 50, then members of one group.
    let mut groups = Vec::new();
    loop {
        let (_, _, page) =
            get(&base, &token, &format!("{jira}/group/bulk?startAt={}&maxResults=500", groups.len())).await;
        assert_eq!(page["maxResults"], 50);
        groups.extend(page["values"].as_array().unwrap().clone());
        if page["isLast"] == true {
            break;
        }
    }
    assert_eq!(groups.len(), SIZE.groups);
    let group = &value["groups"][7];
    let (_, _, members) = get(
        &base,
        &token,
        &format!("{jira}/group/member?groupId={}&includeInactiveUsers=true", group["id"].as_str().unwrap()),
    )
    .await;
    let member_ids: Vec<&str> =
        members["values"].as_array().unwrap().iter().map(|m| m["accountId"].as_str().unwrap()).collect();
    let expected: Vec<&str> = group["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(member_ids, expected);
    let (status, _, _) = get(&base, &token, &format!("{jira}/group/member?groupId=nope")).await;
    assert_eq!(status, 404);

    // Projects of this site, with their leads.
    let mut projects = Vec::new();
    loop {
        let (_, _, page) = get(
            &base,
            &token,
            &format!("{jira}/project/search?expand=lead&startAt={}&maxResults=1000", projects.len()),
        )
        .await;
        assert_eq!(page["maxResults"], 100);
        projects.extend(page["values"].as_array().unwrap().clone());
        if page["isLast"] == true {
            break;
        }
    }
    let expected = value["projects"].as_array().unwrap().iter().filter(|p| p["site"] == site.as_str()).count();
    assert_eq!(projects.len(), expected);
    assert!(projects.iter().all(|p| p["lead"]["accountId"].is_string()));

    // Spaces: follow `_links.next` (site-relative) through the gateway, never `_links.base`.
    let mut spaces = Vec::new();
    let mut next = format!("/ex/confluence/{site}/wiki/api/v2/spaces?limit=100");
    loop {
        let (status, headers, page) = get(&base, &token, &next).await;
        assert_eq!(status, 200);
        spaces.extend(page["results"].as_array().unwrap().clone());
        match page["_links"]["next"].as_str() {
            Some(link) => {
                assert!(link.starts_with("/wiki/api/v2/spaces?cursor="), "{link}");
                assert!(headers["link"].to_str().unwrap().contains("rel=\"next\""));
                next = format!("/ex/confluence/{site}{link}");
            }
            None => break,
        }
    }
    let expected = value["spaces"].as_array().unwrap().iter().filter(|s| s["site"] == site.as_str()).count();
    assert_eq!(spaces.len(), expected);

    let stats = stats(&base).await;
    assert!(stats["points"].as_u64().unwrap() > 2 * SIZE.users as u64, "identity objects cost 2 points each");
}

#[tokio::test]
async fn users_pages_are_capped_and_a_short_page_is_not_the_end() {
    let config = SandboxConfig { org: SIZE, users_page_cap: 70, short_pages_every: 3, ..SandboxConfig::default() };
    let (base, token) = sandbox_with(config, None).await;
    let org = harness::sandbox_org(&base).await.unwrap();
    let expected: Vec<&str> =
        org["users"].as_array().unwrap().iter().map(|u| u["account_id"].as_str().unwrap()).collect();
    let site = tests::sandbox::site_id(1);
    let (users, pages) = all_users(&base, &token, &site, 1000).await;
    let ids: Vec<&str> = users.iter().map(|u| u["accountId"].as_str().unwrap()).collect();
    assert_eq!(ids, expected, "every user exactly once, in order");
    assert!(pages.iter().all(|&n| n <= 70), "{pages:?}");
    // Every third page is half as long, mid-list, and more pages follow it.
    let last = pages.len() - 1;
    assert!(pages.iter().enumerate().any(|(i, &n)| n == 35 && i < last), "{pages:?}");

    // `maxResults` clamps to 1..=1000 first, then the cap applies.
    let users = format!("/ex/jira/{site}/rest/api/3/users/search");
    for (asked, served) in [("0", 1), ("30", 30), ("5000", 70)] {
        // Skip the short pages: the counter of pages served is the sandbox's, so re-ask until a full one.
        let mut lengths = Vec::new();
        for _ in 0..3 {
            let (_, _, page) = get(&base, &token, &format!("{users}?maxResults={asked}")).await;
            lengths.push(page.as_array().unwrap().len());
        }
        assert_eq!(lengths.iter().max(), Some(&served), "maxResults={asked}: {lengths:?}");
    }
}

#[tokio::test]
async fn project_and_space_ids_repeat_across_sites() {
    let (base, token) = sandbox(None).await;
    let mut by_site = Vec::new();
    for site in [tests::sandbox::site_id(0), tests::sandbox::site_id(1)] {
        let (_, _, projects) =
            get(&base, &token, &format!("/ex/jira/{site}/rest/api/3/project/search?maxResults=100")).await;
        let (_, _, spaces) = get(&base, &token, &format!("/ex/confluence/{site}/wiki/api/v2/spaces?limit=250")).await;
        let ids = |list: &Value, key: &str| -> Vec<(String, String)> {
            let list = list[key].as_array().unwrap();
            list.iter().map(|x| (x["id"].as_str().unwrap().to_owned(), x["key"].as_str().unwrap().to_owned())).collect()
        };
        by_site.push((ids(&projects, "values"), ids(&spaces, "results")));
    }
    let [(projects_a, spaces_a), (projects_b, spaces_b)] = &by_site[..] else { unreachable!() };
    let first = |list: &Vec<(String, String)>, id: &str| list.iter().find(|(i, _)| i == id).cloned();
    let (a, b) = (first(projects_a, "10000").unwrap(), first(projects_b, "10000").unwrap());
    assert_ne!(a.1, b.1, "project 10000 is a different project on each site");
    let (a, b) = (first(spaces_a, "65536").unwrap(), first(spaces_b, "65536").unwrap());
    assert_ne!(a.1, b.1, "space 65536 is a different space on each site");

    // Mutation gives new projects and spaces ids of their own site's, never one it has already.
    let mut org = harness::sandbox_org(&base).await.unwrap();
    for _ in 0..5 {
        let before = org.clone();
        org = harness::client()
            .post(base.join("/__sandbox/org/mutate").unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for kind in ["projects", "spaces"] {
            let pairs = |org: &Value| -> Vec<(String, String, String)> {
                org[kind]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| {
                        let s = |k: &str| x[k].as_str().unwrap().to_owned();
                        (s("site"), s("id"), s("key"))
                    })
                    .collect()
            };
            let (old, new) = (pairs(&before), pairs(&org));
            let mut seen = std::collections::HashSet::new();
            assert!(new.iter().all(|(site, id, _)| seen.insert((site, id))), "{kind}: an id twice on a site");
            for (site, id, key) in new.iter().filter(|n| !old.contains(n)) {
                assert!(!old.iter().any(|(s, i, _)| s == site && i == id), "{kind} {key} took {id}, already on {site}");
            }
        }
    }
}

/// Sets the sandbox's quota (and resets its counters).
async fn set_quota(base: &Url, quota: Value) {
    let response = harness::client().post(base.join("/__sandbox/quota").unwrap()).json(&quota).send().await.unwrap();
    assert_eq!(response.status(), 204);
}

/// Sleeps until just after the next quota window of `secs` starts, so the requests that follow share a window.
async fn window_start(secs: f64) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let next = (now / secs).floor() + 1.0;
    tokio::time::sleep(Duration::from_secs_f64(next * secs - now + 0.02)).await;
    next as u64
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `t=` of a `RateLimit` header's first item.
fn reset_secs(rate_limit: &str) -> u64 {
    let t = rate_limit.split(';').find_map(|p| p.trim().strip_prefix("t=")).unwrap();
    t.split(',').next().unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn the_global_quota_answers_429_until_its_window_resets() {
    let (base, token) = sandbox(None).await;
    let site = tests::sandbox::site_id(0);
    let users = |n: usize| format!("/ex/jira/{site}/rest/api/3/users/search?maxResults={n}");
    set_quota(&base, json!({"global_points": 100, "window_secs": 3})).await;
    let window = window_start(3.0).await;

    // 39 points: the policy and the time to reset, no `r` yet.
    let (status, headers, _) = get(&base, &token, &users(19)).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "ratelimit-policy"), Some("\"global-app-quota\";q=100;w=3"));
    let rate_limit = header(&headers, "ratelimit").unwrap();
    assert!(rate_limit.starts_with("\"global-app-quota\";t="), "{rate_limit}");
    assert!((1..=3).contains(&reset_secs(rate_limit)), "{rate_limit}");
    assert_eq!(header(&headers, "x-ratelimit-nearlimit"), None);
    assert_eq!(header(&headers, "beta-ratelimit"), None);
    // 80 points: `r` shows at 80 % spent, but 20 left is not yet "near".
    let (_, headers, _) = get(&base, &token, &users(20)).await;
    assert!(header(&headers, "ratelimit").unwrap().starts_with("\"global-app-quota\";r=20;t="), "{headers:?}");
    assert_eq!(header(&headers, "x-ratelimit-nearlimit"), None);
    // 83 points: near the limit.
    let (_, headers, _) = get(&base, &token, &users(1)).await;
    assert!(header(&headers, "ratelimit").unwrap().starts_with("\"global-app-quota\";r=17;t="), "{headers:?}");
    assert_eq!(header(&headers, "x-ratelimit-nearlimit"), Some("true"));
    // Still under q, so admitted, and charged after the fact: 184 points.
    let (status, headers, _) = get(&base, &token, &users(50)).await;
    assert_eq!(status, 200);
    assert!(header(&headers, "ratelimit").unwrap().starts_with("\"global-app-quota\";r=0;t="), "{headers:?}");

    // Now every product of the app is refused until the window ends.
    let (status, headers, body) = get(&base, &token, &users(1)).await;
    assert_eq!(status, 429);
    assert_eq!(body, json!({"code": 429, "message": "Rate limit exceeded."}));
    assert_eq!(header(&headers, "ratelimit-reason"), Some("jira-quota-global-based"));
    let retry_after: u64 = header(&headers, "retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    assert!(header(&headers, "ratelimit").unwrap().contains("r=0"));
    assert_eq!(header(&headers, "ratelimit-policy"), Some("\"global-app-quota\";q=100;w=3"));
    assert_eq!(header(&headers, "x-ratelimit-nearlimit"), Some("true"));
    let (status, headers, _) = get(&base, &token, &format!("/ex/confluence/{site}/wiki/api/v2/spaces")).await;
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "ratelimit-reason"), Some("confluence-quota-global-based"));
    let stats_now = stats(&base).await;
    assert_eq!(stats_now["current_window"], window, "the requests above shared one window");

    // The next window admits again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, headers, _) = get(&base, &token, &users(1)).await;
    assert_eq!(status, 200);
    assert!(header(&headers, "ratelimit").unwrap().starts_with("\"global-app-quota\";t="), "{headers:?}");

    let stats = stats(&base).await;
    assert_eq!(stats["quota_429s"], 2);
    assert_eq!(stats["burst_429s"], 0);
    assert_eq!(stats["window_points"][window.to_string()], 184);
    assert_eq!(stats["window_points"][(window + 1).to_string()], 3);
    assert_eq!(stats["max_window_points"], 184);
    assert!(stats["max_window_points"].as_u64().unwrap() <= 100 + 101, "never past q + the largest request");
    assert_eq!(stats["quota_overshoot"], 84);
    assert_eq!(stats["tenant_window_points"][&site][window.to_string()], 184);
}

#[tokio::test]
async fn a_tenant_pool_limits_its_own_site_only() {
    let config = SandboxConfig { org: OrgSize { users: 60, ..OrgSize::default() }, ..SandboxConfig::default() };
    let (base, token) = sandbox_with(config, None).await;
    let (a, b) = (tests::sandbox::site_id(0), tests::sandbox::site_id(1));
    let (email, api_token) = harness::api_token(&base, harness::ADMIN).await.unwrap();
    set_quota(&base, json!({"global_points": 100000, "tenant_points": 30, "window_secs": 4})).await;
    window_start(4.0).await;

    // 41 points on site A: admitted below its 30, then A is out.
    let (status, headers, _) = get(&base, &token, &format!("/ex/jira/{a}/rest/api/3/users/search?maxResults=20")).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        Some("\"global-app-quota\";q=100000;w=4, \"tenant-app-quota\";q=30;w=4")
    );
    let (status, headers, _) = get(&base, &token, &format!("/ex/jira/{a}/rest/api/3/users/search")).await;
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "ratelimit-reason"), Some("jira-quota-tenant-based"));
    let rate_limit = header(&headers, "ratelimit").unwrap();
    assert!(rate_limit.starts_with("\"global-app-quota\";t="), "{rate_limit}");
    assert!(rate_limit.contains(", \"tenant-app-quota\";r=0;t="), "{rate_limit}");
    let (status, headers, _) = get(&base, &token, &format!("/ex/confluence/{a}/wiki/api/v2/spaces")).await;
    assert_eq!((status, header(&headers, "ratelimit-reason")), (429, Some("confluence-quota-tenant-based")));
    // The site's Basic-auth API is API-token traffic: burst limits only, no points quota, no quota headers.
    let site_a = harness::site_url(&base, "acme");
    let response = harness::client()
        .get(format!("{site_a}/rest/api/3/project/search"))
        .basic_auth(&email, Some(&api_token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(response.headers(), "ratelimit"), None);

    // Site B still has its own pool.
    let (status, headers, _) = get(&base, &token, &format!("/ex/jira/{b}/rest/api/3/users/search?maxResults=5")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ratelimit-nearlimit"), None);
    assert!(header(&headers, "ratelimit").unwrap().contains("\"tenant-app-quota\";t="));
    let stats = stats(&base).await;
    assert_eq!(stats["quota_429s"], 2);
}

#[tokio::test]
async fn beta_header_names_and_no_points_for_the_admin_api() {
    let (base, token) = sandbox(None).await;
    set_quota(&base, json!({"global_points": 65000, "window_secs": 3600, "beta_headers": true})).await;
    let site = tests::sandbox::site_id(0);
    let (status, headers, _) = get(&base, &token, &format!("/ex/jira/{site}/rest/api/3/group/bulk")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "beta-ratelimit-policy"), Some("\"global-app-quota\";q=65000;w=3600"));
    let beta = header(&headers, "beta-ratelimit").unwrap();
    assert!(beta.starts_with("\"global-app-quota\";t=") && reset_secs(beta) <= 3600, "{beta}");
    assert_eq!((header(&headers, "ratelimit-policy"), header(&headers, "ratelimit")), (None, None));

    let key = harness::admin_key(&base, json!({})).await.unwrap();
    let response = harness::client().get(base.join("/admin/v1/orgs").unwrap()).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(response.headers(), "beta-ratelimit-policy"), None, "the Admin API has no points");

    // Without a pool there are no quota headers at all.
    set_quota(&base, json!({})).await;
    let reset = stats(&base).await;
    assert_eq!(reset["quota"]["global_points"], Value::Null);
    assert_eq!(reset["window_points"], json!({}), "setting the quota resets its counters");
    let (_, headers, _) = get(&base, &token, &format!("/ex/jira/{site}/rest/api/3/group/bulk")).await;
    assert_eq!((header(&headers, "beta-ratelimit-policy"), header(&headers, "ratelimit-policy")), (None, None));
    assert_eq!(stats(&base).await["max_window_points"], 101, "points are still counted without a pool");
}

/// A full consent and code exchange on the sandbox: the token answer (with a refresh token).
async fn grant(base: &Url) -> Value {
    let config = SandboxConfig::default();
    let mut authorize = base.join("/authorize").unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("audience", "api.atlassian.com")
        .append_pair("client_id", &config.client_id)
        .append_pair("scope", "offline_access read:me read:jira-user")
        .append_pair("redirect_uri", "https://connector.test/oauth/callback")
        .append_pair("state", "st_x")
        .append_pair("response_type", "code");
    let callback = harness::consent(authorize.as_str(), &harness::Consent::default()).await.unwrap();
    let code = harness::query(&callback)["code"].clone();
    refresh_request(
        base,
        json!({"grant_type": "authorization_code", "code": code, "redirect_uri": "https://connector.test/oauth/callback"}),
    )
    .await
    .unwrap()
    .1
}

/// A token request with the app's credentials: status and body, or the transport error.
async fn refresh_request(base: &Url, mut body: Value) -> Result<(u16, Value), reqwest::Error> {
    let config = SandboxConfig::default();
    body["client_id"] = json!(config.client_id);
    body["client_secret"] = json!(config.client_secret);
    let response = harness::client().post(base.join("/oauth/token").unwrap()).json(&body).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

async fn refresh(base: &Url, refresh_token: &Value) -> Result<(u16, Value), reqwest::Error> {
    refresh_request(base, json!({"grant_type": "refresh_token", "refresh_token": refresh_token})).await
}

#[tokio::test]
async fn a_lost_refresh_reply_leaves_the_old_refresh_token_usable_within_the_leeway() {
    let base = harness::spawn_sandbox(SandboxConfig::default()).await.unwrap();
    let first = grant(&base).await;
    let old = first["refresh_token"].clone();
    let faults = Faults { lose_refresh_replies: 1, ..Faults::default() };
    harness::client().post(base.join("/__sandbox/faults").unwrap()).json(&faults).send().await.unwrap();

    // The sandbox rotates the tokens, and the client's connection drops before the answer arrives.
    assert!(refresh(&base, &old).await.is_err(), "the connection must drop");
    // The same old refresh token again, right away: a new, working pair.
    let (status, second) = refresh(&base, &old).await.unwrap();
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refresh_token"], old);
    let site = tests::sandbox::site_id(0);
    let (status, _, _) = get(
        &base,
        second["access_token"].as_str().unwrap(),
        &format!("/ex/jira/{site}/rest/api/3/users/search?maxResults=1"),
    )
    .await;
    assert_eq!(status, 200);
    // The grant survives: its newest refresh token goes on.
    let (status, third) = refresh(&base, &second["refresh_token"]).await.unwrap();
    assert_eq!(status, 200, "{third}");
    let stats = stats(&base).await;
    assert_eq!((stats["lost_refresh_replies"].as_u64(), stats["refreshes"].as_u64()), (Some(1), Some(3)));
}

#[tokio::test]
async fn after_the_leeway_a_lost_refresh_reply_costs_the_grant() {
    let config = SandboxConfig { reuse_leeway: Duration::from_millis(300), ..SandboxConfig::default() };
    let base = harness::spawn_sandbox(config).await.unwrap();
    let old = grant(&base).await["refresh_token"].clone();
    let faults = Faults { lose_refresh_replies: 1, ..Faults::default() };
    harness::client().post(base.join("/__sandbox/faults").unwrap()).json(&faults).send().await.unwrap();
    assert!(refresh(&base, &old).await.is_err());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = refresh(&base, &old).await.unwrap();
    assert_eq!((status, body["error"].as_str()), (403, Some("invalid_grant")));
    // Reuse outside the leeway revoked the grant: the token the client never saw is dead too.
    let issued: Value =
        harness::client().get(base.join("/__sandbox/issued").unwrap()).send().await.unwrap().json().await.unwrap();
    let lost =
        issued["secrets"].as_array().unwrap().iter().rfind(|s| s.as_str().unwrap().starts_with("sbx-rt-")).unwrap();
    assert_ne!(lost, &old);
    let (status, _) = refresh(&base, lost).await.unwrap();
    assert_eq!(status, 403);
}

#[tokio::test]
async fn scopes_and_sites_are_enforced() {
    let (base, token) = sandbox(Some("offline_access read:me read:jira-user read:jira-work")).await;
    let site = tests::sandbox::site_id(0);
    let (status, _, body) = get(&base, &token, &format!("/ex/jira/{site}/rest/api/3/group/member?groupId=x")).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("Unauthorized; scope does not match")));
    let (status, _, _) = get(&base, &token, &format!("/ex/confluence/{site}/wiki/api/v2/spaces")).await;
    assert_eq!(status, 401, "v2 spaces want the granular scope");
    let (status, _, _) = get(&base, &token, &format!("/ex/jira/{site}/rest/api/3/users/search")).await;
    assert_eq!(status, 200);
    let (status, _, _) =
        get(&base, &token, "/ex/jira/00000000-0000-0000-0000-000000000000/rest/api/3/users/search").await;
    assert_eq!(status, 401, "a site outside the grant");
    let (status, _, _) = get(&base, "sbx-at-forged", &format!("/ex/jira/{site}/rest/api/3/users/search")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn faults_and_mutation() {
    let (base, token) = sandbox(None).await;
    let site = tests::sandbox::site_id(0);
    let users = format!("/ex/jira/{site}/rest/api/3/users/search");
    let faults = Faults { rate_limit_every: 2, retry_after_secs: 0, ..Faults::default() };
    let response = harness::client().post(base.join("/__sandbox/faults").unwrap()).json(&faults).send().await.unwrap();
    assert_eq!(response.status(), 204);
    // Every second REST request of this sandbox is limited: 200, 429, 200, 429.
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(get(&base, &token, &users).await);
    }
    assert_eq!(answers.iter().map(|a| a.0).collect::<Vec<_>>(), vec![200, 429, 200, 429]);
    let limited = &answers[3];
    assert_eq!(limited.1["retry-after"], "0");
    assert_eq!(limited.1["ratelimit-reason"], "jira-burst-based");
    let counted = stats(&base).await;
    assert_eq!((counted["burst_429s"].as_u64(), counted["quota_429s"].as_u64()), (Some(2), Some(0)));

    // A dropped connection: no complete answer arrives.
    let faults = Faults { drop_every: 1, ..Faults::default() };
    harness::client().post(base.join("/__sandbox/faults").unwrap()).json(&faults).send().await.unwrap();
    let answer = match harness::client().get(base.join(&users).unwrap()).bearer_auth(&token).send().await {
        Ok(response) => response.bytes().await.map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(answer.is_err(), "the connection must drop");
    harness::client().post(base.join("/__sandbox/faults").unwrap()).json(&Faults::default()).send().await.unwrap();

    let before: Value =
        harness::client().get(base.join("/__sandbox/org").unwrap()).send().await.unwrap().json().await.unwrap();
    let after: Value =
        harness::client().post(base.join("/__sandbox/org/mutate").unwrap()).send().await.unwrap().json().await.unwrap();
    assert_ne!(before, after);
    assert_eq!(after["generation"], 1);
}

mod client {
    use super::*;
    use atlassian::{AccessToken, ApiError, AtlassianClient, DirectoryApi, RetryPolicy};
    use std::time::{Duration, Instant};

    fn client(base: &Url) -> AtlassianClient {
        AtlassianClient::new(
            atlassian::http_client().unwrap(),
            atlassian::Endpoints { auth_base: base.clone(), api_base: base.clone() },
            atlassian::ClientCredentials {
                client_id: atlassian::ClientId::new("unused".into()),
                client_secret: atlassian::ClientSecret::new("unused".into()),
            },
            Url::parse("https://connector.test/oauth/callback").unwrap(),
        )
        .with_retry(RetryPolicy {
            max_retries: 4,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(5),
        })
    }

    async fn set_faults(base: &Url, faults: &Faults) {
        let response =
            harness::client().post(base.join("/__sandbox/faults").unwrap()).json(faults).send().await.unwrap();
        assert_eq!(response.status(), 204);
    }

    /// Everything the sync would read of one site, walking the pages as the client's callers must.
    async fn read_site(
        client: &AtlassianClient,
        token: &AccessToken,
        site: &str,
    ) -> Result<(usize, usize, usize, usize, usize), ApiError> {
        // Users pages may be shorter than asked, mid-list: advance by what came back, stop on an empty page.
        let mut users = 0;
        loop {
            let page = client.users_page(token, site, users).await?;
            if page.is_empty() {
                break;
            }
            users += page.len();
        }
        let (mut groups, mut members, mut start) = (Vec::new(), 0, 0);
        loop {
            let page = client.groups_page(token, site, start).await?;
            start += page.values.len();
            groups.extend(page.values.iter().map(|g| g.group_id.clone()));
            if page.is_last() {
                break;
            }
        }
        for group in &groups {
            let mut at = 0;
            loop {
                let page = client.group_members_page(token, site, group, at).await?;
                at += page.values.len();
                members += page.values.len();
                if page.is_last() {
                    break;
                }
            }
        }
        let mut projects = 0;
        loop {
            let page = client.projects_page(token, site, projects).await?;
            projects += page.values.len();
            assert!(page.values.iter().all(|p| p.lead.is_some()));
            if page.is_last() {
                break;
            }
        }
        let (mut spaces, mut next) = (0, None);
        loop {
            let page = client.spaces_page(token, site, next.as_deref()).await?;
            spaces += page.results.len();
            next = page.next;
            if next.is_none() {
                break;
            }
        }
        Ok((users, groups.len(), members, projects, spaces))
    }

    fn expected(org: &Value, site: &str) -> (usize, usize, usize, usize, usize) {
        let count = |kind: &str| org[kind].as_array().unwrap().iter().filter(|x| x["site"] == site).count();
        let members = org["groups"].as_array().unwrap().iter().map(|g| g["members"].as_array().unwrap().len()).sum();
        (
            org["users"].as_array().unwrap().len(),
            org["groups"].as_array().unwrap().len(),
            members,
            count("projects"),
            count("spaces"),
        )
    }

    async fn org(base: &Url) -> Value {
        harness::client().get(base.join("/__sandbox/org").unwrap()).send().await.unwrap().json().await.unwrap()
    }

    #[tokio::test]
    async fn the_client_reads_every_page() {
        let config = SandboxConfig { org: SIZE, short_pages_every: 4, ..SandboxConfig::default() };
        let (base, token) = sandbox_with(config, None).await;
        let site = tests::sandbox::site_id(1);
        let got = read_site(&client(&base), &AccessToken::new(token), &site).await.unwrap();
        assert_eq!(got, expected(&org(&base).await, &site));
    }

    #[tokio::test]
    async fn the_client_rides_out_rate_limits_server_errors_and_dropped_connections() {
        let (base, token) = sandbox(None).await;
        // Burst 429s with `Retry-After: 0` (clamped to 1 s) every 40th request, a 500 every 7th, a connection dropped
        // mid-answer every 5th, JSON cut off every 11th, an HTML page instead of JSON every 13th.
        let faults = Faults {
            rate_limit_every: 40,
            retry_after_secs: 0,
            error_every: 7,
            drop_every: 5,
            truncate_every: 11,
            garbage_every: 13,
            ..Faults::default()
        };
        set_faults(&base, &faults).await;
        let site = tests::sandbox::site_id(0);
        let started = Instant::now();
        let got = read_site(&client(&base), &AccessToken::new(token), &site).await.unwrap();
        assert_eq!(got, expected(&org(&base).await, &site));
        let stats = stats(&base).await;
        let requests: u64 = stats["rest_requests"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        let limited = requests / 40;
        assert!(limited >= 1, "the test must hit the rate limit");
        assert!(started.elapsed() >= Duration::from_secs(limited), "each 429 waited at least its clamped Retry-After");
    }

    #[tokio::test]
    async fn an_exhausted_quota_is_handed_back_at_once() {
        let (base, token) = sandbox(None).await;
        set_faults(&base, &Faults { rate_limit_every: 1, retry_after_secs: 1800, ..Faults::default() }).await;
        let started = Instant::now();
        let error = client(&base)
            .spaces_page(&AccessToken::new(token.clone()), &tests::sandbox::site_id(0), None)
            .await
            .unwrap_err();
        assert!(error.is_quota_exhausted(), "{error:?}");
        assert!(matches!(error, ApiError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(1800)));
        // A burst limit that asks for longer than the client may sleep is handed back too.
        let error =
            client(&base).users_page(&AccessToken::new(token), &tests::sandbox::site_id(0), 0).await.unwrap_err();
        assert!(matches!(error, ApiError::RateLimited { .. }) && !error.is_quota_exhausted());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_next_link_cannot_leave_the_gateway() {
        let (base, token) = sandbox(None).await;
        let token = AccessToken::new(token);
        let site = tests::sandbox::site_id(0);
        for evil in ["https://evil.example/wiki/api/v2/spaces", "//evil.example/wiki/x", "/rest/api/3/users"] {
            let error = client(&base).spaces_page(&token, &site, Some(evil)).await.unwrap_err();
            assert!(matches!(error, ApiError::Status { status: 400 }), "{evil}: {error:?}");
        }
    }

    #[tokio::test]
    async fn the_admin_api_is_paged_to_the_end_through_its_own_rate_limits() {
        use atlassian::AdminApi;
        let config = tests::sandbox::SandboxConfig {
            org: tests::sandbox::OrgSize { users: 230, groups: 3, projects: 1, spaces: 1, sites: 1 },
            ..tests::sandbox::SandboxConfig::default()
        };
        let base = harness::spawn_sandbox(config).await.unwrap();
        let key = atlassian::AdminKey::new(harness::admin_key(&base, serde_json::json!({})).await.unwrap());
        // Every 2nd Admin API request is limited with `X-RateLimit-Reset` one second ahead, and no `Retry-After`.
        set_faults(&base, &Faults { rate_limit_every: 2, retry_after_secs: 1, ..Faults::default() }).await;
        let started = Instant::now();
        let (mut ids, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let page = client(&base).users_v2(&key, tests::sandbox::ORG_ID, None, cursor.as_deref()).await.unwrap();
            ids.extend(page.data.into_iter().map(|u| u.account_id));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let org = org(&base).await;
        let want: Vec<&str> = org["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["account_type"] == "atlassian")
            .map(|u| u["account_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, want, "three pages of v2 users, in order, none twice");
        assert!(started.elapsed() >= Duration::from_millis(1500), "waited for the reset: {:?}", started.elapsed());
    }
}
