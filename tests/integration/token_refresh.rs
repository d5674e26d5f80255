//! Tokens: one refresh among concurrent workers, a revoked grant, and how the client reads the token endpoint.

use super::*;

#[tokio::test]
async fn twenty_concurrent_workers_refresh_an_expired_token_once() {
    let flow = std::sync::Arc::new(Flow::new().await);
    let tenant = unique("tenant");
    let id = connected(&flow, &tenant).await;
    flow.expire_access_token(&id).await;

    let workers: Vec<_> = (0..20)
        .map(|i| {
            let (flow, id) = (flow.clone(), id.clone());
            tokio::spawn(async move { flow.access_token(&id, &format!("worker-{i}")).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for worker in workers {
        tokens.push(worker.await.unwrap().expect("every worker gets a token"));
    }
    assert_eq!(flow.sandbox_stats().await["refreshes"], 1, "exactly one refresh call reached Atlassian");
    assert!(tokens.windows(2).all(|w| w[0] == w[1]), "every worker got the same, new token");

    // No grant was lost: the new token works, and the stored refresh token still refreshes.
    let me = harness::client().get(flow.sandbox.join("/me").unwrap()).bearer_auth(&tokens[0]).send().await.unwrap();
    assert_eq!(me.status(), 200);
    flow.expire_access_token(&id).await;
    let again = flow.access_token(&id, "later").await.expect("the rotated refresh token works");
    assert_ne!(again, tokens[0]);
    assert_eq!(flow.sandbox_stats().await["refreshes"], 2);
}

#[tokio::test]
async fn a_revoked_grant_needs_reauth_until_the_tenant_connects_again() {
    let flow = Flow::new().await;
    let tenant = unique("tenant");
    let id = connected(&flow, &tenant).await;
    let revoke = flow.sandbox.join(&format!("/__sandbox/grants/{}/revoke", harness::ADMIN)).unwrap();
    assert_eq!(harness::client().post(revoke).send().await.unwrap().status(), 204);
    flow.expire_access_token(&id).await;

    let error = flow.access_token(&id, "worker").await.unwrap_err();
    assert!(matches!(error, RefreshError::NeedsReauth { .. }), "{error:?}");
    let connection = flow.store.get_connection(&id).await.unwrap().unwrap();
    assert_eq!(connection.status, store::ConnectionStatus::NeedsReauth);
    assert!(connection.status_reason.is_some());

    // The tenant's next connect brings the same connection back.
    assert_eq!(connected(&flow, &tenant).await, id);
    let connection = flow.store.get_connection(&id).await.unwrap().unwrap();
    assert_eq!(connection.status, store::ConnectionStatus::Active);
    assert_eq!(connection.status_reason, None);
    flow.expire_access_token(&id).await;
    assert!(flow.access_token(&id, "worker").await.is_ok());
}

#[tokio::test]
async fn the_client_maps_token_endpoint_errors() {
    // Straight against the sandbox: the real client's error mapping of Atlassian's answers.
    let sandbox = harness::spawn_sandbox(SandboxConfig::default()).await.unwrap();
    let endpoints = Endpoints { auth_base: sandbox.clone(), api_base: sandbox };
    let client = |secret: &str| {
        AtlassianClient::new(
            atlassian::http_client().unwrap(),
            endpoints.clone(),
            ClientCredentials {
                client_id: ClientId::new(SandboxConfig::default().client_id),
                client_secret: ClientSecret::new(secret.into()),
            },
            Url::parse(CALLBACK).unwrap(),
        )
    };
    use atlassian::{AtlassianApi, AuthorizationCode, OAuthError};
    let code = AuthorizationCode::new("sbx-code-unknown".into());
    let wrong_secret = client("wrong").exchange_code(&code).await.unwrap_err();
    assert!(matches!(wrong_secret, OAuthError::ClientRejected), "{wrong_secret:?}");
    let unknown_code = client(&SandboxConfig::default().client_secret).exchange_code(&code).await.unwrap_err();
    assert!(matches!(unknown_code, OAuthError::InvalidGrant { .. }), "{unknown_code:?}");
    let bad_token = atlassian::AccessToken::new("sbx-at-forged".into());
    let denied = client("x").me(&bad_token).await.unwrap_err();
    assert!(matches!(denied, atlassian::ApiError::Unauthorized { status: 401, .. }), "{denied:?}");
}
