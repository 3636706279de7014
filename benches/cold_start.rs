//! B3: cold start (rule T4): 10,000 concurrent `TokenCache::token()` callers on an empty cache,
//! against a counting credential that answers after 5 ms. Asserts that the identity provider saw
//! exactly one request per iteration, and times serving all callers; the baseline is one
//! `token()` call on an empty cache with the same credential.
//!
//! Each caller is its own task (`JoinSet`) on a 2-worker multi-thread tokio runtime; spawning
//! them is inside the timed region. Every iteration builds a new (empty) cache outside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use resilient_auth::TokenCache;
use tokio::task::JoinSet;

const CALLERS: usize = 10_000;
const LATENCY: Duration = Duration::from_millis(5);
const SCOPE: &str = "https://api.example.com/.default";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("b3_cold_start");
    g.sample_size(20).sampling_mode(SamplingMode::Flat);
    g.bench_function("a_one_caller", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let credential = common::Counting::new(LATENCY);
                let tokens = TokenCache::new(credential.clone(), [SCOPE]);
                let start = Instant::now();
                rt.block_on(tokens.token()).unwrap();
                total += start.elapsed();
                assert_eq!(credential.calls(), 1);
            }
            total
        })
    });
    let mut max_idp_requests = 0;
    g.bench_function("b_10000_callers", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let credential = common::Counting::new(LATENCY);
                let tokens = TokenCache::new(credential.clone(), [SCOPE]);
                let start = Instant::now();
                let served = rt.block_on(async {
                    let mut set = JoinSet::new();
                    for _ in 0..CALLERS {
                        let tokens = tokens.clone();
                        set.spawn(async move { tokens.token().await });
                    }
                    let mut served = 0;
                    while let Some(result) = set.join_next().await {
                        result.unwrap().unwrap();
                        served += 1;
                    }
                    served
                });
                total += start.elapsed();
                assert_eq!(served, CALLERS);
                max_idp_requests = max_idp_requests.max(credential.calls());
                assert_eq!(credential.calls(), 1, "T4: one identity-provider request");
            }
            total
        })
    });
    // For reference: spawning and joining as many tasks that do nothing.
    g.bench_function("c_10000_empty_tasks", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = JoinSet::new();
                for _ in 0..CALLERS {
                    set.spawn(async {});
                }
                while let Some(result) = set.join_next().await {
                    result.unwrap();
                }
            })
        })
    });
    g.finish();
    // Machine-readable line for scripts/bench.sh.
    println!("RESULT b3 callers={CALLERS} latency_ms=5 max_idp_requests={max_idp_requests}");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
