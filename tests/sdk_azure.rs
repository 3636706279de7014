//! Rule U1 end to end: a real Azure SDK client (`azure_security_keyvault_secrets::SecretClient`)
//! against the testkit over HTTPS on loopback, through the `azure` adapters.
//!
//! Real sockets (the SDK, reqwest, rustls and the testkit's TLS port) mean real time, so the
//! back-off here is compressed: the 5 s floor of rule R3 becomes `FLOOR` (150 ms) with the same
//! shape (×2, additive jitter, 3 retries), and the assertions are in units of that floor. The
//! `Retry-After` waits are the testkit's real whole seconds (1 s). Requests are counted at the
//! testkit's log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::{self as az};
use azure_core::http::{ExponentialRetryOptions, RetryOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use resilient_auth::azure::{AzureCredential, AzureTokenSource, AzureTransport};
use resilient_auth::retry::Backoff;
use resilient_auth::testkit::{
    FakeIdentityProvider, Fault, FaultKind, HttpsEndpoint, LoggedRequest, Target,
};
use resilient_auth::{
    AuthLayer, ClientSecretCredential, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer, TokenCache,
    TokenCredential,
};

const TENANT: &str = "contoso";
const SCOPE: &str = "https://vault.azure.net/.default";
const FLOOR: Duration = Duration::from_millis(150);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn fast_cache_backoff() -> Backoff {
    Backoff::builder()
        .initial(ms(100))
        .max(ms(200))
        .build()
        .unwrap()
}

fn cache(idp: &FakeIdentityProvider) -> TokenCache {
    let credential = ClientSecretCredential::builder(TENANT, "client", "secret")
        .token_url(idp.token_url(TENANT))
        .timeout(ms(500))
        .build()
        .unwrap();
    TokenCache::builder(credential, [SCOPE])
        .skew(ms(500))
        .backoff(fast_cache_backoff())
        .build()
        .unwrap()
}

struct Layers {
    retry_after: RetryAfterLayer,
    backoff: ExpBackoffLayer,
}

fn layers() -> Layers {
    Layers {
        retry_after: RetryAfterLayer::default(),
        backoff: ExpBackoffLayer::builder()
            .backoff(
                Backoff::builder()
                    .initial(FLOOR)
                    .max(FLOOR * 8)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    }
}

/// The four layers over a reqwest client that trusts the testkit's CA; `auth` adds the
/// `AuthLayer` (token attached in the transport, on every attempt).
fn stack(https: &HttpsEndpoint, l: &Layers, auth: Option<&TokenCache>) -> ClientWithMiddleware {
    let b = ClientBuilder::new(https.reqwest_builder().unwrap().build().unwrap())
        .with(l.retry_after.clone())
        .with(l.backoff.clone());
    let b = match auth {
        Some(tokens) => b.with(
            AuthLayer::new(tokens.clone())
                .allow_origins([https.uri()])
                .unwrap(),
        ),
        None => b,
    };
    b.with(TimeoutLayer::new(ms(2000))).build()
}

fn secret_client(
    https: &HttpsEndpoint,
    credential: Arc<dyn az::TokenCredential>,
    client_options: azure_core::http::ClientOptions,
) -> SecretClient {
    SecretClient::new(
        &https.uri(),
        credential,
        Some(SecretClientOptions {
            client_options,
            // the challenge names vault.azure.net; the testkit is localhost
            verify_challenge_resource: Some(false),
            ..Default::default()
        }),
    )
    .unwrap()
}

async fn get(client: &SecretClient) -> azure_core::Result<String> {
    let secret = client.get_secret("db-password", None).await?.into_model()?;
    Ok(secret.value.unwrap_or_default())
}

fn api_log(idp: &FakeIdentityProvider) -> Vec<LoggedRequest> {
    idp.log()
        .into_iter()
        .filter(|r| r.target == Target::Api)
        .collect()
}

/// How the SDK client gets its token in an outage test.
#[derive(Clone, Copy, Debug)]
enum TokenPath {
    /// The recommended way: `AuthLayer` in the transport, the SDK's header dropped.
    Transport,
    /// The SDK's own bearer-token policy (Key Vault's challenge flow) asks `AzureCredential`.
    SdkCredential,
}

async fn outage_run(path: TokenPath) {
    // 4 s tokens, refreshed at ~2 s, served until 3.5 s after the first call; the identity
    // provider is down from 1.0 to 2.6 s after it, across the refresh point. Calls every 100 ms
    // for 4.5 s: past the first token's expiry, so the run also shows a fresh token after the
    // outage.
    let idp = FakeIdentityProvider::builder()
        .token_lifetime(Duration::from_secs(4))
        .start()
        .await
        .unwrap();
    let https = idp.start_https().await.unwrap();
    let tokens = cache(&idp);
    let l = layers();
    let (transport, credential) = match path {
        TokenPath::Transport => (
            AzureTransport::new(stack(&https, &l, Some(&tokens))).authorize_in_transport(true),
            AzureCredential::from_cache(tokens.clone()),
        ),
        TokenPath::SdkCredential => (
            AzureTransport::new(stack(&https, &l, None)),
            AzureCredential::from_cache(tokens.clone()),
        ),
    };
    let client = secret_client(&https, Arc::new(credential), transport.client_options());
    get(&client).await.unwrap(); // the first token
    let now = idp.elapsed();
    idp.add_fault(Fault::new(
        Target::Token,
        now + ms(1000)..now + ms(2600),
        FaultKind::Unavailable { retry_after: None },
    ));
    let t0 = Instant::now();
    let (mut ok, mut failed) = (0, Vec::new());
    let mut tick = tokio::time::interval(ms(100));
    while t0.elapsed() < ms(4500) {
        tick.tick().await;
        match get(&client).await {
            Ok(v) => {
                assert_eq!(v, "fake-secret-value-of-db-password");
                ok += 1;
            }
            Err(e) => failed.push(format!("{:?}: {e}", t0.elapsed())),
        }
    }
    let token_log: Vec<_> = idp
        .log()
        .into_iter()
        .filter(|r| r.target == Target::Token)
        .collect();
    assert!(
        token_log.iter().any(|r| r.status == Some(503)),
        "{path:?}: the outage must have hit a refresh: {token_log:?}"
    );
    assert!(
        idp.tokens_issued() >= 2,
        "{path:?}: a fresh token after the outage"
    );
    assert!(failed.is_empty(), "{path:?}: failed calls: {failed:?}");
    assert!(ok > 30, "{path:?}: {ok} calls");
    let api = api_log(&idp);
    let not_ok: Vec<_> = api.iter().filter(|r| r.status != Some(200)).collect();
    match path {
        // the token is in the first request: every request the vault saw was served
        TokenPath::Transport => assert!(not_ok.is_empty(), "{not_ok:?}"),
        // Key Vault's challenge flow: exactly one token-less first request, then all served
        TokenPath::SdkCredential => {
            assert_eq!(not_ok.len(), 1, "{not_ok:?}");
            assert_eq!(api[0].status, Some(401));
        }
    }
}

#[tokio::test]
async fn sdk_azure_u1_outage_zero_failed_calls_token_in_transport() {
    outage_run(TokenPath::Transport).await;
}

#[tokio::test]
async fn sdk_azure_u1_outage_zero_failed_calls_token_from_sdk_credential() {
    outage_run(TokenPath::SdkCredential).await;
}

#[tokio::test]
async fn sdk_azure_r2_each_429_waits_exactly_its_retry_after() {
    // After a warm-up call, the vault throttles for 1.3 s with Retry-After: 1. The next call
    // gets two 429s and must wait 1 s after each (not a millisecond less, and not much more).
    let idp = FakeIdentityProvider::builder().start().await.unwrap();
    let https = idp.start_https().await.unwrap();
    let tokens = cache(&idp);
    let l = layers();
    let transport =
        AzureTransport::new(stack(&https, &l, Some(&tokens))).authorize_in_transport(true);
    let client = secret_client(
        &https,
        Arc::new(AzureCredential::from_cache(tokens)),
        transport.client_options(),
    );
    get(&client).await.unwrap(); // warm: token fetched, connection open
    let now = idp.elapsed();
    idp.add_fault(Fault::new(
        Target::Api,
        now..now + ms(1300),
        FaultKind::TooManyRequests {
            retry_after: Duration::from_secs(1),
        },
    ));
    let before = api_log(&idp).len();
    let t = Instant::now();
    let value = get(&client).await.unwrap();
    let took = t.elapsed();
    assert_eq!(value, "fake-secret-value-of-db-password");
    let call: Vec<_> = api_log(&idp).into_iter().skip(before).collect();
    let statuses: Vec<_> = call.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(429), Some(429), Some(200)], "{call:?}");
    for pair in call.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_secs(1) && gap < ms(1300),
            "waited {gap:?} after a 429 with Retry-After: 1"
        );
    }
    assert!(
        took >= Duration::from_secs(2) && took < ms(2800),
        "{took:?}"
    );
    // one call: 1 + our 2 Retry-After retries, no SDK retry on top
    assert_eq!(l.retry_after.stats().retries(), 2);
    assert_eq!(l.backoff.stats().retries(), 0);
}

/// One call against a vault that answers 503 (no Retry-After) to everything after warm-up.
/// Returns the API requests that call caused.
async fn total_503_run(sdk_retry: Option<RetryOptions>) -> (Vec<LoggedRequest>, Layers) {
    let idp = FakeIdentityProvider::builder().start().await.unwrap();
    let https = idp.start_https().await.unwrap();
    let tokens = cache(&idp);
    let l = layers();
    let transport =
        AzureTransport::new(stack(&https, &l, Some(&tokens))).authorize_in_transport(true);
    let mut options = transport.client_options();
    if let Some(retry) = sdk_retry {
        options.retry = retry; // what a user gets by installing only the transport
    }
    let client = secret_client(
        &https,
        Arc::new(AzureCredential::from_cache(tokens)),
        options,
    );
    get(&client).await.unwrap();
    let now = idp.elapsed();
    idp.add_fault(Fault::new(
        Target::Api,
        now..now + Duration::from_secs(3600),
        FaultKind::Unavailable { retry_after: None },
    ));
    let before = api_log(&idp).len();
    let err = get(&client).await.unwrap_err();
    assert_eq!(
        err.http_status().map(u16::from),
        Some(503),
        "the SDK sees the last 503: {err}"
    );
    (api_log(&idp).into_iter().skip(before).collect(), l)
}

#[tokio::test]
async fn sdk_azure_r3_5xx_retried_only_after_the_floor_one_retry_loop() {
    let (call, l) = total_503_run(None).await;
    let our_retries = l.backoff.stats().retries() as usize;
    assert_eq!(our_retries, 3, "the default retry count");
    // at most 1 + our retries at the testkit: the SDK does not retry on top
    assert_eq!(call.len(), 1 + our_retries, "{call:?}");
    assert!(call.iter().all(|r| r.status == Some(503)));
    // no retry sooner than the floor, then doubling (compressed 5 s → FLOOR)
    for (n, pair) in call.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let floor = FLOOR * 2u32.pow(n as u32);
        assert!(gap >= floor, "retry {} after {gap:?} < {floor:?}", n + 1);
    }
    // and the same layer, uncompressed, has the 5 s floor of rule R3
    assert_eq!(
        ExpBackoffLayer::default().backoff().initial(),
        Duration::from_secs(5)
    );
}

#[tokio::test]
async fn sdk_azure_r5_sdk_retry_left_on_multiplies_requests() {
    // The control for the test above: the same stack with the SDK's retry left on (1 retry,
    // 10 ms later) sends (1 + 1) × (1 + 3) requests for one call. `client_options()` is what
    // prevents that.
    let retry = RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(10),
        max_retries: 1,
        ..Default::default()
    });
    let (call, _) = total_503_run(Some(retry)).await;
    assert_eq!(call.len(), 2 * 4, "{call:?}");
}

/// One GET through `azure_core`'s own pipeline with its `BearerTokenAuthorizationPolicy` — the
/// policy every SDK client (Blob, …) puts after its retry policy, which attaches a token to
/// each SDK attempt — while the vault answers 503 for 2 s. The SDK attaches token 1 (2 s
/// lifetime, just fetched); our retries run ≥ 0.4, 1.2 and 2.8 s later, the last one after
/// token 1 expired. Returns the statuses the vault answered.
async fn sdk_policy_run(authorize_in_transport: bool) -> (u16, Vec<Option<u16>>) {
    use azure_core::http::policies::{auth::BearerTokenAuthorizationPolicy, Policy};
    let idp = FakeIdentityProvider::builder()
        .token_lifetime(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let https = idp.start_https().await.unwrap();
    let tokens = cache(&idp);
    let l = Layers {
        retry_after: RetryAfterLayer::default(),
        backoff: ExpBackoffLayer::builder()
            .backoff(
                Backoff::builder()
                    .initial(ms(400))
                    .max(ms(3200))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    };
    let options = AzureTransport::new(stack(&https, &l, Some(&tokens)))
        .authorize_in_transport(authorize_in_transport)
        .client_options();
    let auth: Arc<dyn Policy> = Arc::new(BearerTokenAuthorizationPolicy::new(
        Arc::new(AzureCredential::from_cache(tokens.clone())),
        [SCOPE],
    ));
    let pipeline = azure_core::http::Pipeline::new(
        Some("test"),
        Some("0"),
        options,
        Vec::new(),
        vec![auth],
        None,
    );
    tokens.token().await.unwrap(); // token 1
    let now = idp.elapsed();
    idp.add_fault(Fault::new(
        Target::Api,
        now..now + ms(2000),
        FaultKind::Unavailable { retry_after: None },
    ));
    let url =
        azure_core::http::Url::parse(&format!("{}/secrets/db-password", https.uri())).unwrap();
    let mut request = azure_core::http::Request::new(url, azure_core::http::Method::Get);
    let status = match pipeline
        .send(&azure_core::http::Context::default(), &mut request, None)
        .await
    {
        Ok(rsp) => rsp.status(),
        Err(e) => e.http_status().expect("an HTTP error"),
    };
    let statuses = api_log(&idp).iter().map(|r| r.status).collect();
    (u16::from(status), statuses)
}

#[tokio::test]
async fn sdk_azure_u1_every_retry_carries_a_current_token() {
    let (status, seen) = sdk_policy_run(true).await;
    assert_eq!(seen, [Some(503), Some(503), Some(503), Some(200)]);
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sdk_azure_u1_sdk_header_goes_stale_on_retries_without_authorize_in_transport() {
    // The control: keep the SDK's header and the last retry carries the expired token 1.
    let (status, seen) = sdk_policy_run(false).await;
    assert_eq!(seen, [Some(503), Some(503), Some(503), Some(401)]);
    assert_eq!(status, 401);
}

/// An `azure_identity`-style developer-tool credential: implements `azure_core`'s
/// `TokenCredential` (as `AzureCliCredential` does, by running a tool), here by asking the
/// testkit's token endpoint. It can be switched off to play an outage of the tool.
#[derive(Debug)]
struct DevToolCredential {
    token_url: String,
    calls: AtomicUsize,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl az::TokenCredential for DevToolCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<az::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<az::AccessToken> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "az: AADSTS50058: could not reach login.microsoftonline.com",
            ));
        }
        let rsp: serde_json::Value = reqwest::Client::new()
            .post(&self.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "az-cli"),
                ("client_secret", "dev"),
                ("scope", &scopes.join(" ")),
            ])
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| {
                azure_core::Error::with_error(azure_core::error::ErrorKind::Credential, e, "az")
            })?
            .json()
            .await
            .map_err(|e| {
                azure_core::Error::with_error(azure_core::error::ErrorKind::Credential, e, "az")
            })?;
        let secs: i64 = rsp["expires_in"].as_str().unwrap().parse().unwrap();
        Ok(az::AccessToken::new(
            rsp["access_token"].as_str().unwrap().to_owned(),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::seconds(secs),
        ))
    }
}

#[tokio::test]
async fn sdk_azure_u1_azure_identity_style_credential_behind_token_cache() {
    let idp = FakeIdentityProvider::builder()
        .token_lifetime(Duration::from_secs(4))
        .start()
        .await
        .unwrap();
    let https = idp.start_https().await.unwrap();
    let dev = Arc::new(DevToolCredential {
        token_url: idp.token_url(TENANT),
        calls: AtomicUsize::new(0),
        down: false.into(),
    });
    let source = AzureTokenSource::new(dev.clone());
    assert_eq!(source.identity().kind, "azure_core");
    assert_eq!(source.identity().authority, "DevToolCredential");
    let tokens = TokenCache::builder(source, [SCOPE])
        .skew(ms(500))
        .backoff(fast_cache_backoff())
        .build()
        .unwrap();
    let l = layers();
    let transport =
        AzureTransport::new(stack(&https, &l, Some(&tokens))).authorize_in_transport(true);
    let client = secret_client(
        &https,
        Arc::new(AzureCredential::from_cache(tokens.clone())),
        transport.client_options(),
    );
    // 10 calls, one tool run: the cache serves the rest
    for _ in 0..10 {
        get(&client).await.unwrap();
    }
    assert_eq!(dev.calls.load(Ordering::SeqCst), 1);
    // the tool breaks after the refresh point (2 s): calls keep working on the cached token
    // (served until 3.5 s)
    tokio::time::sleep(ms(2100)).await;
    dev.down.store(true, Ordering::SeqCst);
    let t = Instant::now();
    let mut ok = 0;
    while t.elapsed() < ms(600) {
        get(&client).await.unwrap();
        ok += 1;
        tokio::time::sleep(ms(50)).await;
    }
    assert!(ok >= 5);
    let failed_runs = dev.calls.load(Ordering::SeqCst) - 1;
    assert!(
        failed_runs >= 1,
        "the cache tried to refresh through the tool"
    );
    assert!(
        failed_runs <= 4,
        "and backed off between tries: {failed_runs}"
    );
    assert_eq!(tokens.stats().refresh_failures as usize, failed_runs);
    // the tool comes back: a new token
    dev.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(ms(300)).await;
    get(&client).await.unwrap();
    assert_eq!(idp.tokens_issued(), 2);
    assert!(api_log(&idp).iter().all(|r| r.status == Some(200)));
}

#[derive(Debug)]
struct CountingSource {
    fetches: Arc<AtomicUsize>,
}

impl TokenCredential for CountingSource {
    fn get_token<'a>(
        &'a self,
        request: &'a resilient_auth::TokenRequest,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<resilient_auth::TokenResponse, resilient_auth::Error>,
    > {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let secret = format!("tok-for-{}", request.scopes.join(" "));
        Box::pin(async move {
            Ok(resilient_auth::TokenResponse::new(
                secret,
                Duration::from_secs(3600),
            ))
        })
    }

    fn identity(&self) -> resilient_auth::CredentialIdentity {
        resilient_auth::CredentialIdentity::new("counting", "test")
    }
}

#[tokio::test]
async fn sdk_azure_u1_credential_keeps_one_cache_per_scope_set_bounded() {
    use az::TokenCredential as _;
    let fetches = Arc::new(AtomicUsize::new(0));
    let cred = AzureCredential::new(CountingSource {
        fetches: fetches.clone(),
    })
    .max_scope_sets(2);
    let a = cred.get_token(&["a/.default"], None).await.unwrap();
    assert_eq!(a.token.secret(), "tok-for-a/.default");
    let left = a.expires_on - azure_core::time::OffsetDateTime::now_utc();
    assert!(left > azure_core::time::Duration::seconds(3590), "{left}");
    for _ in 0..5 {
        cred.get_token(&["a/.default"], None).await.unwrap();
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "one cache for scope set a"
    );
    cred.get_token(&["b/.default"], None).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    cred.get_token(&["a/.default"], None).await.unwrap(); // a is now the most recent
    cred.get_token(&["c/.default", "offline_access"], None)
        .await
        .unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 3);
    assert!(cred.cache_for(&["a/.default"]).is_some());
    assert!(
        cred.cache_for(&["b/.default"]).is_none(),
        "least recently used evicted"
    );
    assert!(cred.cache_for(&["c/.default", "offline_access"]).is_some());
    // a cache-backed credential refuses other scopes with a credential error
    let only = AzureCredential::from_cache(TokenCache::new(
        CountingSource {
            fetches: fetches.clone(),
        },
        ["x/.default"],
    ));
    let err = only.get_token(&["y/.default"], None).await.unwrap_err();
    assert!(matches!(
        err.kind(),
        azure_core::error::ErrorKind::Credential
    ));
    // Debug shows no token
    assert!(!format!("{cred:?}").contains("tok-for"));
}

/// An `azure_core` credential whose identity provider throttles: 429 with `Retry-After: 7`.
#[derive(Debug)]
struct ThrottledCredential {
    calls: AtomicUsize,
}

#[async_trait]
impl az::TokenCredential for ThrottledCredential {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<az::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<az::AccessToken> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut headers = azure_core::http::headers::Headers::new();
        headers.insert("retry-after", "7");
        let raw = azure_core::http::RawResponse::from_bytes(
            azure_core::http::StatusCode::TooManyRequests,
            headers,
            "{}",
        );
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::HttpResponse {
                status: azure_core::http::StatusCode::TooManyRequests,
                error_code: Some("temporarily_unavailable".into()),
                raw_response: Some(Box::new(raw)),
            },
            "throttled",
        ))
    }
}

#[tokio::test]
async fn sdk_azure_t6_sdk_credential_throttle_reaches_the_cache_gate() {
    let cred = Arc::new(ThrottledCredential {
        calls: AtomicUsize::new(0),
    });
    let tokens = TokenCache::new(AzureTokenSource::new(cred.clone()), [SCOPE]);
    let err = tokens.token().await.unwrap_err();
    assert!(
        matches!(err, resilient_auth::Error::IdentityProvider { status, .. } if status == 429),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    // the gate holds: no second call to the credential while the 7 s run
    let again = tokens.token().await.unwrap_err();
    assert!(again
        .retry_after()
        .is_some_and(|w| w <= Duration::from_secs(7)));
    assert_eq!(cred.calls.load(Ordering::SeqCst), 1);
}

/// Hands out one 10 s token, then never answers again (a hung identity provider).
#[derive(Debug)]
struct HangsAfterFirst {
    calls: Arc<AtomicUsize>,
}

impl TokenCredential for HangsAfterFirst {
    fn get_token<'a>(
        &'a self,
        _: &'a resilient_auth::TokenRequest,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<resilient_auth::TokenResponse, resilient_auth::Error>,
    > {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Box::pin(async {
                Ok(resilient_auth::TokenResponse::new(
                    "tok-1",
                    Duration::from_secs(10),
                ))
            })
        } else {
            Box::pin(futures_util::future::pending())
        }
    }

    fn identity(&self) -> resilient_auth::CredentialIdentity {
        resilient_auth::CredentialIdentity::new("hangs", "test")
    }
}

#[tokio::test(start_paused = true)]
async fn sdk_azure_t3_credential_never_waits_for_a_refresh() {
    use az::TokenCredential as _;
    let calls = Arc::new(AtomicUsize::new(0));
    let cred = AzureCredential::new(HangsAfterFirst {
        calls: calls.clone(),
    });
    cred.get_token(&[SCOPE], None).await.unwrap();
    // past the refresh point (5 s): the refresh hangs, the SDK's ask must not
    tokio::time::advance(Duration::from_secs(6)).await;
    for _ in 0..3 {
        let t = tokio::time::timeout(Duration::from_millis(1), cred.get_token(&[SCOPE], None))
            .await
            .expect("answered without waiting for the refresh")
            .unwrap();
        assert_eq!(t.token.secret(), "tok-1");
    }
    tokio::task::yield_now().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one refresh, in the background"
    );
}
