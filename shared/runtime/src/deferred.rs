//! What a function builds from its secrets, deferred when Secrets Manager cannot answer at cold start.
//!
//! A failed init fails every invocation Lambda routes to the container until it gives up on it, and the caller of
//! an HTTP function sees API Gateway's bare `502`. So the init tries once and, when the read fails (Secrets Manager
//! unavailable or throttling, a secret not there yet), the function starts all the same: each request tries again
//! (one attempt at a time; concurrent requests wait for it) and, until one succeeds, is answered in the function's
//! own way: a `503` with `Retry-After` in the API's JSON shape, a page that says to retry for the browser routes,
//! the whole batch handed back to the queue for the worker. A blip costs the requests made during it, never a
//! grant, a job or the container.

use futures_util::future::BoxFuture;
use lambda_http::http::{HeaderValue, header};
use lambda_http::{Body, Response};
use std::future::Future;
use tokio::sync::OnceCell;

pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

type Build<T> = Box<dyn Fn() -> BoxFuture<'static, Result<T, BuildError>> + Send + Sync>;

pub struct Deferred<T> {
    value: OnceCell<T>,
    build: Build<T>,
}

impl<T: Send + Sync> Deferred<T> {
    /// Builds the value now; a failure is logged and left for [`Deferred::get`] to retry.
    pub async fn new<F, Fut>(build: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, BuildError>> + Send + 'static,
    {
        let deferred = Self { value: OnceCell::new(), build: Box::new(move || Box::pin(build())) };
        deferred.get().await;
        deferred
    }

    /// The value, built now if it is not yet; `None` (the failure logged with its causes) if it cannot be.
    pub async fn get(&self) -> Option<&T> {
        match self.value.get_or_try_init(|| (self.build)()).await {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::error!(
                    error = %crate::error_chain(&*error),
                    "could not build what the function needs from its secrets; answering unavailable until it can"
                );
                None
            }
        }
    }
}

/// Serves HTTP requests with `handle` once the secrets are in, and with `unavailable` until then.
pub async fn serve_http<T, F>(
    deps: Deferred<T>,
    unavailable: fn() -> Response<Body>,
    handle: F,
) -> Result<(), lambda_http::Error>
where
    T: Send + Sync,
    F: for<'a> Fn(&'a T, lambda_http::Request) -> BoxFuture<'a, Result<Response<Body>, lambda_http::Error>> + Sync,
{
    let (deps, handle) = (&deps, &handle);
    lambda_http::run(lambda_http::service_fn(|request| async move {
        match deps.get().await {
            Some(deps) => handle(deps, request).await,
            None => Ok(unavailable()),
        }
    }))
    .await
}

/// How long a caller is told to wait before retrying while the secrets cannot be read.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// The management API's answer meanwhile: `503 unavailable`, in its JSON error shape, with `Retry-After`.
pub fn unavailable_json() -> Response<Body> {
    let message = "The connector cannot read its configuration right now; retry in a few seconds.";
    retry_after(crate::http::json_error(503, "unavailable", message))
}

/// The browser routes' answer meanwhile: a page that says to reload it (nothing of the flow was used: a callback's
/// code is still good).
pub fn unavailable_page() -> Response<Body> {
    let message = "The connector cannot read its configuration right now. Nothing was lost.";
    let hint = "Reload this page in a few seconds.";
    retry_after(crate::http::page(503, "Briefly unavailable", message, Some(hint), None))
}

fn retry_after(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_failed_build_is_retried_at_the_next_request_and_kept_once_it_succeeds() {
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = attempts.clone();
        let deferred = Deferred::new(move || {
            let attempt = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                match attempt {
                    1 | 2 => Err::<u32, BuildError>("Secrets Manager is unavailable".into()),
                    n => Ok(n),
                }
            }
        })
        .await;
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "the cold start tries once");
        assert_eq!(deferred.get().await, None, "still unavailable");
        assert_eq!(deferred.get().await, Some(&3), "built at the next request");
        assert_eq!(deferred.get().await, Some(&3));
        assert_eq!(attempts.load(Ordering::SeqCst), 3, "never built again once built");
    }

    #[test]
    fn the_answers_meanwhile_say_when_to_retry() {
        for (response, kind) in [(unavailable_json(), "application/json"), (unavailable_page(), "text/html")] {
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()[header::RETRY_AFTER], "5");
            assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
        }
        let Body::Text(json) = unavailable_json().into_body() else { panic!("a text body") };
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["error"]["code"], "unavailable");
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_attempt() {
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = attempts.clone();
        let deferred = Deferred::new(move || {
            let attempt = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                if attempt == 0 { Err::<&str, BuildError>("down".into()) } else { Ok("built") }
            }
        })
        .await;
        let all = futures_util::future::join_all((0..8).map(|_| deferred.get())).await;
        assert!(all.iter().all(|value| *value == Some(&"built")), "{all:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 2, "one attempt at cold start, one for the eight requests");
    }
}
