//! B2: loopback HTTP throughput of a reqwest client with all four layers (`RetryAfterLayer`,
//! `ExpBackoffLayer`, `AuthLayer` with a warm cache, `TimeoutLayer`) against bare `reqwest` and
//! `reqwest-middleware` with no middleware (and, for reference, with reqwest-retry's default).
//!
//! One iteration is 3,200 GETs from 32 tasks (32 in flight at any time, 100 in turn per task) to
//! an in-process hyper 1 server answering 200 with a small body, each body read to the end, on
//! a 2-worker multi-thread tokio runtime that also runs the server. Every variant sends the same `Authorization` header: the
//! baselines as a static default header, the layered clients from `AuthLayer`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryTransientMiddleware;
use resilient_auth::{AuthLayer, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer, TokenCache};
use tokio::net::TcpListener;

const TASKS: usize = 32;
const PER_TASK: usize = 100;
const BODY: &[u8] = br#"{"data":"ok"}"#;

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
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// One request, its body read to the end.
trait Get: Clone + Send + Sync + 'static {
    fn get_ok(&self, url: &str) -> impl std::future::Future<Output = ()> + Send;
}

impl Get for reqwest::Client {
    async fn get_ok(&self, url: &str) {
        let resp = self.get(url).send().await.unwrap();
        assert!(resp.status().is_success());
        assert_eq!(resp.bytes().await.unwrap().len(), BODY.len());
    }
}

impl Get for ClientWithMiddleware {
    async fn get_ok(&self, url: &str) {
        let resp = self.get(url).send().await.unwrap();
        assert!(resp.status().is_success());
        assert_eq!(resp.bytes().await.unwrap().len(), BODY.len());
    }
}

/// One iteration: `TASKS` tasks on the runtime, each sending `PER_TASK` requests in turn.
async fn batch<C: Get>(client: &C, url: &Arc<str>) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    client.get_ok(&url).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(serve());
    let origin = format!("http://{addr}");
    let url: Arc<str> = format!("{origin}/api/data").into();

    let credential = common::Counting::new(Duration::ZERO);
    let tokens = TokenCache::new(credential.clone(), ["https://api.example.com/.default"]);
    let token = rt.block_on(tokens.token()).unwrap();
    // The baselines send the same (static) Authorization header, so every variant puts the same
    // bytes on the wire and the figures compare middleware, not a 1.4 KB header.
    let mut headers = http::HeaderMap::new();
    let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.secret())).unwrap();
    value.set_sensitive(true);
    headers.insert(http::header::AUTHORIZATION, value);
    let reqwest = reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap();
    // For the variants whose AuthLayer attaches the header.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let none = ClientBuilder::new(reqwest.clone()).build();
    let four = ClientBuilder::new(plain.clone())
        .with(RetryAfterLayer::default())
        .with(ExpBackoffLayer::default())
        .with(
            AuthLayer::new(tokens.clone())
                .allow_origins([&origin])
                .unwrap(),
        )
        .with(TimeoutLayer::new(Duration::from_secs(10)))
        .build();
    let retry = ClientBuilder::new(reqwest.clone())
        .with(RetryTransientMiddleware::new_with_policy(
            ExponentialBackoff::builder().build_with_max_retries(3),
        ))
        .build();

    // The four-layer client does send the token.
    let sent = rt.block_on(async {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let check_origin = format!("http://{}", server.local_addr().unwrap());
        let client = ClientBuilder::new(plain.clone())
            .with(
                AuthLayer::new(tokens.clone())
                    .allow_origins([&check_origin])
                    .unwrap(),
            )
            .build();
        let req = tokio::spawn(async move { client.get(format!("{check_origin}/")).send().await });
        let (mut stream, _) = server.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
            .await
            .unwrap();
        drop(stream);
        let _ = req.await;
        String::from_utf8_lossy(&buf[..n]).to_lowercase()
    });
    assert!(sent.contains("authorization: bearer "), "{sent}");

    let mut g = c.benchmark_group("b2_stack_throughput");
    g.throughput(Throughput::Elements((TASKS * PER_TASK) as u64));
    g.sample_size(20).sampling_mode(SamplingMode::Flat);
    g.bench_function("a_reqwest", |b| {
        b.iter(|| rt.block_on(batch(&reqwest, &url)))
    });
    g.bench_function("b_middleware_none", |b| {
        b.iter(|| rt.block_on(batch(&none, &url)))
    });
    g.bench_function("c_four_layers", |b| {
        b.iter(|| rt.block_on(batch(&four, &url)))
    });
    g.bench_function("d_reqwest_retry_default", |b| {
        b.iter(|| rt.block_on(batch(&retry, &url)))
    });
    // Where the cost of the four is: each layer alone.
    let alone: [(&str, ClientWithMiddleware); 5] = [
        (
            "e_retry_after_only",
            ClientBuilder::new(reqwest.clone())
                .with(RetryAfterLayer::default())
                .build(),
        ),
        (
            "f_exp_backoff_only",
            ClientBuilder::new(reqwest.clone())
                .with(ExpBackoffLayer::default())
                .build(),
        ),
        (
            "g_auth_only",
            ClientBuilder::new(plain.clone())
                .with(
                    AuthLayer::new(tokens.clone())
                        .allow_origins([&origin])
                        .unwrap(),
                )
                .build(),
        ),
        (
            "g2_auth_only_no_resend",
            ClientBuilder::new(plain.clone())
                .with(
                    AuthLayer::new(tokens.clone())
                        .resend_on_challenge(false)
                        .allow_origins([&origin])
                        .unwrap(),
                )
                .build(),
        ),
        (
            "h_timeout_only",
            ClientBuilder::new(reqwest.clone())
                .with(TimeoutLayer::new(Duration::from_secs(10)))
                .build(),
        ),
    ];
    for (name, client) in &alone {
        g.bench_function(*name, |b| b.iter(|| rt.block_on(batch(client, &url))));
    }
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
