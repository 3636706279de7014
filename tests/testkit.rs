//! The testkit's fake identity provider, observed by a plain reqwest client (no layers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use resilient_auth::testkit::{FakeIdentityProvider, Fault, FaultKind, Target};

const D0: Duration = Duration::ZERO;
const HOUR: Duration = Duration::from_secs(3600);

async fn token(idp: &FakeIdentityProvider) -> reqwest::Response {
    token_with(&reqwest::Client::new(), idp).await
}

async fn token_with(client: &reqwest::Client, idp: &FakeIdentityProvider) -> reqwest::Response {
    client
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
            .fault(Fault::new(Target::Api, D0..HOUR, kind.clone()))
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
            None if kind == FaultKind::Hang => {
                assert!(r.unwrap_err().is_timeout(), "{kind:?}");
                drop(client);
                // hyper drops the handler when it sees the connection closed
                for _ in 0..100 {
                    if idp.log()[0].outcome != Outcome::InFlight {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let log = idp.log();
                assert_eq!(log[0].outcome, Outcome::Abandoned);
                assert!(log[0].ended.unwrap() >= Duration::from_millis(290));
            }
            None => assert!(r.is_err(), "{kind:?}: connection dropped"),
        }
    }
}

#[tokio::test]
async fn testkit_fault_windows_open_and_close_and_are_logged() {
    // built before the script starts: building a client loads the platform's roots, which is
    // slow on a busy machine
    let client = reqwest::Client::new();
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Token,
            Duration::from_millis(200)..Duration::from_millis(700),
            FaultKind::Unavailable { retry_after: None },
        ))
        .start()
        .await
        .unwrap();
    assert_eq!(token_with(&client, &idp).await.status(), 200);
    // times from the provider's start, so a slow request does not shift the script
    tokio::time::sleep_until(idp.started_at() + Duration::from_millis(300)).await;
    let r = token_with(&client, &idp).await.status();
    assert_eq!(r, 503, "{:?}", idp.log());
    tokio::time::sleep_until(idp.started_at() + Duration::from_millis(750)).await;
    assert_eq!(token_with(&client, &idp).await.status(), 200);
    let log = idp.log();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![Some(200), Some(503), Some(200)]
    );
    assert!(log[1].fault.is_some() && log[1].at >= Duration::from_millis(200));
    assert_eq!(idp.tokens_issued(), 2);
}

// ---------------------------------------------------------------------------------------------
// In memory: the same handler as a tower service and as credentials, under paused time.
// ---------------------------------------------------------------------------------------------

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use resilient_auth::testkit::credentials::{
    CallResult, CountingCredential, PanickingCredential, SlowCredential,
};
use resilient_auth::testkit::{Outcome, RetryAfter, TokenStatus};
use resilient_auth::{Error, TokenCredential, TokenRequest};
use tower::ServiceExt;

const SCOPE: &str = "api://x/.default";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn scopes() -> TokenRequest {
    TokenRequest::new([SCOPE])
}

/// A request of the shape a client sends to `target`.
fn request(
    idp: &FakeIdentityProvider,
    target: Target,
    bearer: Option<&str>,
) -> http::Request<Full<Bytes>> {
    let builder = match target {
        Target::Token => http::Request::post(idp.token_url("tenant"))
            .header("content-type", "application/x-www-form-urlencoded"),
        Target::Imds => http::Request::get(format!(
            "{}?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net",
            idp.imds_url()
        ))
        .header("metadata", "true"),
        _ => http::Request::get(idp.api_url()),
    };
    let builder = match bearer {
        Some(t) => builder.header("authorization", format!("Bearer {t}")),
        None => builder,
    };
    let body = match target {
        Target::Token => "grant_type=client_credentials&client_id=c&client_secret=s&scope=api%3A%2F%2Fx%2F.default",
        _ => "",
    };
    builder
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn call(
    idp: &FakeIdentityProvider,
    target: Target,
    bearer: Option<&str>,
) -> http::Response<Full<Bytes>> {
    idp.service()
        .oneshot(request(idp, target, bearer))
        .await
        .unwrap()
}

async fn body(r: http::Response<Full<Bytes>>) -> serde_json::Value {
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn header(r: &http::Response<Full<Bytes>>, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(start_paused = true)]
async fn testkit_retry_after_in_every_form_on_every_target() {
    let forms = [
        (RetryAfter::Seconds(secs(7)), "retry-after", Some(secs(7))),
        (RetryAfter::zero(), "retry-after", Some(D0)),
        (
            RetryAfter::Millis(Duration::from_millis(1500)),
            "retry-after-ms",
            Some(Duration::from_millis(1500)),
        ),
        (
            RetryAfter::XMsMillis(Duration::from_millis(250)),
            "x-ms-retry-after-ms",
            Some(Duration::from_millis(250)),
        ),
        (
            RetryAfter::HttpDate(secs(30)),
            "retry-after",
            Some(secs(30)),
        ),
        (
            RetryAfter::raw("99999999999999999999"),
            "retry-after",
            Some(Duration::MAX),
        ),
        (RetryAfter::raw("soon"), "retry-after", None),
    ];
    for target in [Target::Token, Target::Imds, Target::Api] {
        for (form, name, wait) in &forms {
            for status in [429, 503] {
                let idp = FakeIdentityProvider::builder()
                    .fault(Fault::new(
                        target,
                        D0..HOUR,
                        FaultKind::status(status, Some(form.clone())),
                    ))
                    .build()
                    .unwrap();
                let r = call(&idp, target, None).await;
                assert_eq!(r.status(), status, "{target:?} {form:?}");
                let value = header(&r, name).unwrap_or_else(|| panic!("{target:?} {form:?}"));
                match form {
                    RetryAfter::HttpDate(d) => {
                        let date = httpdate::parse_http_date(&value).unwrap();
                        let ahead = date.duration_since(std::time::SystemTime::now()).unwrap();
                        assert!(ahead > *d - secs(1) && ahead <= *d + secs(1), "{ahead:?}");
                    }
                    _ => assert_eq!(value, form.header_value(std::time::SystemTime::now())),
                }
                let b = body(r).await;
                if target == Target::Api {
                    assert!(b["error"]["code"].is_string(), "{b}");
                } else {
                    assert!(b["error"].is_string() && b["trace_id"].is_string(), "{b}");
                }
                let log = idp.log();
                assert_eq!(log.len(), 1);
                let sent = log[0].retry_after.clone().unwrap();
                assert_eq!((sent.header, sent.value.as_str()), (*name, value.as_str()));
                assert_eq!(sent.wait, *wait, "{form:?}");
                assert_eq!(log[0].status, Some(status));
                assert_eq!(
                    log[0].fault,
                    Some(FaultKind::status(status, Some(form.clone())))
                );
            }
        }
    }
    assert_eq!(
        RetryAfter::raw("99999999999999999999").wait(),
        Some(Duration::MAX)
    );
}

#[tokio::test]
async fn testkit_new_fault_kinds_reach_a_plain_client_over_the_socket() {
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Token,
            D0..HOUR,
            FaultKind::status(429, Some(RetryAfter::raw("99999999999999999999"))),
        ))
        .fault(Fault::new(
            Target::Api,
            D0..HOUR,
            FaultKind::status(503, Some(RetryAfter::HttpDate(secs(20)))),
        ))
        .start()
        .await
        .unwrap();
    let r = token(&idp).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "99999999999999999999");
    let r = reqwest::get(idp.api_url()).await.unwrap();
    assert_eq!(r.status(), 503);
    let date = httpdate::parse_http_date(r.headers()["retry-after"].to_str().unwrap()).unwrap();
    assert!(date > std::time::SystemTime::now() + secs(18));
    let log = idp.log();
    assert_eq!(
        log.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        [Outcome::Answered; 2]
    );
}

#[tokio::test(start_paused = true)]
async fn testkit_in_memory_503_then_200_at_exact_virtual_times() {
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Token,
            D0..secs(10),
            FaultKind::Unavailable { retry_after: None },
        ))
        .build()
        .unwrap();
    assert_eq!(idp.uri(), "http://localhost");
    let credential = idp.credential("tenant", "client");
    let t0 = tokio::time::Instant::now();
    for _ in 0..2 {
        let e = credential.get_token(&scopes()).await.unwrap_err();
        assert!(
            matches!(e, Error::IdentityProvider { status, .. } if status == 503),
            "{e:?}"
        );
        assert_eq!(e.retry_after(), None);
        tokio::time::sleep(secs(5)).await;
    }
    let token = credential.get_token(&scopes()).await.unwrap();
    assert_eq!(token.expires_in(), HOUR);
    assert_eq!(
        t0.elapsed(),
        secs(10),
        "nothing but the test's sleeps moved the clock"
    );

    let log = idp.log_for(Target::Token);
    assert_eq!(log.times(Target::Token), [secs(0), secs(5), secs(10)]);
    assert_eq!(log.gaps(Target::Token), [secs(5), secs(5)]);
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Some(503), Some(503), Some(200)]
    );
    assert!(log.iter().all(|r| r.ended == Some(r.at)));
    assert_eq!(
        (log[2].token, log[2].expires),
        (Some(1), Some(secs(10) + HOUR))
    );
    // the 5 s floor after a 5xx without Retry-After holds, a 6 s one would not
    assert!(log.floor_violations(Target::Token, secs(5)).is_empty());
    let v = log.floor_violations(Target::Token, secs(6));
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!((v[0].gap, v[0].required), (secs(5), secs(6)));
    assert!(log.valid_token_at(secs(10)) && !log.valid_token_at(secs(9)));
    assert!(!log.valid_token_at(secs(10) + HOUR));
}

#[tokio::test(start_paused = true)]
async fn testkit_in_memory_service_under_the_layers_sees_the_backoff_gaps() {
    use resilient_auth::{AuthLayer, ExpBackoffLayer, TimeoutLayer, TokenCache};
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Api,
            D0..secs(12),
            FaultKind::status(503, None),
        ))
        .build()
        .unwrap();
    let tokens = TokenCache::new(idp.credential("tenant", "client"), [SCOPE]);
    let svc = tower::ServiceBuilder::new()
        .layer(ExpBackoffLayer::default())
        .layer(AuthLayer::new(tokens).allow_origins([idp.uri()]).unwrap())
        .layer(TimeoutLayer::new(secs(10)))
        .service(idp.service());
    let r = svc.oneshot(request(&idp, Target::Api, None)).await.unwrap();
    assert_eq!(r.status(), 200);
    let log = idp.log();
    let api = log.for_target(Target::Api);
    assert!(api.len() >= 3, "{api:?}");
    assert!(
        api.iter().all(|r| r.valid_token()),
        "the cache's token went along"
    );
    assert_eq!(api.last().unwrap().status, Some(200));
    assert!(api.last().unwrap().at >= secs(12));
    assert!(
        api.floor_violations(Target::Api, secs(5)).is_empty(),
        "{api:?}"
    );
    assert_eq!(log.for_target(Target::Token).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn testkit_hang_is_abandoned_at_the_client_timeout_and_drop_is_a_connection_reset() {
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(Target::Token, D0..HOUR, FaultKind::Hang))
        .fault(Fault::new(Target::Api, D0..HOUR, FaultKind::Drop))
        .build()
        .unwrap();
    let credential = idp.credential("tenant", "client").timeout(secs(2));
    let t0 = tokio::time::Instant::now();
    let e = credential.get_token(&scopes()).await.unwrap_err();
    assert!(
        matches!(e, Error::Timeout { after } if after == secs(2)),
        "{e:?}"
    );
    assert_eq!(t0.elapsed(), secs(2));
    let log = idp.log();
    assert_eq!(log[0].outcome, Outcome::Abandoned);
    assert_eq!(
        (log[0].at, log[0].ended, log[0].status),
        (D0, Some(secs(2)), None)
    );
    assert!(log[0].is_failure());

    let err = idp
        .service()
        .oneshot(request(&idp, Target::Api, None))
        .await
        .unwrap_err();
    let io = err.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(idp.log()[1].outcome, Outcome::Dropped);
}

#[tokio::test(start_paused = true)]
async fn testkit_fake_credentials_map_retry_after_like_the_real_ones() {
    // in memory
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Token,
            D0..HOUR,
            FaultKind::status(429, Some(RetryAfter::Millis(Duration::from_millis(2500)))),
        ))
        .fault(Fault::new(
            Target::Imds,
            D0..HOUR,
            FaultKind::status(503, Some(RetryAfter::Seconds(secs(9)))),
        ))
        .build()
        .unwrap();
    let e = idp
        .credential("t", "c")
        .get_token(&scopes())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::IdentityProvider { status, details } if *status == 429 && details.error == "temporarily_unavailable"),
        "{e:?}"
    );
    assert_eq!(e.retry_after(), Some(Duration::from_millis(2500)));
    let e = idp
        .imds_credential()
        .get_token(&scopes())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::IdentityProvider { status, .. } if *status == 503),
        "{e:?}"
    );
    assert_eq!(e.retry_after(), Some(secs(9)));
    assert_eq!(
        idp.imds_credential().identity().kind,
        "managed_identity/imds"
    );
    assert_eq!(idp.credential("t", "c").identity().kind, "client_secret");
}

#[tokio::test]
async fn testkit_fake_credential_and_real_credential_see_the_same_errors() {
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Token,
            D0..HOUR,
            FaultKind::status(429, Some(RetryAfter::HttpDate(secs(40)))),
        ))
        .start()
        .await
        .unwrap();
    let real = resilient_auth::ClientSecretCredential::builder("tenant", "client", "secret")
        .token_url(idp.token_url("tenant"))
        .build()
        .unwrap();
    let fake = idp.credential("tenant", "client");
    let (a, b) = (
        real.get_token(&scopes()).await.unwrap_err(),
        fake.get_token(&scopes()).await.unwrap_err(),
    );
    let (
        Error::IdentityProvider {
            status: sa,
            details: da,
        },
        Error::IdentityProvider {
            status: sb,
            details: db,
        },
    ) = (&a, &b)
    else {
        panic!("{a:?} {b:?}")
    };
    assert_eq!(
        (sa, &da.error, &da.error_codes),
        (sb, &db.error, &db.error_codes)
    );
    for e in [&a, &b] {
        let wait = e.retry_after().unwrap();
        assert!(wait > secs(38) && wait <= secs(41), "{wait:?}");
    }
    // both requests have the same shape at the fake
    let log = idp.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].target, log[1].target);
}

#[tokio::test]
async fn testkit_claims_form_field_reaches_the_log_from_the_real_credential() {
    let idp = FakeIdentityProvider::builder().start().await.unwrap();
    let real = resilient_auth::ClientSecretCredential::builder("tenant", "client", "secret")
        .token_url(idp.token_url("tenant"))
        .build()
        .unwrap();
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}"#;
    real.get_token(&scopes().with_claims(claims)).await.unwrap();
    real.get_token(&scopes()).await.unwrap();
    let log = idp.log();
    assert_eq!(log[0].claims.as_deref(), Some(claims));
    assert_eq!(log[1].claims, None);
}

#[tokio::test(start_paused = true)]
async fn testkit_cae_challenge_is_met_only_by_a_token_issued_with_its_claims() {
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}"#;
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Api,
            secs(10)..HOUR,
            FaultKind::insufficient_claims(claims),
        ))
        .build()
        .unwrap();
    let credential = idp.credential("tenant", "client");
    let plain = credential.get_token(&scopes()).await.unwrap();
    assert_eq!(
        call(&idp, Target::Api, Some(plain.secret())).await.status(),
        200
    );
    tokio::time::sleep(secs(10)).await;

    let r = call(&idp, Target::Api, Some(plain.secret())).await;
    assert_eq!(r.status(), 401);
    let challenge = header(&r, "www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(r#"error="insufficient_claims""#),
        "{challenge}"
    );
    let b64 = challenge
        .split("claims=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), claims);

    // a fresh token without the claims does not help; IMDS cannot give claims
    let fresh = credential.get_token(&scopes()).await.unwrap();
    assert_eq!(
        call(&idp, Target::Api, Some(fresh.secret())).await.status(),
        401
    );
    let imds = idp
        .imds_credential()
        .get_token(&TokenRequest::new(["https://vault.azure.net/.default"]).with_claims(claims))
        .await
        .unwrap();
    assert_eq!(
        call(&idp, Target::Api, Some(imds.secret())).await.status(),
        401
    );
    // nor does one issued with other claims
    let other_claims = r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#;
    let other = credential
        .get_token(&scopes().with_claims(other_claims))
        .await
        .unwrap();
    assert_eq!(
        call(&idp, Target::Api, Some(other.secret())).await.status(),
        401
    );
    // a token issued with them is accepted, again and again
    let with = credential
        .get_token(&scopes().with_claims(claims))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            call(&idp, Target::Api, Some(with.secret())).await.status(),
            200
        );
    }
    let log = idp.log();
    let token_claims: Vec<_> = log
        .for_target(Target::Token)
        .iter()
        .map(|r| r.claims.as_deref().map(str::to_owned))
        .collect();
    assert_eq!(
        token_claims,
        [
            None,
            None,
            Some(other_claims.to_owned()),
            Some(claims.to_owned())
        ]
    );
    let api: Vec<_> = log
        .for_target(Target::Api)
        .iter()
        .map(|r| r.token_status)
        .collect();
    use TokenStatus::*;
    assert_eq!(
        api,
        [
            Valid,
            LacksClaims,
            LacksClaims,
            LacksClaims,
            LacksClaims,
            Valid,
            Valid,
            Valid
        ]
        .map(Some)
    );
}

#[tokio::test(start_paused = true)]
async fn testkit_invalid_token_fault_and_revocation() {
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Api,
            secs(5)..secs(6),
            FaultKind::InvalidToken,
        ))
        // not an API: the 401 faults do not apply to the token endpoint
        .fault(Fault::new(Target::Token, D0..HOUR, FaultKind::InvalidToken))
        .build()
        .unwrap();
    let credential = idp.credential("tenant", "client");
    let first = credential.get_token(&scopes()).await.unwrap();
    let second = credential.get_token(&scopes()).await.unwrap();
    assert_eq!(
        call(&idp, Target::Api, Some(first.secret())).await.status(),
        200
    );

    tokio::time::sleep(secs(5)).await;
    let r = call(&idp, Target::Api, Some(first.secret())).await;
    assert_eq!(r.status(), 401, "scripted invalid_token for a valid token");
    assert!(header(&r, "www-authenticate")
        .unwrap()
        .contains(r#"error="invalid_token""#));
    tokio::time::sleep(secs(1)).await;

    assert!(idp.revoke(first.secret()));
    assert!(!idp.revoke("fake-at-99-0"));
    assert_eq!(
        call(&idp, Target::Api, Some(first.secret())).await.status(),
        401
    );
    assert_eq!(
        call(&idp, Target::Api, Some(second.secret()))
            .await
            .status(),
        200
    );
    idp.revoke_all();
    assert_eq!(
        call(&idp, Target::Api, Some(second.secret()))
            .await
            .status(),
        401
    );
    let third = credential.get_token(&scopes()).await.unwrap();
    assert_eq!(
        call(&idp, Target::Api, Some(third.secret())).await.status(),
        200
    );
    assert_eq!(call(&idp, Target::Api, Some("forged")).await.status(), 401);
    assert_eq!(call(&idp, Target::Api, None).await.status(), 401);

    let log = idp.log();
    use TokenStatus::*;
    let api: Vec<_> = log
        .for_target(Target::Api)
        .iter()
        .map(|r| (r.token_status, r.token, r.status))
        .collect();
    assert_eq!(
        api,
        [
            (Some(Valid), Some(1), Some(200)),
            (Some(Valid), Some(1), Some(401)),
            (Some(Revoked), Some(1), Some(401)),
            (Some(Valid), Some(2), Some(200)),
            (Some(Revoked), Some(2), Some(401)),
            (Some(Valid), Some(3), Some(200)),
            (Some(Unknown), None, Some(401)),
            (Some(Missing), None, Some(401)),
        ]
    );
    assert_eq!(log[3].fault, Some(FaultKind::InvalidToken));
    assert!(log
        .for_target(Target::Token)
        .iter()
        .all(|r| r.fault.is_none()));
    assert_eq!(log.revocations().len(), 2);
    assert_eq!(log.revocations()[0].tokens, 1..=1);
    assert_eq!(log.revocations()[1].tokens, 1..=2);
    assert_eq!(log.revocations()[1].at, secs(6));
    assert!(log.valid_token_at(secs(5)), "tokens 1 and 2");

    // a revoked token is no longer a valid one
    let idp = FakeIdentityProvider::builder().build().unwrap();
    idp.credential("t", "c").get_token(&scopes()).await.unwrap();
    tokio::time::sleep(secs(3)).await;
    idp.revoke_all();
    let log = idp.log();
    assert!(log.valid_token_at(secs(2)));
    assert!(!log.valid_token_at(secs(3)));
}

#[tokio::test(start_paused = true)]
async fn testkit_log_is_a_bounded_ring_buffer() {
    let idp = FakeIdentityProvider::builder()
        .log_capacity(5)
        .build()
        .unwrap();
    for _ in 0..12 {
        call(&idp, Target::Api, None).await;
    }
    let log = idp.log();
    assert_eq!(log.len(), 5);
    assert_eq!(log.evicted(), 7);
    assert_eq!(
        log.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [7, 8, 9, 10, 11]
    );
    assert_eq!(
        idp.requests(Target::Api),
        12,
        "totals count evicted requests"
    );
    assert!(FakeIdentityProvider::builder()
        .log_capacity(0)
        .build()
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn testkit_issued_tokens_are_pruned_when_expired_and_capped() {
    let idp = FakeIdentityProvider::builder()
        .token_lifetime(secs(10))
        .build()
        .unwrap();
    let credential = idp.credential("tenant", "client");
    for _ in 0..3 {
        credential.get_token(&scopes()).await.unwrap();
    }
    assert_eq!(idp.tokens_remembered(), 3);
    tokio::time::sleep(secs(10)).await;
    let last = credential.get_token(&scopes()).await.unwrap();
    assert_eq!(idp.tokens_remembered(), 1, "expired tokens pruned");
    assert_eq!(
        call(&idp, Target::Api, Some(last.secret())).await.status(),
        200
    );

    let idp = FakeIdentityProvider::builder()
        .max_issued_tokens(2)
        .build()
        .unwrap();
    let credential = idp.credential("tenant", "client");
    let oldest = credential.get_token(&scopes()).await.unwrap();
    for _ in 0..4 {
        credential.get_token(&scopes()).await.unwrap();
    }
    assert_eq!(idp.tokens_remembered(), 2);
    assert_eq!(idp.tokens_issued(), 5);
    assert_eq!(
        call(&idp, Target::Api, Some(oldest.secret()))
            .await
            .status(),
        401
    );
    assert_eq!(
        idp.log().last().unwrap().token_status,
        Some(TokenStatus::Unknown)
    );
}

#[tokio::test(start_paused = true)]
async fn testkit_panicking_credential_panics_inside_its_future_on_chosen_calls() {
    let idp = FakeIdentityProvider::builder().build().unwrap();
    let credential = Arc::new(CountingCredential::new(PanickingCredential::on_call(
        idp.credential("tenant", "client"),
        2,
    )));
    let counter = credential.counter();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let c = credential.clone();
        outcomes.push(tokio::spawn(async move { c.get_token(&scopes()).await.is_ok() }).await);
    }
    assert!(matches!(outcomes[0], Ok(true)));
    assert!(outcomes[1].as_ref().unwrap_err().is_panic());
    assert!(matches!(outcomes[2], Ok(true)));
    assert_eq!(
        (
            counter.calls(),
            counter.succeeded(),
            counter.failed(),
            counter.unfinished()
        ),
        (3, 2, 0, 1)
    );
    assert_eq!(
        counter
            .records()
            .iter()
            .map(|r| r.result)
            .collect::<Vec<_>>(),
        [CallResult::Ok, CallResult::Unfinished, CallResult::Ok]
    );
    assert_eq!(
        idp.requests(Target::Token),
        2,
        "the panicking call sent nothing"
    );

    // a window on the tokio clock
    let credential = Arc::new(
        PanickingCredential::during(idp.credential("tenant", "client"), secs(5)..secs(10))
            .since(idp.started_at()),
    );
    let mut panicked = Vec::new();
    for at in [0, 6, 10] {
        tokio::time::sleep_until(idp.started_at() + secs(at)).await;
        let c = credential.clone();
        panicked.push(
            tokio::spawn(async move { c.get_token(&scopes()).await })
                .await
                .is_err(),
        );
    }
    assert_eq!(panicked, [false, true, false]);
    assert_eq!(credential.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn testkit_slow_credential_delays_each_call_on_the_tokio_clock() {
    let idp = FakeIdentityProvider::builder().build().unwrap();
    let credential = CountingCredential::new(SlowCredential::new(
        idp.credential("tenant", "client"),
        secs(3),
    ));
    let counter = credential.counter();
    let t0 = tokio::time::Instant::now();
    credential.get_token(&scopes()).await.unwrap();
    assert_eq!(t0.elapsed(), secs(3));
    assert_eq!(idp.log()[0].at, secs(3));
    // a caller that gives up leaves the call unfinished
    let r = tokio::time::timeout(secs(1), credential.get_token(&scopes().with_claims("{}"))).await;
    assert!(r.is_err());
    assert_eq!(
        (
            counter.calls(),
            counter.succeeded(),
            counter.unfinished(),
            counter.in_flight()
        ),
        (2, 1, 1, 0)
    );
    let records = counter.records();
    assert_eq!(records[1].claims.as_deref(), Some("{}"));
    assert_eq!(records[1].ended.unwrap() - records[1].at, secs(1));
    assert_eq!(idp.requests(Target::Token), 1);
}

#[tokio::test(start_paused = true)]
async fn testkit_log_checks_catch_retries_inside_retry_after_and_below_the_floor() {
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Api,
            D0..secs(1),
            FaultKind::status(429, Some(RetryAfter::Seconds(secs(10)))),
        ))
        .fault(Fault::new(
            Target::Token,
            D0..HOUR,
            FaultKind::status(503, Some(RetryAfter::zero())),
        ))
        .build()
        .unwrap();
    // a client that ignores Retry-After: 10 and retries after 4 s
    call(&idp, Target::Api, None).await;
    tokio::time::sleep(secs(4)).await;
    call(&idp, Target::Api, None).await;
    tokio::time::sleep(secs(6)).await;
    call(&idp, Target::Api, None).await;
    // a client that retries a 503 with Retry-After: 0 at once (zero counts as absent)
    call(&idp, Target::Token, None).await;
    call(&idp, Target::Token, None).await;
    let log = idp.log();
    let v = log.retry_after_violations(Target::Api, secs(300));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!((v[0].gap, v[0].required), (secs(4), secs(10)));
    assert!(
        log.retry_after_violations(Target::Api, secs(3)).is_empty(),
        "capped at 3 s"
    );
    assert!(log
        .retry_after_violations(Target::Token, secs(300))
        .is_empty());
    let v = log.floor_violations(Target::Token, secs(5));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].gap, D0);
    assert_eq!(
        log.first_at_or_after(Target::Api, secs(5)).map(|r| r.at),
        Some(secs(10))
    );
}

/// The shape of a chaos test: a TokenCache and the layers against the in-memory fake, a call
/// every 0.5 s through a 20 s identity-provider outage across the refresh point (120 s tokens,
/// refreshed at about 60 s, served until 90 s), asserted on the fake's log.
#[tokio::test(start_paused = true)]
async fn testkit_drives_a_cache_and_the_layers_through_an_outage_in_paused_time() {
    use resilient_auth::{AuthLayer, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer, TokenCache};
    let idp = FakeIdentityProvider::builder()
        .token_lifetime(secs(120))
        .fault(Fault::new(
            Target::Token,
            secs(50)..secs(70),
            FaultKind::Unavailable { retry_after: None },
        ))
        .build()
        .unwrap();
    let tokens = TokenCache::new(idp.credential("tenant", "client"), [SCOPE]);
    let svc = tower::ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(ExpBackoffLayer::default())
        .layer(AuthLayer::new(tokens).allow_origins([idp.uri()]).unwrap())
        .layer(TimeoutLayer::new(secs(10)))
        .service(idp.service());
    let mut failed = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    for _ in 0..300 {
        tick.tick().await;
        let at = idp.elapsed();
        let r = svc.clone().oneshot(request(&idp, Target::Api, None)).await;
        if !matches!(&r, Ok(r) if r.status() == 200) {
            failed.push(at);
        }
    }
    let log = idp.log();
    let api = log.for_target(Target::Api);
    assert_eq!(api.len(), 300);
    assert!(failed.is_empty(), "failed calls at {failed:?}");
    assert!(api.iter().all(|r| r.valid_token() && r.status == Some(200)));
    let token = log.for_target(Target::Token);
    assert!(
        token.floor_violations(Target::Token, secs(5)).is_empty(),
        "{token:?}"
    );
    assert!(token
        .retry_after_violations(Target::Token, secs(300))
        .is_empty());
    let back = token.first_at_or_after(Target::Token, secs(70)).unwrap();
    assert_eq!(back.status, Some(200), "recovered after the outage");
    println!(
        "token requests at {:?}",
        token.iter().map(|r| (r.at, r.status)).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn testkit_log_groups_a_calls_attempts_by_client_request_id() {
    let idp = FakeIdentityProvider::builder()
        .fault(Fault::new(
            Target::Api,
            D0..secs(5),
            FaultKind::status(503, None),
        ))
        .build()
        .unwrap();
    let send = |id: &'static str| {
        let mut req = request(&idp, Target::Api, None);
        req.headers_mut()
            .insert("x-ms-client-request-id", http::HeaderValue::from_static(id));
        idp.service().oneshot(req)
    };
    send("call-a").await.unwrap(); // 503 at 0 s
    tokio::time::sleep(secs(1)).await;
    send("call-b").await.unwrap(); // a new call at 1 s: 503
    tokio::time::sleep(secs(4)).await;
    send("call-a").await.unwrap(); // call a's retry at 5 s: 200
    send("call-b").await.unwrap(); // call b's retry at 5 s, 4 s after its failure
    let log = idp.log();
    assert_eq!(log[1].client_request_id.as_deref(), Some("call-b"));
    let all = log.floor_violations(Target::Api, secs(5));
    assert_eq!(all.len(), 3, "target-wide: {all:?}");
    let a = log.filtered(|r| r.client_request_id.as_deref() == Some("call-a"));
    assert!(a.floor_violations(Target::Api, secs(5)).is_empty());
    let b = log.filtered(|r| r.client_request_id.as_deref() == Some("call-b"));
    let v = b.floor_violations(Target::Api, secs(5));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].gap, secs(4));
}

#[test]
fn testkit_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<FakeIdentityProvider>();
    send_sync::<resilient_auth::testkit::FakeService>();
    send::<resilient_auth::testkit::ResponseFuture>();
    send_sync::<resilient_auth::testkit::RequestLog>();
    send_sync::<resilient_auth::testkit::credentials::CallCounter>();
    send_sync::<resilient_auth::testkit::credentials::FakeClientSecretCredential>();
    send_sync::<resilient_auth::testkit::credentials::FakeImdsCredential>();
}
