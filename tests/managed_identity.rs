//! Managed identity (rule C3) and workload identity (rule C4) credentials end to end: every
//! source against a wiremock endpoint (Service Fabric against a real TLS server), the Azure Arc
//! challenge, IMDS retries in real time at millisecond scale (the paused-time retry tests are
//! unit tests of the retry loop), a token through `TokenCache` + `AuthLayer` to an API, and
//! X1 (no secret in `Debug`, `Display` or errors).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use resilient_auth::credential::managed_identity::ManagedIdentityCredentialBuilder;
use resilient_auth::retry::Backoff;
use resilient_auth::{
    AuthLayer, AuthorityHost, Error, ManagedIdentityCredential, ManagedIdentitySource, TokenCache,
    TokenCredential, TokenRequest, TokenResponse, UserAssignedId, WorkloadIdentityCredential,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const ACCESS_TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.TWFuYWdlZElkZW50aXR5VG9rZW4.c2lnbmF0dXJl";
const IDENTITY_HEADER: &str = "identity-header-s3cr3t-6f1d";
const MSI_SECRET: &str = "msi-secret-s3cr3t-93ab";
const ARC_KEY: &str = "arc-key-s3cr3t-0a1b2c3d4e5f";
const FEDERATED: &str = "eyJhbGciOiJSUzI1NiJ9.ZmVkZXJhdGVkLXMzY3IzdA.c2ln";
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
const VAULT: &str = "https://vault.azure.net";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

fn request() -> TokenRequest {
    TokenRequest::new([VAULT_SCOPE])
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The query of a request as a map; panics on a repeated parameter.
fn query(req: &Request) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (k, v) in req.url.query_pairs() {
        assert!(
            map.insert(k.to_string(), v.to_string()).is_none(),
            "repeated {k}"
        );
    }
    map
}

fn expect_query(req: &Request, expected: &[(&str, &str)]) {
    let expected: HashMap<String, String> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(query(req), expected, "{}", req.url);
}

fn json(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "application/json")
}

/// `06/20/2019 02:57:58 +00:00` (24 h) or `1/16/2020 5:24:12 AM +00:00` (12 h), `secs` ahead.
fn app_service_date(secs: u64, twelve_hour: bool) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((unix_now() + secs) as i64).unwrap();
    if twelve_hour {
        let (h, ampm) = match t.hour() {
            0 => (12, "AM"),
            h @ 1..=11 => (h, "AM"),
            12 => (12, "PM"),
            h => (h - 12, "PM"),
        };
        format!(
            "{}/{}/{} {}:{:02}:{:02} {ampm} +00:00",
            u8::from(t.month()),
            t.day(),
            t.year(),
            h,
            t.minute(),
            t.second()
        )
    } else {
        format!(
            "{:02}/{:02}/{} {:02}:{:02}:{:02} +00:00",
            u8::from(t.month()),
            t.day(),
            t.year(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

fn assert_lifetime(token: &TokenResponse, secs: u64) {
    let got = token.expires_in().as_secs();
    assert!(
        got <= secs && got + 5 >= secs,
        "expires_in {got}, expected ~{secs}"
    );
}

fn fast_imds(server: &MockServer) -> ManagedIdentityCredentialBuilder {
    ManagedIdentityCredential::imds().endpoint(server.uri())
}

fn identity_provider_status(e: &Error) -> StatusCode {
    match e {
        Error::IdentityProvider { status, .. } => *status,
        other => panic!("not an identity provider error: {other:?}"),
    }
}

fn no_secret(s: &str) {
    for secret in [
        ACCESS_TOKEN,
        IDENTITY_HEADER,
        MSI_SECRET,
        ARC_KEY,
        FEDERATED,
        "s3cr3t",
    ] {
        assert!(!s.contains(secret), "{secret} leaked in {s}");
    }
}

// ---------------------------------------------------------------------------------------------
// IMDS

#[tokio::test]
async fn c3_imds_system_and_user_assigned_requests() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(TOKEN_PATH))
        .and(header("Metadata", "true"))
        .respond_with(json(format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","client_id":"{CLIENT_ID}","expires_in":"86399","expires_on":"{}","ext_expires_in":"86399","not_before":"{}","resource":"{VAULT}","token_type":"Bearer"}}"#,
            unix_now() + 86399,
            unix_now()
        )))
        .expect(4)
        .mount(&server)
        .await;

    let c = fast_imds(&server).build().unwrap();
    assert_eq!(c.source(), ManagedIdentitySource::Imds);
    let token = c.get_token(&request()).await.unwrap();
    assert_eq!(token.secret(), ACCESS_TOKEN);
    assert_lifetime(&token, 86399);
    for (id, param) in [
        (UserAssignedId::ClientId(CLIENT_ID.into()), "client_id"),
        (UserAssignedId::ObjectId("oid-1".into()), "object_id"),
        (
            UserAssignedId::ResourceId(
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u".into(),
            ),
            "msi_res_id",
        ),
    ] {
        let c = fast_imds(&server).user_assigned(id.clone()).build().unwrap();
        c.get_token(&request()).await.unwrap();
        let last = server.received_requests().await.unwrap().pop().unwrap();
        let value = match &id {
            UserAssignedId::ClientId(v)
            | UserAssignedId::ObjectId(v)
            | UserAssignedId::ResourceId(v) => v.as_str(),
            _ => unreachable!(),
        };
        expect_query(
            &last,
            &[("api-version", "2018-02-01"), ("resource", VAULT), (param, value)],
        );
    }
    let first = &server.received_requests().await.unwrap()[0];
    expect_query(first, &[("api-version", "2018-02-01"), ("resource", VAULT)]);
    assert!(first.headers.get("authorization").is_none());
}

#[tokio::test]
async fn c3_imds_400_identity_not_found_is_one_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let c = fast_imds(&server)
        .user_assigned(UserAssignedId::ClientId(CLIENT_ID.into()))
        .build()
        .unwrap();
    let e = c.get_token(&request()).await.unwrap_err();
    assert_eq!(identity_provider_status(&e), StatusCode::BAD_REQUEST);
    assert_eq!(
        e.to_string(),
        "identity provider returned invalid_request: Identity not found"
    );
    assert!(!e.is_transient());
}

#[tokio::test]
async fn r9_imds_sends_one_request_per_call_no_inner_retry_loop() {
    // MSAL's IMDS loop retries after 1 s; here every source makes one attempt and the token
    // cache's one wait policy spaces the next (>= 5 s after a 5xx).
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500).set_body_raw(
            r#"{"error":"unknown","error_description":"Failed to get token"}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let e = fast_imds(&server)
        .build()
        .unwrap()
        .get_token(&request())
        .await
        .unwrap_err();
    assert_eq!(
        identity_provider_status(&e),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(e.is_transient());
}

#[tokio::test]
async fn c3_imds_5xx_and_410_are_retried_by_the_cache_policy_then_succeed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(410))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).set_body_raw("busy", "text/plain"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(json(format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","expires_in":3600,"token_type":"Bearer"}}"#
        )))
        .expect(1)
        .mount(&server)
        .await;
    // The policy compressed to milliseconds (real sockets, so real time): 30 ms floor.
    let tokens = TokenCache::builder(
        fast_imds(&server).build().unwrap(),
        ["https://vault.azure.net/.default"],
    )
    .backoff(
        Backoff::builder()
            .initial(Duration::from_millis(30))
            .max(Duration::from_millis(120))
            .jitter(0.0)
            .build()
            .unwrap(),
    )
    .build()
    .unwrap();
    let started = std::time::Instant::now();
    let mut failed_calls = 0;
    let token = loop {
        match tokens.token().await {
            Ok(t) => break t,
            Err(e) => {
                failed_calls += 1;
                assert!(!e.to_string().contains(ACCESS_TOKEN), "{e}");
                assert!(started.elapsed() < Duration::from_secs(5), "no recovery");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    assert_eq!(token.secret(), ACCESS_TOKEN);
    assert!(failed_calls >= 3);
    // Three failures, each backed off before the next request: 30, 60, 120 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(30 + 60 + 120),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// App Service / Functions / Container Apps

#[tokio::test]
async fn c3_app_service_request_and_expires_on_forms() {
    let server = MockServer::start().await;
    let bodies = [
        format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","expires_on":"{}","resource":"{VAULT}","token_type":"Bearer","client_id":"{CLIENT_ID}"}}"#,
            unix_now() + 3600
        ),
        format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","expires_on":"{}","resource":"{VAULT}","token_type":"Bearer"}}"#,
            app_service_date(3600, false)
        ),
        format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","expires_on":"{}","resource":"{VAULT}","token_type":"Bearer"}}"#,
            app_service_date(3600, true)
        ),
        format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","expires_on":{},"token_type":"Bearer"}}"#,
            unix_now() + 3600
        ),
    ];
    for body in &bodies {
        Mock::given(method("GET"))
            .and(path("/msi/token"))
            .and(header("X-IDENTITY-HEADER", IDENTITY_HEADER))
            .respond_with(json(body.clone()))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
    }
    let endpoint = format!("{}/msi/token", server.uri());
    let c = ManagedIdentityCredential::app_service(&endpoint, IDENTITY_HEADER)
        .build()
        .unwrap();
    for _ in &bodies {
        let token = c.get_token(&request()).await.unwrap();
        assert_eq!(token.secret(), ACCESS_TOKEN);
        assert_lifetime(&token, 3600);
    }
    for req in server.received_requests().await.unwrap() {
        expect_query(&req, &[("api-version", "2019-08-01"), ("resource", VAULT)]);
        assert!(req.headers.get("metadata").is_none());
    }

    // user-assigned by resource id goes as mi_res_id (not msi_res_id)
    let rid = "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u";
    Mock::given(method("GET"))
        .respond_with(json(bodies[0].clone()))
        .mount(&server)
        .await;
    for (id, param, value) in [
        (UserAssignedId::ResourceId(rid.into()), "mi_res_id", rid),
        (
            UserAssignedId::ClientId(CLIENT_ID.into()),
            "client_id",
            CLIENT_ID,
        ),
        (UserAssignedId::ObjectId("oid".into()), "object_id", "oid"),
    ] {
        ManagedIdentityCredential::app_service(&endpoint, IDENTITY_HEADER)
            .user_assigned(id)
            .build()
            .unwrap()
            .get_token(&request())
            .await
            .unwrap();
        let last = server.received_requests().await.unwrap().pop().unwrap();
        expect_query(
            &last,
            &[
                ("api-version", "2019-08-01"),
                ("resource", VAULT),
                (param, value),
            ],
        );
    }
}

#[tokio::test]
async fn c3_app_service_error_shapes() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            r#"{"statusCode":400,"message":"Unable to load the proper Managed Identity.","correlationId":"a1b2"}"#,
            "application/json",
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500).set_body_raw(
            r#"{"error":{"code":"InternalServerError","message":"Unexpected error."}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let c = ManagedIdentityCredential::app_service(
        format!("{}/msi/token", server.uri()),
        IDENTITY_HEADER,
    )
    .build()
    .unwrap();
    let e = c.get_token(&request()).await.unwrap_err();
    assert_eq!(identity_provider_status(&e), StatusCode::BAD_REQUEST);
    assert_eq!(
        e.to_string(),
        "identity provider returned http_400: Unable to load the proper Managed Identity. correlation_id=a1b2"
    );
    let e = c.get_token(&request()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "identity provider returned InternalServerError: Unexpected error."
    );
    // one attempt per call: the cache owns retries for this source
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    no_secret(&format!("{e} {e:?}"));
}

// ---------------------------------------------------------------------------------------------
// Azure Machine Learning

#[tokio::test]
async fn c3_azure_ml_request_response_and_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/MSI/auth"))
        .and(header("secret", MSI_SECRET))
        .and(header("Metadata", "true"))
        .respond_with(json(format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","expires_on":"{}","resource":"{VAULT}","token_type":"Bearer"}}"#,
            app_service_date(7200, false)
        )))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            r#"{"error":"invalid_client","error_description":"No user-assigned identity with client id uami"}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let endpoint = format!("{}/MSI/auth", server.uri());
    let system = ManagedIdentityCredential::azure_ml(&endpoint, MSI_SECRET, "default-client")
        .build()
        .unwrap();
    let token = system.get_token(&request()).await.unwrap();
    assert_lifetime(&token, 7200);
    let user = ManagedIdentityCredential::azure_ml(&endpoint, MSI_SECRET, "default-client")
        .user_assigned(UserAssignedId::ClientId("uami".into()))
        .build()
        .unwrap();
    user.get_token(&request()).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    expect_query(
        &requests[0],
        &[
            ("api-version", "2017-09-01"),
            ("resource", VAULT),
            ("clientid", "default-client"),
        ],
    );
    expect_query(
        &requests[1],
        &[
            ("api-version", "2017-09-01"),
            ("resource", VAULT),
            ("clientid", "uami"),
        ],
    );
    let e = user.get_token(&request()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "identity provider returned invalid_client: No user-assigned identity with client id uami"
    );
    no_secret(&format!("{e:?} {user:?} {user}"));
}

// ---------------------------------------------------------------------------------------------
// Cloud Shell

#[tokio::test]
async fn c3_cloud_shell_posts_the_resource_form() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .and(header("Metadata", "true"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(json(format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","refresh_token":"","expires_in":"3599","expires_on":"{}","not_before":"{}","resource":"{VAULT}","token_type":"Bearer"}}"#,
            unix_now() + 3599,
            unix_now()
        )))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            r#"{"error":{"code":"BadRequest","message":"Resource not supported."}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let c = ManagedIdentityCredential::cloud_shell(format!("{}/oauth2/token", server.uri()))
        .build()
        .unwrap();
    let token = c.get_token(&request()).await.unwrap();
    assert_lifetime(&token, 3599);
    let req = &server.received_requests().await.unwrap()[0];
    assert_eq!(req.url.query(), None);
    let form: HashMap<String, String> = form_urlencoded::parse(&req.body).into_owned().collect();
    assert_eq!(
        form,
        HashMap::from([("resource".to_owned(), VAULT.to_owned())])
    );
    let e = c.get_token(&request()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "identity provider returned BadRequest: Resource not supported."
    );
}

// ---------------------------------------------------------------------------------------------
// Azure Arc

static DIRS: AtomicUsize = AtomicUsize::new(0);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ra-mi-it-{}-{}-{name}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn arc_server(realm: &str) -> MockServer {
    let server = MockServer::start().await;
    let expected = format!("Basic {ARC_KEY}");
    Mock::given(method("GET"))
        .and(path(TOKEN_PATH))
        .and(header("Metadata", "true"))
        .and(move |req: &Request| {
            req.headers
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == expected.as_bytes())
        })
        .respond_with(json(format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","expires_in":"3599","expires_on":"{}","resource":"{VAULT}","token_type":"Bearer"}}"#,
            unix_now() + 3599
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(TOKEN_PATH))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("WWW-Authenticate", format!("Basic realm={realm}").as_str()),
        )
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn c3_arc_answers_the_challenge_with_the_key_file() {
    let tokens = temp_dir("tokens");
    let key_file = tokens.join("3f2a.key");
    std::fs::write(&key_file, ARC_KEY).unwrap();
    let server = arc_server(&key_file.display().to_string()).await;
    let c = ManagedIdentityCredential::azure_arc(format!("{}{TOKEN_PATH}", server.uri()))
        .arc_tokens_dir(&tokens)
        .build()
        .unwrap();
    let token = c.get_token(&request()).await.unwrap();
    assert_eq!(token.secret(), ACCESS_TOKEN);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    for req in &requests {
        expect_query(req, &[("api-version", "2019-11-01"), ("resource", VAULT)]);
    }
    assert!(requests[0].headers.get("authorization").is_none());
    no_secret(&format!("{c:?} {c}"));
}

#[tokio::test]
async fn c3_arc_rejects_bad_challenges_without_sending_the_file() {
    let tokens = temp_dir("tokens");
    let outside = temp_dir("outside");
    std::fs::write(outside.join("a.key"), ARC_KEY).unwrap();
    std::fs::write(tokens.join("a.txt"), ARC_KEY).unwrap();
    std::fs::write(tokens.join("big.key"), "k".repeat(4097)).unwrap();
    let cases = [
        (
            outside.join("a.key").display().to_string(),
            "tokens directory",
        ),
        (tokens.join("a.txt").display().to_string(), ".key"),
        (tokens.join("big.key").display().to_string(), "4096 bytes"),
        (String::new(), "realm"),
    ];
    for (realm, needle) in cases {
        let server = arc_server(&realm).await;
        let c = ManagedIdentityCredential::azure_arc(format!("{}{TOKEN_PATH}", server.uri()))
            .arc_tokens_dir(&tokens)
            .build()
            .unwrap();
        let e = c.get_token(&request()).await.unwrap_err();
        assert!(matches!(e, Error::InvalidResponse(_)), "{realm}: {e:?}");
        assert!(e.to_string().contains(needle), "{realm}: {e}");
        no_secret(&e.to_string());
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            1,
            "{realm}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Service Fabric: a real TLS server with a self-signed certificate

struct TlsServer {
    url: String,
    sha1_hex: String,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
    handshakes_failed: Arc<AtomicUsize>,
}

async fn tls_server(body: String, status: u16) -> TlsServer {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_der = certified.cert.der().clone();
    let key_der =
        rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let sha1 = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        cert_der.as_ref(),
    );
    let sha1_hex: String = sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert_der], key_der)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}{TOKEN_PATH}", listener.local_addr().unwrap());
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handshakes_failed = Arc::new(AtomicUsize::new(0));
    let (seen, failed) = (requests.clone(), handshakes_failed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen, failed, body) =
                (acceptor.clone(), seen.clone(), failed.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    TlsServer {
        url,
        sha1_hex,
        requests,
        handshakes_failed,
    }
}

#[tokio::test]
async fn c3_service_fabric_trusts_only_the_pinned_thumbprint() {
    let body = format!(
        r#"{{"token_type":"Bearer","access_token":"{ACCESS_TOKEN}","expires_on":{},"resource":"{VAULT}"}}"#,
        unix_now() + 3600
    );
    let server = tls_server(body, 200).await;

    // right thumbprint, in lower case: accepted
    let c = ManagedIdentityCredential::service_fabric(
        &server.url,
        IDENTITY_HEADER,
        server.sha1_hex.to_lowercase(),
    )
    .build()
    .unwrap();
    let token = c.get_token(&request()).await.unwrap();
    assert_eq!(token.secret(), ACCESS_TOKEN);
    assert_lifetime(&token, 3600);
    let seen = server.requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let head = seen[0].to_ascii_lowercase();
    assert!(
        head.starts_with(
            "get /metadata/identity/oauth2/token?api-version=2019-07-01-preview&resource=https%3a%2f%2fvault.azure.net http/1.1\r\n"
        ),
        "{head}"
    );
    assert!(head.contains(&format!(
        "\r\nsecret: {}\r\n",
        IDENTITY_HEADER.to_ascii_lowercase()
    )));

    // wrong thumbprint: the handshake fails, nothing is sent
    let mut wrong = server.sha1_hex.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let c = ManagedIdentityCredential::service_fabric(
        &server.url,
        IDENTITY_HEADER,
        String::from_utf8(wrong).unwrap(),
    )
    .build()
    .unwrap();
    let e = c.get_token(&request()).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_eq!(server.requests.lock().unwrap().len(), 1);
    // the server sees the client's alert a moment later
    for _ in 0..100 {
        if server.handshakes_failed.load(Ordering::SeqCst) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.handshakes_failed.load(Ordering::SeqCst), 1);
    no_secret(&format!("{e} {e:?} {c:?} {c}"));
}

#[tokio::test]
async fn c3_service_fabric_error_shape() {
    let server = tls_server(
        r#"{"error":{"correlationId":"9d1c","code":"SecretHeaderNotFound","message":"Secret is not found in the request headers."}}"#.to_owned(),
        400,
    )
    .await;
    let c =
        ManagedIdentityCredential::service_fabric(&server.url, IDENTITY_HEADER, &server.sha1_hex)
            .build()
            .unwrap();
    let e = c.get_token(&request()).await.unwrap_err();
    assert_eq!(identity_provider_status(&e), StatusCode::BAD_REQUEST);
    assert_eq!(
        e.to_string(),
        "identity provider returned SecretHeaderNotFound: Secret is not found in the request headers. correlation_id=9d1c"
    );
}

// ---------------------------------------------------------------------------------------------
// Workload identity

#[tokio::test]
async fn c4_workload_identity_posts_the_federated_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .respond_with(json(format!(
            r#"{{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"refresh_in":1799,"access_token":"{ACCESS_TOKEN}"}}"#
        )))
        .expect(2)
        .mount(&server)
        .await;
    let dir = temp_dir("wi");
    let file = dir.join("azure-identity-token");
    std::fs::write(&file, format!("{FEDERATED}\n")).unwrap();
    let c = WorkloadIdentityCredential::builder("tenant-1", CLIENT_ID, &file)
        .authority_host(AuthorityHost::parse(&server.uri()).unwrap())
        .build()
        .unwrap();
    let token = c.get_token(&request()).await.unwrap();
    assert_eq!(token.secret(), ACCESS_TOKEN);
    assert_eq!(token.refresh_in(), Some(Duration::from_secs(1799)));
    c.get_token(&request().with_claims(r#"{"access_token":{}}"#))
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let form: HashMap<String, String> = form_urlencoded::parse(&requests[0].body)
        .into_owned()
        .collect();
    assert_eq!(
        form,
        HashMap::from(
            [
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                ),
                ("client_assertion", FEDERATED),
                ("scope", VAULT_SCOPE),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        )
    );
    let form: HashMap<String, String> = form_urlencoded::parse(&requests[1].body)
        .into_owned()
        .collect();
    assert_eq!(form["claims"], r#"{"access_token":{}}"#);
    no_secret(&format!("{c:?} {c}"));

    // the file disappears: a clear configuration error once the cached copy is stale is tested
    // under paused time in the unit tests; a credential that never read it fails at once
    let missing = WorkloadIdentityCredential::builder("tenant-1", CLIENT_ID, dir.join("gone"))
        .authority_host(AuthorityHost::parse(&server.uri()).unwrap())
        .build()
        .unwrap();
    let e = missing.get_token(&request()).await.unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(e.to_string().contains("gone"), "{e}");
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// End to end: IMDS → TokenCache → AuthLayer → API

#[tokio::test]
async fn c3_managed_identity_token_flows_through_cache_and_auth_layer() {
    let imds = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(TOKEN_PATH))
        .and(header("Metadata", "true"))
        .respond_with(json(format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","expires_in":"86399","expires_on":"{}","resource":"https://api.example","token_type":"Bearer"}}"#,
            unix_now() + 86399
        )))
        .expect(1)
        .mount(&imds)
        .await;
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/data"))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(3)
        .mount(&api)
        .await;

    let credential = ManagedIdentityCredential::imds()
        .endpoint(imds.uri())
        .build()
        .unwrap();
    let cache = TokenCache::new(credential, ["https://api.example/.default"]);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(
            AuthLayer::new(cache.clone())
                .allow_origins([api.uri()])
                .unwrap(),
        )
        .build();
    for _ in 0..3 {
        let resp = client
            .get(format!("{}/data", api.uri()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
    }
    let imds_requests = imds.received_requests().await.unwrap();
    expect_query(
        &imds_requests[0],
        &[
            ("api-version", "2018-02-01"),
            ("resource", "https://api.example"),
        ],
    );
    // a day-long token refreshes at half-life (rule T2)
    let token = cache.cached().unwrap();
    let half = token.expires_at() - token.refresh_at();
    assert!(half >= Duration::from_secs(43_000), "{half:?}");
    assert_eq!(cache.identity().kind, "managed_identity/imds");
}

// ---------------------------------------------------------------------------------------------
// X1

#[tokio::test]
async fn x1_no_secret_in_debug_display_or_errors() {
    let dir = temp_dir("x1");
    std::fs::write(dir.join("token"), FEDERATED).unwrap();
    let credentials: Vec<Box<dyn TokenCredential>> = vec![
        Box::new(
            ManagedIdentityCredential::app_service("http://127.0.0.1:9/msi/token", IDENTITY_HEADER)
                .build()
                .unwrap(),
        ),
        Box::new(
            ManagedIdentityCredential::service_fabric(
                "https://127.0.0.1:9/",
                IDENTITY_HEADER,
                "00".repeat(20),
            )
            .build()
            .unwrap(),
        ),
        Box::new(
            ManagedIdentityCredential::azure_ml("http://127.0.0.1:9/", MSI_SECRET, "c")
                .build()
                .unwrap(),
        ),
        Box::new(
            ManagedIdentityCredential::cloud_shell("http://127.0.0.1:9/")
                .build()
                .unwrap(),
        ),
        Box::new(
            ManagedIdentityCredential::azure_arc("http://127.0.0.1:9/")
                .build()
                .unwrap(),
        ),
        Box::new(
            WorkloadIdentityCredential::builder("t", "c", dir.join("token"))
                .authority_host(AuthorityHost::parse("http://127.0.0.1:9").unwrap())
                .build()
                .unwrap(),
        ),
    ];
    for c in &credentials {
        no_secret(&format!("{c:?} {:?}", c.identity()));
        // port 9 (discard) is closed: a transport error, which must not carry the secrets either
        let e = c.get_token(&request()).await.unwrap_err();
        no_secret(&format!("{e} {e:?}"));
    }
    let builder = ManagedIdentityCredential::azure_ml("http://127.0.0.1:9/", MSI_SECRET, "c");
    no_secret(&format!("{builder:?}"));
    let builder = ManagedIdentityCredential::app_service("http://127.0.0.1:9/", IDENTITY_HEADER);
    no_secret(&format!("{builder:?}"));
}
