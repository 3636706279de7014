//! The retry layers on the tower stack, under paused time (rules R1–R7).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{no_jitter, status, with_header, Script, Step};
use http::{Method, Request};
use http_body_util::combinators::BoxBody;
use resilient_auth::layer::TryCloneBody;
use resilient_auth::retry::RetryBudget;
use resilient_auth::{Attempts, Deadline, Error, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

fn get(uri: &str) -> Request<String> {
    Request::get(uri).body(String::new()).unwrap()
}

fn attempts<B>(resp: &http::Response<B>) -> u32 {
    Attempts::of(resp.extensions())
}

fn as_crate_error(err: &resilient_auth::BoxError) -> &Error {
    err.downcast_ref::<Error>()
        .expect("a resilient_auth::Error")
}

// ---------- R1: parsing, cap, deadline ----------

#[tokio::test(start_paused = true)]
async fn r1_wait_above_cap_fails_fast_with_the_response() {
    let script = Script::new([with_header(429, "retry-after", "600")]);
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .service(script.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(Instant::now(), t0, "nothing slept");
    assert_eq!(script.count(), 1);
    assert_eq!(attempts(&resp), 1);
}

#[tokio::test(start_paused = true)]
async fn r1_held_request_beyond_cap_gets_throttled_error() {
    let layer = RetryAfterLayer::builder()
        .max_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let script = Script::new([with_header(503, "retry-after", "120")]);
    let mut svc = ServiceBuilder::new().layer(layer).service(script.service());
    let first = svc
        .ready()
        .await
        .unwrap()
        .call(get("https://api.test/a"))
        .await
        .unwrap();
    assert_eq!(first.status(), 503);
    // The origin is now held for 120 s, above the 60 s cap: a new request fails at once.
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(get("https://api.test/b"))
        .await
        .unwrap_err();
    match as_crate_error(&err) {
        Error::Throttled { retry_after } => {
            assert!(
                *retry_after > Duration::from_secs(119) && *retry_after <= Duration::from_secs(120)
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(script.count(), 1, "the held request was never sent");
}

#[tokio::test(start_paused = true)]
async fn r1_wait_past_deadline_fails_fast() {
    let script = Script::new([with_header(429, "retry-after", "10")]);
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .service(script.service());
    let mut req = get("https://api.test/a");
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(5)));
    let t0 = Instant::now();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(Instant::now(), t0);
    assert_eq!(script.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn r1_garbage_retry_after_is_ignored() {
    let script = Script::new([with_header(429, "retry-after", "soon, maybe")]);
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .service(script.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(script.count(), 1);
}

#[test]
fn r1_cap_above_one_hour_rejected() {
    assert!(RetryAfterLayer::builder()
        .max_wait(Duration::from_secs(3601))
        .build()
        .is_err());
    assert!(RetryAfterLayer::builder()
        .max_wait(Duration::ZERO)
        .build()
        .is_err());
    assert!(RetryAfterLayer::builder()
        .max_wait(Duration::from_secs(3600))
        .build()
        .is_ok());
}

// ---------- R2: exact waits, shared per origin ----------

#[tokio::test(start_paused = true)]
async fn r2_waits_exactly_retry_after_never_less() {
    for (header, value, want) in [
        ("retry-after", "7", Duration::from_secs(7)),
        ("retry-after-ms", "1500", Duration::from_millis(1500)),
        ("x-ms-retry-after-ms", "250", Duration::from_millis(250)),
    ] {
        let script = Script::new([with_header(503, header, value)]);
        let svc = ServiceBuilder::new()
            .layer(RetryAfterLayer::default())
            .service(script.service());
        let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(script.gaps(), vec![want], "{header}");
        assert_eq!(attempts(&resp), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn r2_largest_header_wins_on_the_wire() {
    let script = Script::new([Step::Status(
        429,
        vec![
            ("retry-after", "2".into()),
            ("retry-after-ms", "3500".into()),
            ("x-ms-retry-after-ms", "100".into()),
        ],
    )]);
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .service(script.service());
    svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(script.gaps(), vec![Duration::from_millis(3500)]);
}

#[tokio::test(start_paused = true)]
async fn r2_http_date_waits_until_that_date() {
    let at = std::time::SystemTime::now() + Duration::from_secs(30);
    let script = Script::new([with_header(503, "retry-after", httpdate::fmt_http_date(at))]);
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .service(script.service());
    svc.oneshot(get("https://api.test/a")).await.unwrap();
    let gap = script.gaps()[0];
    // HTTP-dates have whole seconds: the wait is within the second before the date.
    assert!(
        gap > Duration::from_secs(28) && gap <= Duration::from_secs(30),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn r2_origin_is_held_for_concurrent_and_new_requests() {
    let script = Script::new([with_header(429, "retry-after", "5")]);
    let layer = RetryAfterLayer::default();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(script.service());
    let t0 = Instant::now();
    let first = tokio::spawn(svc.clone().oneshot(get("https://api.test/a")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Same origin: held until t0 + 5 s. Other origin: sent at once.
    let same = tokio::spawn(svc.clone().oneshot(get("https://API.test:443/b")));
    let other = svc
        .clone()
        .oneshot(get("https://other.test/c"))
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(same.await.unwrap().unwrap().status(), 200);
    let calls = script.calls();
    let at = |path: &str| calls.iter().find(|c| c.2.ends_with(path)).unwrap().0 - t0;
    assert_eq!(at("/c"), Duration::from_secs(1));
    assert_eq!(at("/b"), Duration::from_secs(5), "held, not sent at 1 s");
    assert_eq!(layer.stats().held(), 1);
}

#[tokio::test(start_paused = true)]
async fn r2_hold_can_be_switched_off() {
    let script = Script::new([with_header(429, "retry-after", "5")]);
    let layer = RetryAfterLayer::builder()
        .hold_origin(false)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(script.service());
    let first = tokio::spawn(svc.clone().oneshot(get("https://api.test/a")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t1 = Instant::now();
    svc.clone()
        .oneshot(get("https://api.test/b"))
        .await
        .unwrap();
    assert_eq!(Instant::now(), t1);
    first.await.unwrap().unwrap();
}

// ---------- R3: exponential back-off ----------

#[tokio::test(start_paused = true)]
async fn r3_first_retry_at_least_5s_then_doubles_with_additive_jitter() {
    let script = Script::new([status(503), status(500), status(502)]);
    let svc = ServiceBuilder::new()
        .layer(ExpBackoffLayer::default())
        .service(script.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let gaps = script.gaps();
    assert_eq!(gaps.len(), 3);
    for (gap, base) in gaps.iter().zip([5u64, 10, 20]) {
        let base = Duration::from_secs(base);
        assert!(
            *gap >= base && *gap <= base.mul_f64(1.2),
            "{gap:?} vs {base:?}"
        );
    }
    assert_eq!(attempts(&resp), 4);
}

#[tokio::test(start_paused = true)]
async fn r3_at_most_three_retries_then_the_last_response() {
    let script = Script::default().then_always(status(503));
    let layer = no_jitter();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(script.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(script.count(), 4);
    assert_eq!(script.gaps(), [5, 10, 20].map(Duration::from_secs).to_vec());
    assert_eq!(attempts(&resp), 4);
    assert_eq!(layer.stats().retries(), 3);
    assert_eq!(layer.stats().give_ups(), 1);
}

#[tokio::test(start_paused = true)]
async fn r3_408_and_429_without_header_back_off_4xx_does_not() {
    for (code, calls) in [(408, 2), (429, 2), (400, 1), (401, 1), (404, 1)] {
        let script = Script::new([status(code)]);
        let svc = ServiceBuilder::new()
            .layer(no_jitter())
            .service(script.service());
        svc.oneshot(get("https://api.test/a")).await.unwrap();
        assert_eq!(script.count(), calls, "status {code}");
        if calls == 2 {
            assert_eq!(script.gaps(), vec![Duration::from_secs(5)]);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn r3_alone_treats_retry_after_as_a_lower_bound() {
    let script = Script::new([
        with_header(503, "retry-after", "12"),
        with_header(503, "retry-after", "1"),
    ]);
    let svc = ServiceBuilder::new()
        .layer(no_jitter())
        .service(script.service());
    svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(
        script.gaps(),
        vec![Duration::from_secs(12), Duration::from_secs(10)]
    );
}

#[tokio::test(start_paused = true)]
async fn r3_stacked_each_response_is_retried_by_exactly_one_layer() {
    // Recommended order: RetryAfter outside ExpBackoff (its retries bounded by a count of 3
    // here; by default only the total wait bounds them, see r10_*).
    let script = Script::default().then_always(with_header(503, "retry-after", "2"));
    let svc = ServiceBuilder::new()
        .layer(ra_3_retries())
        .layer(no_jitter())
        .service(script.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        script.count(),
        4,
        "3 retries by RetryAfterLayer only, not 4x4"
    );
    assert_eq!(
        script.gaps(),
        vec![Duration::from_secs(2); 3],
        "the header's wait, not max(5 s, 2 s)"
    );
    assert_eq!(attempts(&resp), 4);

    // Reversed order: the inner RetryAfterLayer gives up, the outer back-off leaves it alone.
    let script = Script::default().then_always(with_header(503, "retry-after", "2"));
    let svc = ServiceBuilder::new()
        .layer(no_jitter())
        .layer(ra_3_retries())
        .service(script.service());
    svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(script.count(), 4);

    // Without a header the back-off layer retries, and RetryAfterLayer leaves it alone.
    let script = Script::default().then_always(status(503));
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(no_jitter())
        .service(script.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(script.count(), 4);
    assert_eq!(attempts(&resp), 4);
}

fn ra_3_retries() -> RetryAfterLayer {
    RetryAfterLayer::builder().max_retries(3).build().unwrap()
}

// ---------- R4: timeouts ----------

#[tokio::test(start_paused = true)]
async fn r4_timed_out_attempt_is_retried_after_the_backoff_never_at_once() {
    let script = Script::new([Step::Hang]);
    let svc = ServiceBuilder::new()
        .layer(no_jitter())
        .layer(TimeoutLayer::new(Duration::from_secs(2)))
        .service(script.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Attempt 1 times out at 2 s; the retry comes 5 s after that.
    assert_eq!(script.gaps(), vec![Duration::from_secs(7)]);
    assert_eq!(Instant::now() - t0, Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn r4_timeout_is_a_typed_error() {
    let script = Script::default().then_always(Step::Hang);
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(300)))
        .service(script.service());
    let err = svc.oneshot(get("https://api.test/a")).await.unwrap_err();
    assert!(
        matches!(as_crate_error(&err), Error::Timeout { after } if *after == Duration::from_millis(300))
    );
}

#[tokio::test(start_paused = true)]
async fn r4_non_idempotent_not_retried_after_timeout_unless_opted_in() {
    let post = || {
        Request::post("https://api.test/a")
            .body(String::from("x"))
            .unwrap()
    };
    let script = Script::new([Step::Hang]);
    let svc = ServiceBuilder::new()
        .layer(no_jitter())
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(script.service());
    let err = svc.oneshot(post()).await.unwrap_err();
    assert!(matches!(as_crate_error(&err), Error::Timeout { .. }));
    assert_eq!(script.count(), 1);

    let script = Script::new([Step::Refused]);
    let svc = ServiceBuilder::new()
        .layer(no_jitter())
        .service(script.service());
    assert!(svc.oneshot(post()).await.is_err());
    assert_eq!(
        script.count(),
        1,
        "POST not retried after a connection error"
    );

    let script = Script::new([Step::Hang]);
    let opted_in = ExpBackoffLayer::builder()
        .retry_non_idempotent(true)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(opted_in)
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(script.service());
    assert_eq!(svc.oneshot(post()).await.unwrap().status(), 200);
    assert_eq!(script.count(), 2);
    assert_eq!(script.calls()[1].1, Method::POST);
}

#[tokio::test(start_paused = true)]
async fn r4_connect_error_retried_after_backoff() {
    let script = Script::new([Step::Refused, Step::Refused]);
    let svc = ServiceBuilder::new()
        .layer(no_jitter())
        .service(script.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        script.gaps(),
        vec![Duration::from_secs(5), Duration::from_secs(10)]
    );
}

// ---------- R5: budget ----------

#[tokio::test(start_paused = true)]
async fn r5_200_concurrent_calls_against_total_503_outage_stay_within_1_5x() {
    let script = Script::default().then_always(status(503));
    let layer = ExpBackoffLayer::default();
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(layer.clone())
        .service(script.service());
    let calls: Vec<_> = (0..200)
        .map(|i| tokio::spawn(svc.clone().oneshot(get(&format!("https://api.test/{i}")))))
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().status(), 503);
    }
    let ratio = script.count() as f64 / 200.0;
    println!("R5: 200 calls -> {} requests ({ratio:.2}x)", script.count());
    assert!(ratio <= 1.5, "{ratio}");
    assert!(layer.stats().budget_refusals() > 0);
}

#[tokio::test(start_paused = true)]
async fn r5_budget_can_be_tuned() {
    let script = Script::default().then_always(status(503));
    let layer = ExpBackoffLayer::builder()
        .budget(Some(
            RetryBudget::new(Duration::from_secs(10), 0.0, 0).unwrap(),
        ))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(script.service());
    svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(script.count(), 1, "an empty budget allows no retry");
    assert_eq!(layer.stats().budget_refusals(), 1);
}

// ---------- R6: bodies that cannot be copied ----------

#[tokio::test(start_paused = true)]
async fn r6_stream_body_is_sent_once() {
    type Body = BoxBody<bytes::Bytes, std::convert::Infallible>;
    let body: Body = BoxBody::new(http_body_util::Full::new(bytes::Bytes::from_static(b"x")));
    assert!(body.try_clone_body().is_none());
    let script = Script::default().then_always(status(503));
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(no_jitter())
        .service(script.service());
    let req = Request::put("https://api.test/a").body(body).unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(script.count(), 1);
    assert_eq!(attempts(&resp), 1);
}

// ---------- R7: attempts and tracing ----------

#[tokio::test(start_paused = true)]
async fn r7_attempts_in_extensions_and_retries_traced() {
    let capture = common::Capture::default();
    let _guard = capture.install();
    let script =
        Script::new([with_header(429, "retry-after", "1"), status(500)]).then_always(status(500));
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(no_jitter())
        .service(script.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(
        attempts(&resp),
        5,
        "1 + retry-after retry + 3 back-off retries"
    );
    assert_eq!(script.count(), 5);
    let log = capture.text();
    assert!(
        log.contains("retrying") && log.contains("layer=\"retry_after\""),
        "{log}"
    );
    assert!(
        log.contains("layer=\"exp_backoff\"") && log.contains("delay_ms=5000"),
        "{log}"
    );
    assert!(
        log.contains("giving up") && log.contains("max retries reached"),
        "{log}"
    );
}

/// R7 without a cost on the success path: a call answered at once carries no count (its
/// response's extensions stay empty, so nothing is allocated for it) and reads as one attempt;
/// a call that was retried carries the total.
#[tokio::test(start_paused = true)]
async fn r7_first_attempt_reads_as_one_without_a_stamp_and_retries_carry_the_total() {
    let script = Script::new([status(200), status(503)]).then_always(status(200));
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(no_jitter())
        .service(script.service());
    let first = svc
        .clone()
        .oneshot(get("https://api.test/a"))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert!(
        first.extensions().get::<Attempts>().is_none(),
        "a first attempt is not stamped"
    );
    assert_eq!(attempts(&first), 1);
    let retried = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(retried.status(), 200);
    assert_eq!(retried.extensions().get::<Attempts>(), Some(&Attempts(2)));
    assert_eq!(script.count(), 3);
}

#[test]
fn layers_services_and_futures_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<RetryAfterLayer>();
    assert_send_sync::<ExpBackoffLayer>();
    assert_send_sync::<TimeoutLayer>();
    type Inner = tower::util::BoxCloneSyncService<
        Request<String>,
        http::Response<String>,
        resilient_auth::BoxError,
    >;
    assert_send_sync::<resilient_auth::layer::RetryAfter<Inner>>();
    assert_send::<<resilient_auth::layer::RetryAfter<Inner> as Service<Request<String>>>::Future>();
    assert_send::<<resilient_auth::layer::ExpBackoff<Inner> as Service<Request<String>>>::Future>();
    assert_send::<<resilient_auth::layer::Timeout<Inner> as Service<Request<String>>>::Future>();
}

// ---------- R8–R10: one wait policy, one hold per origin ----------

#[tokio::test(start_paused = true)]
async fn r9_retry_after_zero_counts_as_absent_and_is_backed_off() {
    // The default stack sent 4 requests in 4 ms for one call before.
    let script = Script::new([with_header(503, "retry-after", "0"), status(200)]);
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(no_jitter())
        .service(script.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(script.gaps(), vec![Duration::from_secs(5)]);
}

#[tokio::test(start_paused = true)]
async fn r8_a_huge_retry_after_never_panics_and_fails_fast() {
    let script = Script::new([with_header(429, "retry-after", "99999999999999999999")])
        .then_always(status(200));
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(no_jitter())
        .service(script.service());
    let t0 = Instant::now();
    let resp = svc
        .clone()
        .oneshot(get("https://api.test/a"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 429, "returned as it is, not slept");
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let err = svc.oneshot(get("https://api.test/b")).await.unwrap_err();
    let err = err.downcast_ref::<Error>().unwrap();
    assert!(
        matches!(err, Error::Throttled { retry_after } if *retry_after >= Duration::from_secs(3600)),
        "{err:?}"
    );
    assert_eq!(script.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn r10_a_call_is_not_failed_while_the_server_keeps_asking_it_to_wait() {
    // The API answers 429 Retry-After: 3 for 10 s: the call waits it out (4 retries), it does
    // not fail after a count of 3.
    let script = Script::new([
        with_header(429, "retry-after", "3"),
        with_header(429, "retry-after", "3"),
        with_header(429, "retry-after", "3"),
        with_header(429, "retry-after", "3"),
    ])
    .then_always(status(200));
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(no_jitter())
        .service(script.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(attempts(&resp), 5);
    assert_eq!(script.gaps(), vec![Duration::from_secs(3); 4]);

    // Bounded by the total wait: with a cap of 7 s the call gives up after 6 s of waiting.
    let script = Script::default().then_always(with_header(429, "retry-after", "3"));
    let svc = ServiceBuilder::new()
        .layer(
            RetryAfterLayer::builder()
                .max_wait(Duration::from_secs(7))
                .build()
                .unwrap(),
        )
        .layer(no_jitter())
        .service(script.service());
    let resp = svc.oneshot(get("https://api.test/a")).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(script.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn r10_a_backoff_retry_waits_out_the_origins_retry_after_hold() {
    // Call A gets a 503 (back-off: retry at 5 s); 1 s later call B to the same origin gets
    // 429 Retry-After: 20. A's retry must wait for the hold (21 s), not go at 5 s.
    let script = Script::new([
        status(503),
        with_header(429, "retry-after", "20"),
        status(200),
        status(200),
    ]);
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(no_jitter())
        .service(script.service());
    let t0 = Instant::now();
    let a = tokio::spawn(svc.clone().oneshot(get("https://api.test/a")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = tokio::spawn(svc.oneshot(get("https://api.test/b")));
    assert_eq!(a.await.unwrap().unwrap().status(), 200);
    assert_eq!(b.await.unwrap().unwrap().status(), 200);
    let times: Vec<_> = script
        .calls()
        .iter()
        .map(|(t, _, path)| (t.duration_since(t0).as_secs(), path.clone()))
        .collect();
    assert!(times[2].0 >= 21 && times[3].0 >= 21, "{times:?}");
}

#[tokio::test(start_paused = true)]
async fn r4_a_zero_timeout_is_a_configuration_error_and_sends_nothing() {
    assert!(matches!(
        TimeoutLayer::try_new(Duration::ZERO),
        Err(Error::Config(_))
    ));
    assert!(TimeoutLayer::try_new(Duration::from_millis(1)).is_ok());
    let script = Script::default().then_always(status(200));
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::ZERO))
        .service(script.service());
    let err = svc.oneshot(get("https://api.test/a")).await.unwrap_err();
    assert!(
        matches!(err.downcast_ref::<Error>(), Some(Error::Config(_))),
        "{err}"
    );
    assert_eq!(script.count(), 0);
}
