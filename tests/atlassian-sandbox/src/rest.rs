//! The sandbox's Jira and Confluence REST endpoints, reached like 3LO apps reach them: through the gateway
//! (`/ex/jira/{cloudId}/…`, `/ex/confluence/{cloudId}/…`) with a Bearer access token whose grant covers the site
//! and the endpoint's scopes. Page sizes and pagination styles are Atlassian's (see the reference), taking the
//! harder reading where it leaves room:
//!
//! | endpoint | pagination | page size |
//! |---|---|---|
//! | `rest/api/3/users/search` (alias `users`) | `startAt`/`maxResults`, **bare array**, only an empty page ends it | default 50, max 1000, then capped at `users_page_cap` (100) |
//! | `rest/api/3/group/bulk` | `startAt`/`maxResults`, PageBean `isLast` | default 50, max 50 |
//! | `rest/api/3/group/member?groupId=` | `startAt`/`maxResults`, PageBean | default 50, max 50, then capped at `members_page_cap` |
//! | `rest/api/3/project/search?expand=lead` | `startAt`/`maxResults`, PageBean | default 50, max 100 |
//! | `wiki/api/v2/spaces` | opaque `cursor`, `_links.next` site-relative + `Link` header | default 25, max 250 |
//!
//! Users pages are capped below `maxResults` as Jira caps them (JRASERVER-78660: 100 a page whatever is asked), and
//! with `short_pages_every` every Nth users page is shorter still, mid-list: a client must advance by what came back
//! and stop only on an empty page.
//!
//! Faults ([`Faults`]) add latency, burst `429`s with `Retry-After` and `RateLimit-Reason`, `500`s and dropped
//! connections (and, at the token endpoint, lost refresh replies). The points quota is in `quota.rs`. Every answer
//! is counted with the quota points Atlassian would charge (1 per request, +2 per user or group, +1 per project or
//! space), readable at `/__sandbox/stats`.

use super::{Org, Sandbox, User};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Faults injected into every REST request of the sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Added to every REST answer.
    pub latency_ms: u64,
    /// Every Nth REST request answers `429` (0: never), counted as `burst_429s`: Jira's says
    /// `RateLimit-Reason: jira-burst-based`; Confluence's says `confluence-quota-global-based` (Atlassian documents no
    /// Confluence burst reason), so it stands for an exhausted quota; the Admin API's has `X-RateLimit-Reset` only.
    pub rate_limit_every: u64,
    /// The `Retry-After` of those answers, in seconds (0 is sent as 0: clients must clamp it).
    pub retry_after_secs: u64,
    /// Only this route answers those `429`s (a route's name as `/__sandbox/stats` counts it, e.g. `search/jql`);
    /// empty: every route.
    pub rate_limit_route: String,
    /// Every Nth REST request answers `500`, `502` or `503`, in turn (0: never), counted as `server_errors`.
    pub error_every: u64,
    /// Every Nth REST request drops its connection mid-answer: no complete response arrives (0: never).
    pub drop_every: u64,
    /// Every Nth REST request answers `200` with JSON cut off mid-way (a complete response whose body ends early,
    /// as a proxy that gave up would send it) (0: never).
    pub truncate_every: u64,
    /// Every Nth REST request answers `200` with an HTML error page instead of JSON (0: never).
    pub garbage_every: u64,
    /// Every Nth REST request stalls [`Faults::stall_ms`] before it answers (0: never): slower than a client's
    /// timeout, it is a request the client gives up on.
    pub stall_every: u64,
    pub stall_ms: u64,
    /// Every Nth REST request first changes the org (one round of [`crate::org::Org::mutate`]: users, groups,
    /// projects and spaces added, renamed and removed, before and after where a run is reading), at most
    /// [`Faults::mutations`] times (0: never): an org that changes while a run pages through it.
    pub mutate_every: u64,
    pub mutations: u64,
    /// The next N successful refreshes (`grant_type=refresh_token`) rotate the grant's tokens as usual, then lose
    /// the answer: the connection drops mid-answer, so the client never sees the new refresh token.
    pub lose_refresh_replies: u64,
    /// Every Nth page of a cursor listing (Confluence's v2 spaces) after the first starts one record early: the
    /// previous page's last record is served again (0: never), counted as `repeated`.
    pub repeat_every: u64,
}

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/ex/jira/{cloud_id}/rest/api/3/users/search", get(users))
        .route("/ex/jira/{cloud_id}/rest/api/3/users", get(users))
        .route("/ex/jira/{cloud_id}/rest/api/3/group/bulk", get(groups))
        .route("/ex/jira/{cloud_id}/rest/api/3/group/member", get(group_members))
        .route("/ex/jira/{cloud_id}/rest/api/3/project/search", get(projects))
        .route("/ex/confluence/{cloud_id}/wiki/api/v2/spaces", get(spaces))
}

type Params = Query<HashMap<String, String>>;

fn unauthorized(message: &str) -> Response {
    (StatusCode::UNAUTHORIZED, axum::Json(json!({"code": 401, "message": message}))).into_response()
}

/// An answer whose body fails mid-way: the client sees its connection drop, with no complete response.
pub(super) fn dropped_connection() -> Response {
    let cut = futures_util::stream::once(async {
        Err::<axum::body::Bytes, _>(std::io::Error::other("the sandbox drops this connection"))
    });
    let headers = [(header::CONTENT_TYPE, "application/json")];
    (headers, axum::body::Body::from_stream(cut)).into_response()
}

impl Sandbox {
    /// What every REST request goes through: faults, the Bearer token, the site and the scopes, then the quota.
    pub(super) async fn gate(
        &self,
        headers: &HeaderMap,
        cloud_id: &str,
        route: &'static str,
        product: &str,
        any_scope: &[&str],
    ) -> Result<String, Response> {
        self.faults(route, product).await?;
        let (account_id, sites, scopes) = self.grant_for_bearer(headers)?;
        if !sites.iter().any(|s| s == cloud_id) {
            return Err(unauthorized("Unauthorized; site is not part of this grant"));
        }
        if !any_scope.iter().any(|wanted| scopes.iter().any(|s| s == wanted)) {
            return Err(unauthorized("Unauthorized; scope does not match"));
        }
        self.admit(product, cloud_id)?;
        Ok(account_id)
    }

    /// Counts the request and injects the configured faults: latency, then a burst 429 (Jira and Confluence send
    /// `Retry-After` and `RateLimit-Reason`; the Admin API only `X-RateLimit-Reset`), a 500, or a dropped connection.
    pub(super) async fn faults(&self, route: &'static str, product: &str) -> Result<(), Response> {
        let (faults, n) = {
            let mut inner = self.lock();
            inner.rest_counter += 1;
            *inner.rest_requests.entry(route).or_default() += 1;
            (inner.faults.clone(), inner.rest_counter)
        };
        if faults.mutate_every > 0 && n % faults.mutate_every == 0 && n / faults.mutate_every <= faults.mutations {
            self.org.write().unwrap_or_else(|p| p.into_inner()).mutate();
        }
        if faults.stall_every > 0 && n % faults.stall_every == 0 {
            self.lock().stalled += 1;
            tokio::time::sleep(std::time::Duration::from_millis(faults.stall_ms)).await;
        }
        if faults.latency_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(faults.latency_ms)).await;
        }
        let limited_route = faults.rate_limit_route.is_empty() || faults.rate_limit_route == route;
        if faults.rate_limit_every > 0 && limited_route && n % faults.rate_limit_every == 0 {
            self.lock().burst_429s += 1;
            let body = axum::Json(json!({"code": 429, "message": "Rate limit exceeded."}));
            if product == "admin" {
                let reset = time::OffsetDateTime::now_utc() + time::Duration::seconds(faults.retry_after_secs as i64);
                let reset = reset.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                return Err((StatusCode::TOO_MANY_REQUESTS, [("x-ratelimit-reset", reset)], body).into_response());
            }
            let reason = if product == "jira" { "jira-burst-based" } else { "confluence-quota-global-based" };
            let headers =
                [("retry-after", faults.retry_after_secs.to_string()), ("ratelimit-reason", reason.to_string())];
            return Err((StatusCode::TOO_MANY_REQUESTS, headers, body).into_response());
        }
        if faults.error_every > 0 && n % faults.error_every == 0 {
            // 500, 502 and 503 in turn: Atlassian's own failures and those of the gateways in front of it.
            let status = [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE]
                [(n / faults.error_every % 3) as usize];
            self.lock().server_errors += 1;
            return Err((status, status.canonical_reason().unwrap_or("error")).into_response());
        }
        if faults.drop_every > 0 && n % faults.drop_every == 0 {
            return Err(dropped_connection());
        }
        if faults.truncate_every > 0 && n % faults.truncate_every == 0 {
            let cut = r#"{"startAt": 0, "isLast": false, "values": [{"accountId": "5b10ac8d82e05b22cc7d4ef5", "displ"#;
            return Err((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], cut).into_response());
        }
        if faults.garbage_every > 0 && n % faults.garbage_every == 0 {
            let page = "<html><body><h1>502 Bad Gateway</h1></body></html>";
            return Err((StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], page).into_response());
        }
        Ok(())
    }

    /// Whether this cursor page serves the previous page's last record again ([`Faults::repeat_every`]).
    fn repeats(&self) -> bool {
        let mut inner = self.lock();
        let every = inner.faults.repeat_every;
        if every == 0 {
            return false;
        }
        inner.cursor_pages += 1;
        let repeat = inner.cursor_pages.is_multiple_of(every);
        inner.repeated += u64::from(repeat);
        repeat
    }

    /// How many users a page serves: `maxResults` (already clamped) under the cap, and, every
    /// `short_pages_every`th page, half of that.
    fn users_page_size(&self, asked: usize) -> usize {
        let size = asked.min(self.config.users_page_cap.max(1));
        let every = self.config.short_pages_every;
        let mut inner = self.lock();
        inner.users_pages += 1;
        if every > 0 && inner.users_pages.is_multiple_of(every) { (size / 2).max(1) } else { size }
    }

    pub(super) fn site_url(&self, cloud_id: &str) -> String {
        self.read_org().sites.iter().find(|s| s.id == cloud_id).map(|s| s.url.clone()).unwrap_or_default()
    }
}

fn offset(params: &HashMap<String, String>, default: usize, max: usize) -> (usize, usize) {
    let start = params.get("startAt").and_then(|v| v.parse().ok()).unwrap_or(0);
    let size = params.get("maxResults").and_then(|v| v.parse().ok()).unwrap_or(default).clamp(1, max);
    (start, size)
}

/// Jira's `PageBean`.
fn page_bean(self_url: &str, start: usize, size: usize, total: usize, values: Vec<Value>) -> Value {
    let is_last = start + values.len() >= total;
    let mut page = json!({
        "self": self_url, "maxResults": size, "startAt": start, "total": total, "isLast": is_last, "values": values,
    });
    if !is_last {
        page["nextPage"] = json!(format!("{self_url}?startAt={}&maxResults={size}", start + size));
    }
    page
}

fn user_json(site: &str, user: &User) -> Value {
    let mut value = json!({
        "self": format!("{site}/rest/api/3/user?accountId={}", user.account_id),
        "accountId": user.account_id,
        "accountType": user.account_type,
        "avatarUrls": {"48x48": format!("https://avatar.example/{}/48", user.account_id)},
        "displayName": user.name,
        "active": user.active,
        "timeZone": "Europe/London",
        "locale": "en_GB",
    });
    if user.email_visible {
        value["emailAddress"] = json!(user.email);
    }
    value
}

async fn users(
    State(sandbox): State<Sandbox>,
    Path(cloud_id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) = sandbox.gate(&headers, &cloud_id, "users", "jira", &["read:jira-user", "read:user:jira"]).await {
        return r;
    }
    let (start, asked) = offset(&q, 50, 1000);
    let size = sandbox.users_page_size(asked);
    let site = sandbox.site_url(&cloud_id);
    let values: Vec<Value> =
        sandbox.read_org().users_on(&cloud_id).iter().skip(start).take(size).map(|u| user_json(&site, u)).collect();
    sandbox.charge(Some(&cloud_id), 1 + 2 * values.len() as u64);
    axum::Json(values).into_response()
}

async fn groups(
    State(sandbox): State<Sandbox>,
    Path(cloud_id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) =
        sandbox.gate(&headers, &cloud_id, "group/bulk", "jira", &["read:jira-user", "read:group:jira"]).await
    {
        return r;
    }
    let (start, size) = offset(&q, 50, 50);
    let org = sandbox.read_org();
    let on_site = org.groups_on(&cloud_id);
    let values: Vec<Value> =
        on_site.iter().skip(start).take(size).map(|g| json!({"groupId": g.id, "name": g.name})).collect();
    sandbox.charge(Some(&cloud_id), 1 + 2 * values.len() as u64);
    let url = format!("{}/rest/api/3/group/bulk", sandbox.site_url(&cloud_id));
    axum::Json(page_bean(&url, start, size, on_site.len(), values)).into_response()
}

async fn group_members(
    State(sandbox): State<Sandbox>,
    Path(cloud_id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    // Classic `read:jira-user` is not enough here: Atlassian wants the admin scope or the granular one.
    let scopes = ["manage:jira-configuration", "read:group:jira"];
    if let Err(r) = sandbox.gate(&headers, &cloud_id, "group/member", "jira", &scopes).await {
        return r;
    }
    let Some(group_id) = q.get("groupId") else {
        let body = json!({"errorMessages": ["You must specify a group name or ID."], "errors": {}});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    };
    let (start, size) = offset(&q, 50, 50);
    let size = size.min(sandbox.config.members_page_cap.max(1));
    let include_inactive = q.get("includeInactiveUsers").is_some_and(|v| v == "true");
    let org: std::sync::RwLockReadGuard<'_, Org> = sandbox.read_org();
    let Some(group) = org.groups.iter().find(|g| g.id == *group_id) else {
        let body = json!({"errorMessages": ["Specified group does not exist."], "errors": {}});
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    let site = sandbox.site_url(&cloud_id);
    let members: Vec<&User> =
        group.members.iter().filter_map(|m| org.user(m)).filter(|u| include_inactive || u.active).collect();
    let values: Vec<Value> = members.iter().skip(start).take(size).map(|u| user_json(&site, u)).collect();
    sandbox.charge(Some(&cloud_id), 1 + 2 * values.len() as u64);
    let url = format!("{site}/rest/api/3/group/member");
    axum::Json(page_bean(&url, start, size, members.len(), values)).into_response()
}

async fn projects(
    State(sandbox): State<Sandbox>,
    Path(cloud_id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) =
        sandbox.gate(&headers, &cloud_id, "project/search", "jira", &["read:jira-work", "read:project:jira"]).await
    {
        return r;
    }
    projects_page(&sandbox, &cloud_id, &q, true)
}

/// A page of `project/search` on a site, however the caller got in (`metered`: through the gateway, so its points
/// are charged to the quota).
pub(super) fn projects_page(sandbox: &Sandbox, cloud_id: &str, q: &HashMap<String, String>, metered: bool) -> Response {
    let (start, size) = offset(q, 50, 100);
    let expand_lead = q.get("expand").is_some_and(|e| e.split(',').any(|x| x == "lead"));
    let site = sandbox.site_url(cloud_id);
    let org = sandbox.read_org();
    let mut on_site: Vec<_> = org.projects.iter().filter(|p| p.site == cloud_id).collect();
    on_site.sort_by(|a, b| a.key.cmp(&b.key));
    let values: Vec<Value> = on_site
        .iter()
        .skip(start)
        .take(size)
        .map(|p| {
            let mut value = json!({
                "self": format!("{site}/rest/api/3/project/{}", p.id), "id": p.id, "key": p.key, "name": p.name,
                "projectTypeKey": "software", "simplified": false, "style": "classic", "isPrivate": false,
            });
            if expand_lead && let Some(lead) = org.user(&p.lead) {
                value["lead"] = json!({
                    "accountId": lead.account_id, "displayName": lead.name, "active": lead.active,
                    "accountType": lead.account_type,
                });
            }
            value
        })
        .collect();
    sandbox.charge(metered.then_some(cloud_id), 1 + values.len() as u64);
    let url = format!("{site}/rest/api/3/project/search");
    axum::Json(page_bean(&url, start, size, on_site.len(), values)).into_response()
}

async fn spaces(
    State(sandbox): State<Sandbox>,
    Path(cloud_id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if let Err(r) = sandbox.gate(&headers, &cloud_id, "spaces", "confluence", &["read:space:confluence"]).await {
        return r;
    }
    spaces_page(&sandbox, &cloud_id, &q, true)
}

/// A position as an opaque cursor (`after:{n}`, base64), as Confluence's v2 and Jira's `nextPageToken` look.
pub(super) fn token(after: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("after:{after}"))
}

/// The position an opaque cursor names, if it is one of [`token`]'s.
pub(super) fn untoken(token: &str) -> Option<usize> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    text.strip_prefix("after:")?.parse().ok()
}

/// A page of v2 `spaces` on a site, however the caller got in (`metered`: through the gateway).
pub(super) fn spaces_page(sandbox: &Sandbox, cloud_id: &str, q: &HashMap<String, String>, metered: bool) -> Response {
    let start = match q.get("cursor") {
        None => 0,
        Some(cursor) => match untoken(cursor) {
            Some(start) => start,
            None => {
                let body = json!({"errors": [{"status": 400, "code": "INVALID_REQUEST_PARAMETER", "title": "Invalid cursor"}]});
                return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
            }
        },
    };
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(25).clamp(1, 250);
    let start = if start > 0 && sandbox.repeats() { start - 1 } else { start };
    let site = sandbox.site_url(cloud_id);
    let org = sandbox.read_org();
    let mut on_site: Vec<_> = org.spaces.iter().filter(|s| s.site == cloud_id).collect();
    on_site.sort_by_key(|s| s.id.parse::<u64>().unwrap_or(u64::MAX));
    let results: Vec<Value> = on_site
        .iter()
        .skip(start)
        .take(limit)
        .map(|s| {
            json!({
                "id": s.id, "key": s.key, "name": s.name, "type": s.r#type, "status": s.status,
                "authorId": org.users[0].account_id, "createdAt": "2024-01-15T09:30:00.000Z", "homepageId": null,
                "description": null, "icon": null, "_links": {"webui": format!("/spaces/{}", s.key)},
            })
        })
        .collect();
    sandbox.charge(metered.then_some(cloud_id), 1 + results.len() as u64);
    let mut links = json!({"base": format!("{site}/wiki")});
    let mut response_headers = HeaderMap::new();
    if start + results.len() < on_site.len() {
        let cursor = token(start + limit);
        let next = format!("/wiki/api/v2/spaces?cursor={cursor}&limit={limit}");
        let link = format!("<{next}>; rel=\"next\", <{site}/wiki>; rel=\"base\"");
        if let Ok(value) = HeaderValue::from_str(&link) {
            response_headers.insert(header::LINK, value);
        }
        links["next"] = json!(next);
    }
    (response_headers, axum::Json(json!({"results": results, "_links": links}))).into_response()
}
