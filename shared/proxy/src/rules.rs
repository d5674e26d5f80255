//! What may pass through the proxy, each way: the path (never out of the product's API), the query (less the
//! proxy's own `cloud_id`), the headers (an allow-list both ways: never the caller's `Authorization` or cookies,
//! never Atlassian's `Set-Cookie`), and what a call likely cost in points.

/// The longest path after `/proxy/{product}` (Atlassian's longest documented paths are well under 300 bytes).
pub const MAX_PATH: usize = 2048;
/// The longest query string.
pub const MAX_QUERY: usize = 8192;

/// Request headers that pass to Atlassian (lower case); any other is dropped.
const REQUEST_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-type",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "x-atlassian-token",
    "x-experimentalapi",
    "x-force-accept-language",
];

/// Answer headers that come back (lower case), with every `ratelimit*`, `beta-ratelimit*` and `x-ratelimit-*`.
const ANSWER_HEADERS: &[&str] =
    &["content-type", "content-language", "etag", "last-modified", "link", "location", "retry-after", "x-arequestid"];

/// Whether `path` (what follows `/proxy/{product}`) stays inside the product's API as written: it starts with one
/// `/`, has no empty, `.` or `..` segment, no percent-encoded `.`, `/` or `\`, no backslash, and no control or
/// non-ASCII character. Atlassian's paths never need any of these; refusing them here (before the client's own
/// check of the resolved URL) leaves no reading of the path that could climb out.
pub fn path_is_safe(path: &str) -> bool {
    if path.len() > MAX_PATH || !path.starts_with('/') || path.len() < 2 {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00"].iter().any(|encoded| lower.contains(encoded)) {
        return false;
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) || path.contains('\\') || path.contains('?') || path.contains('#') {
        return false;
    }
    path[1..].split('/').enumerate().all(|(i, segment)| {
        let last = i == path[1..].split('/').count() - 1;
        !matches!(segment, "." | "..") && (!segment.is_empty() || last)
    })
}

/// The query to send: the caller's, less `cloud_id` (the proxy's own parameter), and the `cloud_id` it named.
pub fn split_query(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(query) = query.filter(|q| !q.is_empty()) else { return (None, None) };
    let mut cloud_id = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name == "cloud_id" {
                cloud_id = Some(decode(value));
                return false;
            }
            !pair.is_empty()
        })
        .collect();
    ((!kept.is_empty()).then(|| kept.join("&")), cloud_id)
}

fn decode(value: &str) -> String {
    url_decode(value.replace('+', " ").as_bytes())
}

fn url_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, ..) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The caller's headers that pass to Atlassian.
pub fn request_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(name, _)| REQUEST_HEADERS.iter().any(|allowed| name.eq_ignore_ascii_case(allowed)))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect()
}

/// Atlassian's answer headers that go back to the caller.
pub fn answer_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            ANSWER_HEADERS.contains(&name.as_str())
                || name.starts_with("ratelimit")
                || name.starts_with("beta-ratelimit")
                || name == "beta-retry-after"
                || name.starts_with("x-ratelimit-")
        })
        .cloned()
        .collect()
}

/// Whether a method writes (refused unless the deployment allows writes).
pub fn writes(method: &reqwest::Method) -> bool {
    method != reqwest::Method::GET && method != reqwest::Method::HEAD
}

/// What an answer likely cost, the way Atlassian counts (1 a request, +1 an object, +2 an identity object: users,
/// groups): the objects are the first list the answer holds (a bare array, or `values`, `results`, `issues`,
/// `data`). A write costs 1. Atlassian's own headers correct the pool where this is off.
pub fn points(method: &reqwest::Method, path: &str, status: u16, body: &[u8]) -> u64 {
    if writes(method) || !(200..300).contains(&status) {
        return 1;
    }
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else { return 1 };
    let objects = match &answer {
        serde_json::Value::Array(items) => items.len(),
        serde_json::Value::Object(fields) => ["values", "results", "issues", "data"]
            .iter()
            .find_map(|name| fields.get(*name).and_then(|v| v.as_array()).map(Vec::len))
            .unwrap_or(0),
        _ => 0,
    } as u64;
    let identity = ["/user", "/group"].iter().any(|p| path.contains(p));
    1 + objects * if identity { 2 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_climb_out_are_refused() {
        for safe in ["/rest/api/3/search/jql", "/wiki/api/v2/pages", "/v1/orgs", "/rest/api/3/project/", "/a:b/c-d_e~f"]
        {
            assert!(path_is_safe(safe), "{safe}");
        }
        for unsafe_path in [
            "",
            "/",
            "rest/api/3",
            "//evil.example/x",
            "/rest/../admin",
            "/rest/./x",
            "/rest/..",
            "/rest//x",
            "/rest/%2e%2e/x",
            "/rest/%2E./x",
            "/rest%2fadmin",
            "/rest%5Cadmin",
            "/rest\\admin",
            "/rest/a b",
            "/rest/\u{0}",
            "/rest/é",
            "/rest?x=1",
            "/rest#f",
            "/rest/%00",
            "https://evil.example/x",
        ] {
            assert!(!path_is_safe(unsafe_path), "{unsafe_path:?}");
        }
        assert!(!path_is_safe(&format!("/{}", "a".repeat(MAX_PATH))));
    }

    #[test]
    fn the_query_passes_without_the_proxys_cloud_id() {
        assert_eq!(split_query(None), (None, None));
        assert_eq!(
            split_query(Some("jql=project%3DA&maxResults=5")),
            (Some("jql=project%3DA&maxResults=5".into()), None)
        );
        assert_eq!(
            split_query(Some("cloud_id=c%2D1&limit=2&&cursor=x")),
            (Some("limit=2&cursor=x".into()), Some("c-1".into()))
        );
        assert_eq!(split_query(Some("cloud_id=c-2")), (None, Some("c-2".into())));
    }

    #[test]
    fn only_allowed_headers_pass_either_way() {
        let sent = request_headers([
            ("Authorization", "Bearer mk_management"),
            ("Cookie", "session=1"),
            ("Content-Type", "application/json"),
            ("Host", "connector.example"),
            ("Connection", "keep-alive"),
            ("X-Atlassian-Token", "no-check"),
            ("X-Forwarded-For", "10.0.0.1"),
        ]);
        assert_eq!(
            sent,
            vec![("content-type".into(), "application/json".into()), ("x-atlassian-token".into(), "no-check".into())]
        );
        let answer: Vec<(String, String)> = [
            ("content-type", "application/json"),
            ("set-cookie", "atlassian.xsrf.token=1"),
            ("ratelimit", "\"global-app-quota\";r=10;t=5"),
            ("Beta-RateLimit-Policy", "\"global-app-quota\";q=65000;w=3600"),
            ("x-ratelimit-nearlimit", "true"),
            ("retry-after", "3"),
            ("transfer-encoding", "chunked"),
            ("strict-transport-security", "max-age=1"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let names: Vec<String> = answer_headers(&answer).into_iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
        assert_eq!(
            names,
            ["content-type", "ratelimit", "beta-ratelimit-policy", "x-ratelimit-nearlimit", "retry-after"]
        );
    }

    #[test]
    fn points_count_the_objects_an_answer_holds() {
        let get = reqwest::Method::GET;
        assert_eq!(points(&get, "/rest/api/3/search/jql", 200, br#"{"issues": [{}, {}, {}]}"#), 4);
        assert_eq!(points(&get, "/rest/api/3/users/search", 200, br#"[{}, {}]"#), 5);
        assert_eq!(points(&get, "/wiki/api/v2/pages", 200, br#"{"results": [{}], "_links": {}}"#), 2);
        assert_eq!(points(&get, "/rest/api/3/myself", 200, br#"{"accountId": "a"}"#), 1);
        assert_eq!(points(&get, "/rest/api/3/search/jql", 500, b"oops"), 1);
        assert_eq!(points(&reqwest::Method::POST, "/rest/api/3/issue", 201, br#"{"values": [{}, {}]}"#), 1);
    }
}
