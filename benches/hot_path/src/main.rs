//! B1, B1s and B2 (DESIGN's performance table), every variant in one process, interleaved round
//! by round with the order rotated, "before" (`ra_before`, an earlier commit of the crate) and
//! "after" (`ra`, this tree) side by side.
//!
//! - **B1 / B1s** (tower, warm cache, success path): per round each variant serves `B1_REQS`
//!   requests built beforehand (`poll_ready` + `call` + one poll of the future, which is ready
//!   at once) around a trivial `service_fn`; the figure is the thread's CPU time
//!   (`CLOCK_THREAD_CPUTIME_ID`) per request. Compared with tower-http's `SetRequestHeader`
//!   carrying the same 1.5 KB token as a static sensitive value, and a hand-written
//!   `ArcSwap<HeaderValue>` + pin-project layer (the design limit), and with two floors: a
//!   hand-written `AuthLayer` doing only what the rules require of it, and four hand-written
//!   layers doing only that (see "The rules' floor" below).
//! - **B2** (reqwest-middleware, loopback): per round each variant sends 32 × 100 GETs (32 in
//!   flight) to an in-process hyper server on a 2-worker runtime; the figure is requests per
//!   second of wall time. Compared with reqwest-middleware with one middleware that inserts a
//!   static `Authorization` header of the same size, with the framework's floor: three
//!   middlewares that only await the rest of the chain, then the static one, and with the
//!   rules' floor: the framework's floor whose first middleware also keeps one copy of the
//!   request until the response, with this crate's `TimeoutLayer` last.
//!
//! Output: one `RESULT` line per variant (JSON), read by `scripts/bench.sh`. Arguments: `b1`,
//! `b2` or nothing (both). Environment: `B1_ROUNDS` (41), `B1_REQS` (10,000 per round),
//! `B2_ROUNDS` (31), `B1_ONLY=<text>` / `B2_ONLY=<text>` (only the variants whose name contains
//! it, no report: for a profiler), `B1_SIZES=1` (print each stack's future size),
//! `B1_HEADERS=1` (B1's requests carry three headers of their own), `B2_SIZES=1` (print the
//! size of each middleware's boxed future).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::FutureExt;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

mod cpu;

use cpu::{process_cpu, thread_cpu};

mod after {
    use ra as r;
    include!("stacks.rs");
}

mod before {
    use ra_before as r;
    include!("stacks.rs");
}

/// A 1.5 KB token, about the size of an Entra access token with group claims.
pub const TOKEN: &str = concat!(
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    ".signature-bytes-signature-bytes-signature-bytes"
);

const URI: &str = "https://api.example.com/v1/items?page=1";
const B1_REQS: usize = 10_000;
const TASKS: usize = 32;
const PER_TASK: usize = 100;
const BODY: &[u8] = br#"{"data":"ok"}"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `poll_ready` + `call`, then one poll of the (immediately ready) future.
fn drive<S>(svc: &mut S, req: Request<()>) -> Response<()>
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let ready = svc.ready().now_or_never().expect("ready").expect("ready");
    ready
        .call(req)
        .now_or_never()
        .expect("answered at once")
        .expect("ok")
}

// ---- The design limit: ArcSwap<HeaderValue> + a pin-project future. ----

#[derive(Clone)]
struct SwapHeader<S> {
    inner: S,
    value: Arc<ArcSwap<HeaderValue>>,
}

impl<S, B> Service<Request<B>> for SwapHeader<S>
where
    S: Service<Request<B>>,
    S::Error: Into<ra::BoxError>,
{
    type Response = S::Response;
    type Error = ra::BoxError;
    type Future = SwapFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let value = HeaderValue::clone(&self.value.load());
        req.headers_mut().insert(AUTHORIZATION, value);
        SwapFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    struct SwapFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> Future for SwapFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<ra::BoxError>,
{
    type Output = Result<T, ra::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(Into::into)
    }
}

// ---- The rules' floor: the design limit plus what the rules make `AuthLayer` do per request ----
//
// A hand-written layer that does, on the success path, only the work DESIGN's rules require of
// `AuthLayer`, with nothing else: the `Authorization` check and the origin compared with the
// last one (X5), the token's freshness read from a flag (T2/T3), the token kept for a 401 (A3
// drops it by value), and a copy of the request with a service to resend it (A2). It does not
// resend; the copy is only kept until the response, as a resend would need it. The gap between
// it and the design limit is what the rules cost; the gap between `AuthLayer` and it, what the
// crate adds.

struct FloorToken {
    header: HeaderValue,
    fresh: std::sync::atomic::AtomicBool,
}

struct RuleFloor<S> {
    inner: S,
    token: Arc<ArcSwap<FloorToken>>,
    origin: Option<(http::uri::Scheme, http::uri::Authority)>,
}

impl<S> RuleFloor<S> {
    fn new(inner: S, token: &Arc<ArcSwap<FloorToken>>) -> Self {
        RuleFloor {
            inner,
            token: token.clone(),
            origin: None,
        }
    }
}

impl<S: Clone> Clone for RuleFloor<S> {
    fn clone(&self) -> Self {
        RuleFloor {
            inner: self.inner.clone(),
            token: self.token.clone(),
            origin: None,
        }
    }
}

/// A copy of a request's parts, for a resend (the body is `()` here).
struct PartsCopy {
    _method: http::Method,
    _uri: Uri,
    _version: http::Version,
    _headers: Option<http::HeaderMap>,
    _extensions: http::Extensions,
}

impl PartsCopy {
    fn of<B>(req: &Request<B>) -> Self {
        PartsCopy {
            _method: req.method().clone(),
            _uri: req.uri().clone(),
            _version: req.version(),
            // A request without headers of its own has nothing to copy.
            _headers: (!req.headers().is_empty()).then(|| req.headers().clone()),
            _extensions: req.extensions().clone(),
        }
    }
}

/// The service `poll_ready` readied (it sends this request and is kept for a resend), leaving
/// a clone in its place.
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let fresh_clone = inner.clone();
    std::mem::replace(inner, fresh_clone)
}

/// What a resend after a 401 needs: the request's parts, a service and the token sent.
type FloorCopy<S> = (PartsCopy, S, Arc<FloorToken>);

impl<S, B> Service<Request<B>> for RuleFloor<S>
where
    S: Service<Request<B>, Response = Response<()>> + Clone,
    S::Error: Into<ra::BoxError>,
{
    type Response = S::Response;
    type Error = ra::BoxError;
    type Future = FloorFuture<S::Future, FloorCopy<S>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let same_origin = !req.headers().contains_key(AUTHORIZATION)
            && matches!(
                (&self.origin, req.uri().scheme(), req.uri().authority()),
                (Some((s, a)), Some(scheme), Some(authority))
                    if s == scheme && a.as_str() == authority.as_str()
            );
        if !same_origin {
            // The first request (or another origin): remembered; the bench sends one origin.
            self.origin = req
                .uri()
                .scheme()
                .cloned()
                .zip(req.uri().authority().cloned());
        }
        let token = self.token.load();
        if !token.fresh.load(std::sync::atomic::Ordering::Relaxed) {
            panic!("the floor's token is always fresh");
        }
        let kept = arc_swap::Guard::into_inner(token);
        let copy = PartsCopy::of(&req);
        req.headers_mut().insert(AUTHORIZATION, kept.header.clone());
        let mut svc = take_ready(&mut self.inner);
        FloorFuture {
            inner: svc.call(req),
            copy: Some((copy, svc, kept)),
            resend_on: |status| status == http::StatusCode::UNAUTHORIZED,
        }
    }
}

pin_project_lite::pin_project! {
    struct FloorFuture<F, C> {
        #[pin]
        inner: F,
        copy: Option<C>,
        resend_on: fn(http::StatusCode) -> bool,
    }
}

impl<F, C, E> Future for FloorFuture<F, C>
where
    F: Future<Output = Result<Response<()>, E>>,
    E: Into<ra::BoxError>,
{
    type Output = Result<Response<()>, ra::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx)).map_err(Into::into);
        let copy = this.copy.take();
        if matches!(&result, Ok(r) if (this.resend_on)(r.status())) {
            // Where the layer would resend: the copy is there.
            std::hint::black_box(copy);
        }
        Poll::Ready(result)
    }
}

/// The floor of a retry layer (R2/R3): a call counted for the retry budget (R5) and a copy of
/// the request, with a service, kept until the response shows whether to resend it.
struct RetryFloor<S> {
    inner: S,
    calls: Arc<std::sync::atomic::AtomicU64>,
    resend_on: fn(http::StatusCode) -> bool,
}

impl<S: Clone> Clone for RetryFloor<S> {
    fn clone(&self) -> Self {
        RetryFloor {
            inner: self.inner.clone(),
            calls: self.calls.clone(),
            resend_on: self.resend_on,
        }
    }
}

/// A retry layer's copy: the request's parts and a service.
type RetryCopy<S> = (PartsCopy, S);

impl<S, B> Service<Request<B>> for RetryFloor<S>
where
    S: Service<Request<B>, Response = Response<()>> + Clone,
    S::Error: Into<ra::BoxError>,
{
    type Response = S::Response;
    type Error = ra::BoxError;
    type Future = FloorFuture<S::Future, RetryCopy<S>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let copy = PartsCopy::of(&req);
        let mut svc = take_ready(&mut self.inner);
        FloorFuture {
            inner: svc.call(req),
            copy: Some((copy, svc)),
            resend_on: self.resend_on,
        }
    }
}

/// The four layers' floor: two retry floors (a 429 and a 5xx), the rules' floor of
/// `AuthLayer`, and `TimeoutLayer` (itself a pass-through on an answer at the first poll; its
/// timer starts only when the attempt is not answered at once).
fn four_floor<S>(
    inner: S,
    token: &Arc<ArcSwap<FloorToken>>,
) -> impl Service<Request<()>, Response = Response<()>, Error = ra::BoxError>
where
    S: Service<Request<()>, Response = Response<()>> + Clone,
    S::Error: Into<ra::BoxError>,
{
    let timeout = tower::Layer::layer(&ra::TimeoutLayer::new(Duration::from_secs(10)), inner);
    let auth = RuleFloor::new(timeout, token);
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let backoff = RetryFloor {
        inner: auth,
        calls: calls.clone(),
        resend_on: |status| status.is_server_error(),
    };
    RetryFloor {
        inner: backoff,
        calls,
        resend_on: |status| status == http::StatusCode::TOO_MANY_REQUESTS,
    }
}

// ---- Statistics ----

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

/// Prints one `RESULT` line per variant: its median and min–max per round, and its ratio to
/// `baseline` (ratio of medians, and min–max of the per-round ratios). `higher_is_better`
/// flips the per-round ratio (throughput).
fn report(
    bench: &str,
    unit: &str,
    names: &[&str],
    samples: &[Vec<f64>],
    baseline: usize,
    higher_is_better: bool,
) {
    let base = median(&samples[baseline]);
    for (i, name) in names.iter().enumerate() {
        let m = median(&samples[i]);
        let (lo, hi) = min_max(&samples[i]);
        let per_round: Vec<f64> = samples[i]
            .iter()
            .zip(&samples[baseline])
            .map(|(x, b)| x / b)
            .collect();
        let (rlo, rhi) = min_max(&per_round);
        let _ = higher_is_better;
        println!(
            "RESULT {{\"bench\":\"{bench}\",\"variant\":\"{name}\",\"unit\":\"{unit}\",\"median\":{m:.3},\"min\":{lo:.3},\"max\":{hi:.3},\"ratio\":{:.4},\"ratio_min\":{rlo:.4},\"ratio_max\":{rhi:.4},\"rounds\":{}}}",
            m / base,
            samples[i].len()
        );
    }
}

// ---- B1 / B1s ----

type Run = Box<dyn FnMut(Vec<Request<()>>) -> Duration>;

fn timed<S>(mut svc: S) -> Run
where
    S: Service<Request<()>, Response = Response<()>> + 'static,
    S::Error: std::fmt::Debug,
{
    Box::new(move |reqs: Vec<Request<()>>| {
        let start = thread_cpu();
        for req in reqs {
            std::hint::black_box(drive(&mut svc, req));
        }
        thread_cpu() - start
    })
}

fn check_sends_token<S>(mut svc: S)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    if std::env::var("B1_SIZES").is_ok() {
        eprintln!(
            "{}: future {} bytes",
            std::any::type_name::<S>()
                .chars()
                .take(60)
                .collect::<String>(),
            std::mem::size_of::<S::Future>()
        );
    }
    drive(&mut svc, Request::get(URI).body(()).unwrap());
}

fn b1() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let (tokens_after, cred_after) = after::warm_cache(&rt);
    let (tokens_before, cred_before) = before::warm_cache(&rt);

    let inner =
        tower::service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    let checking = tower::service_fn(|req: Request<()>| async move {
        let value = &req.headers()[AUTHORIZATION];
        assert!(value.is_sensitive());
        assert_eq!(value.as_bytes(), format!("Bearer {TOKEN}").as_bytes());
        Ok::<_, Infallible>(Response::new(()))
    });
    // Every variant that should attach the token does.
    check_sends_token(after::auth(&tokens_after, checking));
    check_sends_token(after::auth_no_resend(&tokens_after, checking));
    check_sends_token(after::four(&tokens_after, checking));
    check_sends_token(before::auth(&tokens_before, checking));
    check_sends_token(before::auth_no_resend(&tokens_before, checking));
    check_sends_token(before::four(&tokens_before, checking));

    let mut value = HeaderValue::try_from(format!("Bearer {TOKEN}")).unwrap();
    value.set_sensitive(true);
    check_sends_token(tower_http::set_header::SetRequestHeader::overriding(
        checking,
        AUTHORIZATION,
        value.clone(),
    ));
    let swap = Arc::new(ArcSwap::from_pointee(value.clone()));
    check_sends_token(SwapHeader {
        inner: checking,
        value: swap.clone(),
    });
    let floor_token = Arc::new(ArcSwap::from_pointee(FloorToken {
        header: value.clone(),
        fresh: true.into(),
    }));
    check_sends_token(RuleFloor::new(checking, &floor_token));
    check_sends_token(four_floor(checking, &floor_token));

    let mut variants: Vec<(&str, Run)> = vec![
        ("bare service_fn", timed(inner)),
        (
            "tower-http SetRequestHeader (static)",
            timed(tower_http::set_header::SetRequestHeader::overriding(
                inner,
                AUTHORIZATION,
                value,
            )),
        ),
        (
            "ArcSwap<HeaderValue> + pin-project (design limit)",
            timed(SwapHeader { inner, value: swap }),
        ),
        (
            "the rules' floor: design limit + X5 check, token kept, A2 copy",
            timed(RuleFloor::new(inner, &floor_token)),
        ),
        (
            "the four layers' floor: two retry copies, the rules' floor, TimeoutLayer",
            timed(four_floor(inner, &floor_token)),
        ),
        (
            "AuthLayer defaults, before",
            timed(before::auth(&tokens_before, inner)),
        ),
        (
            "AuthLayer defaults, after",
            timed(after::auth(&tokens_after, inner)),
        ),
        (
            "AuthLayer resend_on_challenge(false), before",
            timed(before::auth_no_resend(&tokens_before, inner)),
        ),
        (
            "AuthLayer resend_on_challenge(false), after",
            timed(after::auth_no_resend(&tokens_after, inner)),
        ),
        (
            "four layers, before",
            timed(before::four(&tokens_before, inner)),
        ),
        (
            "four layers, after",
            timed(after::four(&tokens_after, inner)),
        ),
    ];
    // `B1_ONLY=<text>`: run only the variants whose name contains it (for a profiler).
    if let Ok(only) = std::env::var("B1_ONLY") {
        variants.retain(|v| v.0.contains(&only));
    }
    let rounds = env_usize("B1_ROUNDS", 41);
    let per = env_usize("B1_REQS", B1_REQS);
    let warmup = 3;
    let uri: Uri = URI.parse().unwrap();
    // `B1_HEADERS=1`: requests carry three headers of their own, as most real ones do.
    let with_headers = std::env::var("B1_HEADERS").is_ok_and(|v| v == "1");
    let request_id = HeaderValue::from_static("9f2c4a1e-5b7d-4c3e-8a6f-0d1e2f3a4b5c");
    let n = variants.len();
    let mut samples = vec![Vec::new(); n];
    for round in 0..rounds + warmup {
        for k in 0..n {
            let i = (round + k) % n;
            let reqs: Vec<Request<()>> = (0..per)
                .map(|_| {
                    let mut req = Request::new(());
                    *req.uri_mut() = uri.clone();
                    if with_headers {
                        let h = req.headers_mut();
                        h.insert(
                            http::header::ACCEPT,
                            HeaderValue::from_static("application/json"),
                        );
                        h.insert("x-ms-client-request-id", request_id.clone());
                        h.insert(
                            http::header::USER_AGENT,
                            HeaderValue::from_static("bench/1.0"),
                        );
                    }
                    req
                })
                .collect();
            let spent = (variants[i].1)(reqs);
            if round >= warmup {
                samples[i].push(spent.as_nanos() as f64 / per as f64);
            }
        }
    }
    let names: Vec<&str> = variants.iter().map(|v| v.0).collect();
    if std::env::var("B1_ONLY").is_ok() {
        return;
    }
    report("B1", "ns", &names, &samples, 1, false);
    assert_eq!(cred_after.calls(), 1, "the cache stayed warm");
    assert_eq!(cred_before.calls(), 1, "the cache stayed warm");
}

// ---- B2 ----

async fn serve() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    // Every variant sends the token.
                    let ok = req
                        .headers()
                        .get(AUTHORIZATION)
                        .is_some_and(|v| v.len() == TOKEN.len() + 7);
                    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
                    if !ok {
                        *resp.status_mut() = http::StatusCode::BAD_REQUEST;
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// reqwest-middleware with one middleware inserting a static `Authorization` header.
struct StaticAuth(HeaderValue);

#[async_trait::async_trait]
impl Middleware for StaticAuth {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        req.headers_mut().insert(AUTHORIZATION, self.0.clone());
        next.run(req, extensions).await
    }
}

/// A middleware that does nothing but await the rest of the chain: the least any middleware
/// that sees the response (a retry, a timeout, a 401 resend) does on reqwest-middleware.
struct PassThrough;

#[async_trait::async_trait]
impl Middleware for PassThrough {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        next.run(req, extensions).await
    }
}

/// The one request copy the rules require of a stack that may resend (A2's 401 resend, R2/R3's
/// retries): `reqwest::Request::try_clone` on the way in, kept until the response.
struct CopyKept;

#[async_trait::async_trait]
impl Middleware for CopyKept {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let copy = req.try_clone();
        let resp = next.run(req, extensions).await;
        drop(copy);
        resp
    }
}

async fn batch(client: &ClientWithMiddleware, url: &Arc<str>) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    let resp = client.get(&*url).send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    assert_eq!(resp.bytes().await.unwrap().len(), BODY.len());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn b2() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(serve());
    let origin = format!("http://{addr}");
    let url: Arc<str> = format!("{origin}/api/data").into();
    let (tokens_after, cred_after) = after::warm_cache(&rt);
    let (tokens_before, cred_before) = before::warm_cache(&rt);
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    if std::env::var("B2_SIZES").is_ok() {
        b2_sizes(&rt, &plain, &tokens_after, &url, &origin);
        return;
    }
    let mut value = HeaderValue::try_from(format!("Bearer {TOKEN}")).unwrap();
    value.set_sensitive(true);
    let variants: Vec<(&str, ClientWithMiddleware)> = vec![
        (
            "reqwest-middleware, one static Authorization middleware",
            ClientBuilder::new(plain.clone())
                .with(StaticAuth(value.clone()))
                .build(),
        ),
        (
            "reqwest-middleware, three pass-through middlewares + the static one (the framework's floor)",
            ClientBuilder::new(plain.clone())
                .with(PassThrough)
                .with(PassThrough)
                .with(PassThrough)
                .with(StaticAuth(value.clone()))
                .build(),
        ),
        (
            "reqwest-middleware, the rules' floor: the framework's floor with one request copy kept to the response and this crate's TimeoutLayer",
            ClientBuilder::new(plain.clone())
                .with(CopyKept)
                .with(PassThrough)
                .with(StaticAuth(value))
                .with(ra::TimeoutLayer::new(Duration::from_secs(10)))
                .build(),
        ),
        (
            "four layers, before",
            before::four_client(plain.clone(), &tokens_before, &origin),
        ),
        (
            "four layers, after",
            after::four_client(plain.clone(), &tokens_after, &origin),
        ),
    ];
    let mut variants = variants;
    // `B2_ONLY=<text>`: only the variants whose name contains it, no report (for a profiler).
    let only = std::env::var("B2_ONLY").ok();
    if let Some(only) = &only {
        variants.retain(|v| v.0.contains(only.as_str()));
    }
    let rounds = env_usize("B2_ROUNDS", 31);
    let warmup = 2;
    let n = variants.len();
    let mut samples = vec![Vec::new(); n];
    let mut cpu = vec![Vec::new(); n];
    for round in 0..rounds + warmup {
        for k in 0..n {
            let i = (round + k) % n;
            let start = Instant::now();
            let start_cpu = process_cpu();
            rt.block_on(batch(&variants[i].1, &url));
            let spent_cpu = process_cpu() - start_cpu;
            let secs = start.elapsed().as_secs_f64();
            if round >= warmup {
                samples[i].push((TASKS * PER_TASK) as f64 / secs);
                cpu[i].push(spent_cpu.as_nanos() as f64 / (TASKS * PER_TASK) as f64);
            }
        }
    }
    if only.is_some() {
        return;
    }
    let names: Vec<&str> = variants.iter().map(|v| v.0).collect();
    report("B2", "req/s", &names, &samples, 0, true);
    // The same rounds in CPU time per request (client and server), which other processes on
    // the machine disturb less than wall-clock throughput.
    report("B2cpu", "ns", &names, &cpu, 0, false);
    assert_eq!(cred_after.calls(), 1, "the cache stayed warm");
    assert_eq!(cred_before.calls(), 1, "the cache stayed warm");
}

/// Wraps a middleware and prints the size of the boxed future its `handle` returns (for
/// `B2_SIZES=1`).
struct Sizer(&'static str, Arc<dyn Middleware>);

impl Middleware for Sizer {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        req: reqwest::Request,
        extensions: &'life1 mut http::Extensions,
        next: Next<'life2>,
    ) -> Pin<
        Box<
            dyn Future<Output = reqwest_middleware::Result<reqwest::Response>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        let fut = self.1.handle(req, extensions, next);
        println!("{}: {} bytes", self.0, std::mem::size_of_val(&*fut));
        fut
    }
}

/// `B2_SIZES=1`: the size of the boxed future each middleware's `handle` returns (the heap block
/// each layer takes per call), printed as each `handle` returns (a middleware whose `handle`
/// calls the next one at once prints after it), and the size of the request.
fn b2_sizes(
    rt: &tokio::runtime::Runtime,
    plain: &reqwest::Client,
    tokens: &ra::TokenCache,
    url: &str,
    origin: &str,
) {
    let auth = ra::AuthLayer::new(tokens.clone())
        .allow_origins([origin])
        .unwrap();
    let layers: [(&'static str, Arc<dyn Middleware>); 5] = [
        ("RetryAfterLayer", Arc::new(ra::RetryAfterLayer::default())),
        ("ExpBackoffLayer", Arc::new(ra::ExpBackoffLayer::default())),
        ("AuthLayer", Arc::new(auth)),
        (
            "TimeoutLayer",
            Arc::new(ra::TimeoutLayer::new(Duration::from_secs(10))),
        ),
        ("PassThrough (#[async_trait])", Arc::new(PassThrough)),
    ];
    let mut builder = ClientBuilder::new(plain.clone());
    for (name, layer) in layers {
        builder = builder.with(Sizer(name, layer));
    }
    let client = builder.build();
    let resp = rt.block_on(client.get(url).send()).unwrap();
    assert_eq!(resp.status(), 200);
    println!(
        "reqwest::Request: {} bytes",
        std::mem::size_of::<reqwest::Request>()
    );
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if which == "all" || which == "b1" {
        b1();
    }
    if which == "all" || which == "b2" {
        b2();
    }
}
