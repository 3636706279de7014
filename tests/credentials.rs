//! End-to-end tests of the confidential-client credentials against a wiremock identity provider
//! (rules C1, C2, C7, T1, X1, X3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::StatusCode;
use resilient_auth::{
    AuthorityHost, ClientCertificateCredential, ClientSecretCredential, Error, TokenCredential,
    TokenRequest, TokenResponse,
};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TENANT: &str = "tenant-1";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "s3cr3t~Value+/=&x y";
const ACCESS_TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.QWNjZXNzVG9rZW5QYXlsb2Fk.c2lnbmF0dXJl";
const TOKEN_PATH: &str = "/tenant-1/oauth2/v2.0/token";
const SCOPES: [&str; 2] = ["https://vault.azure.net/.default", "api://x/y"];

const CERT_AND_KEY: &[u8] = include_bytes!("fixtures/cert_and_key.pem");
const CERT: &[u8] = include_bytes!("fixtures/cert.pem");
const KEY: &[u8] = include_bytes!("fixtures/key.pem");
const PUBLIC_KEY: &[u8] = include_bytes!("fixtures/public.pem");

fn entra_success() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        format!(
            r#"{{"token_type":"Bearer","expires_in":"3599","ext_expires_in":"3599","expires_on":"1893456000","refresh_in":"1799","access_token":"{ACCESS_TOKEN}"}}"#
        ),
        "application/json",
    )
}

fn authority(server: &MockServer) -> AuthorityHost {
    AuthorityHost::parse(&server.uri()).unwrap()
}

fn secret_credential(server: &MockServer) -> ClientSecretCredential {
    ClientSecretCredential::builder(TENANT, CLIENT_ID, SECRET)
        .authority_host(authority(server))
        .build()
        .unwrap()
}

fn certificate_credential(server: &MockServer) -> ClientCertificateCredential {
    ClientCertificateCredential::builder(TENANT, CLIENT_ID, CERT_AND_KEY)
        .authority_host(authority(server))
        .build()
        .unwrap()
}

/// Both credentials, pointed at `server`.
fn both(server: &MockServer) -> Vec<Box<dyn TokenCredential>> {
    vec![
        Box::new(secret_credential(server)),
        Box::new(certificate_credential(server)),
    ]
}

fn request() -> TokenRequest {
    TokenRequest::new(SCOPES)
}

async fn mount(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(response)
        .mount(server)
        .await;
}

fn form(req: &wiremock::Request) -> HashMap<String, String> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

async fn sent_assertions(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| form(r).get("client_assertion").cloned())
        .collect()
}

async fn only_request(server: &MockServer) -> wiremock::Request {
    let mut requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    requests.remove(0)
}

/// The key material as it appears in the PEM (a line of its base64 body).
fn key_fragments() -> Vec<String> {
    String::from_utf8(KEY.to_vec())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(|l| l[..32.min(l.len())].to_owned())
        .collect()
}

/// Fails if `text` shows the secret, the access token, the key or `assertions`.
fn assert_no_secrets(text: &str, assertions: &[String]) {
    assert!(!text.contains(SECRET), "secret in {text}");
    assert!(!text.contains("s3cr3t"), "secret in {text}");
    assert!(!text.contains(ACCESS_TOKEN), "access token in {text}");
    assert!(
        !text.contains("QWNjZXNzVG9rZW5QYXlsb2Fk"),
        "access token in {text}"
    );
    for fragment in key_fragments() {
        assert!(!text.contains(&fragment), "key material in {text}");
    }
    for assertion in assertions {
        for part in assertion.split('.') {
            assert!(!text.contains(part), "assertion in {text}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// C1: client secret

#[tokio::test]
async fn c1_posts_client_credentials_form_to_tenant_token_endpoint() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(entra_success())
        .expect(1)
        .mount(&server)
        .await;
    let credential = secret_credential(&server);

    let token = credential.get_token(&request()).await.unwrap();
    assert_eq!(token.secret(), ACCESS_TOKEN);
    assert_eq!(token.expires_in(), Duration::from_secs(3599));
    assert_eq!(token.refresh_in(), Some(Duration::from_secs(1799)));

    let req = only_request(&server).await;
    assert_eq!(req.method.as_str(), "POST");
    assert_eq!(req.url.path(), TOKEN_PATH);
    assert!(req.headers.get("authorization").is_none());
    let form = form(&req);
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["client_secret"], SECRET);
    assert_eq!(form["scope"], "https://vault.azure.net/.default api://x/y");
    assert!(!form.contains_key("claims"));
    assert_eq!(form.len(), 4);

    let id = credential.identity();
    assert_eq!(id.kind, "client_secret");
    assert_eq!(id.authority, server.uri());
    assert_eq!(id.tenant.as_deref(), Some(TENANT));
    assert_eq!(id.client_id.as_deref(), Some(CLIENT_ID));
}

#[tokio::test]
async fn c1_claims_are_sent_with_the_request() {
    let server = MockServer::start().await;
    mount(&server, entra_success()).await;
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}"#;
    secret_credential(&server)
        .get_token(&request().with_claims(claims))
        .await
        .unwrap();
    assert_eq!(form(&only_request(&server).await)["claims"], claims);
}

#[tokio::test]
async fn c1_client_secret_basic_to_custom_token_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"access_token":"abc","token_type":"bearer","expires_in":300}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let credential = ClientSecretCredential::builder(TENANT, "my client:1", SECRET)
        .token_url(format!("{}/oauth/token", server.uri()))
        .client_secret_basic(true)
        .build()
        .unwrap();
    let token = credential.get_token(&request()).await.unwrap();
    assert_eq!(token.expires_in(), Duration::from_secs(300));

    let req = only_request(&server).await;
    // RFC 6749 §2.3.1: form-urlencode id and secret, then Basic
    let user = form_urlencoded::byte_serialize(b"my client:1").collect::<String>();
    let pass = form_urlencoded::byte_serialize(SECRET.as_bytes()).collect::<String>();
    assert_eq!(user, "my+client%3A1");
    let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")));
    assert_eq!(req.headers["authorization"].to_str().unwrap(), expected);
    let form = form(&req);
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "https://vault.azure.net/.default api://x/y");
    assert!(!form.contains_key("client_id"));
    assert!(!form.contains_key("client_secret"));
    assert_eq!(
        credential.identity().authority,
        server.uri(),
        "a custom token URL's origin is the authority"
    );
}

// ---------------------------------------------------------------------------------------------
// C2: client certificate

fn x5t_s256() -> String {
    let der = pem::parse(CERT).unwrap().into_contents();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[derive(Debug, serde::Deserialize)]
struct AssertionClaims {
    aud: String,
    iss: String,
    sub: String,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

/// Verifies the assertion's signature with the certificate's public key and returns its claims.
fn verify_assertion(assertion: &str, alg: jsonwebtoken::Algorithm, aud: &str) -> AssertionClaims {
    let header = jsonwebtoken::decode_header(assertion).unwrap();
    assert_eq!(header.alg, alg);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.x5t_s256.as_deref(), Some(x5t_s256().as_str()));
    let raw_header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(assertion.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(raw_header.get("x5t#S256").is_some(), "{raw_header}");

    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[CLIENT_ID]);
    validation.sub = Some(CLIENT_ID.to_owned());
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY).unwrap();
    jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn c2_posts_a_signed_client_assertion() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(entra_success())
        .expect(1)
        .mount(&server)
        .await;
    let credential = certificate_credential(&server);
    let token = credential.get_token(&request()).await.unwrap();
    assert_eq!(token.secret(), ACCESS_TOKEN);
    assert_eq!(token.refresh_in(), Some(Duration::from_secs(1799)));

    let req = only_request(&server).await;
    assert_eq!(req.method.as_str(), "POST");
    assert!(req.headers.get("authorization").is_none());
    let form = form(&req);
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(form["scope"], "https://vault.azure.net/.default api://x/y");
    assert!(!form.contains_key("client_secret"));
    assert_eq!(form.len(), 5);

    let aud = format!("{}{TOKEN_PATH}", server.uri());
    let claims = verify_assertion(
        &form["client_assertion"],
        jsonwebtoken::Algorithm::PS256,
        &aud,
    );
    assert_eq!(claims.aud, aud);
    assert_eq!(claims.iss, CLIENT_ID);
    assert_eq!(claims.sub, CLIENT_ID);
    assert_eq!(claims.jti.len(), 32);
    assert!(claims.jti.bytes().all(|b| b.is_ascii_hexdigit()));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(claims.iat <= now && claims.iat + 60 >= now, "{claims:?}");
    assert_eq!(claims.nbf, claims.iat);
    assert_eq!(claims.exp, claims.iat + 600);

    let id = credential.identity();
    assert_eq!(id.kind, "client_certificate");
    assert_eq!(id.authority, server.uri());
    assert_eq!(id.tenant.as_deref(), Some(TENANT));
    assert_eq!(id.client_id.as_deref(), Some(CLIENT_ID));
}

#[tokio::test]
async fn c2_assertion_is_reused_while_fresh_and_unique_per_signing() {
    let server = MockServer::start().await;
    mount(&server, entra_success()).await;
    let aud = format!("{}{TOKEN_PATH}", server.uri());
    let first = certificate_credential(&server);
    first.get_token(&request()).await.unwrap();
    first.get_token(&request()).await.unwrap();
    // a second credential signs its own assertion (the re-sign after 8 minutes is covered with
    // a controlled clock in the unit test `c2_assertion_is_cached_and_resigned_near_expiry`)
    let second = ClientCertificateCredential::builder(TENANT, CLIENT_ID, CERT)
        .private_key_pem(KEY)
        .authority_host(authority(&server))
        .build()
        .unwrap();
    second
        .get_token(&request().with_claims("{}"))
        .await
        .unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 3);
    let jtis: Vec<String> = requests
        .iter()
        .map(|r| {
            verify_assertion(
                &form(r)["client_assertion"],
                jsonwebtoken::Algorithm::PS256,
                &aud,
            )
            .jti
        })
        .collect();
    assert_eq!(jtis[0], jtis[1], "a fresh assertion is reused");
    assert_ne!(jtis[1], jtis[2], "a new signing has a new jti");
    assert_eq!(form(&requests[2])["claims"], "{}");
}

#[tokio::test]
async fn c2_rs256_option_and_custom_token_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(entra_success())
        .expect(1)
        .mount(&server)
        .await;
    let aud = format!("{}/oauth2/token", server.uri());
    let credential = ClientCertificateCredential::builder(TENANT, CLIENT_ID, CERT_AND_KEY)
        .token_url(&aud)
        .rs256(true)
        .build()
        .unwrap();
    credential.get_token(&request()).await.unwrap();
    let req = only_request(&server).await;
    let claims = verify_assertion(
        &form(&req)["client_assertion"],
        jsonwebtoken::Algorithm::RS256,
        &aud,
    );
    assert_eq!(claims.aud, aud);
}

// ---------------------------------------------------------------------------------------------
// C7 / T1 / X3: what both credentials do with the identity provider's answers

#[tokio::test]
async fn c7_invalid_client_401_surfaces_entra_error_fields() {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(401).set_body_raw(
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.","error_codes":[7000215],"timestamp":"2024-05-01 10:00:00Z","trace_id":"0b0c6a1e-7c5d-4b7e-9a43-1d2b3c4d5e6f","correlation_id":"c0ffee00-1111-2222-3333-444455556666","error_uri":"https://login.microsoftonline.com/error?code=7000215"}"#,
            "application/json",
        ),
    )
    .await;
    for credential in both(&server) {
        let e = credential.get_token(&request()).await.unwrap_err();
        let Error::IdentityProvider { status, details } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*status, StatusCode::UNAUTHORIZED);
        assert_eq!(details.error, "invalid_client");
        assert!(details
            .error_description
            .as_deref()
            .unwrap()
            .starts_with("AADSTS7000215"));
        assert_eq!(details.error_codes, vec![7000215]);
        assert_eq!(
            details.trace_id.as_deref(),
            Some("0b0c6a1e-7c5d-4b7e-9a43-1d2b3c4d5e6f")
        );
        assert_eq!(
            details.correlation_id.as_deref(),
            Some("c0ffee00-1111-2222-3333-444455556666")
        );
        assert!(!e.is_transient());
        assert_eq!(e.retry_after(), None);
        let shown = e.to_string();
        for needle in [
            "invalid_client",
            "7000215",
            "trace_id=0b0c6a1e",
            "correlation_id=c0ffee00",
        ] {
            assert!(shown.contains(needle), "{shown}");
        }
    }
}

#[tokio::test]
async fn c7_400_is_a_permanent_identity_provider_error() {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(400).set_body_raw(
            r#"{"error":"invalid_scope","error_description":"AADSTS70011: The provided value for the input parameter 'scope' is not valid.","error_codes":[70011]}"#,
            "application/json",
        ),
    )
    .await;
    for credential in both(&server) {
        let e = credential.get_token(&request()).await.unwrap_err();
        assert!(
            matches!(&e, Error::IdentityProvider { status, details } if *status == StatusCode::BAD_REQUEST && details.error == "invalid_scope" && details.error_codes == [70011]),
            "{e:?}"
        );
        assert!(!e.is_transient());
    }
}

#[tokio::test]
async fn c7_429_carries_retry_after() {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "7")
            .set_body_raw(
                r#"{"error":"temporarily_unavailable","error_codes":[50196]}"#,
                "application/json",
            ),
    )
    .await;
    for credential in both(&server) {
        let e = credential.get_token(&request()).await.unwrap_err();
        assert!(
            matches!(&e, Error::IdentityProvider { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS),
            "{e:?}"
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(e.is_transient());
    }
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "one attempt each"
    );
}

#[tokio::test]
async fn c7_500_and_503_are_transient_and_tolerate_non_json_bodies() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_raw(
            r#"{"error":"server_error","error_description":"AADSTS90033: A transient error has occurred."}"#,
            "application/json",
        ))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("Retry-After", "3")
                .set_body_string("<html><body>Service Unavailable</body></html>"),
        )
        .mount(&server)
        .await;
    for credential in both(&server) {
        let e = credential.get_token(&request()).await.unwrap_err();
        assert!(
            matches!(&e, Error::IdentityProvider { status, details } if *status == StatusCode::INTERNAL_SERVER_ERROR && details.error == "server_error"),
            "{e:?}"
        );
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), None);
    }
    for credential in both(&server) {
        let e = credential.get_token(&request()).await.unwrap_err();
        assert!(
            matches!(&e, Error::IdentityProvider { status, details } if *status == StatusCode::SERVICE_UNAVAILABLE && details.error == "http_503" && details.error_description.is_none()),
            "{e:?}"
        );
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }
}

#[tokio::test]
async fn t1_malformed_json_is_an_invalid_response() {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(200).set_body_raw(
            format!(r#"{{"access_token":"{ACCESS_TOKEN}","expires_in":3599"#),
            "application/json",
        ),
    )
    .await;
    for credential in both(&server) {
        let e = credential.get_token(&request()).await.unwrap_err();
        assert!(matches!(e, Error::InvalidResponse(_)), "{e:?}");
        assert!(!e.is_transient());
        assert_no_secrets(&format!("{e} {e:?}"), &[]);
    }
}

#[tokio::test]
async fn t1_missing_expires_in_is_an_invalid_response() {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(200).set_body_raw(
            format!(r#"{{"token_type":"Bearer","access_token":"{ACCESS_TOKEN}"}}"#),
            "application/json",
        ),
    )
    .await;
    for credential in both(&server) {
        let e = credential.get_token(&request()).await.unwrap_err();
        assert!(
            matches!(&e, Error::InvalidResponse(m) if m.contains("expires_in")),
            "{e:?}"
        );
        assert_no_secrets(&format!("{e} {e:?}"), &[]);
    }
}

#[tokio::test]
async fn x3_one_mib_body_is_rejected() {
    let server = MockServer::start().await;
    let big = format!(
        r#"{{"access_token":"{ACCESS_TOKEN}","expires_in":3599,"pad":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    mount(
        &server,
        ResponseTemplate::new(200).set_body_raw(big, "application/json"),
    )
    .await;
    for credential in both(&server) {
        let e = credential.get_token(&request()).await.unwrap_err();
        assert!(
            matches!(&e, Error::InvalidResponse(m) if m.contains("exceeds 65536 bytes")),
            "{e:?}"
        );
    }
}

/// A server that streams a chunked body (no `Content-Length`) of `total` bytes, and counts what
/// it managed to write before the client hung up.
async fn chunked_server(total: usize) -> (String, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(Mutex::new(0usize));
    let counter = written.clone();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let _ = socket.read(&mut buf).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b' '; 8 * 1024];
        let mut sent = 0;
        while sent < total {
            let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if socket.write_all(&frame).await.is_err() {
                break;
            }
            sent += chunk.len();
            *counter.lock().unwrap() = sent;
        }
        let _ = socket.write_all(b"0\r\n\r\n").await;
    });
    (format!("http://{addr}"), written)
}

#[tokio::test]
async fn x3_chunked_body_over_64_kib_is_rejected_while_streaming() {
    let (uri, _written) = chunked_server(1 << 20).await;
    let credential = ClientSecretCredential::builder(TENANT, CLIENT_ID, SECRET)
        .token_url(format!("{uri}/token"))
        .build()
        .unwrap();
    let e = credential.get_token(&request()).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidResponse(m) if m.contains("exceeds 65536 bytes")),
        "{e:?}"
    );
}

#[tokio::test]
async fn x3_hanging_server_hits_the_configured_timeout() {
    let server = MockServer::start().await;
    mount(&server, entra_success().set_delay(Duration::from_secs(3))).await;
    let after = Duration::from_millis(100);
    let credentials: Vec<Box<dyn TokenCredential>> = vec![
        Box::new(
            ClientSecretCredential::builder(TENANT, CLIENT_ID, SECRET)
                .authority_host(authority(&server))
                .timeout(after)
                .build()
                .unwrap(),
        ),
        Box::new(
            ClientCertificateCredential::builder(TENANT, CLIENT_ID, CERT_AND_KEY)
                .authority_host(authority(&server))
                .timeout(after)
                .build()
                .unwrap(),
        ),
    ];
    for credential in credentials {
        let started = std::time::Instant::now();
        let e = credential.get_token(&request()).await.unwrap_err();
        assert!(
            matches!(e, Error::Timeout { after: a } if a == after),
            "{e:?}"
        );
        assert!(e.is_transient());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn c7_connection_refused_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let credential = ClientSecretCredential::builder(TENANT, CLIENT_ID, SECRET)
        .authority_host(AuthorityHost::parse(&uri).unwrap())
        .build()
        .unwrap();
    let e = credential.get_token(&request()).await.unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Unavailable {
                what: "identity provider",
                source: Some(_)
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient());
    assert_no_secrets(&format!("{e} {e:?}"), &[]);
}

// ---------------------------------------------------------------------------------------------
// X1: nothing secret in Debug, Display, errors or logs

#[tokio::test]
async fn x1_debug_display_and_errors_never_show_secrets() {
    let server = MockServer::start().await;
    let secret_builder = ClientSecretCredential::builder(TENANT, CLIENT_ID, SECRET)
        .authority_host(authority(&server))
        .client_secret_basic(false);
    let cert_builder = ClientCertificateCredential::builder(TENANT, CLIENT_ID, CERT_AND_KEY)
        .authority_host(authority(&server));
    let separate_key_builder =
        ClientCertificateCredential::builder(TENANT, CLIENT_ID, CERT).private_key_pem(KEY);
    let mut shown = vec![
        format!("{secret_builder:?}"),
        format!("{cert_builder:?}"),
        format!("{separate_key_builder:?}"),
    ];
    let secret = secret_builder.build().unwrap();
    let certificate = cert_builder.build().unwrap();
    shown.push(format!("{secret:?} {secret}"));
    shown.push(format!("{certificate:?} {certificate}"));
    shown.push(format!("{:?}", secret.identity()));
    shown.push(format!("{:?}", certificate.identity()));

    // a success, then every failure shape
    let scripted = [
        entra_success(),
        ResponseTemplate::new(401).set_body_raw(
            format!(r#"{{"error":"invalid_client","error_codes":[7000215],"trace_id":"t","correlation_id":"c","token":"{ACCESS_TOKEN}"}}"#),
            "application/json",
        ),
        ResponseTemplate::new(400).set_body_raw(r#"{"error":"invalid_request"}"#, "application/json"),
        ResponseTemplate::new(429).insert_header("Retry-After", "7"),
        ResponseTemplate::new(500).set_body_string(ACCESS_TOKEN),
        ResponseTemplate::new(503).set_body_string("down"),
        ResponseTemplate::new(200).set_body_string(format!(r#""{ACCESS_TOKEN}""#)),
        ResponseTemplate::new(200).set_body_string(format!(r#"{{"access_token":"{ACCESS_TOKEN}"}}"#)),
        ResponseTemplate::new(200).set_body_string(format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","expires_in":"{ACCESS_TOKEN}"}}"#
        )),
        ResponseTemplate::new(200).set_body_string(format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","token_type":"{ACCESS_TOKEN}","expires_in":1}}"#
        )),
        ResponseTemplate::new(200).set_body_string(format!("{ACCESS_TOKEN}{}", "x".repeat(1 << 20))),
    ];
    let credentials: [&dyn TokenCredential; 2] = [&secret, &certificate];
    let mut assertions = Vec::new();
    for response in scripted {
        assertions.extend(sent_assertions(&server).await);
        server.reset().await;
        mount(&server, response).await;
        for credential in credentials {
            match credential.get_token(&request()).await {
                Ok(token) => shown.push(format!("{token:?}")),
                Err(e) => {
                    let mut text = format!("{e} {e:?}");
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        text.push_str(&format!(" {s} {s:?}"));
                        source = s.source();
                    }
                    shown.push(text);
                }
            }
        }
    }
    shown.push(format!(
        "{:?}",
        TokenResponse::new(ACCESS_TOKEN, Duration::from_secs(1)).with_refresh_token(SECRET)
    ));

    assertions.extend(sent_assertions(&server).await);
    assert!(assertions.len() >= 2);
    assert!(shown.len() > 25);
    for text in &shown {
        assert_no_secrets(text, &assertions);
    }
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The process-wide log buffer. A global subscriber (not a scoped one) because tracing caches a
/// callsite's interest process-wide: a scoped subscriber misses events whose callsites other
/// test threads hit first.
fn captured_logs() -> Buffer {
    static LOGS: std::sync::OnceLock<Buffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
    .clone()
}

#[tokio::test]
async fn x1_tracing_output_never_shows_secrets() {
    let buffer = captured_logs();

    let server = MockServer::start().await;
    mount(&server, entra_success()).await;
    secret_credential(&server)
        .get_token(&request())
        .await
        .unwrap();
    certificate_credential(&server)
        .get_token(&request())
        .await
        .unwrap();
    let assertions = sent_assertions(&server).await;
    assert_eq!(assertions.len(), 1);
    server.reset().await;
    mount(
        &server,
        ResponseTemplate::new(401)
            .set_body_raw(r#"{"error":"invalid_client"}"#, "application/json"),
    )
    .await;
    let _ = secret_credential(&server).get_token(&request()).await;

    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("identity provider request"), "{log}");
    assert!(
        log.contains("kind=\"client_secret\"") || log.contains("kind=client_secret"),
        "{log}"
    );
    assert!(log.contains("client_certificate"), "{log}");
    assert!(
        log.contains("status=200") && log.contains("status=401"),
        "{log}"
    );
    assert!(log.contains("elapsed_ms="), "{log}");
    assert!(log.contains("endpoint=127.0.0.1"), "{log}");
    assert_no_secrets(&log, &assertions);
}
