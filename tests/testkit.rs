//! The testkit's fake identity provider, observed by a plain reqwest client (no layers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use resilient_auth::testkit::{FakeIdentityProvider, Fault, FaultKind, Target};

const D0: Duration = Duration::ZERO;
const HOUR: Duration = Duration::from_secs(3600);

async fn token(idp: &FakeIdentityProvider) -> reqwest::Response {
    reqwest::Client::new()
        .post(idp.token_url("tenant"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "c"),
            ("client_secret", "s"),
            ("scope", "api://x/.default"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn testkit_issues_entra_shaped_tokens_the_api_accepts() {
    let idp = FakeIdentityProvider::builder()
        .refresh_in(Duration::from_secs(600))
        .start()
        .await
        .unwrap();
    let resp = token(&idp).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], "3600", "Entra sends numbers as strings");
    assert_eq!(body["refresh_in"], 600);
    let at = body["access_token"].as_str().unwrap();
    let client = reqwest::Client::new();
    let ok = client
        .get(idp.api_url())
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = client
        .get(idp.api_url())
        .bearer_auth("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    let none = client.get(idp.api_url()).send().await.unwrap();
    assert_eq!(none.status(), 401);
    // Missing parameters are an OAuth error with Entra's fields.
    let err = client
        .post(idp.token_url("t"))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(err.status(), 400);
    let body: serde_json::Value = err.json().await.unwrap();
    assert!(body["trace_id"].is_string() && body["correlation_id"].is_string());
    assert_eq!(idp.requests(Target::Token), 2);
    assert_eq!(idp.requests(Target::Api), 3);
}

#[tokio::test]
async fn testkit_api_rejects_expired_tokens() {
    let idp = FakeIdentityProvider::builder()
        .token_lifetime(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let body: serde_json::Value = token(&idp).await.json().await.unwrap();
    let at = body["access_token"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(idp.api_url())
            .bearer_auth(&at)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        client
            .get(idp.api_url())
            .bearer_auth(&at)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn testkit_imds_needs_metadata_header_and_resource() {
    let idp = FakeIdentityProvider::builder().start().await.unwrap();
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
        idp.uri()
    );
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 400);
    let resp = client
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["resource"], "https://vault.azure.net");
    assert!(body["expires_on"].as_str().unwrap().parse::<u64>().is_ok());
}

#[tokio::test]
async fn testkit_each_fault_kind_is_observed_by_a_plain_client() {
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Token,
            D0..HOUR,
            FaultKind::TooManyRequests {
                retry_after: Duration::from_secs(7),
            },
        ))
        .fault(Fault::new(
            Target::Imds,
            D0..HOUR,
            FaultKind::Unavailable {
                retry_after: Some(Duration::from_millis(1500)),
            },
        ))
        .start()
        .await
        .unwrap();
    let r = token(&idp).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let r = reqwest::Client::new()
        .get(format!(
            "{}/metadata/identity/oauth2/token?resource=x",
            idp.uri()
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()["retry-after"],
        "2",
        "rounded up to whole seconds"
    );

    for (kind, expect) in [
        (FaultKind::Unavailable { retry_after: None }, Some(503)),
        (FaultKind::ServerError, Some(500)),
        (FaultKind::Drop, None),
        (FaultKind::Hang, None),
    ] {
        let idp = FakeIdentityProvider::builder()
            .fault(Fault::new(Target::Api, D0..HOUR, kind))
            .start()
            .await
            .unwrap();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let r = client.get(idp.api_url()).send().await;
        match expect {
            Some(code) => {
                let r = r.unwrap();
                assert_eq!(r.status(), code, "{kind:?}");
                assert!(r.headers().get("retry-after").is_none());
            }
            None if kind == FaultKind::Hang => assert!(r.unwrap_err().is_timeout(), "{kind:?}"),
            None => assert!(r.is_err(), "{kind:?}: connection dropped"),
        }
    }
}

#[tokio::test]
async fn testkit_fault_windows_open_and_close_and_are_logged() {
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Token,
            Duration::from_millis(200)..Duration::from_millis(400),
            FaultKind::Unavailable { retry_after: None },
        ))
        .start()
        .await
        .unwrap();
    assert_eq!(token(&idp).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(token(&idp).await.status(), 503);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(token(&idp).await.status(), 200);
    let log = idp.log();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![Some(200), Some(503), Some(200)]
    );
    assert!(log[1].fault.is_some() && log[1].at >= Duration::from_millis(200));
    assert_eq!(idp.tokens_issued(), 2);
}
