//! `{GET,POST,PUT,DELETE} /connections/{id}/proxy/{product}/{path…}`: the product's call to Atlassian through a
//! connection (`shared/proxy` decides what passes). The answer is Atlassian's (status, body, the headers that come
//! back); the connector's own refusals are the API's JSON errors, mapped here once.

use super::Answer;
use crate::Deps;
use lambda_http::http::{HeaderValue, header};
use lambda_http::{Body, Request, Response};
use proxy::ProxyError;
use runtime::answers::ApiError;
use store::{BudgetStore, ConnectionStore, CredentialStore};

/// The header that names the site, when `?cloud_id=` does not.
pub const CLOUD_ID_HEADER: &str = "x-atlassian-cloud-id";

pub async fn forward<S, M, Q, A>(deps: &Deps<S, M, Q, A>, id: &str, product: &str, request: &Request) -> Answer
where
    S: ConnectionStore + CredentialStore + BudgetStore,
    A: atlassian::AtlassianApi + atlassian::ForwardApi,
{
    // The path as sent, after `/connections/{id}/proxy/{product}` (the router's segments drop empty ones).
    let raw = request.uri().path();
    let prefix = format!("/connections/{id}/proxy/{product}");
    let path = raw.strip_prefix(&prefix).unwrap_or_default();
    let headers = request.headers().iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    let owner =
        request.extensions().get::<lambda_http::Context>().map_or_else(|| "proxy".into(), |c| c.request_id.clone());
    let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes())
        .map_err(|_| ApiError::new(405, "method_not_allowed", "This method is not proxied."))?;
    let call = proxy::Request {
        method,
        product,
        path,
        query: request.uri().query(),
        cloud_id: request.headers().get(CLOUD_ID_HEADER).and_then(|v| v.to_str().ok()),
        headers: proxy::request_headers(headers),
        body: request.body().as_ref().to_vec(),
        owner,
    };
    let (method, logged_path) = (call.method.clone(), path.to_owned());
    let answer = proxy::forward(&deps.store, &deps.atlassian, &deps.keys, &deps.proxy, id, call).await;
    match &answer {
        Ok(answer) => {
            tracing::info!(connection_id = id, product, %method, path = %logged_path, status = answer.status, points = answer.points, "proxied")
        }
        Err(error) => {
            tracing::info!(connection_id = id, product, %method, path = %logged_path, refused = %error, "not proxied")
        }
    }
    Ok(response(answer.map_err(refused)?))
}

/// Atlassian's answer as the caller gets it: text stays text, anything else goes as bytes (base64 on the wire).
fn response(answer: proxy::Answer) -> Response<Body> {
    let textual = answer.headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("content-type") && {
            let value = value.to_ascii_lowercase();
            value.contains("json") || value.starts_with("text/") || value.contains("xml")
        }
    });
    let body = match (answer.body.is_empty(), textual) {
        (true, _) => Body::Empty,
        (false, true) => match String::from_utf8(answer.body) {
            Ok(text) => Body::Text(text),
            Err(bytes) => Body::Binary(bytes.into_bytes()),
        },
        (false, false) => Body::Binary(answer.body),
    };
    let mut response = Response::new(body);
    *response.status_mut() =
        lambda_http::http::StatusCode::from_u16(answer.status).unwrap_or(lambda_http::http::StatusCode::BAD_GATEWAY);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value))
        {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// A proxied call that was refused (4xx, with what to change), could not pass for now (429/503 with `Retry-After`),
/// or failed on the way (502, or 500 for the connector's own failures).
fn refused(error: ProxyError) -> ApiError {
    use ProxyError as E;
    let message = error.to_string();
    let (status, code) = match &error {
        E::UnknownProduct(_) => (404, "unknown_product"),
        E::WrongMode { .. } => (400, "product_not_available"),
        E::UnsafePath => (400, "invalid_path"),
        E::QueryTooLong => (414, "query_too_long"),
        E::MethodNotAllowed => (405, "method_not_allowed"),
        E::WritesDisabled => (403, "writes_disabled"),
        E::NotFound => (404, "connection_not_found"),
        E::Revoked => (409, "connection_revoked"),
        E::NeedsReauth(_) => (409, "needs_reauth"),
        E::SiteRequired { .. } => (400, "site_required"),
        E::UnknownSite { .. } => (400, "unknown_site"),
        E::NoSite(_) => (409, "product_not_granted"),
        E::NoSiteToken => (409, "no_site_token"),
        E::QuotaExhausted { retry_after } => {
            return ApiError::new(429, "quota_exhausted", message).retry_after(retry_after.as_secs_f64().ceil() as u64);
        }
        E::Busy => return ApiError::new(503, "refresh_in_progress", message).retry_after(2),
        E::AnswerTooLarge => (502, "answer_too_large"),
        E::Unsendable(_) => (400, "invalid_request"),
        E::Unreachable(_) => {
            tracing::warn!(error = %runtime::error_chain(&error), "a proxied call did not reach Atlassian");
            return ApiError::new(502, "atlassian_unavailable", message).retry_after(5);
        }
        E::Refresh(source) if source.retryable() => {
            tracing::warn!(error = %runtime::error_chain(&error), "a proxied call's token refresh failed");
            return ApiError::new(503, "refresh_failed", message).retry_after(5);
        }
        E::Refresh(_) | E::Crypto(_) | E::Store(_) => return ApiError::internal("a proxied call failed", &error),
    };
    ApiError::new(status, code, message)
}
