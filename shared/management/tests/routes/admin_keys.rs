//! Admin-key connections: checked before anything is stored, new credentials, and the directory's details on OAuth
//! users.

use super::*;

#[tokio::test]
async fn admin_key_connections_are_checked_before_anything_is_asked_or_stored() {
    let deps = deps();
    let base = json!({
        "tenant_id": "t-admin", "mode": "admin_api_key", "org_id": "org-1", "admin_api_key": "ATCTT3xFfGN0-secret-key",
    });
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (with(json!({"mode": "oauth"})), "unsupported_mode"),
        (with(json!({"org_id": " "})), "missing_field"),
        (with(json!({"site_url": "https://acme.atlassian.net"})), "incomplete_site_token"),
        (
            with(json!({"site_url": "http://acme.atlassian.net", "site_email": "a@b.c", "site_api_token": "t"})),
            "invalid_site_url",
        ),
        (with(json!({"products": ["jira"]})), "products_need_site"),
        (
            with(
                json!({"site_url": "https://a.atlassian.net", "site_email": "a@b.c", "site_api_token": "t", "products": ["bitbucket"]}),
            ),
            "unknown_product",
        ),
        (json!({"tenant_id": 7}), "invalid_body"),
    ];
    for (body, code) in cases {
        let (status, answer) = call(&deps, request(Method::POST, "/connections", Some(KEY), Some(body))).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{answer}");
        assert!(!answer.to_string().contains("secret-key"), "the key is never echoed: {answer}");
    }
    // Well-formed, but the key administers no org by that id (the fake's key administers none): 422, nothing stored.
    let (status, answer) = call(&deps, request(Method::POST, "/connections", Some(KEY), Some(base))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("wrong_org_id")));
    assert!(deps.store.list_connections("t-admin").await.unwrap().is_empty());
}

#[tokio::test]
async fn oauth_users_take_email_and_status_from_the_tenants_admin_key_connection() {
    use store::mirror::{MirrorObject, MirrorStore, ObjectType, Scope};
    let deps = deps();
    connected(&deps, vec![store::Product::Jira]).await;
    let mut admin = contract::connection("tenant-1", "con_admin");
    admin.mode = store::ConnectionMode::AdminApiKey;
    deps.store.upsert_connection(&admin).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    let user = |id: &str, email: Value, status: &str, name: &str| {
        let record = json!({"account_id": id, "email": email, "status": status, "display_name": name, "sites": ["c1"]});
        MirrorObject::new(id.into(), record.as_object().unwrap().clone(), now)
    };
    let oauth = [user("a", Value::Null, "active", "Ada"), user("b", json!("b@jira.example"), "active", "Bo")];
    let from_admin =
        [user("a", json!("ada@acme.example"), "suspended", "Ada L."), user("b", Value::Null, "closed", "B")];
    deps.mirror.write(&Scope::new("con_1", ObjectType::Users), &oauth).await.unwrap();
    deps.mirror.write(&Scope::new("con_admin", ObjectType::Users), &from_admin).await.unwrap();

    let list = |id: &str| request(Method::GET, &format!("/connections/{id}/objects/users"), Some(KEY), None);
    let by_id = |page: &Value, id: &str| -> Value {
        page["items"].as_array().unwrap().iter().find(|u| u["account_id"] == id).cloned().unwrap()
    };
    let (_, page) = call(&deps, list("con_1")).await;
    let items = [by_id(&page, "a"), by_id(&page, "b")];
    // The hidden email and the real status come from the Admin API; a null admin email keeps Jira's; the rest is
    // the OAuth connection's own.
    assert_eq!(
        (items[0]["email"].as_str(), items[0]["status"].as_str()),
        (Some("ada@acme.example"), Some("suspended"))
    );
    assert_eq!((items[1]["email"].as_str(), items[1]["status"].as_str()), (Some("b@jira.example"), Some("closed")));
    assert_eq!((items[0]["display_name"].as_str(), &items[0]["sites"]), (Some("Ada"), &json!(["c1"])));
    // The admin-key connection's own objects are its own.
    let (_, own) = call(&deps, list("con_admin")).await;
    assert_eq!(by_id(&own, "a")["display_name"], "Ada L.");

    // Removing the admin-key connection leaves the OAuth one as its own sync made it.
    let (status, _) = call(&deps, request(Method::DELETE, "/connections/con_admin", Some(KEY), None)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = call(&deps, list("con_1")).await;
    let ada = by_id(&page, "a");
    assert_eq!((ada["email"].clone(), ada["status"].as_str()), (Value::Null, Some("active")));
}

#[tokio::test]
async fn new_credentials_go_only_to_admin_key_connections() {
    let deps = deps();
    connected(&deps, vec![store::Product::Jira]).await;
    let patch = |id: &str, body: Value| request(Method::PATCH, &format!("/connections/{id}"), Some(KEY), Some(body));
    let key = json!({"admin_api_key": "ATCTT3xFfGN0-new-secret"});
    let cases = [
        (patch("con_1", json!({})), StatusCode::BAD_REQUEST, "nothing_to_update"),
        (patch("con_1", json!({"admin_api_key": "k", "extra": 1})), StatusCode::BAD_REQUEST, "invalid_body"),
        (
            patch("con_1", json!({"site_url": "https://a.atlassian.net"})),
            StatusCode::BAD_REQUEST,
            "incomplete_site_token",
        ),
        (patch("con_missing", key.clone()), StatusCode::NOT_FOUND, "connection_not_found"),
        (patch("con_1", key.clone()), StatusCode::CONFLICT, "not_an_admin_key_connection"),
    ];
    for (request, status, code) in cases {
        let (got, answer) = call(&deps, request).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{answer}");
        assert!(!answer.to_string().contains("new-secret"));
    }
    let unchanged = deps.store.get_connection("con_1").await.unwrap().unwrap();
    assert_eq!((unchanged.mode, unchanged.token_version), (store::ConnectionMode::Oauth, 1), "nothing was written");
}
