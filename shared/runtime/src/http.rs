//! The shapes of HTTP answers.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};
use serde::Serialize;

/// `{"error": {"code", "message"}}` with the given status.
pub fn json_error(status: u16, code: &str, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({"error": {"code": code, "message": message}}))
}

pub fn json(status: u16, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    let mut response = response(status, Body::Text(body));
    set(&mut response, header::CONTENT_TYPE, "application/json");
    response
}

/// `302` to `location`. The referrer policy keeps the callback's code and state out of the next site's logs.
pub fn redirect(location: &str) -> Response<Body> {
    let mut response = response(302, Body::Empty);
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A short-lived cookie for `path` only, never readable by scripts, sent on top-level navigations from other sites
/// (Atlassian's redirect back) but not on their subrequests: `HttpOnly; SameSite=Lax`, and `Secure` except for a
/// loopback origin (the local stack serves plain HTTP). An empty `value` with `max_age` 0 deletes it.
pub fn set_cookie(response: &mut Response<Body>, name: &str, value: &str, path: &str, secure: bool, max_age: i64) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (API Gateway's `cookies` arrive as one).
pub fn cookie<'a>(request: &'a lambda_http::Request, name: &str) -> Option<&'a str> {
    (request.headers().get_all(header::COOKIE).iter())
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Whether `url` is served from this machine (the local stack), where cookies cannot be `Secure`.
pub fn is_loopback(url: &url::Url) -> bool {
    url.host_str().is_some_and(is_loopback_host)
}

/// [`is_loopback`] for a host as a `Host` header gives it (with or without a port).
pub fn is_loopback_host(host: &str) -> bool {
    // `[::1]:9000` → `[::1]`; `127.0.0.1:9000` → `127.0.0.1`.
    let name = match host.starts_with('[') {
        true => host.split_inclusive(']').next(),
        false => host.split(':').next(),
    };
    let name = name.unwrap_or(host);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// A link shown on a page.
pub struct Link<'a> {
    pub href: &'a str,
    pub text: &'a str,
}

/// A small self-contained HTML page (no scripts, no external assets) for people in a browser.
pub fn page(status: u16, title: &str, message: &str, hint: Option<&str>, link: Option<Link<'_>>) -> Response<Body> {
    use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
    let hint = hint.map(|h| format!("<p class=\"hint\">{}</p>", text(h))).unwrap_or_default();
    let link = link
        .map(|l| format!("<p><a class=\"button\" href=\"{}\">{}</a></p>", attr(l.href), text(l.text)))
        .unwrap_or_default();
    let ok = status < 400;
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f4f5f7;color:#172b4d;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}}
main{{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(9,30,66,.25);padding:2rem 2.5rem;max-width:32rem}}
h1{{font-size:1.4rem;margin-top:0;color:{colour}}} .hint{{color:#5e6c84}}
.button{{display:inline-block;background:#0052cc;color:#fff;padding:.5rem 1rem;border-radius:4px;text-decoration:none}}
</style></head>
<body><main><h1>{title}</h1><p>{message}</p>{hint}{link}</main></body></html>
"#,
        title = text(title),
        message = text(message),
        colour = if ok { "#006644" } else { "#bf2600" },
    );
    let mut response = response(status, Body::Text(html));
    set(&mut response, header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(
        &mut response,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'",
    );
    response
}

fn response(status: u16, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    set(&mut response, header::CACHE_CONTROL, "no-store");
    set(&mut response, header::REFERRER_POLICY, "no-referrer");
    set(&mut response, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    response
}

fn set(response: &mut Response<Body>, name: header::HeaderName, value: &'static str) {
    response.headers_mut().insert(name, HeaderValue::from_static(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: &Response<Body>) -> String {
        match response.body() {
            Body::Text(text) => text.clone(),
            _ => String::new(),
        }
    }

    #[test]
    fn pages_escape_what_they_show() {
        let response = page(
            400,
            "Oops",
            "<script>x</script>",
            Some("a & b"),
            Some(Link { href: "https://a/?x=\"y", text: "Back" }),
        );
        let html = body(&response);
        assert!(!html.contains("<script>x"));
        assert!(html.contains("&lt;script&gt;") && html.contains("a &amp; b") && html.contains("&quot;y"));
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()[header::REFERRER_POLICY], "no-referrer");
    }

    #[test]
    fn the_browser_cookie_is_set_and_read_back() {
        let mut response = redirect("https://auth.example/authorize");
        set_cookie(&mut response, "binding", "br_123", "/oauth/callback", true, 600);
        let set = response.headers()[header::SET_COOKIE].to_str().unwrap();
        assert_eq!(set, "binding=br_123; Path=/oauth/callback; Max-Age=600; HttpOnly; SameSite=Lax; Secure");
        let request = lambda_http::http::Request::builder()
            .header(header::COOKIE, "other=1; binding=br_123")
            .header(header::COOKIE, "third=3")
            .body(Body::Empty)
            .unwrap();
        assert_eq!(cookie(&request, "binding"), Some("br_123"));
        assert_eq!(cookie(&request, "third"), Some("3"));
        assert_eq!(cookie(&request, "missing"), None);
        assert!(is_loopback(&url::Url::parse("http://127.0.0.1:9000/").unwrap()));
        assert!(is_loopback(&url::Url::parse("http://[::1]:9000/").unwrap()));
        for host in ["127.0.0.1:9000", "localhost", "[::1]:9000", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        assert!(!is_loopback_host("127.0.0.1.example.com") && !is_loopback_host("connector.example:443"));
        assert!(!is_loopback(&url::Url::parse("https://connector.example/").unwrap()));
    }

    #[test]
    fn errors_have_the_api_shape() {
        let response = json_error(404, "not_found", "No such connection.");
        let value: serde_json::Value = serde_json::from_str(&body(&response)).unwrap();
        assert_eq!(value, serde_json::json!({"error": {"code": "not_found", "message": "No such connection."}}));
    }
}
