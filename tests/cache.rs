//! TokenCache and AuthLayer rules under paused time, with a counting fake credential
//! (rules T1–T8, A1, A2, X1, X2, O2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use http::{Request, Response, StatusCode};
use resilient_auth::{
    AccessToken, AuthLayer, BoxError, CredentialIdentity, Error, IdentityProviderError, TokenCache,
    TokenCredential, TokenRequest, TokenResponse,
};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

const HOUR: Duration = Duration::from_secs(3600);

/// What the fake identity provider does on one call.
#[derive(Clone, Debug)]
enum Idp {
    Ok(Duration),
    OkRefreshIn(Duration, Duration),
    Fail(Error),
    Panic,
}

fn unavailable() -> Idp {
    Idp::Fail(Error::IdentityProvider {
        status: StatusCode::SERVICE_UNAVAILABLE,
        details: Box::default(),
    })
}

fn throttled(secs: u64) -> Idp {
    let mut d = IdentityProviderError::default();
    d.error = "throttled".into();
    d.retry_after = Some(Duration::from_secs(secs));
    Idp::Fail(Error::IdentityProvider {
        status: StatusCode::TOO_MANY_REQUESTS,
        details: Box::new(d),
    })
}

#[derive(Clone, Debug, Default)]
struct Fake {
    calls: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    script: Arc<Mutex<VecDeque<Idp>>>,
    fallback: Arc<Mutex<Option<Idp>>>,
    latency: Arc<Mutex<Duration>>,
    slow_claims: Arc<Mutex<Option<Duration>>>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    call_times: Arc<Mutex<Vec<Instant>>>,
}

impl Fake {
    fn new(steps: impl IntoIterator<Item = Idp>) -> Self {
        let f = Fake::default();
        f.script.lock().unwrap().extend(steps);
        f
    }
    fn always(self, step: Idp) -> Self {
        *self.fallback.lock().unwrap() = Some(step);
        self
    }
    fn set_always(&self, step: Idp) {
        self.script.lock().unwrap().clear();
        *self.fallback.lock().unwrap() = Some(step);
    }
    fn latency(self, d: Duration) -> Self {
        *self.latency.lock().unwrap() = d;
        self
    }
    fn set_latency(&self, d: Duration) {
        *self.latency.lock().unwrap() = d;
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TokenCredential for Fake {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.call_times.lock().unwrap().push(Instant::now());
            self.requests.lock().unwrap().push(request.clone());
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let mut latency = *self.latency.lock().unwrap();
            if request.claims.is_some() {
                if let Some(d) = *self.slow_claims.lock().unwrap() {
                    latency = d;
                }
            }
            tokio::time::sleep(latency).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let step = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .or_else(|| self.fallback.lock().unwrap().clone())
                .unwrap_or(Idp::Ok(HOUR));
            let secret = match &request.claims {
                Some(_) => format!("claims-token-{n}"),
                None => format!("token-{n}"),
            };
            match step {
                Idp::Ok(life) => Ok(TokenResponse::new(secret, life)),
                Idp::OkRefreshIn(life, r) => {
                    Ok(TokenResponse::new(secret, life).with_refresh_in(r))
                }
                Idp::Fail(e) => Err(e),
                Idp::Panic => panic!("the credential panicked (scripted)"),
            }
        }
        .boxed()
    }

    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity::new("fake", "https://login.microsoftonline.com")
            .with_tenant("tenant")
            .with_client_id("client")
    }
}

fn cache(fake: &Fake) -> TokenCache {
    TokenCache::new(fake.clone(), ["https://api.test/.default"])
}

// ---------- T1/T2 ----------

#[tokio::test(start_paused = true)]
async fn t1_absurd_or_zero_lifetime_from_a_credential_is_an_error() {
    for life in [Duration::ZERO, Duration::from_secs(8 * 24 * 3600)] {
        let fake = Fake::new([Idp::Ok(life)]);
        let err = cache(&fake).token().await.unwrap_err();
        assert!(matches!(err, Error::InvalidResponse(_)), "{err:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn t2_refresh_at_half_lifetime_minus_small_jitter() {
    let fake = Fake::new([]);
    let t0 = Instant::now();
    let token = cache(&fake).token().await.unwrap();
    assert_eq!(token.expires_at(), t0 + HOUR);
    let r = token.refresh_at() - t0;
    assert!(
        r <= Duration::from_secs(1800) && r >= Duration::from_secs(1740),
        "{r:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn t2_server_refresh_in_wins_and_ratio_is_configurable() {
    let fake = Fake::new([Idp::OkRefreshIn(HOUR, Duration::from_secs(600))]);
    let t0 = Instant::now();
    let token = cache(&fake).token().await.unwrap();
    let r = token.refresh_at() - t0;
    assert!(
        r <= Duration::from_secs(600) && r >= Duration::from_secs(540),
        "{r:?}"
    );

    let fake = Fake::new([]);
    let c = TokenCache::builder(fake.clone(), ["s"])
        .refresh_ratio(0.8)
        .max_refresh_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let t0 = Instant::now();
    assert_eq!(
        c.token().await.unwrap().refresh_at() - t0,
        Duration::from_secs(2880)
    );
    assert!(TokenCache::builder(fake.clone(), ["s"])
        .refresh_ratio(0.0)
        .build()
        .is_err());
    assert!(TokenCache::builder(fake, ["s"])
        .refresh_ratio(f64::NAN)
        .build()
        .is_err());
}

// ---------- T3 ----------

#[tokio::test(start_paused = true)]
async fn t3_slow_refresh_never_blocks_1000_callers() {
    let fake = Fake::new([]);
    let c = cache(&fake);
    let first = c.token().await.unwrap();
    tokio::time::advance(Duration::from_secs(1801)).await;
    fake.set_latency(Duration::from_secs(10));
    for _ in 0..1000 {
        // Ready at once, without awaiting anything: no caller waits for the refresh.
        let t = c.token().now_or_never().expect("answered at once").unwrap();
        assert!(t.same_as(&first));
    }
    tokio::task::yield_now().await;
    assert_eq!(fake.calls(), 2, "exactly one background refresh");
    tokio::time::sleep(Duration::from_secs(10)).await;
    tokio::task::yield_now().await;
    let t = c.token().await.unwrap();
    assert!(!t.same_as(&first));
    assert_eq!(t.secret(), "token-2");
    assert_eq!(fake.calls(), 2);
}

/// `cached()` — what `AuthLayer` calls on every request — decides by a flag that a timer clears
/// at the refresh point (no clock read per request): the first caller past the point still gets
/// the old token at once and starts the one background refresh, and the caller after it gets the
/// new token.
#[tokio::test(start_paused = true)]
async fn t3_the_hot_path_starts_the_refresh_once_the_refresh_point_passes() {
    let fake = Fake::new([]);
    let c = cache(&fake);
    let first = c.token().await.unwrap();
    tokio::time::sleep_until(first.refresh_at() - Duration::from_millis(1)).await;
    for _ in 0..100 {
        assert!(c.cached().unwrap().same_as(&first));
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        fake.calls(),
        1,
        "nothing is refreshed before the refresh point"
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        c.cached().unwrap().same_as(&first),
        "the old token, at once"
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(fake.calls(), 2, "one background refresh");
    let next = c.cached().unwrap();
    assert!(!next.same_as(&first), "the new token is served");
    assert!(next.refresh_at() > first.refresh_at());
}

/// The flag's timer runs on the runtime the token arrived on; if that runtime shuts down first,
/// the flag is cleared with it, so a cache used from another runtime still refreshes on time.
#[test]
fn t3_a_token_cached_on_a_runtime_that_shut_down_is_still_refreshed() {
    let fake = Fake::new([]);
    let c = cache(&fake);
    let first = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(c.token()).unwrap()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        assert!(c.cached().unwrap().same_as(&first));
        tokio::time::advance(first.refresh_at() - Instant::now() + Duration::from_secs(1)).await;
        assert!(
            c.cached().unwrap().same_as(&first),
            "the old token, at once"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(fake.calls(), 2, "refreshed past the refresh point");
        assert!(!c.cached().unwrap().same_as(&first));
    });
}

/// The flag's timer task is aborted when a newer token replaces the one it flags and when the
/// cache is dropped: no task outlives what it flags (T11).
#[test]
fn t11_the_hot_path_timer_task_ends_with_its_token_and_with_the_cache() {
    let fake = Fake::new([]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let alive = || rt.metrics().num_alive_tasks();
    let c = cache(&fake);
    rt.block_on(async {
        let first = c.token().await.unwrap();
        tokio::task::yield_now().await;
        assert_eq!(alive(), 1, "one timer for the token");
        // A rejected token is replaced: its timer goes, the new token's comes.
        c.invalidate(&first);
        c.token().await.unwrap();
        tokio::task::yield_now().await;
        assert_eq!(alive(), 1, "still one timer");
    });
    drop(c);
    rt.block_on(tokio::task::yield_now());
    assert_eq!(alive(), 0, "no task left once the cache is dropped");
    assert_eq!(fake.calls(), 2);
}

// ---------- T4 ----------

#[tokio::test(start_paused = true)]
async fn t4_1000_cold_callers_one_request_same_result() {
    let fake = Fake::new([]).latency(Duration::from_millis(300));
    let c = cache(&fake);
    let calls: Vec<_> = (0..1000)
        .map(|_| {
            tokio::spawn({
                let c = c.clone();
                async move { c.token().await }
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for call in calls {
        tokens.push(call.await.unwrap().unwrap());
    }
    assert_eq!(fake.calls(), 1);
    assert!(tokens.iter().all(|t| t.same_as(&tokens[0])));
    assert_eq!(c.stats().idp_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn t4_cold_callers_share_one_error() {
    let fake = Fake::new([unavailable()]).latency(Duration::from_millis(300));
    let c = cache(&fake);
    let calls: Vec<_> = (0..1000)
        .map(|_| {
            tokio::spawn({
                let c = c.clone();
                async move { c.token().await }
            })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(err, Error::IdentityProvider { status, .. } if status == 503),
            "{err:?}"
        );
    }
    assert_eq!(fake.calls(), 1);
}

// ---------- T5 ----------

#[tokio::test(start_paused = true)]
async fn t5_failed_refresh_serves_old_token_until_expiry_minus_skew_then_typed_error() {
    let fake = Fake::new([Idp::Ok(Duration::from_secs(600))]).always(unavailable());
    let c = cache(&fake);
    let t0 = Instant::now();
    let old = c.token().await.unwrap();
    // Past the refresh point (300 s) the identity provider answers only 503.
    let serve_until = t0 + Duration::from_secs(600 - 30);
    tokio::time::advance(Duration::from_secs(300)).await;
    while Instant::now() + Duration::from_secs(1) < serve_until {
        let t = c.token().now_or_never().expect("never waits").unwrap();
        assert!(t.same_as(&old));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep_until(serve_until - Duration::from_millis(1)).await;
    assert!(
        c.token().await.unwrap().same_as(&old),
        "served until expires_at - skew"
    );
    tokio::time::sleep_until(serve_until).await;
    let err = c.token().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    // Retried with back-off (5, 10, 20, 40, 60, 60 … s), one attempt at a time.
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 1);
    let times = fake.call_times.lock().unwrap().clone();
    let gaps: Vec<_> = times.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 4, "{gaps:?}");
    for (gap, floor) in gaps.iter().zip([5u64, 10, 20, 40]) {
        assert!(*gap >= Duration::from_secs(floor), "{gaps:?}");
    }
    assert!(
        fake.calls() <= 2 + 270 / 5,
        "no fast retry loop: {}",
        fake.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn t5_refresh_retry_honours_retry_after() {
    let fake = Fake::new([Idp::Ok(HOUR), throttled(120)]);
    let c = cache(&fake);
    c.token().await.unwrap();
    tokio::time::advance(Duration::from_secs(1801)).await;
    c.token().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.calls(), 2);
    tokio::time::sleep(Duration::from_secs(118)).await;
    assert_eq!(fake.calls(), 2, "nothing sent inside Retry-After");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.calls(), 3);
    assert_eq!(c.token().await.unwrap().secret(), "token-3");
}

// ---------- T6 ----------

#[tokio::test(start_paused = true)]
async fn t6_429_closes_the_gate_and_tokenless_callers_get_throttled_at_once() {
    let fake = Fake::new([throttled(7)]);
    let c = cache(&fake);
    let err = c.token().await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..100 {
        let err = c.token().now_or_never().expect("at once").unwrap_err();
        match err {
            Error::Throttled { retry_after } => assert_eq!(retry_after, Duration::from_secs(5)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fake.calls(), 1, "no request inside the wait");
    assert_eq!(c.stats().throttled, 100);
    // A caller whose deadline allows waiting waits it out.
    let t = c
        .token_before(Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(t.secret(), "token-2");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn t6_other_failures_back_off_at_least_5s() {
    let fake = Fake::new([unavailable(), unavailable()]);
    let c = cache(&fake);
    assert!(c.token().await.is_err());
    tokio::time::advance(Duration::from_millis(4999)).await;
    assert!(c.token().await.is_err());
    assert_eq!(fake.calls(), 1, "never a fast retry");
    // The floor is 5 s; additive jitter may add up to 20 %.
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert!(c.token().await.is_err());
    assert_eq!(fake.calls(), 2);
}

// ---------- T7 ----------

#[tokio::test(start_paused = true)]
async fn t7_slow_key_never_blocks_another() {
    let fake = Fake::new([]);
    *fake.slow_claims.lock().unwrap() = Some(Duration::from_secs(30));
    let c = cache(&fake);
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.token_with_claims(r#"{"access_token":{}}"#).await }
    });
    tokio::task::yield_now().await;
    let t0 = Instant::now();
    let fast = c.token().await.unwrap();
    assert_eq!(
        Instant::now(),
        t0,
        "the default key was not held by the claims key"
    );
    assert_eq!(fast.secret(), "token-2");
    let slow = slow.await.unwrap().unwrap();
    assert!(slow.secret().starts_with("claims-token"));
}

// ---------- T8 ----------

#[tokio::test(start_paused = true)]
async fn t8_scopes_are_fixed_when_the_cache_is_built() {
    let fake = Fake::new([]);
    let c = TokenCache::new(fake.clone(), ["https://vault.azure.net/.default"]);
    c.token().await.unwrap();
    c.token_with_claims("{}").await.unwrap();
    let reqs = fake.requests.lock().unwrap().clone();
    assert!(reqs
        .iter()
        .all(|r| r.scopes[..] == ["https://vault.azure.net/.default".to_string()]));
    assert_eq!(c.scopes(), ["https://vault.azure.net/.default".to_string()]);
    assert!(TokenCache::builder(fake.clone(), Vec::<String>::new())
        .build()
        .is_err());
    assert!(matches!(
        TokenCache::new(fake, Vec::<String>::new()).token().await,
        Err(Error::Config(_))
    ));
}

// ---------- O2, X1 ----------

#[tokio::test(start_paused = true)]
async fn o2_stats_count_hits_misses_requests_failures() {
    let fake = Fake::new([unavailable()]);
    let c = cache(&fake);
    assert!(c.token().await.is_err());
    tokio::time::advance(Duration::from_secs(6)).await;
    c.token().await.unwrap();
    c.token().await.unwrap();
    let s = c.stats();
    assert_eq!(
        (s.misses, s.hits, s.idp_requests, s.refresh_failures),
        (2, 1, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn x1_cache_token_and_fetch_logs_never_show_the_token() {
    let capture = common::Capture::default();
    let _g = capture.install();
    let fake = Fake::new([unavailable()]);
    let c = cache(&fake);
    let _ = c.token().await;
    tokio::time::advance(Duration::from_secs(6)).await;
    let t = c.token().await.unwrap();
    let texts = [
        format!("{t:?}"),
        format!("{c:?}"),
        format!("{:?}", TokenResponse::new("token-9", HOUR)),
        capture.text(),
    ];
    for text in texts {
        assert!(
            !text.contains("token-2") && !text.contains("token-9"),
            "{text}"
        );
    }
    assert!(capture.text().contains("token fetched"));
}

// ---------- A1, A2, X2 ----------

/// A fake API: records the Authorization header of each request and answers from a script.
#[derive(Clone, Default)]
struct Api {
    seen: Arc<Mutex<Vec<Option<http::HeaderValue>>>>,
    script: Arc<Mutex<VecDeque<Response<String>>>>,
}

impl Api {
    fn then(self, status: u16, www_authenticate: Option<&str>) -> Self {
        let mut r = Response::new(String::new());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(v) = www_authenticate {
            r.headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, v.parse().unwrap());
        }
        self.script.lock().unwrap().push_back(r);
        self
    }
    fn service(
        &self,
    ) -> impl tower::Service<
        Request<String>,
        Response = Response<String>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        let me = self.clone();
        tower::service_fn(move |req: Request<String>| {
            let me = me.clone();
            async move {
                me.seen
                    .lock()
                    .unwrap()
                    .push(req.headers().get(http::header::AUTHORIZATION).cloned());
                Ok::<_, BoxError>(
                    me.script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or_else(|| Response::new(String::new())),
                )
            }
        })
    }
    fn seen(&self) -> Vec<Option<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.as_ref().map(|v| v.to_str().unwrap().to_string()))
            .collect()
    }
}

fn get(uri: &str) -> Request<String> {
    Request::get(uri).body(String::new()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a1_attaches_a_sensitive_bearer_header_built_once_per_token() {
    let fake = Fake::new([]);
    let api = Api::default();
    let layer = AuthLayer::new(cache(&fake));
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(api.service());
    svc.clone()
        .oneshot(get("https://api.test/a"))
        .await
        .unwrap();
    svc.oneshot(get("https://api.test/b")).await.unwrap();
    assert_eq!(api.seen(), vec![Some("Bearer token-1".into()); 2]);
    let header = api.seen.lock().unwrap()[0].clone().unwrap();
    assert!(header.is_sensitive());
    let token: AccessToken = layer.tokens().token().await.unwrap();
    assert_eq!(
        format!("Bearer {}", token.secret()),
        header.to_str().unwrap()
    );
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a1_existing_authorization_is_left_alone_and_origins_restrict_the_token() {
    let fake = Fake::new([]);
    let api = Api::default();
    let layer = AuthLayer::new(cache(&fake))
        .allow_origins(["https://api.test", "http://127.0.0.1:8080"])
        .unwrap();
    assert!(layer.is_restricted());
    let svc = ServiceBuilder::new().layer(layer).service(api.service());
    let mut own = get("https://api.test/a");
    own.headers_mut()
        .insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
    svc.clone().oneshot(own).await.unwrap();
    svc.clone()
        .oneshot(get("https://elsewhere.test/a"))
        .await
        .unwrap();
    svc.clone()
        .oneshot(get("https://API.test:443/b"))
        .await
        .unwrap();
    svc.clone()
        .oneshot(get("http://127.0.0.1:8080/c"))
        .await
        .unwrap();
    assert_eq!(
        api.seen(),
        vec![
            Some("Basic abc".into()),
            None,
            Some("Bearer token-1".into()),
            Some("Bearer token-1".into())
        ]
    );
    assert!(AuthLayer::new(cache(&fake))
        .allow_origins(["not an origin"])
        .is_err());
    assert!(AuthLayer::new(cache(&fake))
        .allow_origins(["https://api.test/path"])
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn x2_token_never_sent_over_plain_http_except_to_loopback() {
    let fake = Fake::new([]);
    let api = Api::default();
    // Every origin allowed (X5's opt-out), so X2 alone decides.
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(cache(&fake)).allow_any_origin())
        .service(api.service());
    let err = svc
        .clone()
        .oneshot(get("http://api.test/a"))
        .await
        .unwrap_err();
    assert!(
        matches!(err.downcast_ref::<Error>(), Some(Error::Config(_))),
        "{err}"
    );
    for ok in [
        "http://localhost:1/a",
        "http://127.0.0.1/a",
        "http://[::1]:80/a",
    ] {
        svc.clone().oneshot(get(ok)).await.unwrap();
    }
    assert_eq!(api.seen(), vec![Some("Bearer token-1".into()); 3]);
}

#[tokio::test(start_paused = true)]
async fn a2_invalid_token_refetches_and_resends_once() {
    let fake = Fake::new([]);
    let api = Api::default().then(
        401,
        Some(r#"Bearer error="invalid_token", error_description="revoked""#),
    );
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(cache(&fake)))
        .service(api.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        api.seen(),
        vec![Some("Bearer token-1".into()), Some("Bearer token-2".into())]
    );
    assert_eq!(fake.calls(), 2);
    // R7: the resend is a request on the wire too.
    assert_eq!(resilient_auth::Attempts::of(resp.extensions()), 2);
}

#[tokio::test(start_paused = true)]
async fn a2_never_loops() {
    let fake = Fake::new([]);
    let challenge = Some(r#"Bearer error="invalid_token""#);
    let api = Api::default()
        .then(401, challenge)
        .then(401, challenge)
        .then(401, challenge);
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(cache(&fake)))
        .service(api.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(api.seen().len(), 2, "one resend, never more");
    // A 401 without an actionable challenge is returned as it is.
    let api = Api::default().then(401, Some(r#"Bearer realm="x""#));
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(cache(&fake)))
        .service(api.service());
    assert_eq!(
        svc.oneshot(get("https://api.test/a"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(api.seen().len(), 1);
}

/// The four layers stacked (RetryAfter, ExpBackoff, Auth, Timeout): a 401 `invalid_token` is
/// resent once by `AuthLayer` (the retry layers leave a 401 alone), and a 503 answering the
/// resend is retried once, after the back-off, by `ExpBackoffLayer` alone.
#[tokio::test(start_paused = true)]
async fn a2_stacked_layers_resend_a_401_once_and_retry_the_503_after_it_once() {
    let fake = Fake::new([]);
    let api = Api::default()
        .then(401, Some(r#"Bearer error="invalid_token""#))
        .then(503, None)
        .then(200, None);
    // A warm cache: the layer takes its hot path.
    let tokens = cache(&fake);
    tokens.token().await.unwrap();
    let svc = ServiceBuilder::new()
        .layer(resilient_auth::RetryAfterLayer::default())
        .layer(resilient_auth::ExpBackoffLayer::default())
        .layer(AuthLayer::new(tokens.clone()))
        .layer(resilient_auth::TimeoutLayer::new(Duration::from_secs(10)))
        .service(api.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        api.seen(),
        vec![
            Some("Bearer token-1".into()),
            Some("Bearer token-2".into()),
            Some("Bearer token-2".into())
        ],
        "the first request, one resend with the new token, one retry of the 503"
    );
    assert!(t0.elapsed() >= Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(fake.calls(), 2);

    // Three 401s: one resend, never more, and no retry layer adds any.
    let api = Api::default()
        .then(401, Some(r#"Bearer error="invalid_token""#))
        .then(401, Some(r#"Bearer error="invalid_token""#))
        .then(401, Some(r#"Bearer error="invalid_token""#));
    let svc = ServiceBuilder::new()
        .layer(resilient_auth::RetryAfterLayer::default())
        .layer(resilient_auth::ExpBackoffLayer::default())
        .layer(AuthLayer::new(tokens))
        .service(api.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(api.seen().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a2_cae_insufficient_claims_fetches_token_with_claims() {
    use base64::Engine;
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1597094022"}}}"#;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
    let fake = Fake::new([]);
    let api = Api::default().then(
        401,
        Some(&format!(
            r#"Bearer realm="", error="insufficient_claims", claims="{b64}""#
        )),
    );
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(cache(&fake)))
        .service(api.service());
    assert_eq!(
        svc.oneshot(get("https://api.test/a"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        api.seen(),
        vec![
            Some("Bearer token-1".into()),
            Some("Bearer claims-token-2".into())
        ]
    );
    let reqs = fake.requests.lock().unwrap().clone();
    assert_eq!(reqs[1].claims.as_deref(), Some(claims));
}

#[tokio::test(start_paused = true)]
async fn a2_stream_body_not_resent() {
    use http_body_util::combinators::BoxBody;
    type Body = BoxBody<bytes::Bytes, std::convert::Infallible>;
    let fake = Fake::new([]);
    let seen = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(cache(&fake)))
        .service(tower::service_fn({
            let seen = seen.clone();
            move |_req: Request<Body>| {
                seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut r = Response::new(String::new());
                    *r.status_mut() = StatusCode::UNAUTHORIZED;
                    r.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        r#"Bearer error="invalid_token""#.parse().unwrap(),
                    );
                    Ok::<_, BoxError>(r)
                }
            }
        }));
    let body: Body = BoxBody::new(http_body_util::Full::new(bytes::Bytes::from_static(b"x")));
    let resp = svc
        .oneshot(Request::post("https://api.test/a").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a1_throttled_cache_fails_fast_through_the_layer() {
    let fake = Fake::new([throttled(30)]);
    let api = Api::default();
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(cache(&fake)))
        .service(api.service());
    assert!(svc
        .clone()
        .oneshot(get("https://api.test/a"))
        .await
        .is_err());
    let t0 = Instant::now();
    let err = svc.oneshot(get("https://api.test/a")).await.unwrap_err();
    assert_eq!(Instant::now(), t0);
    assert!(
        matches!(err.downcast_ref::<Error>(), Some(Error::Throttled { .. })),
        "{err}"
    );
    assert!(api.seen().is_empty());
}

/// Issue #3: a 60 s identity-provider outage while a token is cached fails no API call
/// (tower stack, all four layers, paused time).
#[tokio::test(start_paused = true)]
async fn t5_sixty_second_outage_at_refresh_time_fails_no_api_call() {
    use resilient_auth::{ExpBackoffLayer, RetryAfterLayer, TimeoutLayer};
    let fake = Fake::new([]);
    let api = Api::default();
    let tokens = cache(&fake);
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(ExpBackoffLayer::default())
        .layer(AuthLayer::new(tokens.clone()))
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .service(api.service());
    let t0 = Instant::now();
    let mut failed = 0;
    let mut ok = 0;
    // Outage from 29 min to 31 min covers the refresh point (~30 min).
    while Instant::now() < t0 + Duration::from_secs(2400) {
        let at = Instant::now() - t0;
        if at >= Duration::from_secs(29 * 60) && at < Duration::from_secs(31 * 60) {
            fake.set_always(unavailable());
        } else {
            fake.set_always(Idp::Ok(HOUR));
        }
        match svc.clone().oneshot(get("https://api.test/a")).await {
            Ok(r) if r.status() == 200 => ok += 1,
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(failed, 0);
    assert!(ok >= 2399);
    let s = tokens.stats();
    assert!(s.refresh_failures >= 2, "the outage was hit: {s:?}");
    assert!(
        api.seen().last().unwrap().as_deref() != Some("Bearer token-1"),
        "refreshed after the outage"
    );
}

#[tokio::test(start_paused = true)]
async fn a2_resend_can_be_switched_off_but_the_rejected_token_is_still_dropped() {
    let fake = Fake::new([]);
    let api = Api::default().then(401, Some(r#"Bearer error="invalid_token""#));
    let layer = AuthLayer::new(cache(&fake)).resend_on_challenge(false);
    let svc = ServiceBuilder::new().layer(layer).service(api.service());
    let resp = svc
        .clone()
        .oneshot(get("https://api.test/a"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "returned to the caller, not resent");
    assert_eq!(api.seen().len(), 1);
    svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(
        api.seen()[1].as_deref(),
        Some("Bearer token-2"),
        "the next request got a new token"
    );
}

#[test]
fn t3_cached_outside_a_runtime_never_panics() {
    let fake = Fake::new([Idp::Ok(Duration::from_secs(1))]);
    let c = cache(&fake);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(c.token()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    // Past the refresh point, called from a thread with no runtime: the token is served and no
    // background task is attempted.
    assert!(c.cached().is_some());
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a2_resend_switched_off_also_holds_with_a_warm_cache() {
    let fake = Fake::new([]);
    let tokens = cache(&fake);
    tokens.token().await.unwrap();
    let api = Api::default().then(401, Some(r#"Bearer error="invalid_token""#));
    let layer = AuthLayer::new(tokens.clone()).resend_on_challenge(false);
    let svc = ServiceBuilder::new().layer(layer).service(api.service());
    let resp = svc
        .clone()
        .oneshot(get("https://api.test/a"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "returned to the caller, not resent");
    assert_eq!(api.seen().len(), 1);
    assert_eq!(fake.calls(), 1, "no new token fetched for a resend");
    svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(
        api.seen()[1].as_deref(),
        Some("Bearer token-2"),
        "the rejected token was dropped"
    );
}

/// O1: token fetches (source, lifetime), failed requests, throttle holds and give-ups are
/// `tracing` events, and none carries a token.
#[tokio::test(start_paused = true)]
async fn o1_fetches_failures_holds_and_give_ups_are_traced_without_secrets() {
    use resilient_auth::RetryAfterLayer;
    let capture = common::Capture::default();
    let _g = capture.install();

    // Cache: a failed request, then a fetch.
    let fake = Fake::new([unavailable()]);
    let c = cache(&fake);
    assert!(c.token().await.is_err());
    tokio::time::advance(Duration::from_secs(7)).await;
    let token = c.token().await.unwrap();

    // Layer: a 429 holds the origin (a second request is held), then a give-up above the cap.
    let api = Api::default();
    let mut throttled = Response::new(String::new());
    *throttled.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    throttled
        .headers_mut()
        .insert("retry-after", "3".parse().unwrap());
    api.script.lock().unwrap().push_back(throttled);
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .service(api.service());
    let first = tokio::spawn(svc.clone().oneshot(get("https://api.test/a")));
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    svc.clone()
        .oneshot(get("https://api.test/b"))
        .await
        .unwrap();
    first.await.unwrap().unwrap();
    let mut long = Response::new(String::new());
    *long.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    long.headers_mut()
        .insert("retry-after", "3600".parse().unwrap());
    api.script.lock().unwrap().push_back(long);
    let other = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .service(api.service());
    other.oneshot(get("https://other.test/a")).await.unwrap();

    let log = capture.text();
    for needle in [
        "token request failed",
        "source=\"fake\"",
        "token fetched",
        "lifetime_s=3600",
        "origin throttled; holding request",
        "retrying",
        "giving up",
        "retry-after exceeds the cap",
    ] {
        assert!(log.contains(needle), "missing {needle:?} in:\n{log}");
    }
    assert!(!log.contains(token.secret()), "{log}");
}

// ---------- T9–T13: the cache heals itself and follows the one wait policy ----------

fn call_gaps(fake: &Fake) -> Vec<Duration> {
    let times = fake.call_times.lock().unwrap();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn throttled_for(d: Duration) -> Idp {
    let mut e = IdentityProviderError::default();
    e.error = "throttled".into();
    e.retry_after = Some(d);
    Idp::Fail(Error::IdentityProvider {
        status: StatusCode::TOO_MANY_REQUESTS,
        details: Box::new(e),
    })
}

#[tokio::test(start_paused = true)]
async fn t9_a_panicking_credential_never_leaves_the_key_stuck() {
    let fake = Fake::new([Idp::Panic]);
    let c = cache(&fake);
    let e = c.token().await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    // Backed off like any failure: no new request at once...
    assert!(c.token().await.is_err());
    assert_eq!(fake.calls(), 1);
    // ...and after the back-off a caller starts a new fetch that succeeds.
    tokio::time::advance(Duration::from_secs(7)).await;
    assert_eq!(c.token().await.unwrap().secret(), "token-2");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn t9_a_hanging_credential_times_out_and_the_key_heals() {
    let fake = Fake::default().latency(Duration::from_secs(3 * 3600));
    let c = cache(&fake);
    let t0 = Instant::now();
    let e = c.token().await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_eq!(t0.elapsed(), Duration::from_secs(30), "the fetch timeout");
    fake.set_latency(Duration::ZERO);
    tokio::time::advance(Duration::from_secs(7)).await;
    assert!(c.token().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn r8_huge_retry_after_from_the_identity_provider_is_capped_and_never_panics() {
    let fake = Fake::new([throttled_for(Duration::from_secs(u64::MAX))]);
    let c = cache(&fake);
    let e = c.token().await.unwrap_err();
    assert!(e.retry_after().is_some(), "{e:?}");
    // Held for the cap (5 min), not forever, and nothing panicked.
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(matches!(
        c.token().await.unwrap_err(),
        Error::Throttled { .. }
    ));
    assert_eq!(fake.calls(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(c.token().await.is_ok());
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn r9_retry_after_zero_from_the_identity_provider_still_backs_off() {
    let fake = Fake::default().always(throttled_for(Duration::ZERO));
    let c = cache(&fake);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let _ = c.token().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gaps = call_gaps(&fake);
    assert!(!gaps.is_empty());
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_secs(5)),
        "{gaps:?}"
    );
    assert!(fake.calls() <= 5, "{} requests in 30 s", fake.calls());
}

#[tokio::test(start_paused = true)]
async fn t10_a_short_refresh_in_on_a_long_token_is_refreshed_once_per_period() {
    // A 1 h token with refresh_in 10 s: MSAL sends 6 requests in 45 s; the jitter (up to 60 s)
    // must not put the refresh point in the past.
    let fake = Fake::default().always(Idp::OkRefreshIn(HOUR, Duration::from_secs(10)));
    let c = cache(&fake);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(45) {
        let t = c.token().await.unwrap();
        assert!(t.refresh_at() > Instant::now() - Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let gaps = call_gaps(&fake);
    println!("{} token requests in 45 s, gaps {gaps:?}", fake.calls());
    assert!(fake.calls() <= 6, "{} requests in 45 s", fake.calls());
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(9_500)),
        "{gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn t10_a_refresh_in_past_the_serving_time_is_clamped_so_callers_never_block() {
    // 60 s token, served until 45 s (skew 15 s); the server says refresh at 59 s.
    let fake = Fake::default().always(Idp::OkRefreshIn(
        Duration::from_secs(60),
        Duration::from_secs(59),
    ));
    let c = cache(&fake);
    let first = c.token().await.unwrap();
    assert!(first.refresh_at() < first.expires_at() - Duration::from_secs(15));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = c.token().now_or_never();
        assert!(
            matches!(now, Some(Ok(_))),
            "a caller blocked at {:?}",
            t0.elapsed()
        );
    }
    // Jitter only moves a refresh point earlier by a small fraction, never much.
    let gaps = call_gaps(&fake);
    assert!(
        gaps.iter()
            .all(|g| *g >= Duration::from_secs(38) && *g <= Duration::from_secs(41)),
        "{gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn t11_a_dropped_cache_stops_calling_the_identity_provider() {
    let fake = Fake::new([Idp::Ok(HOUR)]).always(unavailable());
    let c = cache(&fake);
    c.token().await.unwrap();
    tokio::time::advance(Duration::from_secs(1800)).await;
    // Past the refresh point: a background refresh starts and keeps failing with back-off.
    c.token().await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let before = fake.calls();
    assert!(before >= 3, "{before}");
    drop(c);
    tokio::time::sleep(Duration::from_secs(1200)).await;
    assert!(
        fake.calls() <= before + 1,
        "{} requests after the cache was dropped",
        fake.calls() - before
    );
}

#[tokio::test(start_paused = true)]
async fn t12_an_identity_provider_retry_after_holds_claims_requests_too() {
    let fake = Fake::new([throttled_for(Duration::from_secs(30))]);
    let c = cache(&fake);
    assert!(c.token().await.is_err());
    let e = c
        .token_with_claims(r#"{"access_token":{}}"#)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Throttled { .. }), "{e:?}");
    assert_eq!(fake.calls(), 1, "no claims request within the Retry-After");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(c.token_with_claims(r#"{"access_token":{}}"#).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn t12_a_claims_token_serves_later_requests() {
    let fake = Fake::default();
    let c = cache(&fake);
    assert_eq!(c.token().await.unwrap().secret(), "token-1");
    let claimed = c.token_with_claims(r#"{"access_token":{}}"#).await.unwrap();
    assert_eq!(claimed.secret(), "claims-token-2");
    for _ in 0..5 {
        assert_eq!(c.token().await.unwrap().secret(), "claims-token-2");
    }
    assert_eq!(fake.calls(), 2);
}

/// Calls `token()` every 0.5 s for `secs`; returns how many calls failed.
async fn drive(c: &TokenCache, secs: u64) -> usize {
    let t0 = Instant::now();
    let mut failed = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        if c.token().await.is_err() {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    failed
}

#[tokio::test(start_paused = true)]
async fn t13_a_cold_cache_recovers_within_10s_of_a_150s_outage() {
    let fake = Fake::default().always(unavailable());
    let c = cache(&fake);
    let start = Instant::now();
    drive(&c, 150).await;
    let during = fake.calls();
    assert!(during <= 16, "{during} requests during the outage");
    assert!(
        call_gaps(&fake)
            .iter()
            .all(|g| *g >= Duration::from_secs(5)),
        "{:?}",
        call_gaps(&fake)
    );
    // The outage ends: the first request comes within 10 s, and the caller after it gets a
    // token.
    let end = Instant::now();
    fake.set_always(Idp::Ok(HOUR));
    let recovered = loop {
        if c.token().await.is_ok() {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let first_after = fake.call_times.lock().unwrap()[during];
    assert!(
        first_after - end <= Duration::from_secs(10),
        "{:?}",
        first_after - end
    );
    assert!(recovered - first_after <= Duration::from_millis(500));
    assert!(end - start >= Duration::from_secs(150));
}

#[tokio::test(start_paused = true)]
async fn t13_a_warm_cache_serves_through_a_150s_outage_and_refreshes_before_it_stops_serving() {
    // A 10 min token: refresh at ~5 min, served until 9.5 min. The outage starts at the refresh
    // point and lasts 150 s.
    let fake = Fake::new([Idp::Ok(Duration::from_secs(600))]);
    let c = cache(&fake);
    let first = c.token().await.unwrap();
    tokio::time::sleep_until(first.refresh_at()).await;
    fake.set_always(unavailable());
    assert_eq!(
        drive(&c, 150).await,
        0,
        "no call failed while a token was valid"
    );
    fake.set_always(Idp::Ok(Duration::from_secs(600)));
    assert_eq!(drive(&c, 120).await, 0);
    let secret = c.token().await.unwrap().secret().to_string();
    assert_ne!(secret, first.secret(), "refreshed after the outage");
    // Refreshed before the old token stopped being served.
    let last = *fake.call_times.lock().unwrap().last().unwrap();
    assert!(last < first.expires_at() - Duration::from_secs(30));
}
