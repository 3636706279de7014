//! The boxed future each reqwest-middleware layer returns stays small enough for the
//! allocator's fast path (issue 14).
//!
//! `reqwest_middleware::Middleware::handle` must return a boxed future, so every call allocates
//! one per layer. glibc's malloc serves blocks of up to 1,032 bytes from a per-thread cache
//! (tcache); a larger block takes the locked arena path, which cost the four layers about 2,000
//! instructions per request (callgrind, `benches/hot_path` B2). The retry layers' futures were
//! 1,128 bytes and `AuthLayer`'s 1,064: an `async fn` keeps each argument twice
//! (rust-lang/rust#62958), and a `reqwest::Request` is a few hundred bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Answer, FixedToken};
use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use resilient_auth::{AuthLayer, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer, TokenCache};

/// glibc's largest request size served from the per-thread cache (64 bins of 16 bytes).
const TCACHE_MAX: usize = 1032;

type Sizes = Arc<Mutex<Vec<(&'static str, usize)>>>;

/// Records the size of the future the wrapped middleware returns.
struct Probe<M> {
    name: &'static str,
    inner: M,
    sizes: Sizes,
}

#[async_trait::async_trait]
impl<M: Middleware> Middleware for Probe<M> {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let fut = self.inner.handle(req, extensions, next);
        let size = std::mem::size_of_val(&*fut);
        self.sizes.lock().unwrap().push((self.name, size));
        fut.await
    }
}

fn probe<M>(name: &'static str, inner: M, sizes: &Sizes) -> Probe<M> {
    Probe {
        name,
        inner,
        sizes: sizes.clone(),
    }
}

#[tokio::test]
async fn b2_each_layers_boxed_future_fits_the_allocators_per_thread_cache() {
    let tokens = TokenCache::new(FixedToken, ["https://api.example.com/.default"]);
    tokens.token().await.unwrap();
    let sizes = Sizes::default();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(probe("RetryAfterLayer", RetryAfterLayer::default(), &sizes))
        .with(probe("ExpBackoffLayer", ExpBackoffLayer::default(), &sizes))
        .with(probe("AuthLayer", AuthLayer::new(tokens.clone()), &sizes))
        .with(probe(
            "TimeoutLayer",
            TimeoutLayer::new(Duration::from_secs(10)),
            &sizes,
        ))
        .with(Answer)
        .build();
    // A request with a body and headers of its own, as a real call has.
    let resp = client
        .post("https://api.example.com/items")
        .header("content-type", "application/json")
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sizes = sizes.lock().unwrap().clone();
    assert_eq!(sizes.len(), 4, "{sizes:?}");
    for (layer, size) in sizes {
        assert!(
            size <= TCACHE_MAX,
            "{layer}'s future is {size} bytes, more than the {TCACHE_MAX} the allocator serves \
             from its per-thread cache"
        );
    }
}
