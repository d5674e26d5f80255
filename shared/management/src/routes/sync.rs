//! `POST /connections/{id}/sync` `{"object_types": [...]}` (default: all): one job per type on the queue.

use super::{Answer, connection};
use crate::Deps;
use jobs::{Job, JobQueue};
use lambda_http::Request;
use runtime::answers::ApiError;
use runtime::http;
use serde::Deserialize;
use store::mirror::ObjectType;
use store::{ConnectionMode, ConnectionStatus, ConnectionStore};

#[derive(Deserialize, Default)]
struct SyncRequest {
    #[serde(default)]
    object_types: Option<Vec<String>>,
}

pub async fn request<S: ConnectionStore, M, Q: JobQueue, A>(
    deps: &Deps<S, M, Q, A>,
    id: &str,
    request: &Request,
) -> Answer {
    let body = request.body().as_ref();
    let parsed = if body.is_empty() { Ok(SyncRequest::default()) } else { serde_json::from_slice::<SyncRequest>(body) };
    let Ok(parsed) = parsed else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "Expected JSON {\"object_types\": [\"users\", \"groups\", \"projects\", \"spaces\"]}.",
        ));
    };
    let types = match parsed.object_types {
        None => ObjectType::ALL.to_vec(),
        Some(names) => match names.iter().map(|n| ObjectType::parse(n)).collect::<Option<Vec<_>>>() {
            // A type named twice is queued once: one run per (connection, type) is the rule anyway.
            Some(types) if !types.is_empty() => {
                let mut once = Vec::with_capacity(ObjectType::ALL.len());
                for object_type in types {
                    if !once.contains(&object_type) {
                        once.push(object_type);
                    }
                }
                once
            }
            _ => {
                return Err(ApiError::bad_request(
                    "unknown_object_type",
                    "Object types are users, groups, projects and spaces.",
                ));
            }
        },
    };
    let connection = connection(&deps.store, id).await?;
    if connection.status != ConnectionStatus::Active {
        let message = match connection.mode {
            ConnectionMode::Oauth => {
                "The connection is not active: create a connect session for its tenant and have the admin connect again."
            }
            ConnectionMode::AdminApiKey => {
                "The connection is not active: PATCH it with a new admin_api_key (or site token), or create it again."
            }
        };
        return Err(ApiError::new(409, "connection_not_active", message));
    }
    let jobs: Vec<Job> = types.iter().map(|&object_type| Job::new(id, object_type)).collect();
    if let Err(error) = deps.queue.enqueue(&jobs).await {
        tracing::error!(error = %runtime::error_chain(&error), "enqueueing sync jobs failed");
        return Err(ApiError::new(503, "queue_unavailable", "The sync could not be queued; try again."));
    }
    let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    Ok(http::json(202, &serde_json::json!({"connection_id": id, "enqueued": names})))
}
