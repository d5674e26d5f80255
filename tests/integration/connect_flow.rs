//! The connect flow through the connect and callback functions: it connects, and every failure has its page and
//! stores nothing.

use super::*;

#[tokio::test]
async fn the_flow_connects_with_the_sandbox() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let response = flow.run(&tenant, &Consent::default()).await;
    assert_page(&response, 200, "Your Atlassian organization is connected");
    let connections = flow.store.list_connections(&tenant).await.unwrap();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].sites.len(), 2);
    assert_eq!(connections[0].account_id, harness::ADMIN);
}

#[tokio::test]
async fn a_cancelled_consent_stores_nothing() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let (session, authorize) = flow.start(&tenant, Some("https://app.test/back")).await;
    let callback = harness::consent(&authorize, &Consent { accept: false, ..Consent::default() }).await.unwrap();
    assert_eq!(harness::query(&callback).get("error").map(String::as_str), Some("access_denied"));
    let response = flow.callback(&callback).await;
    assert_page(&response, 403, "Access not granted");
    assert!(body(&response).contains("https://app.test/back?status=error&amp;error=access_denied"));
    flow.assert_nothing_stored(&tenant).await;
    flow.assert_session_unused(&session).await;
}

/// A way Atlassian's side of the flow fails, and the page it must give.
struct Failing {
    case: &'static str,
    client_secret: Option<&'static str>,
    consent: Consent,
    status: u16,
    says: &'static str,
    advises: &'static str,
}

/// Every way Atlassian's side of the flow can fail: the page the person sees (its status, what it says, what to do)
/// and nothing stored, the connect link still usable. Each case goes through a sandbox of its own.
#[tokio::test]
async fn each_failure_of_the_flow_has_its_page_and_stores_nothing() {
    let without_scopes: Vec<&str> =
        scopes::DEFAULT_SCOPES.iter().copied().filter(|s| *s != "read:group:jira" && *s != "offline_access").collect();
    let again = "To try again";
    let fault = |fault| Consent { fault: Some(fault), ..Consent::default() };
    let cases = [
        Failing {
            case: "wrong client secret",
            client_secret: Some("not-the-secret"),
            consent: Consent::default(),
            status: 500,
            says: "configuration problem on the connector",
            advises: "contact the administrator",
        },
        Failing {
            case: "token endpoint 500",
            client_secret: None,
            consent: fault("token_500"),
            status: 502,
            says: "token service failed",
            advises: again,
        },
        Failing {
            case: "code rejected",
            client_secret: None,
            consent: fault("token_invalid_grant"),
            status: 400,
            says: "did not accept the authorization code",
            advises: again,
        },
        Failing {
            case: "no sites",
            client_secret: None,
            consent: Consent { sites: Some(vec![]), ..Consent::default() },
            status: 403,
            says: "reaches no Atlassian site",
            advises: again,
        },
        Failing {
            case: "scopes missing",
            client_secret: None,
            consent: Consent { granted_scopes: Some(without_scopes.join(" ")), ..Consent::default() },
            status: 403,
            says: "Missing: offline_access, read:group:jira.",
            advises: again,
        },
    ];
    for Failing { case, client_secret, consent, status, says, advises } in cases {
        let flow = match client_secret {
            Some(secret) => Flow::with_secret(secret).await,
            None => Flow::new().await,
        };
        let tenant = unique("tenant");
        let (session, authorize) = flow.start(&tenant, None).await;
        let callback = harness::consent(&authorize, &consent).await.unwrap();
        let response = flow.callback(&callback).await;
        assert_eq!(response.status(), status, "{case}");
        assert_page(&response, status, says);
        assert!(body(&response).contains(advises), "{case}: the page says what to do");
        flow.assert_nothing_stored(&tenant).await;
        flow.assert_session_unused(&session).await;
    }
}

/// Callbacks that cannot be Atlassian's answer to a flow this connector started.
#[tokio::test]
async fn callbacks_without_a_known_state_are_refused() {
    let flow = Flow::new().await;
    for (query, says) in
        [("code=abc", "missing its state"), ("code=abc&state=st_forged", "unknown or was already completed")]
    {
        let response = flow.callback(&format!("https://connector.test/oauth/callback?{query}")).await;
        assert_page(&response, 400, says);
    }
}

#[tokio::test]
async fn an_expired_state_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let session_id = flow.session(&tenant, None).await;
    let state = &unique("st_expired");
    flow.store
        .put_state(&OAuthState {
            browser_hash: None,
            state_hash: ids::sha256_hex(state),
            session_id_hash: ids::sha256_hex(&session_id),
            tenant_id: tenant.clone(),
            return_url: None,
            expires_at: OffsetDateTime::now_utc() - Duration::seconds(1),
        })
        .await
        .unwrap();
    let response = flow.callback(&format!("https://connector.test/oauth/callback?code=abc&state={state}")).await;
    assert_page(&response, 400, "took too long and expired");
    flow.assert_nothing_stored(&tenant).await;
    flow.assert_session_unused(&session_id).await;
}

#[tokio::test]
async fn a_replayed_state_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let (_, authorize) = flow.start(&tenant, None).await;
    let callback = harness::consent(&authorize, &Consent::default()).await.unwrap();
    assert_eq!(flow.callback(&callback).await.status(), 200);
    let replay = flow.callback(&callback).await;
    assert_page(&replay, 400, "unknown or was already completed");
    assert_eq!(flow.store.list_connections(&tenant).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_callback_without_code_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let (session, authorize) = flow.start(&tenant, None).await;
    let state = &harness::query(&authorize)["state"];
    let response = flow.callback(&format!("https://connector.test/oauth/callback?state={state}")).await;
    assert_page(&response, 400, "no authorization code");
    flow.assert_nothing_stored(&tenant).await;
    flow.assert_session_unused(&session).await;
}

#[tokio::test]
async fn an_unknown_session_is_refused() {
    let flow = Flow::new().await;
    assert_page(&flow.open("cs_not-a-session").await, 404, "not valid");
    assert_page(&connect_fn::handle(&flow.connect, request(&[])).await.unwrap(), 400, "carries no session");
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let session_id = &unique("cs_expired");
    let mut session = contract::session(&tenant);
    session.id_hash = ids::sha256_hex(session_id);
    session.expires_at = OffsetDateTime::now_utc() - Duration::seconds(1);
    flow.store.put_session(&session).await.unwrap();
    assert_page(&flow.open(session_id).await, 410, "has expired");
    flow.assert_nothing_stored(&tenant).await;
}

#[tokio::test]
async fn a_used_session_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let (session, authorize) = flow.start(&tenant, None).await;
    let callback = harness::consent(&authorize, &Consent::default()).await.unwrap();
    assert_eq!(flow.callback(&callback).await.status(), 200);
    assert_page(&flow.open(&session).await, 410, "already used");
}

/// The connect link binds the flow to the browser that opened it: an authorize URL carried to another browser (a
/// forwarded link, a forged callback) ends on a page that says to open the link in the same browser.
#[tokio::test]
async fn a_flow_carried_to_another_browser_is_refused() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let (session, authorize) = flow.start(&tenant, None).await;
    let callback = harness::consent(&authorize, &Consent::default()).await.unwrap();
    let response = flow.callback_from(&callback, None).await;
    assert_page(&response, 400, "started in another browser");
    flow.assert_nothing_stored(&tenant).await;
    flow.assert_session_unused(&session).await;
    let (session, authorize) = flow.start(&tenant, None).await;
    let callback = harness::consent(&authorize, &Consent::default()).await.unwrap();
    let response = flow.callback_from(&callback, Some("atlassian_connect_browser=br_not-this-one")).await;
    assert_page(&response, 400, "started in another browser");
    flow.assert_nothing_stored(&tenant).await;
    flow.assert_session_unused(&session).await;
    // The cookie the connect link set is HttpOnly, SameSite=Lax, for the callback's path only.
    let response = flow.open(&flow.session(&tenant, None).await).await;
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/oauth/callback", "Secure", "Max-Age=600"] {
        assert!(set_cookie.contains(attribute), "{set_cookie} lacks {attribute}");
    }
}
