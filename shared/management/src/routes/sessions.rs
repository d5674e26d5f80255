//! `POST /connect-sessions`: a connect link for a tenant's admin.

use super::{Answer, json_body};
use crate::{Deps, input};
use lambda_http::Request;
use runtime::http;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use store::SessionStore;
use time::OffsetDateTime;
use tokens::connect;

#[derive(Deserialize)]
struct CreateSession {
    tenant_id: String,
    #[serde(default)]
    return_url: Option<String>,
}

#[derive(Serialize)]
struct CreatedSession<'a> {
    session_id: &'a str,
    connect_url: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

pub async fn create<S: SessionStore, M, Q, A>(deps: &Deps<S, M, Q, A>, request: &Request) -> Answer {
    let body: CreateSession = json_body(request, "Expected JSON {\"tenant_id\": \"…\", \"return_url\": \"…\"?}.")?;
    let tenant_id = input::tenant(&body.tenant_id)?;
    let return_url = input::optional("return_url", body.return_url.as_deref(), input::MAX_URL)?;
    let now = OffsetDateTime::now_utc();
    let session = connect::create_session(&deps.store, &deps.sessions, tenant_id, return_url, now).await?;
    let created = CreatedSession {
        session_id: session.session_id.expose_secret(),
        connect_url: session.connect_url.as_str(),
        expires_at: session.expires_at,
    };
    Ok(http::json(201, &created))
}
