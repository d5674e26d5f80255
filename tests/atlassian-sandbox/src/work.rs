//! Endpoints the sync does not read, served so the product's calls through the connector's proxy have something
//! real to reach: Jira's issue search and Confluence's page listings, derived from the org (three issues per
//! project, two pages per space), with Atlassian's pagination, scopes and points.
//!
//! | endpoint | scope | pagination |
//! |---|---|---|
//! | `GET rest/api/3/search/jql?jql=&maxResults=&nextPageToken=` | `read:jira-work` | opaque `nextPageToken`, `isLast` |
//! | `GET wiki/api/v2/pages?space-id=&limit=&cursor=` | `read:page:confluence` (granular only, as Atlassian's v2) | `cursor`, `_links.next` |
//! | `GET wiki/rest/api/content?type=page&spaceKey=&start=&limit=` | `read:confluence-content.summary` | `start`/`limit`, `_links.next` |
//!
//! The JQL understood is `project = KEY`, `project in (A, B)` and `order by …` (ignored); anything else is Jira's
//! 400 for a JQL it cannot parse.

use super::Sandbox;
use super::rest::{token, untoken};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::HashMap;

const ISSUES_PER_PROJECT: usize = 3;
const PAGES_PER_SPACE: usize = 2;

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/ex/jira/{cloud_id}/rest/api/3/search/jql", get(search))
        .route("/ex/confluence/{cloud_id}/wiki/api/v2/pages", get(pages))
        .route("/ex/confluence/{cloud_id}/wiki/rest/api/content", get(content))
}

type Params = Query<HashMap<String, String>>;

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"errorMessages": [message], "errors": {}}))).into_response()
}

/// The project keys a JQL names (`None`: every project), or why it cannot be read.
fn projects_in(jql: &str) -> Result<Option<Vec<String>>, ()> {
    let lower = jql.to_ascii_lowercase();
    let filter = match lower.find("order by") {
        Some(at) => jql[..at].trim(),
        None => jql.trim(),
    };
    if filter.is_empty() {
        return Ok(None);
    }
    let (field, rest) = filter.split_once(|c: char| c == '=' || c.is_whitespace()).ok_or(())?;
    if !field.trim().eq_ignore_ascii_case("project") {
        return Err(());
    }
    let rest = rest.trim().trim_start_matches('=').trim();
    let list = match rest.get(..2).map(str::to_ascii_lowercase).as_deref() {
        Some("in") => rest[2..].trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or(())?,
        _ => rest,
    };
    let keys: Vec<String> =
        list.split(',').map(|k| k.trim().trim_matches('"').to_owned()).filter(|k| !k.is_empty()).collect();
    if keys.is_empty() || keys.iter().any(|k| !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
        return Err(());
    }
    Ok(Some(keys))
}

async fn search(
    State(sandbox): State<Sandbox>,
    Path(cloud_id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) = sandbox.gate(&headers, &cloud_id, "search/jql", "jira", &["read:jira-work"]).await {
        return r;
    }
    let Ok(wanted) = projects_in(q.get("jql").map(String::as_str).unwrap_or("")) else {
        return bad_request("Error in the JQL Query: the query could not be parsed.");
    };
    let start = match q.get("nextPageToken") {
        None => 0,
        Some(t) => match untoken(t) {
            Some(start) => start,
            None => return bad_request("The nextPageToken is invalid."),
        },
    };
    let size: usize = q.get("maxResults").and_then(|v| v.parse().ok()).unwrap_or(50).clamp(1, 100);
    let site = sandbox.site_url(&cloud_id);
    let site = site.as_str();
    let issues: Vec<Value> = {
        let org = sandbox.read_org();
        let mut projects: Vec<_> = org
            .projects
            .iter()
            .filter(|p| p.site == cloud_id && wanted.as_ref().is_none_or(|keys| keys.iter().any(|k| k == &p.key)))
            .collect();
        projects.sort_by(|a, b| a.key.cmp(&b.key));
        projects
            .iter()
            .flat_map(|p| {
                (1..=ISSUES_PER_PROJECT).map(move |n| {
                    let id = format!("{}{n:02}", p.id);
                    json!({
                        "id": id, "key": format!("{}-{n}", p.key), "self": format!("{site}/rest/api/3/issue/{id}"),
                        "fields": {"summary": format!("Issue {n} of {}", p.name), "project": {"id": p.id, "key": p.key}},
                    })
                })
            })
            .collect()
    };
    let page: Vec<Value> = issues.iter().skip(start).take(size).cloned().collect();
    sandbox.charge(Some(&cloud_id), 1 + page.len() as u64);
    let is_last = start + page.len() >= issues.len();
    let mut answer = json!({"issues": page, "isLast": is_last});
    if !is_last {
        answer["nextPageToken"] = json!(token(start + size));
    }
    axum::Json(answer).into_response()
}

/// Every page of a site's spaces: (space id, space key, page id, title).
fn site_pages(sandbox: &Sandbox, cloud_id: &str) -> Vec<(String, String, String, String)> {
    let org = sandbox.read_org();
    let mut spaces: Vec<_> = org.spaces.iter().filter(|s| s.site == cloud_id).collect();
    spaces.sort_by_key(|s| s.id.parse::<u64>().unwrap_or(u64::MAX));
    spaces
        .iter()
        .flat_map(|s| {
            (1..=PAGES_PER_SPACE).map(move |n| {
                (s.id.clone(), s.key.clone(), format!("{}{n:03}", s.id), format!("Page {n} of {}", s.name))
            })
        })
        .collect()
}

async fn pages(
    State(sandbox): State<Sandbox>,
    Path(cloud_id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) = sandbox.gate(&headers, &cloud_id, "pages", "confluence", &["read:page:confluence"]).await {
        return r;
    }
    let start = match q.get("cursor").map(|c| untoken(c)) {
        None => 0,
        Some(Some(start)) => start,
        Some(None) => return bad_request("Invalid cursor"),
    };
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(25).clamp(1, 250);
    let all: Vec<_> = site_pages(&sandbox, &cloud_id)
        .into_iter()
        .filter(|(space, ..)| q.get("space-id").is_none_or(|wanted| wanted.split(',').any(|w| w == space)))
        .collect();
    let results: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|(space, _, id, title)| json!({"id": id, "status": "current", "title": title, "spaceId": space}))
        .collect();
    sandbox.charge(Some(&cloud_id), 1 + results.len() as u64);
    let mut links = json!({"base": format!("{}/wiki", sandbox.site_url(&cloud_id))});
    if start + results.len() < all.len() {
        links["next"] = json!(format!("/wiki/api/v2/pages?cursor={}&limit={limit}", token(start + limit)));
    }
    axum::Json(json!({"results": results, "_links": links})).into_response()
}

async fn content(
    State(sandbox): State<Sandbox>,
    Path(cloud_id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) =
        sandbox.gate(&headers, &cloud_id, "content", "confluence", &["read:confluence-content.summary"]).await
    {
        return r;
    }
    if q.get("type").is_some_and(|t| t != "page") {
        return axum::Json(json!({"results": [], "start": 0, "limit": 25, "size": 0, "_links": {}})).into_response();
    }
    let start: usize = q.get("start").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(25).clamp(1, 100);
    let all: Vec<_> = site_pages(&sandbox, &cloud_id)
        .into_iter()
        .filter(|(_, key, ..)| q.get("spaceKey").is_none_or(|wanted| wanted == key))
        .collect();
    let results: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|(_, key, id, title)| {
            json!({"id": id, "type": "page", "status": "current", "title": title, "space": {"key": key}})
        })
        .collect();
    sandbox.charge(Some(&cloud_id), 1 + results.len() as u64);
    let mut links = json!({"base": format!("{}/wiki", sandbox.site_url(&cloud_id))});
    if start + results.len() < all.len() {
        links["next"] = json!(format!("/rest/api/content?type=page&start={}&limit={limit}", start + limit));
    }
    let size = results.len();
    axum::Json(json!({"results": results, "start": start, "limit": limit, "size": size, "_links": links}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::projects_in;

    #[test]
    fn the_jql_it_reads() {
        assert_eq!(projects_in(""), Ok(None));
        assert_eq!(projects_in("order by created DESC"), Ok(None));
        assert_eq!(projects_in("project = ACME"), Ok(Some(vec!["ACME".into()])));
        assert_eq!(projects_in("project=ACME ORDER BY key"), Ok(Some(vec!["ACME".into()])));
        assert_eq!(projects_in("project in (A, \"B\")"), Ok(Some(vec!["A".into(), "B".into()])));
        assert_eq!(projects_in("assignee = currentUser()"), Err(()));
        assert_eq!(projects_in("project = "), Err(()));
    }
}
