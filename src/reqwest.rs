//! `reqwest_middleware::Middleware` impls of the layers (feature `reqwest`).
//!
//! Errors produced by the layers themselves ([`Error::Timeout`], [`Error::Throttled`]) come back
//! as `reqwest_middleware::Error::Middleware`; recover them with
//! `err.downcast_ref::<resilient_auth::Error>()` on the inner `anyhow::Error`.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use http::{Extensions, HeaderMap, StatusCode};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::layer::auth::{send_with_challenge, token_for};
use crate::layer::retry::{
    outer_retry_after_gate, retry_after_outside, RetryAfterMark, Scope, TowerRetryPolicy, NO_MARK,
};
use crate::layer::timeout::Timed;
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
    /// Whether a copy of the request is lent to this call (see [`Lend`]).
    copy: bool,
}

/// A call's copy of its request: the one lent on this thread while the call's future runs (see
/// [`Lend`]), read when a resend needs it.
struct Lent;

impl Transport for ReqwestTransport<'_> {
    type Req = Request;
    type Resp = Response;
    type Err = reqwest_middleware::Error;

    type Copy = Lent;

    fn try_copy(&mut self, _req: &Request) -> Option<Lent> {
        // Taken (or found lent by a layer outside) when the middleware was called.
        std::mem::take(&mut self.copy).then_some(Lent)
    }

    fn resend(_copy: &Lent) -> Option<Request> {
        with_lent(Request::try_clone).flatten()
    }

    fn into_request(copy: Lent) -> Option<Request> {
        Self::resend(&copy)
    }

    fn origin_key(req: &Request) -> u64 {
        Origin::of_url(req.url()).gate_key()
    }

    fn copy_origin_key(_copy: &Lent) -> u64 {
        // The copy is lent whenever this runs (within the call's future); 0, a key no origin
        // has, only if it were not.
        with_lent(Self::origin_key).unwrap_or(0)
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

// ---- One request copy per call, however many layers are stacked ----
//
// `reqwest::Request::try_clone` is the most expensive thing these middlewares do on the success
// path (over a thousand instructions: it copies the URL and the header map, and gives the copy
// an extensions map of its own even when it holds nothing). A retry layer and the 401 resend
// each need a copy, so a stack of three would take three. Instead the outermost of them takes
// one and lends it, on the thread, while its future runs: the middlewares after it are called
// and polled from within that future. A layer inside uses the lent copy when the request it was
// handed is the same request — nothing in between changed it — and takes (and lends) its own
// otherwise.

thread_local! {
    /// The request copy lent by the innermost layer that owns one and is running now.
    static LENT: Cell<Option<Box<Request>>> = const { Cell::new(None) };
}

/// Runs `f` on the lent copy, if one is lent.
fn with_lent<R>(f: impl FnOnce(&Request) -> R) -> Option<R> {
    LENT.with(|cell| {
        let lent = cell.take();
        let r = lent.as_deref().map(f);
        cell.set(lent);
        r
    })
}

/// Whether a resend built from `copy` is `req`: the same method, URL, version, timeout, headers
/// (values and their sensitive marks, which keep them out of `Debug` output; see
/// [`same_headers`]), and the same body
/// (the same buffer: a copy shares its original's bytes). The extensions are not visible
/// outside reqwest; between two middlewares only the timeout (compared) can change them.
fn same_request(copy: &Request, req: &Request) -> bool {
    let same_body = match (copy.body(), req.body()) {
        (None, None) => true,
        (Some(a), Some(b)) => match (a.as_bytes(), b.as_bytes()) {
            (Some(a), Some(b)) => std::ptr::eq(a, b),
            _ => false,
        },
        _ => false,
    };
    same_body
        && copy.method() == req.method()
        && copy.version() == req.version()
        && copy.timeout() == req.timeout()
        && copy.url() == req.url()
        && same_headers(copy.headers(), req.headers())
}

/// Whether two header maps hold the same names and values, with the same sensitive marks, in
/// the same order. Maps that list the same headers in another order count as different (the
/// layer then takes its own copy): compared in order, no header name is hashed.
fn same_headers(a: &HeaderMap, b: &HeaderMap) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Most requests a client builds carry no headers of their own (the client adds its default
    // headers later): two empty maps are the same without setting up their iterators.
    a.is_empty()
        || a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| {
            ka == kb && va == vb && va.is_sensitive() == vb.is_sensitive()
        })
}

/// A middleware's copy of its request: whether it has one, and the copy it must lend itself
/// (`None` when a layer outside lends the same request, or when the body is a stream that
/// cannot be copied, rule R6).
fn copy_for(req: &Request) -> (bool, Option<Box<Request>>) {
    if with_lent(|lent| same_request(lent, req)) == Some(true) {
        return (true, None);
    }
    match req.try_clone() {
        Some(copy) => (true, Some(Box::new(copy))),
        None => (false, None),
    }
}

/// Lends `slot`'s copy on the thread until dropped (a panic included), then takes it back and
/// restores what was lent before.
struct Lend<'a> {
    slot: &'a mut Option<Box<Request>>,
    prev: Option<Option<Box<Request>>>,
}

impl<'a> Lend<'a> {
    fn enter(slot: &'a mut Option<Box<Request>>) -> Self {
        let prev = slot
            .take()
            .map(|copy| LENT.with(|cell| cell.replace(Some(copy))));
        Lend { slot, prev }
    }
}

impl Drop for Lend<'_> {
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take() {
            *self.slot = LENT.with(|cell| cell.replace(prev));
        }
    }
}

pin_project_lite::pin_project! {
    /// A middleware's future, polled with its `RetryAfterLayer` mark on the thread (rule R10,
    /// and each response retried once) and with its request copy lent (see [`Lend`]): the
    /// middlewares after it are called and polled from within it.
    pub(crate) struct Scoped<F> {
        #[pin]
        fut: F,
        mark: RetryAfterMark,
        lend: Option<Box<Request>>,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _mark = Scope::enter(*this.mark);
        let _lend = Lend::enter(this.lend);
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
    let (copy, lend) = copy_for(&req);
    let transport = ReqwestTransport {
        next,
        extensions,
        copy,
    };
    // Built in its box: `Box::pin(Scoped { .. })` builds the future (several hundred bytes) on
    // the stack and then copies it into the box (the copy was 133 instructions per call; the
    // call now costs 59 fewer, callgrind).
    let scoped = Box::write(
        Box::new_uninit(),
        Scoped {
            fut: driver::run(policy.clone(), transport, req, ctx),
            mark: policy.mark(),
            lend,
        },
    );
    let scoped: Pin<Box<_>> = Box::into_pin(scoped);
    scoped
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
        // The tower layer's timed attempt (its timer starts when the attempt is first pending).
        let attempt = Timed::new(next.run(req, extensions), after);
        Box::pin(
            attempt
                .map(|answer| answer.unwrap_or_else(|not| Err(middleware_error(not.into_error())))),
        )
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
        match self.decide_url(req.url(), req.headers()) {
            Decision::Refuse(e) => return Box::pin(std::future::ready(Err(middleware_error(e)))),
            Decision::Skip => return next.run(req, extensions),
            Decision::Attach => {}
        }
        let tokens = self.tokens();
        let resend = self.resends();
        let (copy, lend) = if resend {
            copy_for(&req)
        } else {
            (false, None)
        };
        match tokens.cached() {
            Some(token) => {
                let transport = ReqwestTransport {
                    next,
                    extensions,
                    copy,
                };
                let fut =
                    send_with_challenge(tokens, transport, req, token, resend, middleware_error);
                match lend {
                    None => Box::pin(fut),
                    lend => Box::pin(Scoped {
                        fut,
                        mark: NO_MARK,
                        lend,
                    }),
                }
            }
            None => {
                let deadline = extensions.get::<Deadline>().copied();
                Box::pin(Scoped {
                    fut: async move {
                        let token = token_for(tokens, deadline)
                            .await
                            .map_err(middleware_error)?;
                        let transport = ReqwestTransport {
                            next,
                            extensions,
                            copy,
                        };
                        send_with_challenge(tokens, transport, req, token, resend, middleware_error)
                            .await
                    },
                    mark: NO_MARK,
                    lend,
                })
            }
        }
    }
}
