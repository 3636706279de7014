//! B1: the per-request cost of `AuthLayer` with a warm `TokenCache`, against tower-http's static
//! `SetRequestHeader` (and a bare service) around a trivial service that is ready at once.
//!
//! Every variant drives `poll_ready` + `call` and polls the returned future once (it is ready at
//! once: `now_or_never`, no executor). Requests are built outside the timed region
//! (`iter_batched`), so the figures are the services' own overhead. A current-thread tokio
//! runtime is entered for the whole run because the cache reads `tokio::time::Instant`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, Uri};
use resilient_auth::{AuthLayer, TokenCache};
use tower::{Layer, Service, ServiceExt};
use tower_http::set_header::SetRequestHeader;

const URI: &str = "https://api.example.com/v1/items?page=1";

/// `poll_ready` + `call`, then one poll of the (immediately ready) future.
fn drive<S>(svc: &mut S, req: Request<()>) -> Response<()>
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let ready = svc
        .ready()
        .now_or_never()
        .expect("ready at once")
        .expect("ready");
    ready
        .call(req)
        .now_or_never()
        .expect("answered at once")
        .expect("ok")
}

fn request(uri: &Uri) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = uri.clone();
    req
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let credential = common::Counting::new(Duration::ZERO);
    let tokens = TokenCache::new(credential.clone(), ["https://api.example.com/.default"]);
    let token = rt.block_on(tokens.token()).unwrap();
    assert_eq!(credential.calls(), 1);

    let uri = Uri::from_static(URI);
    let inner =
        tower::service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });

    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.secret())).unwrap();
    value.set_sensitive(true);

    let mut bare = inner;
    let mut static_header = SetRequestHeader::overriding(inner, AUTHORIZATION, value);
    let mut auth = AuthLayer::new(tokens.clone()).layer(inner);
    let mut auth_no_resend = AuthLayer::new(tokens.clone())
        .resend_on_challenge(false)
        .layer(inner);

    // The services do what they claim before being timed.
    drive(&mut static_header, request(&uri));
    drive(&mut auth, request(&uri));
    drive(&mut auth_no_resend, request(&uri));
    let mut check =
        AuthLayer::new(tokens.clone()).layer(tower::service_fn(|req: Request<()>| async move {
            assert!(req.headers()[AUTHORIZATION].is_sensitive());
            assert!(req.headers()[AUTHORIZATION]
                .as_bytes()
                .starts_with(b"Bearer "));
            Ok::<_, Infallible>(Response::new(()))
        }));
    drive(&mut check, request(&uri));

    let mut g = c.benchmark_group("b1_auth_hot_path");
    g.bench_function("a_bare", |b| {
        b.iter_batched(
            || request(&uri),
            |req| drive(&mut bare, req),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("b_set_request_header", |b| {
        b.iter_batched(
            || request(&uri),
            |req| drive(&mut static_header, req),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("c_auth_resend", |b| {
        b.iter_batched(
            || request(&uri),
            |req| drive(&mut auth, req),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("d_auth_no_resend", |b| {
        b.iter_batched(
            || request(&uri),
            |req| drive(&mut auth_no_resend, req),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // Parts of the hot path, for reference. Dev-dependencies enable tokio's `test-util`, under
    // which `tokio::time::Instant::now()` consults the runtime's clock; this shows what that costs.
    let mut g = c.benchmark_group("b1_clock");
    g.bench_function("tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    g.bench_function("std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    g.bench_function("token_cache_cached", |b| {
        b.iter(|| black_box(tokens.cached()))
    });
    g.finish();
    assert_eq!(credential.calls(), 1, "the cache stayed warm");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
