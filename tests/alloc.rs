//! The AuthLayer hot path (a usable cached token) allocates nothing beyond what inserting any
//! header costs (issue #3), measured with a counting global allocator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use http::{HeaderValue, Request, Response};
use resilient_auth::{
    AuthLayer, BoxError, CredentialIdentity, Error, TokenCache, TokenCredential, TokenRequest,
    TokenResponse,
};
use tower::{Layer, Service};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[derive(Debug)]
struct Fixed;

impl TokenCredential for Fixed {
    fn get_token<'a>(&'a self, _: &'a TokenRequest) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        async { Ok(TokenResponse::new("a-token", Duration::from_secs(3600))) }.boxed()
    }
    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity::new("fixed", "https://login.microsoftonline.com")
    }
}

fn inner() -> impl Service<
    Request<()>,
    Response = Response<()>,
    Error = BoxError,
    Future = std::future::Ready<Result<Response<()>, BoxError>>,
> + Clone {
    tower::service_fn(|_req: Request<()>| std::future::ready(Ok::<_, BoxError>(Response::new(()))))
}

/// Heap blocks allocated by one run of `f` (the test is alone in its binary, so nothing else
/// allocates meanwhile); the first run warms up lazily built state.
fn allocations(mut f: impl FnMut()) -> u64 {
    f();
    let before = dhat::HeapStats::get().total_blocks;
    f();
    dhat::HeapStats::get().total_blocks - before
}

#[test]
fn a1_hot_path_allocates_no_more_than_a_plain_header_insert() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let tokens = TokenCache::new(Fixed, ["https://api.test/.default"]);
    rt.block_on(tokens.token()).unwrap();
    let static_value = HeaderValue::from_static("Bearer a-token");

    let mut plain = inner();
    let baseline = allocations(|| {
        let mut req = Request::get("https://api.test/a").body(()).unwrap();
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, static_value.clone());
        let resp = plain.call(req).now_or_never().unwrap().unwrap();
        drop(resp);
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
    assert!(
        auth_resend > auth,
        "the resend copy is the only extra allocation"
    );
    assert_eq!(tokens.stats().idp_requests, 1);
}
