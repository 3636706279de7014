//! The success path allocates nothing beyond what inserting any header costs (issues #3, #14),
//! measured with dhat's counting global allocator: `AuthLayer` alone (with and without the
//! 401-resend copy), and all four layers stacked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::FixedToken;
use futures_util::future::FutureExt;
use http::{HeaderValue, Request, Response};
use resilient_auth::{
    Attempts, AuthLayer, BoxError, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer, TokenCache,
};
use tower::{Layer, Service};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn inner() -> impl Service<
    Request<()>,
    Response = Response<()>,
    Error = BoxError,
    Future = std::future::Ready<Result<Response<()>, BoxError>>,
> + Clone {
    tower::service_fn(|_req: Request<()>| std::future::ready(Ok::<_, BoxError>(Response::new(()))))
}

/// dhat counts for the whole process: one measuring test at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Heap blocks allocated by one run of `f`: the fewest over five runs, after a first that warms
/// up lazily built state. dhat counts the whole process, and the test harness's own thread may
/// allocate meanwhile (when another test in this binary ends); that only ever adds.
fn allocations(mut f: impl FnMut()) -> u64 {
    f();
    (0..5)
        .map(|_| {
            let before = dhat::HeapStats::get().total_blocks;
            f();
            dhat::HeapStats::get().total_blocks - before
        })
        .min()
        .unwrap_or(0)
}

/// Runs `test` alone (dhat counts the whole process), under dhat, inside a runtime, with a cache
/// that holds a token and the static header value of the baselines.
fn measured(test: impl FnOnce(&TokenCache, &HeaderValue)) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let tokens = TokenCache::new(FixedToken, ["https://api.test/.default"]);
    rt.block_on(tokens.token()).unwrap();
    test(&tokens, &HeaderValue::from_static("Bearer a-token"));
}

/// The baseline: heap blocks per request from the inner service with a static header inserted.
fn header_insert(value: &HeaderValue, request: impl Fn() -> Request<()>) -> u64 {
    let mut plain = inner();
    allocations(|| {
        let mut req = request();
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, value.clone());
        drop(plain.call(req).now_or_never().unwrap().unwrap());
    })
}

#[test]
fn a1_hot_path_allocates_no_more_than_a_plain_header_insert() {
    measured(|tokens, static_value| {
        let baseline = header_insert(static_value, || {
            Request::get("https://api.test/a").body(()).unwrap()
        });

        let mut no_copy = AuthLayer::new(tokens.clone())
            .resend_on_challenge(false)
            .layer(inner());
        let auth = allocations(|| {
            let req = Request::get("https://api.test/a").body(()).unwrap();
            let resp = no_copy.call(req).now_or_never().unwrap().unwrap();
            drop(resp);
        });

        let mut with_copy = AuthLayer::new(tokens.clone()).layer(inner());
        let auth_resend = allocations(|| {
            let req = Request::get("https://api.test/a").body(()).unwrap();
            let resp = with_copy.call(req).now_or_never().unwrap().unwrap();
            drop(resp);
        });
        println!("allocations per request: plain header insert {baseline}, AuthLayer {auth}, AuthLayer with the resend copy {auth_resend}");
        assert_eq!(auth, baseline, "the cached-token path adds no allocation");
        assert_eq!(
            auth_resend, baseline,
            "the resend copy of a request without headers of its own allocates nothing (it is taken before the token goes in)"
        );
        assert_eq!(tokens.stats().idp_requests, 1);
    });
}

/// B1s's stack (RetryAfter, ExpBackoff, Auth, Timeout) on the success path allocates the blocks
/// a bare service with a header insert allocates, and nothing else (issue #14, must-show 3): no
/// attempt count in the response's empty extensions (R7: one attempt is the absence of a
/// count), no request marker, no map copied into the request copies, no timer, no boxed future.
#[test]
fn b1s_four_layers_allocate_no_more_than_the_inner_service_and_the_header_insert() {
    measured(|tokens, static_value| {
        let baseline = header_insert(static_value, || {
            Request::get("https://api.test/a").body(()).unwrap()
        });

        let mut four = RetryAfterLayer::default().layer(ExpBackoffLayer::default().layer(
            AuthLayer::new(tokens.clone()).layer(TimeoutLayer::new(Duration::from_secs(10)).layer(
                tower::service_fn(|req: Request<()>| {
                    // The token went in.
                    let sent = req.headers().contains_key(http::header::AUTHORIZATION);
                    std::future::ready(if sent {
                        Ok::<_, BoxError>(Response::new(()))
                    } else {
                        Err("no token".into())
                    })
                }),
            )),
        ));
        let stacked = allocations(|| {
            let req = Request::get("https://api.test/a").body(()).unwrap();
            let resp = four.call(req).now_or_never().unwrap().unwrap();
            // One attempt, read from the absence of a count (R7): the map was left alone.
            assert!(resp.extensions().is_empty());
            assert_eq!(Attempts::of(resp.extensions()), 1);
            drop(resp);
        });
        println!(
            "allocations per request: inner service + header insert {baseline}, four layers {stacked}"
        );
        assert_eq!(stacked, baseline);
        assert_eq!(tokens.stats().idp_requests, 1);
    });
}

/// A request with headers of its own: its headers are copied once per call, however many of
/// the layers that may resend it are stacked (issue #14). With values of static bytes the copy
/// is two blocks (the list and its shared count); with values parsed from strings, the first
/// copy of each also turns its bytes into shared ones (`bytes` allocates a count for each), and
/// the four layers still take exactly what `AuthLayer` alone takes. (Each layer copying them
/// took two blocks more per layer.)
#[test]
fn b1s_four_layers_copy_a_requests_headers_once() {
    measured(|tokens, static_value| {
        let parsed = || {
            Request::get("https://api.test/a")
                .header("accept", "application/json")
                .header("x-request-id", "9f2c4a1e-5b7d-4c3e")
                .header("user-agent", "test/1.0")
                .body(())
                .unwrap()
        };
        let fixed = || {
            let mut req = Request::get("https://api.test/a").body(()).unwrap();
            let h = req.headers_mut();
            h.insert("accept", HeaderValue::from_static("application/json"));
            h.insert(
                http::HeaderName::from_static("x-request-id"),
                HeaderValue::from_static("9f2c4a1e-5b7d-4c3e"),
            );
            h.insert("user-agent", HeaderValue::from_static("test/1.0"));
            req
        };
        let mut auth = AuthLayer::new(tokens.clone()).layer(inner());
        let mut four = RetryAfterLayer::default().layer(
            ExpBackoffLayer::default().layer(
                AuthLayer::new(tokens.clone())
                    .layer(TimeoutLayer::new(Duration::from_secs(10)).layer(inner())),
            ),
        );
        for (kind, request) in [
            ("static", &fixed as &dyn Fn() -> Request<()>),
            ("parsed", &parsed),
        ] {
            let baseline = header_insert(static_value, request);
            let alone = allocations(|| drop(auth.call(request()).now_or_never().unwrap().unwrap()));
            let stacked =
                allocations(|| drop(four.call(request()).now_or_never().unwrap().unwrap()));
            println!(
                "allocations per request with 3 {kind} headers: inner service + header insert {baseline}, AuthLayer {alone}, four layers {stacked}"
            );
            if kind == "static" {
                assert_eq!(alone, baseline + 2, "AuthLayer's copy of the headers");
            } else {
                assert!(
                    alone > baseline + 2,
                    "the first copy shares the parsed bytes"
                );
            }
            assert_eq!(
                stacked, alone,
                "one copy of the headers for the four layers"
            );
        }
    });
}
