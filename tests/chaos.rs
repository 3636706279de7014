//! Fault scenarios: a `TokenCache` and the four layers against the testkit's fake identity
//! provider, IMDS and API, in memory under paused time (issues 9 and 10). Every invariant is
//! asserted on the fake's request log — what a server saw, with virtual timestamps — and on
//! what callers got back:
//! - no token request within a `Retry-After` (capped at 5 min);
//! - no request to a target sooner than 5 s after a 5xx or timeout without a usable
//!   `Retry-After`;
//! - zero failed API calls while a valid token exists;
//! - at most one token request per refresh period;
//! - recovery after the fault ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::Range;
use std::time::Duration;

use resilient_auth::testkit::credentials::PanickingCredential;
use resilient_auth::testkit::{FakeIdentityProvider, Fault, FaultKind, RetryAfter, Target};
use resilient_auth::{
    AuthLayer, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer, TokenCache, TokenCredential,
};
use tokio::time::MissedTickBehavior;
use tower::{ServiceBuilder, ServiceExt};

const SCOPE: &str = "api://chaos/.default";
const CAP: Duration = Duration::from_secs(300);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn fault(target: Target, window: Range<u64>, kind: FaultKind) -> Fault {
    Fault::new(target, secs(window.start)..secs(window.end), kind)
}

/// What a run of the daemon loop saw.
struct Run {
    /// When each failed API call started.
    failed: Vec<Duration>,
    /// When each call started and whether it succeeded.
    calls: Vec<(Duration, bool)>,
}

/// A daemon loop: one API call every 0.5 s (no catch-up) for `duration`, through the four
/// layers and a cache over `credential`.
async fn run(
    idp: &FakeIdentityProvider,
    credential: impl TokenCredential,
    duration: Duration,
) -> Run {
    let tokens = TokenCache::new(credential, [SCOPE]);
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(ExpBackoffLayer::default())
        .layer(AuthLayer::new(tokens).allow_origins([idp.uri()]).unwrap())
        .layer(TimeoutLayer::new(secs(10)))
        .service(idp.service());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut run = Run {
        failed: Vec::new(),
        calls: Vec::new(),
    };
    while idp.elapsed() < duration {
        tick.tick().await;
        let at = idp.elapsed();
        let req = http::Request::get(idp.api_url())
            .body(String::new())
            .unwrap();
        let ok = matches!(svc.clone().oneshot(req).await, Ok(r) if r.status() == 200);
        if !ok {
            run.failed.push(at);
        }
        run.calls.push((at, ok));
    }
    run
}

/// The seeds' invariants on the log of `target`.
fn assert_waits_honoured(idp: &FakeIdentityProvider, target: Target) {
    let log = idp.log();
    let ra = log.retry_after_violations(target, CAP);
    assert!(ra.is_empty(), "requests within a Retry-After: {ra:?}");
    let floor = log.floor_violations(target, secs(5));
    assert!(
        floor.is_empty(),
        "requests sooner than 5 s after a failure: {floor:?}"
    );
}

/// No API call failed while the fake held a valid token for the client.
fn assert_no_failure_while_a_token_was_valid(idp: &FakeIdentityProvider, run: &Run) {
    let log = idp.log();
    let bad: Vec<_> = run
        .failed
        .iter()
        .filter(|at| log.valid_token_at(**at))
        .collect();
    assert!(
        bad.is_empty(),
        "calls failed while a valid token existed: {bad:?}"
    );
}

/// The first token request after `end` succeeds, and so does the first call after it.
fn assert_recovers_after(
    idp: &FakeIdentityProvider,
    run: &Run,
    target: Target,
    end: u64,
    within: u64,
) {
    let log = idp.log();
    let first = log
        .first_at_or_after(target, secs(end))
        .expect("a request after the fault");
    assert!(
        first.at <= secs(end + within),
        "first request after the fault at {:?}",
        first.at
    );
    assert_eq!(first.status, Some(200));
    let next_call = run.calls.iter().find(|(at, _)| *at >= first.end());
    assert!(matches!(next_call, Some((_, true))), "{next_call:?}");
}

/// A fake identity provider (in memory) with one fault, and tokens of `lifetime` if given.
fn fake(lifetime: Option<Duration>, fault: Fault) -> FakeIdentityProvider {
    let mut builder = FakeIdentityProvider::builder().fault(fault);
    if let Some(lifetime) = lifetime {
        builder = builder.token_lifetime(lifetime);
    }
    builder.build().unwrap()
}

fn token_requests(idp: &FakeIdentityProvider, target: Target) -> Vec<(Duration, Option<u16>)> {
    idp.log()
        .for_target(target)
        .iter()
        .map(|r| (r.at, r.status))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn chaos_idp_429_for_20s_cold() {
    let idp = fake(
        None,
        fault(
            Target::Token,
            0..20,
            FaultKind::status(429, Some(RetryAfter::Seconds(secs(7)))),
        ),
    );
    let run = run(&idp, idp.credential("tenant", "client"), secs(60)).await;
    assert_waits_honoured(&idp, Target::Token);
    assert_recovers_after(&idp, &run, Target::Token, 20, 10);
}

#[tokio::test(start_paused = true)]
async fn chaos_idp_429_for_20s_after_warm_up_with_a_short_refresh_in() {
    let idp = FakeIdentityProvider::builder()
        .token_lifetime(secs(3600))
        .refresh_in(secs(10))
        .fault(fault(
            Target::Token,
            30..50,
            FaultKind::status(429, Some(RetryAfter::Seconds(secs(7)))),
        ))
        .build()
        .unwrap();
    let run = run(&idp, idp.credential("tenant", "client"), secs(90)).await;
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_no_failure_while_a_token_was_valid(&idp, &run);
    assert_waits_honoured(&idp, Target::Token);
    // At most one token request per refresh period (10 s, jitter ≤ 5 %) outside the fault.
    let ok: Vec<_> = idp
        .log()
        .for_target(Target::Token)
        .iter()
        .filter(|r| r.status == Some(200))
        .map(|r| r.at)
        .collect();
    assert!(
        ok.windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_millis(9_500)),
        "{ok:?}"
    );
    assert!(
        ok.len() <= 9,
        "{} successful token requests in 90 s",
        ok.len()
    );
}

async fn idp_503_across_the_refresh_point(retry_after: Option<RetryAfter>) {
    // A 180 s token is refreshed at ~90 s and served until 150 s; the identity provider fails
    // for 30 s from 85 s, across the refresh point.
    let idp = fake(
        Some(secs(180)),
        fault(Target::Token, 85..115, FaultKind::status(503, retry_after)),
    );
    let run = run(&idp, idp.credential("tenant", "client"), secs(200)).await;
    assert!(
        run.failed.is_empty(),
        "failed calls at {:?}; token requests {:?}",
        run.failed,
        token_requests(&idp, Target::Token)
    );
    assert_no_failure_while_a_token_was_valid(&idp, &run);
    assert_waits_honoured(&idp, Target::Token);
    assert_recovers_after(&idp, &run, Target::Token, 115, 30);
}

#[tokio::test(start_paused = true)]
async fn chaos_idp_503_without_retry_after_across_the_refresh_point() {
    idp_503_across_the_refresh_point(None).await;
}

#[tokio::test(start_paused = true)]
async fn chaos_idp_503_with_retry_after() {
    idp_503_across_the_refresh_point(Some(RetryAfter::Seconds(secs(8)))).await;
}

#[tokio::test(start_paused = true)]
async fn chaos_idp_503_with_retry_after_zero_is_no_fast_loop() {
    idp_503_across_the_refresh_point(Some(RetryAfter::zero())).await;
    let idp = fake(
        None,
        fault(
            Target::Token,
            0..30,
            FaultKind::status(503, Some(RetryAfter::zero())),
        ),
    );
    run(&idp, idp.credential("tenant", "client"), secs(30)).await;
    let n = idp.log().for_target(Target::Token).len();
    assert!(n <= 6, "{n} token requests in 30 s of 503 Retry-After: 0");
}

#[tokio::test(start_paused = true)]
async fn chaos_idp_that_hangs() {
    // Requests arriving from 85 to 115 s hang until the credential's 10 s timeout.
    let idp = fake(
        Some(secs(180)),
        fault(Target::Token, 85..115, FaultKind::Hang),
    );
    let run = run(&idp, idp.credential("tenant", "client"), secs(200)).await;
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_waits_honoured(&idp, Target::Token);
    assert_recovers_after(&idp, &run, Target::Token, 115, 30);
}

#[tokio::test(start_paused = true)]
async fn chaos_api_429_is_waited_out_by_every_call() {
    let idp = fake(
        None,
        fault(
            Target::Api,
            20..30,
            FaultKind::status(429, Some(RetryAfter::Seconds(secs(3)))),
        ),
    );
    let run = run(&idp, idp.credential("tenant", "client"), secs(60)).await;
    assert!(run.failed.is_empty(), "API calls failed: {:?}", run.failed);
    assert_waits_honoured(&idp, Target::Api);
}

#[tokio::test(start_paused = true)]
async fn chaos_api_503_is_backed_off_never_fast_retried() {
    let idp = fake(
        None,
        fault(Target::Api, 20..26, FaultKind::status(503, None)),
    );
    let run = run(&idp, idp.credential("tenant", "client"), secs(60)).await;
    assert!(run.failed.is_empty(), "API calls failed: {:?}", run.failed);
    assert_waits_honoured(&idp, Target::Api);
}

#[tokio::test(start_paused = true)]
async fn chaos_huge_retry_after_from_the_identity_provider() {
    let idp = fake(
        None,
        fault(
            Target::Token,
            0..20,
            FaultKind::status(429, Some(RetryAfter::raw("99999999999999999999"))),
        ),
    );
    let run = run(&idp, idp.credential("tenant", "client"), secs(400)).await;
    // Held for the cap (5 min), then it recovers; nothing panicked or got stuck.
    assert_eq!(
        token_requests(&idp, Target::Token)[..2],
        [(secs(0), Some(429)), (CAP, Some(200))],
    );
    assert_recovers_after(&idp, &run, Target::Token, 300, 1);
}

#[tokio::test(start_paused = true)]
async fn chaos_a_panicking_credential_heals() {
    let idp = FakeIdentityProvider::builder().build().unwrap();
    let credential = PanickingCredential::on_call(idp.credential("tenant", "client"), 1);
    let run = run(&idp, credential, secs(30)).await;
    // The first fetch panicked (no request reached the fake); the next came after the back-off.
    let first = idp
        .log()
        .first_at_or_after(Target::Token, secs(0))
        .map(|r| r.at);
    assert!(
        first.is_some_and(|at| at >= secs(5) && at <= secs(7)),
        "{first:?}"
    );
    assert!(run
        .calls
        .iter()
        .filter(|(at, _)| *at > secs(8))
        .all(|(_, ok)| *ok));
}

#[tokio::test(start_paused = true)]
async fn chaos_imds_5xx() {
    let idp = fake(
        None,
        fault(Target::Imds, 0..30, FaultKind::status(503, None)),
    );
    let run = run(&idp, idp.imds_credential(), secs(60)).await;
    assert_waits_honoured(&idp, Target::Imds);
    let gaps = idp.log().gaps(Target::Imds);
    assert!(gaps.iter().all(|g| *g >= secs(5)), "IMDS gaps {gaps:?}");
    assert_recovers_after(&idp, &run, Target::Imds, 30, 10);
}

/// Issue 10: a cold daemon through a 150 s outage (503, no Retry-After).
async fn t13_cold_outage(target: Target) {
    let idp = fake(None, fault(target, 0..150, FaultKind::status(503, None)));
    let run = match target {
        Target::Imds => run(&idp, idp.imds_credential(), secs(180)).await,
        _ => run(&idp, idp.credential("tenant", "client"), secs(180)).await,
    };
    let during: Vec<_> = idp
        .log()
        .for_target(target)
        .iter()
        .filter(|r| r.at < secs(150))
        .map(|r| r.at)
        .collect();
    assert!(
        during.len() <= 16,
        "{} requests during the outage: {during:?}",
        during.len()
    );
    assert_waits_honoured(&idp, target);
    assert_recovers_after(&idp, &run, target, 150, 10);
    println!(
        "{target:?}: {} requests during the outage at {:?}; first after it at {:?}",
        during.len(),
        during,
        idp.log().first_at_or_after(target, secs(150)).map(|r| r.at)
    );
}

#[tokio::test(start_paused = true)]
async fn t13_cold_cache_recovers_within_10s_client_secret() {
    t13_cold_outage(Target::Token).await;
}

#[tokio::test(start_paused = true)]
async fn t13_cold_cache_recovers_within_10s_managed_identity() {
    t13_cold_outage(Target::Imds).await;
}
