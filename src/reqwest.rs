//! `reqwest_middleware::Middleware` impls of the layers (feature `reqwest`).
//!
//! Errors produced by the layers themselves ([`Error::Timeout`], [`Error::Throttled`]) come back
//! as `reqwest_middleware::Error::Middleware`; recover them with
//! `err.downcast_ref::<resilient_auth::Error>()` on the inner `anyhow::Error`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Extensions, HeaderMap, StatusCode};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::layer::auth::{send_with_challenge, token_for};
use crate::layer::retry::{
    outer_retry_after_gate, retry_after_outside, RetryAfterMark, Scope, TowerRetryPolicy,
};
use crate::layer::{AuthLayer, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer};
use crate::origin::{Decision, Origin};
use crate::retry::classify::{classify_error, is_idempotent, Deadline, ErrorKind};
use crate::retry::driver::{self, CallCtx, Transport};
use crate::retry::throttle::ThrottleGate;
use crate::Error;

/// Sends through the rest of a reqwest-middleware chain.
struct ReqwestTransport<'a> {
    next: Next<'a>,
    extensions: &'a mut Extensions,
}

impl Transport for ReqwestTransport<'_> {
    type Req = Request;
    type Resp = Response;
    type Err = reqwest_middleware::Error;

    type Copy = Request;

    fn try_copy(req: &Request) -> Option<Request> {
        req.try_clone()
    }

    fn resend(copy: &Request) -> Option<Request> {
        copy.try_clone()
    }

    fn into_request(copy: Request) -> Request {
        copy
    }

    fn origin_key(req: &Request) -> u64 {
        Origin::of_url(req.url()).gate_key()
    }

    fn copy_origin_key(copy: &Request) -> u64 {
        Self::origin_key(copy)
    }

    fn send(&mut self, req: Request) -> impl Future<Output = Result<Response, Self::Err>> + Send {
        self.next.clone().run(req, self.extensions)
    }

    fn req_headers_mut(req: &mut Request) -> &mut HeaderMap {
        req.headers_mut()
    }

    fn head(resp: &Response) -> (StatusCode, &HeaderMap, &Extensions) {
        (resp.status(), resp.headers(), resp.extensions())
    }

    fn extensions_mut(resp: &mut Response) -> &mut Extensions {
        resp.extensions_mut()
    }

    fn outer_gate(&self, _req: &Request) -> Option<Arc<ThrottleGate>> {
        outer_retry_after_gate()
    }

    fn error_kind(err: &Self::Err) -> ErrorKind {
        reqwest_error_kind(err)
    }

    fn throttled(retry_after: Duration) -> Self::Err {
        reqwest_middleware::Error::middleware(Error::Throttled { retry_after })
    }
}

pub(crate) fn reqwest_error_kind(err: &reqwest_middleware::Error) -> ErrorKind {
    match err {
        reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => ErrorKind::Timeout,
        reqwest_middleware::Error::Reqwest(e) if e.is_connect() => ErrorKind::Connect,
        reqwest_middleware::Error::Reqwest(e) => classify_error(e),
        reqwest_middleware::Error::Middleware(e) => {
            let e: &(dyn std::error::Error + Send + Sync + 'static) = e.as_ref();
            classify_error(e)
        }
    }
}

/// The call's context; the origin key is hashed later, only if it is needed (see
/// [`driver::run`]).
fn reqwest_ctx(req: &Request, extensions: &Extensions) -> CallCtx {
    CallCtx {
        origin: 0,
        idempotent: is_idempotent(req.method()),
        deadline: extensions.get::<Deadline>().map(|d| d.0),
        retry_after_outside: retry_after_outside(),
    }
}

pin_project_lite::pin_project! {
    /// A future polled with a `RetryAfterLayer`'s mark on the thread (the reqwest-middleware
    /// stack: the middlewares after it are called and polled from within its future).
    pub(crate) struct Marked<F> {
        #[pin]
        fut: F,
        mark: RetryAfterMark,
    }
}

impl<F> Marked<F> {
    pub(crate) fn new(fut: F, mark: RetryAfterMark) -> Self {
        Marked { fut, mark }
    }
}

impl<F: Future> Future for Marked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _scope = Scope::enter(*this.mark);
        this.fut.poll(cx)
    }
}

/// The boxed future a middleware returns (what `#[async_trait]` would produce).
type HandleFuture<'a> =
    Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'a>>;

// The `Middleware` impls below are written out instead of with `#[async_trait]`: the
// synchronous preparation happens before the future is built, so the one allocation per call
// and layer holds only what must live across the await (and stays on the allocator's fast path).

fn handle_retry<'a, P: TowerRetryPolicy>(
    policy: &P,
    req: Request,
    extensions: &'a mut Extensions,
    next: Next<'a>,
) -> HandleFuture<'a> {
    let ctx = reqwest_ctx(&req, extensions);
    policy.on_call();
    let transport = ReqwestTransport { next, extensions };
    // A `RetryAfterLayer` marks the thread while its future runs: the middlewares after it
    // are called and polled from within it (rule R10, and each response retried once).
    Box::pin(Marked::new(
        driver::run(policy.clone(), transport, req, ctx),
        policy.mark(),
    ))
}

impl Middleware for RetryAfterLayer {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        req: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> HandleFuture<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        handle_retry(self, req, extensions, next)
    }
}

impl Middleware for ExpBackoffLayer {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        req: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> HandleFuture<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        handle_retry(self, req, extensions, next)
    }
}

impl Middleware for TimeoutLayer {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        req: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> HandleFuture<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        let after = self.timeout();
        if after.is_zero() {
            let e = crate::layer::timeout::zero_timeout_error();
            return Box::pin(std::future::ready(Err(middleware_error(e))));
        }
        let attempt = tokio::time::timeout(after, next.run(req, extensions));
        Box::pin(async move {
            match attempt.await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(after_ms = after.as_millis() as u64, "attempt timed out");
                    Err(reqwest_middleware::Error::middleware(Error::Timeout {
                        after,
                    }))
                }
            }
        })
    }
}

fn middleware_error(e: Error) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(e)
}

impl Middleware for AuthLayer {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        req: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> HandleFuture<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        match self.decide(Origin::of_url(req.url()), req.headers()) {
            Decision::Refuse(e) => return Box::pin(std::future::ready(Err(middleware_error(e)))),
            Decision::Skip => return next.run(req, extensions),
            Decision::Attach => {}
        }
        let tokens = self.tokens();
        let resend = self.resends();
        match tokens.cached() {
            Some(token) => {
                let transport = ReqwestTransport { next, extensions };
                Box::pin(send_with_challenge(
                    tokens,
                    transport,
                    req,
                    token,
                    resend,
                    middleware_error,
                ))
            }
            None => {
                let deadline = extensions.get::<Deadline>().copied();
                Box::pin(async move {
                    let token = token_for(tokens, deadline)
                        .await
                        .map_err(middleware_error)?;
                    let transport = ReqwestTransport { next, extensions };
                    send_with_challenge(tokens, transport, req, token, resend, middleware_error)
                        .await
                })
            }
        }
    }
}
