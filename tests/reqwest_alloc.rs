//! B2's stack on reqwest-middleware allocates, per call, what one static `Authorization`
//! middleware does, plus one boxed future per further middleware (reqwest-middleware's API
//! returns a boxed future from every `handle`) and one copy of the request — however many of
//! the layers may resend it (issue 14). Counted with dhat's allocator; the last middleware
//! answers without the network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Answer, FixedToken};
use http::{Extensions, HeaderValue};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use resilient_auth::{AuthLayer, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer, TokenCache};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The baseline: one middleware that inserts a static header.
struct StaticAuth(HeaderValue);

#[async_trait::async_trait]
impl Middleware for StaticAuth {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, self.0.clone());
        next.run(req, extensions).await
    }
}

fn request(client: &ClientWithMiddleware) -> reqwest::Request {
    client
        .post("https://api.example.com/items")
        .header("content-type", "application/json")
        .body(r#"{"name":"x"}"#)
        .build()
        .unwrap()
}

/// Heap blocks allocated by one run of `f` (after a first run that warms lazily built state).
fn blocks(
    rt: &tokio::runtime::Runtime,
    mut f: impl FnMut() -> reqwest::Request,
    client: &ClientWithMiddleware,
) -> u64 {
    let mut once = || {
        let req = f();
        let resp = rt.block_on(client.execute(req)).unwrap();
        assert_eq!(resp.status(), 200);
    };
    once();
    let before = dhat::HeapStats::get().total_blocks;
    once();
    dhat::HeapStats::get().total_blocks - before
}

#[test]
fn b2_stacked_layers_take_one_request_copy_per_call() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let tokens = TokenCache::new(FixedToken, ["https://api.example.com/.default"]);
    rt.block_on(tokens.token()).unwrap();
    let plain = reqwest::Client::new();

    let one = ClientBuilder::new(plain.clone())
        .with(StaticAuth(HeaderValue::from_static("Bearer a-token")))
        .with(Answer)
        .build();
    let four = ClientBuilder::new(plain.clone())
        .with(RetryAfterLayer::default())
        .with(ExpBackoffLayer::default())
        .with(AuthLayer::new(tokens.clone()))
        .with(TimeoutLayer::new(Duration::from_secs(10)))
        .with(Answer)
        .build();

    // What one copy of a new request costs (its first copy also moves the body's bytes into a
    // shared buffer).
    let copy_blocks = || {
        let req = request(&one);
        let before = dhat::HeapStats::get().total_blocks;
        drop(req.try_clone().unwrap());
        dhat::HeapStats::get().total_blocks - before
    };
    copy_blocks();
    let copy = copy_blocks();
    let baseline = blocks(&rt, || request(&one), &one);
    let stacked = blocks(&rt, || request(&four), &four);
    println!(
        "heap blocks per call: one static middleware {baseline}, four layers {stacked}; \
         one request copy {copy}"
    );
    // Three more boxed futures, the copy and the box it is lent in.
    assert_eq!(stacked, baseline + 3 + copy + 1);
    assert_eq!(tokens.stats().idp_requests, 1);
}
