//! The sandbox's REST API behaves like Atlassian's: pagination styles and page caps, scopes, sites, faults and
//! mutation. Paging every endpoint the way a client must gives back exactly the seeded org.

use serde_json::Value;
use tests::harness;
use tests::sandbox::{Faults, OrgSize, SandboxConfig};
use url::Url;

const SIZE: OrgSize = OrgSize { users: 1234, groups: 120, projects: 230, spaces: 300, sites: 2 };

/// A sandbox of its own and an access token from a full consent (with `scopes` granted, or all asked).
async fn sandbox(granted_scopes: Option<&str>) -> (Url, String) {
    let base = harness::spawn_sandbox(SandboxConfig { org: SIZE, ..SandboxConfig::default() }).await.unwrap();
    let token = harness::sandbox_token(&base, granted_scopes).await.unwrap();
    (base, token)
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

    // Users: a bare array; ask for more than the cap and stop on a short page.
    let mut users = Vec::new();
    loop {
        let (status, _, page) =
            get(&base, &token, &format!("{jira}/users/search?startAt={}&maxResults=5000", users.len())).await;
        assert_eq!(status, 200);
        let page = page.as_array().unwrap().clone();
        assert!(page.len() <= 1000, "maxResults is capped at 1000");
        let short = page.len() < 1000;
        users.extend(page);
        if short {
            break;
        }
    }
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

    let stats: Value =
        harness::client().get(base.join("/__sandbox/stats").unwrap()).send().await.unwrap().json().await.unwrap();
    assert!(stats["points"].as_u64().unwrap() > 2 * SIZE.users as u64, "identity objects cost 2 points each");
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
        let mut users = 0;
        loop {
            let page = client.users_page(token, site, users).await?;
            users += page.len();
            if page.len() < atlassian::rest::USERS_PAGE {
                break;
            }
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
        let (base, token) = sandbox(None).await;
        let site = tests::sandbox::site_id(1);
        let got = read_site(&client(&base), &AccessToken::new(token), &site).await.unwrap();
        assert_eq!(got, expected(&org(&base).await, &site));
    }

    #[tokio::test]
    async fn the_client_rides_out_rate_limits_server_errors_and_dropped_connections() {
        let (base, token) = sandbox(None).await;
        // Burst 429s with `Retry-After: 0` (clamped to 1 s) every 40th request, a 500 every 7th, a connection dropped
        // mid-answer every 5th.
        let faults =
            Faults { rate_limit_every: 40, retry_after_secs: 0, error_every: 7, drop_every: 5, ..Faults::default() };
        set_faults(&base, &faults).await;
        let site = tests::sandbox::site_id(0);
        let started = Instant::now();
        let got = read_site(&client(&base), &AccessToken::new(token), &site).await.unwrap();
        assert_eq!(got, expected(&org(&base).await, &site));
        let stats: Value =
            harness::client().get(base.join("/__sandbox/stats").unwrap()).send().await.unwrap().json().await.unwrap();
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
