#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `RefreshTokenCredential` against a wiremock token endpoint (rule C5): the form it posts,
//! rotation persisted before the token is returned, `invalid_grant`, string-typed numbers,
//! and redaction (rule X1).

use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use resilient_auth::{
    Error, MemoryStore, RefreshTokenCredential, StoreLock, StoredToken, TokenCache,
    TokenCredential, TokenRequest, TokenStore,
};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A store whose saves take a while: a save that is not awaited would not be visible yet.
#[derive(Debug, Clone, Default)]
struct SlowStore(MemoryStore);

impl TokenStore for SlowStore {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<StoredToken>, Error>> {
        self.0.load(key)
    }
    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.0.save(key, token).await
        }
        .boxed()
    }
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        self.0.remove(key)
    }
    fn lock<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, Error>> {
        self.0.lock(key, ttl)
    }
    fn unlock<'a>(&'a self, lock: &'a StoreLock) -> BoxFuture<'a, Result<(), Error>> {
        self.0.unlock(lock)
    }
}

fn ok_body(access: &str, refresh: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "token_type": "Bearer", "access_token": access, "expires_in": 3600
    });
    if let Some(r) = refresh {
        v["refresh_token"] = r.into();
    }
    v
}

fn builder(server: &MockServer) -> resilient_auth::RefreshTokenCredentialBuilder {
    RefreshTokenCredential::builder("tenant", "native-client")
        .token_url(format!("{}/tenant/oauth2/v2.0/token", server.uri()))
}

fn request() -> TokenRequest {
    TokenRequest::new(["https://graph.microsoft.com/.default"])
}

#[tokio::test]
async fn c5_rotated_refresh_token_is_persisted_before_the_token_is_returned() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant/oauth2/v2.0/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("client_id=native-client"))
        .and(body_string_contains("refresh_token=rt-1"))
        .and(body_string_contains(
            "scope=https%3A%2F%2Fgraph.microsoft.com%2F.default+offline_access",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("at-1", Some("rt-2"))))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("refresh_token=rt-2"))
        .and(body_string_contains("claims=%7B%22a%22%3A1%7D"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("at-2", None)))
        .expect(1)
        .mount(&server)
        .await;
    let store = SlowStore::default();
    let credential = builder(&server)
        .refresh_token("rt-1")
        .store(store.clone())
        .build()
        .unwrap();
    let response = credential.get_token(&request()).await.unwrap();
    assert_eq!(response.secret(), "at-1");
    assert_eq!(
        response.refresh_token(),
        None,
        "the store holds the one copy"
    );
    // Visible the moment get_token returned: the (slow) save was awaited.
    let saved = store
        .0
        .load(credential.store_key())
        .await
        .unwrap()
        .expect("rotated refresh token saved before get_token returned");
    assert_eq!(saved.refresh_token.as_deref(), Some("rt-2"));
    assert!(saved.access_token.is_empty());
    // The next call uses the rotated token (with claims); no rotation this time.
    let next = credential
        .get_token(&request().with_claims(r#"{"a":1}"#))
        .await
        .unwrap();
    assert_eq!(next.secret(), "at-2");
    let saved = store.0.load(credential.store_key()).await.unwrap().unwrap();
    assert_eq!(saved.refresh_token.as_deref(), Some("rt-2"));
    server.verify().await;
}

#[tokio::test]
async fn c5_without_a_store_the_rotated_token_is_kept_in_memory_and_returned() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("refresh_token=rt-a"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("at-a", Some("rt-b"))))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("refresh_token=rt-b"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("at-b", None)))
        .expect(1)
        .mount(&server)
        .await;
    let credential = builder(&server).refresh_token("rt-a").build().unwrap();
    let first = credential.get_token(&request()).await.unwrap();
    assert_eq!(first.refresh_token(), Some("rt-b"));
    assert_eq!(
        credential.get_token(&request()).await.unwrap().secret(),
        "at-b"
    );
    server.verify().await;
}

#[tokio::test]
async fn c5_invalid_grant_says_interactive_sign_in_is_needed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_grant",
            "error_description": "AADSTS70008: The provided authorization code or refresh token has expired due to inactivity.",
            "error_codes": [70008],
            "trace_id": "t-1",
            "correlation_id": "c-1"
        })))
        .expect(2)
        .mount(&server)
        .await;
    let credential = builder(&server)
        .refresh_token("rt-expired-s3cr3t")
        .build()
        .unwrap();
    let e = credential.get_token(&request()).await.unwrap_err();
    let Error::IdentityProvider { status, details } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(status.as_u16(), 400);
    assert_eq!(details.error, "invalid_grant");
    assert_eq!(details.error_codes, vec![70008]);
    assert!(e.needs_interaction());
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(text.contains("interactive sign-in is needed"), "{text}");
    assert!(text.contains("AADSTS70008"), "{text}");
    assert!(!format!("{text}{e:?}").contains("s3cr3t"));

    // Through a cache: the same error reaches the caller.
    let tokens = TokenCache::new(credential, ["https://graph.microsoft.com/.default"]);
    let e = tokens.token().await.unwrap_err();
    assert!(e.needs_interaction(), "{e}");
    server.verify().await;
}

#[tokio::test]
async fn c5_no_refresh_token_anywhere_needs_interaction_without_a_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("x", None)))
        .expect(0)
        .mount(&server)
        .await;
    let credential = builder(&server).store(MemoryStore::new()).build().unwrap();
    let e = credential.get_token(&request()).await.unwrap_err();
    assert!(e.needs_interaction(), "{e}");
    assert!(
        e.to_string().contains("interactive sign-in is needed"),
        "{e}"
    );
    // After an interactive sign-in the app hands over the refresh token.
    credential
        .save_refresh_token("rt-from-sign-in")
        .await
        .unwrap();
    server.verify().await;
}

#[tokio::test]
async fn c5_string_typed_numbers_and_through_a_token_cache() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "token_type": "Bearer", "access_token": "at-str", "expires_in": "3599",
            "ext_expires_in": "3599", "refresh_in": "1800", "refresh_token": "rt-2"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let store = MemoryStore::new();
    let credential = builder(&server)
        .refresh_token("rt-1")
        .store(store.clone())
        .build()
        .unwrap();
    let key = credential.store_key().to_owned();
    let tokens = TokenCache::builder(credential, ["https://graph.microsoft.com/.default"])
        .store(store.clone())
        .build()
        .unwrap();
    let t = tokens.token().await.unwrap();
    assert_eq!(t.secret(), "at-str");
    let lifetime = t.expires_at() - tokio::time::Instant::now();
    assert!(lifetime > Duration::from_secs(3590) && lifetime <= Duration::from_secs(3599));
    let refresh = t.refresh_at() - tokio::time::Instant::now();
    assert!(refresh <= Duration::from_secs(1800), "{refresh:?}");
    assert_eq!(tokens.identity().kind, "refresh_token");
    let rt = store.load(&key).await.unwrap().unwrap();
    assert_eq!(rt.refresh_token.as_deref(), Some("rt-2"));
    server.verify().await;
}

#[test]
fn x1_refresh_token_credential_and_errors_never_show_secrets() {
    let b = RefreshTokenCredential::builder("t", "c")
        .refresh_token("rt-s3cr3t-value")
        .store(MemoryStore::new());
    let mut text = format!("{b:?}");
    let c = b.build().unwrap();
    text += &format!("{c:?} {c}");
    assert!(!text.contains("rt-s3cr3t-value"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    let mut t = StoredToken::new("at-s3cr3t", 1, 2, 3);
    t.refresh_token = Some("rt-s3cr3t".into());
    assert!(!format!("{t:?}").contains("s3cr3t"));
}
