//! The routes, a file per resource; each answers `Result<Response, ApiError>`, and what they share is here.

pub mod connections;
pub mod objects;
pub mod proxy;
pub mod sessions;
pub mod sync;

use crate::{Cadences, ConnectionView};
use lambda_http::{Body, Request, Response};
use runtime::answers::ApiError;
use runtime::http;
use serde::de::DeserializeOwned;
use store::{Connection, ConnectionStore, RunStore};

pub type Answer = Result<Response<Body>, ApiError>;

/// The request's JSON body as `T`, or a 400 that shows the expected shape.
pub fn json_body<T: DeserializeOwned>(request: &Request, shape: &'static str) -> Result<T, ApiError> {
    serde_json::from_slice(request.body().as_ref()).map_err(|_| ApiError::bad_request("invalid_body", shape))
}

pub fn connection_not_found() -> ApiError {
    ApiError::new(404, "connection_not_found", "No connection has this id.")
}

/// The connection `id`, or a 404.
pub async fn connection<S: ConnectionStore>(store: &S, id: &str) -> Result<Connection, ApiError> {
    store.get_connection(id).await?.ok_or_else(connection_not_found)
}

/// A connection as the API shows it, with its latest runs.
pub async fn view<S: RunStore>(store: &S, connection: &Connection, cadences: &Cadences, status: u16) -> Answer {
    let runs = store.list_runs(&connection.connection_id).await?;
    Ok(http::json(status, &ConnectionView::new(connection, &runs, cadences)))
}

/// A listing's `limit` (1 to 1,000; `default` when absent).
pub fn page_limit(
    query: &lambda_http::aws_lambda_events::query_map::QueryMap,
    default: usize,
) -> Result<usize, ApiError> {
    match query.first("limit").map(str::parse::<usize>) {
        None => Ok(default),
        Some(Ok(limit)) if (1..=1000).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::bad_request("invalid_limit", "limit must be between 1 and 1000.")),
    }
}
