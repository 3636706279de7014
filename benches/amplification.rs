//! B4: retry amplification under a total outage: requests sent per call when every response is
//! a 503 without `Retry-After`, with default settings: this crate's `RetryAfterLayer::default()`
//! and `ExpBackoffLayer::default()` against reqwest-retry's documented default
//! (`ExponentialBackoff::builder().build_with_max_retries(3)`).
//!
//! The server is the testkit's `FakeIdentityProvider` with a 503 fault on its API. Each run has
//! its own current-thread tokio runtime with the clock paused, so back-off waits (ours 5–60 s,
//! reqwest-retry's 1 s × 2ⁿ with full jitter; both sleep with `tokio::time`) pass instantly; the
//! wall time printed shows it. Two arrival patterns: a burst of 200 concurrent calls, and 50
//! calls started 100 ms apart (10/s). Prints a table and `RESULT b4 …` lines for scripts/bench.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant as WallInstant};

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryTransientMiddleware;
use resilient_auth::testkit::{FakeIdentityProvider, Fault, FaultKind, Target};
use resilient_auth::{ExpBackoffLayer, RetryAfterLayer};

#[derive(Clone, Copy, Debug)]
enum Client {
    Ours,
    ReqwestRetry,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Ours => "ours",
            Client::ReqwestRetry => "reqwest_retry",
        }
    }

    fn build(self) -> ClientWithMiddleware {
        let reqwest = reqwest::Client::builder().no_proxy().build().unwrap();
        match self {
            Client::Ours => ClientBuilder::new(reqwest)
                .with(RetryAfterLayer::default())
                .with(ExpBackoffLayer::default())
                .build(),
            Client::ReqwestRetry => ClientBuilder::new(reqwest)
                .with(RetryTransientMiddleware::new_with_policy(
                    ExponentialBackoff::builder().build_with_max_retries(3),
                ))
                .build(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// `n` calls at once.
    Burst(usize),
    /// `n` calls, one every `every`.
    Paced(usize, Duration),
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Burst(_) => "burst",
            Scenario::Paced(..) => "paced",
        }
    }

    fn calls(self) -> usize {
        match self {
            Scenario::Burst(n) | Scenario::Paced(n, _) => n,
        }
    }

    /// When call `i` starts.
    fn start_of(self, i: usize) -> Duration {
        match self {
            Scenario::Burst(_) => Duration::ZERO,
            Scenario::Paced(_, every) => every * u32::try_from(i).unwrap(),
        }
    }
}

struct Outcome {
    requests: usize,
    first_second_requests: usize,
    first_second_calls: usize,
    /// Tokio time from the first call to the last call's answer.
    span: Duration,
    wall: Duration,
}

fn run(client: Client, scenario: Scenario) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let wall = WallInstant::now();
    let (requests, first_second_requests, span) = rt.block_on(async {
        let outage = Duration::ZERO..Duration::from_secs(24 * 3600);
        let idp = FakeIdentityProvider::builder()
            .fault(Fault::new(
                Target::Api,
                outage,
                FaultKind::Unavailable { retry_after: None },
            ))
            .start()
            .await
            .unwrap();
        let http = client.build();
        let url = idp.api_url();
        let t0 = tokio::time::Instant::now();
        let calls: Vec<_> = (0..scenario.calls())
            .map(|i| {
                let (http, url) = (http.clone(), url.clone());
                let at = t0 + scenario.start_of(i);
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    http.get(url).send().await.map(|r| r.status().as_u16())
                })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), 503);
        }
        let span = t0.elapsed();
        let log = idp.log();
        let api: Vec<_> = log.iter().filter(|r| r.target == Target::Api).collect();
        let first = api.iter().filter(|r| r.at < Duration::from_secs(1)).count();
        (api.len(), first, span)
    });
    let first_second_calls = (0..scenario.calls())
        .filter(|&i| scenario.start_of(i) < Duration::from_secs(1))
        .count();
    Outcome {
        requests,
        first_second_requests,
        first_second_calls,
        span,
        wall: wall.elapsed(),
    }
}

fn main() {
    let scenarios = [
        Scenario::Burst(200),
        Scenario::Paced(50, Duration::from_millis(100)),
    ];
    println!(
        "{:<8} {:<14} {:>5} {:>8} {:>8} {:>12} {:>10} {:>9} {:>8}",
        "pattern",
        "client",
        "calls",
        "requests",
        "per_call",
        "first_1s_req",
        "first_1s/c",
        "span_s",
        "wall_ms"
    );
    for scenario in scenarios {
        for client in [Client::Ours, Client::ReqwestRetry] {
            let o = run(client, scenario);
            let calls = scenario.calls();
            let per_call = o.requests as f64 / calls as f64;
            let first = o.first_second_requests as f64 / o.first_second_calls as f64;
            println!(
                "{:<8} {:<14} {:>5} {:>8} {:>8.2} {:>12} {:>10.2} {:>9.1} {:>8}",
                scenario.name(),
                client.name(),
                calls,
                o.requests,
                per_call,
                o.first_second_requests,
                first,
                o.span.as_secs_f64(),
                o.wall.as_millis()
            );
            println!(
                "RESULT b4 scenario={} client={} calls={} requests={} per_call={:.3} first_second_calls={} first_second_requests={} first_second_per_call={:.3} span_s={:.1} wall_ms={}",
                scenario.name(),
                client.name(),
                calls,
                o.requests,
                per_call,
                o.first_second_calls,
                o.first_second_requests,
                first,
                o.span.as_secs_f64(),
                o.wall.as_millis()
            );
        }
    }
}
