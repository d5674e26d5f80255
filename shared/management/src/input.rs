//! One input contract for every route. The router checks what every request carries before any route runs (the
//! body's size, type and encoding, the path's ids, the query's cursor); the routes check their JSON fields with the
//! same rules as they take them. Every refusal is a 4xx JSON answer that names what to fix, and nothing reaches the
//! store or Atlassian first. The limits are the README's ("Input limits").

use lambda_http::http::{Method, header};
use lambda_http::{Request, RequestExt};
use runtime::answers::ApiError;

/// The largest body a route reads (the biggest legitimate one, an admin-key connection, is well under 16 KB).
pub const MAX_BODY: usize = 64 * 1024;
/// Connection ids, group ids, org ids.
pub const MAX_ID: usize = store::MAX_ID;
/// A tenant id: what the product calls its customer (the connect flow's own rule).
pub const MAX_TENANT: usize = tokens::connect::MAX_TENANT;
/// Return URLs and site URLs.
pub const MAX_URL: usize = 2048;
/// An admin API key or a site API token (Atlassian's are a few hundred characters).
pub const MAX_SECRET: usize = 4096;
/// A site account's email.
pub const MAX_EMAIL: usize = 320;
/// A listing cursor as this API hands them out.
pub const MAX_CURSOR: usize = 512;

/// The checks every request passes before its route: a body no bigger than [`MAX_BODY`]; on a route that takes
/// JSON, a body that says it is JSON and is UTF-8; a cursor of printable ASCII no longer than [`MAX_CURSOR`]. The
/// proxy's requests pass as sent, up to [`proxy::MAX_BODY`].
pub fn check(request: &Request) -> Result<(), ApiError> {
    let body = request.body().as_ref();
    if is_proxy(request.uri().path()) {
        // Passed through as sent: any type, up to what Lambda carries; its path and query are the proxy's to check.
        if body.len() > proxy::MAX_BODY {
            let message = format!("A proxied request body is at most {} bytes.", proxy::MAX_BODY);
            return Err(ApiError::new(413, "body_too_large", message));
        }
        return Ok(());
    }
    if body.len() > MAX_BODY {
        return Err(ApiError::new(413, "body_too_large", format!("A request body is at most {MAX_BODY} bytes.")));
    }
    let takes_json = matches!(*request.method(), Method::POST | Method::PATCH | Method::PUT);
    if takes_json && !body.is_empty() {
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                "Send the body as JSON, with Content-Type: application/json.",
            ));
        }
        if std::str::from_utf8(body).is_err() {
            return Err(ApiError::bad_request("invalid_body", "The body is not UTF-8 text."));
        }
    }
    let query = request.query_string_parameters();
    for cursor in query.all("cursor").unwrap_or_default() {
        if !(cursor.len() <= MAX_CURSOR && cursor.bytes().all(|b| b.is_ascii_graphic())) {
            return Err(ApiError::bad_request("invalid_cursor", "The cursor is not one this API gave out."));
        }
    }
    Ok(())
}

/// Whether a path is the proxy's (`/connections/{id}/proxy/…`).
pub fn is_proxy(path: &str) -> bool {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    segments.next() == Some("connections") && segments.nth(1) == Some("proxy")
}

/// An id in a path or a body, as the store keys by them ([`store::valid_id`]).
pub fn id<'a>(field: &'static str, value: &'a str) -> Result<&'a str, ApiError> {
    if store::valid_id(value) {
        return Ok(value);
    }
    Err(ApiError::bad_request(
        "invalid_id",
        format!("{field} must be 1 to {MAX_ID} letters, digits, '.', '_', ':' or '-'."),
    ))
}

/// A tenant id, trimmed, as the connect flow takes it ([`tokens::connect::valid_tenant`]), in either connect mode.
pub fn tenant(value: &str) -> Result<&str, ApiError> {
    let value = value.trim();
    if tokens::connect::valid_tenant(value) {
        return Ok(value);
    }
    Err(ApiError::bad_request(
        "invalid_tenant",
        format!("tenant_id must be 1 to {MAX_TENANT} characters, without control characters."),
    ))
}

/// A free text field (a URL, a key, an email): at most `max` bytes, no control character (a line break in a key
/// would otherwise become a header Atlassian never sees).
pub fn text<'a>(field: &'static str, value: &'a str, max: usize) -> Result<&'a str, ApiError> {
    if value.len() <= max && !value.chars().any(char::is_control) {
        return Ok(value);
    }
    Err(ApiError::bad_request(
        "invalid_field",
        format!("{field} must be at most {max} bytes, without control characters or line breaks."),
    ))
}

/// [`text`] for an optional field.
pub fn optional<'a>(field: &'static str, value: Option<&'a str>, max: usize) -> Result<Option<&'a str>, ApiError> {
    value.map(|v| text(field, v, max)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_tenants_and_fields_have_their_limits() {
        assert!(id("id", "con_0123abcd").is_ok() && id("id", "557058:f00-ba.r_1").is_ok());
        for bad in ["", "a/b", "a b", "x\u{0}", "é", &"a".repeat(MAX_ID + 1)] {
            assert_eq!(id("id", bad).unwrap_err().status, 400, "{bad:?}");
        }
        assert_eq!(tenant(" acme ").unwrap(), "acme");
        assert!(tenant("ünïcode tenant").is_ok());
        for bad in ["", "   ", "a\u{0}b", "line\nbreak", &"t".repeat(MAX_TENANT + 1)] {
            assert_eq!(tenant(bad).unwrap_err().code, "invalid_tenant", "{bad:?}");
        }
        assert!(text("key", "ATATT3x", MAX_SECRET).is_ok());
        assert!(text("key", "ATATT\r\nX-Injected: 1", MAX_SECRET).is_err());
        assert!(text("key", &"k".repeat(MAX_SECRET + 1), MAX_SECRET).is_err());
        assert_eq!(optional("url", None, MAX_URL).unwrap(), None);
    }
}
