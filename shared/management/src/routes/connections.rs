//! Connections: made from an admin key (`POST`), given new credentials (`PATCH`), listed, shown, and disconnected
//! (`DELETE`: tokens destroyed at once, mirrored data removed, status `revoked`). OAuth connections are made
//! through a connect session instead.

use super::{Answer, connection, json_body, view};
use crate::{Deps, input};
use lambda_http::{Request, RequestExt};
use runtime::answers::ApiError;
use runtime::http;
use serde::Deserialize;
use store::{ConnectionMode, ConnectionStatus, ConnectionStore, MirrorStore, RunStore};
use time::OffsetDateTime;
use tokens::admin::{self, AdminConnectRequest, AdminPatch};

/// `POST /connections`. The body is parsed into plain fields and the secrets moved into redacting types at once;
/// no part of it is ever logged or echoed back.
#[derive(Deserialize)]
struct CreateConnection {
    tenant_id: String,
    mode: String,
    #[serde(default)]
    org_id: String,
    #[serde(default)]
    admin_api_key: String,
    #[serde(default)]
    site_url: Option<String>,
    #[serde(default)]
    site_email: Option<String>,
    #[serde(default)]
    site_api_token: Option<String>,
    #[serde(default)]
    products: Option<Vec<String>>,
}

const CREATE_SHAPE: &str = "Expected JSON {\"tenant_id\", \"mode\": \"admin_api_key\", \"org_id\", \"admin_api_key\", \"site_url\"?, \"site_email\"?, \"site_api_token\"?, \"products\"?: [\"jira\", \"confluence\"]}.";

pub async fn create<S, M, Q, A>(deps: &Deps<S, M, Q, A>, request: &Request) -> Answer
where
    S: ConnectionStore + RunStore,
    A: atlassian::AdminApi,
{
    let body: CreateConnection = json_body(request, CREATE_SHAPE)?;
    if body.mode != "admin_api_key" {
        return Err(ApiError::bad_request(
            "unsupported_mode",
            "mode must be \"admin_api_key\"; OAuth connections are made with POST /connect-sessions and the link it returns.",
        ));
    }
    let tenant_id = input::tenant(&body.tenant_id)?;
    let org_id = body.org_id.trim();
    if !org_id.is_empty() {
        input::id("org_id", org_id)?;
    }
    input::text("admin_api_key", &body.admin_api_key, input::MAX_SECRET)?;
    check_site_fields(&body.site_url, &body.site_email, &body.site_api_token)?;
    if body.products.as_ref().is_some_and(|p| p.len() > 2) {
        return Err(ApiError::bad_request("unknown_product", "products are \"jira\" and \"confluence\"."));
    }
    let site = (body.site_url, body.site_email, body.site_api_token);
    let products = body.products.as_deref();
    let request = AdminConnectRequest::new(tenant_id, org_id, &body.admin_api_key, site, products)?;
    let now = OffsetDateTime::now_utc();
    let connection = admin::connect(&deps.store, &deps.atlassian, &deps.keys, &request, now).await?;
    tracing::info!(connection_id = %connection.connection_id, tenant_id = %connection.tenant_id, "admin-key connection stored");
    view(&deps.store, &connection, &deps.cadences, 201).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchConnection {
    #[serde(default)]
    admin_api_key: Option<String>,
    #[serde(default)]
    site_url: Option<String>,
    #[serde(default)]
    site_email: Option<String>,
    #[serde(default)]
    site_api_token: Option<String>,
}

/// `PATCH /connections/{id}`: an admin-key connection's new key or site token, validated like a new connection;
/// the connection returns to `active` with its mirror kept.
pub async fn update<S, M, Q, A>(deps: &Deps<S, M, Q, A>, id: &str, request: &Request) -> Answer
where
    S: ConnectionStore + RunStore,
    A: atlassian::AdminApi,
{
    const SHAPE: &str = "Expected JSON {\"admin_api_key\"?, \"site_url\"?, \"site_email\"?, \"site_api_token\"?}.";
    let body: PatchConnection = json_body(request, SHAPE)?;
    input::optional("admin_api_key", body.admin_api_key.as_deref(), input::MAX_SECRET)?;
    check_site_fields(&body.site_url, &body.site_email, &body.site_api_token)?;
    let key = body.admin_api_key.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty());
    let site = admin::site_login(body.site_url, body.site_email, body.site_api_token)?;
    if key.is_none() && site.is_none() {
        return Err(ApiError::bad_request("nothing_to_update", SHAPE));
    }
    let connection = connection(&deps.store, id).await?;
    if connection.mode != ConnectionMode::AdminApiKey {
        return Err(ApiError::new(
            409,
            "not_an_admin_key_connection",
            "Only admin-key connections take new credentials here; an OAuth connection is renewed by connecting again.",
        ));
    }
    if connection.status == ConnectionStatus::Revoked {
        return Err(ApiError::new(409, "connection_revoked", "This connection was disconnected; create a new one."));
    }
    let patch = AdminPatch { admin_api_key: key.map(atlassian::AdminKey::new), site };
    let updated =
        admin::update(&deps.store, &deps.atlassian, &deps.keys, &connection, patch, OffsetDateTime::now_utc()).await?;
    tracing::info!(connection_id = %updated.connection_id, "admin-key connection credentials replaced");
    view(&deps.store, &updated, &deps.cadences, 200).await
}

/// The site login's fields, as the input contract bounds them.
fn check_site_fields(url: &Option<String>, email: &Option<String>, token: &Option<String>) -> Result<(), ApiError> {
    input::optional("site_url", url.as_deref(), input::MAX_URL)?;
    input::optional("site_email", email.as_deref(), input::MAX_EMAIL)?;
    input::optional("site_api_token", token.as_deref(), input::MAX_SECRET)?;
    Ok(())
}

/// `GET /connections?tenant_id=…`.
pub async fn list<S: ConnectionStore + RunStore, M, Q, A>(deps: &Deps<S, M, Q, A>, request: &Request) -> Answer {
    let query = request.query_string_parameters();
    let Some(tenant_id) = query.first("tenant_id").filter(|t| !t.is_empty()) else {
        return Err(ApiError::bad_request("tenant_id_required", "Pass ?tenant_id= to list a tenant's connections."));
    };
    let tenant_id = input::tenant(tenant_id)?;
    let connections = deps.store.list_connections(tenant_id).await?;
    let mut items = Vec::with_capacity(connections.len());
    for connection in &connections {
        let runs = deps.store.list_runs(&connection.connection_id).await?;
        let view = crate::ConnectionView::new(connection, &runs, &deps.cadences);
        items.push(serde_json::to_value(view).unwrap_or_default());
    }
    Ok(http::json(200, &serde_json::json!({ "items": items })))
}

/// `GET /connections/{id}`.
pub async fn get<S: ConnectionStore + RunStore, M, Q, A>(deps: &Deps<S, M, Q, A>, id: &str) -> Answer {
    let connection = connection(&deps.store, id).await?;
    view(&deps.store, &connection, &deps.cadences, 200).await
}

/// `DELETE /connections/{id}`.
pub async fn disconnect<S: ConnectionStore + RunStore, M: MirrorStore, Q, A>(
    deps: &Deps<S, M, Q, A>,
    id: &str,
) -> Answer {
    if !store::tenant::disconnect(&deps.store, &deps.mirror, id, OffsetDateTime::now_utc()).await? {
        return Err(super::connection_not_found());
    }
    tracing::info!(connection_id = id, "connection revoked, tokens destroyed, mirror cleared");
    get(deps, id).await
}
