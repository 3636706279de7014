//! The tower service shared by [`RetryAfterLayer`](crate::RetryAfterLayer) and
//! [`ExpBackoffLayer`](crate::ExpBackoffLayer).
//!
//! The first attempt runs inside a hand-written future with no allocation; only when an
//! outcome must be retried (or the origin is held) does the call move into a boxed future.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Extensions, HeaderMap, Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::body::{Offering, RequestCopy, TryCloneBody};
use crate::origin::Origin;
use crate::retry::classify::{classify_error, is_idempotent, Deadline, ErrorKind};
use crate::retry::driver::{self, CallCtx, Decision, Progress, RetryPolicy, Transport};
use crate::retry::policy::retryable_status;
use crate::retry::throttle::ThrottleGate;
use crate::{BoxError, Error};

/// A retrying service: [`RetryAfter`](crate::layer::RetryAfter) or
/// [`ExpBackoff`](crate::layer::ExpBackoff), depending on the policy `P`.
pub struct RetryService<S, P> {
    inner: S,
    shared: Arc<Shared<S, P>>,
}

/// What every call of a [`RetryService`] (and of its clones) shares: a call keeps one reference
/// to it instead of its own clones of the policy and of the whole stack inside.
struct Shared<S, P> {
    policy: P,
    /// A clone of the wrapped service, made once; a call that is retried sends through a
    /// clone of it (readied before use).
    spare: Mutex<S>,
}

impl<S: Clone, P> Shared<S, P> {
    /// A service to send a retry with.
    fn service(&self) -> S {
        self.spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<S: Clone, P> Clone for RetryService<S, P> {
    fn clone(&self) -> Self {
        RetryService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: Clone, P> RetryService<S, P> {
    pub(crate) fn new(inner: S, policy: P) -> Self {
        let spare = Mutex::new(inner.clone());
        RetryService {
            inner,
            shared: Arc::new(Shared { policy, spare }),
        }
    }
}

impl<S, P> RetryService<S, P> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Consumes the wrapper, returning the wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for RetryService<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish()
    }
}

/// Builds the call's context from a request. The origin key is left at 0 unless `origin` is
/// set: hashing it costs more than the rest of the call, and a call that is answered at once
/// never needs it (see [`Rest::origin_known`]).
pub(crate) fn tower_ctx<B>(req: &Request<B>, origin: bool) -> CallCtx {
    CallCtx {
        origin: if origin {
            Origin::of_request(req.uri(), req.headers()).gate_key()
        } else {
            0
        },
        idempotent: is_idempotent(req.method()),
        deadline: req.extensions().get::<Deadline>().map(|d| d.0),
        retry_after_outside: retry_after_outside(),
    }
}

/// What a retry layer puts on the thread while it calls or polls the layers inside it (rule
/// R10): [`NO_MARK`] for an `ExpBackoffLayer` (it leaves the thread as it is), [`NO_GATE`] for a
/// `RetryAfterLayer` that holds no origins, otherwise the number of the `RetryAfterLayer`'s
/// origin gate (see [`register_gate`]). A plain number: setting and reading it costs a few
/// instructions, and a layer inside looks the gate up only when it is about to retry.
pub(crate) type RetryAfterMark = u64;

/// No `RetryAfterLayer`.
pub(crate) const NO_MARK: RetryAfterMark = 0;
/// A `RetryAfterLayer` that holds no origins.
pub(crate) const NO_GATE: RetryAfterMark = u64::MAX;

thread_local! {
    /// The innermost `RetryAfterLayer` that is, on this thread, calling or polling the code that
    /// runs now (the layers inside it run within its `call` and `poll`).
    static RETRY_AFTER: Cell<RetryAfterMark> = const { Cell::new(NO_MARK) };
}

/// The origin gates of the `RetryAfterLayer`s that hold origins, by number (dead ones are
/// pruned when a new one is registered).
static GATES: Mutex<Vec<(RetryAfterMark, Weak<ThrottleGate>)>> = Mutex::new(Vec::new());
static NEXT_GATE: AtomicU64 = AtomicU64::new(1);

/// Numbers `gate` for the thread mark of the `RetryAfterLayer` that owns it.
pub(crate) fn register_gate(gate: &Arc<ThrottleGate>) -> RetryAfterMark {
    let number = NEXT_GATE.fetch_add(1, Ordering::Relaxed);
    let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
    gates.retain(|(_, g)| g.strong_count() > 0);
    gates.push((number, Arc::downgrade(gate)));
    number
}

/// How the tower retry layers tell the layers inside them that they are there — without
/// touching the request: a marker in its extensions would cost an allocation per call, and a
/// copy of the map in every copy of the request. A layer marks the thread while it calls or
/// polls its inner service; a layer inside reads the mark while it decides. The mark is
/// restored when the scope ends, a panic included.
pub(crate) struct Scope {
    /// What `RETRY_AFTER` held before, if this scope replaced it.
    prev: Option<RetryAfterMark>,
}

impl Scope {
    /// Enters the scope: marks the thread, unless `mark` is [`NO_MARK`].
    pub(crate) fn enter(mark: RetryAfterMark) -> Scope {
        let prev = (mark != NO_MARK).then(|| RETRY_AFTER.with(|r| r.replace(mark)));
        Scope { prev }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(prev) = self.prev {
            RETRY_AFTER.with(|r| r.set(prev));
        }
    }
}

/// Whether a `RetryAfterLayer` is outside the layer running now.
pub(crate) fn retry_after_outside() -> bool {
    RETRY_AFTER.with(Cell::get) != NO_MARK
}

/// The origin gate of the innermost `RetryAfterLayer` outside, if any (looked up: this runs
/// only before a retry).
pub(crate) fn outer_retry_after_gate() -> Option<Arc<ThrottleGate>> {
    let mark = RETRY_AFTER.with(Cell::get);
    if mark == NO_MARK || mark == NO_GATE {
        return None;
    }
    let gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
    gates
        .iter()
        .find(|(number, _)| *number == mark)
        .and_then(|(_, gate)| gate.upgrade())
}

/// Implemented by the two retry layers' policies (sealed: the module is private).
#[allow(unreachable_pub)]
pub trait TowerRetryPolicy: RetryPolicy {
    /// The mark this policy's layer puts on the thread.
    fn mark(&self) -> RetryAfterMark;
}

impl<S, P, B, RB> Service<Request<B>> for RetryService<S, P>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    P: TowerRetryPolicy,
    B: TryCloneBody + Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let policy = &self.shared.policy;
        // Only a gate that holds some origin now needs this request's origin before it is sent.
        let gate_may_hold = policy.gate_may_hold();
        let mut ctx = tower_ctx(&req, gate_may_hold);
        policy.on_call();
        if gate_may_hold && policy.held_until(&ctx).is_some() {
            let clone = self.inner.clone();
            let transport = TowerTransport {
                svc: std::mem::replace(&mut self.inner, clone),
                _body: PhantomData,
            };
            let fut = driver::run(policy.clone(), transport, req, ctx);
            return ResponseFuture {
                state: State::Slow {
                    fut: Box::pin(fut),
                    mark: policy.mark(),
                },
            };
        }
        // The layers inside use this copy's headers instead of copying them again while they
        // are handed the same (see `Offering`).
        let backup = RequestCopy::of(&req);
        let _offering = Offering::of(&backup);
        // Without a copy, the origin cannot be read later: hash it now.
        let origin_known = gate_may_hold || backup.is_none();
        if origin_known && !gate_may_hold {
            ctx.origin = Origin::of_request(req.uri(), req.headers()).gate_key();
        }
        // The service `poll_ready` readied takes the request; a retry gets a clone of the
        // spare (readied before use). The inner future is built in place (a future of several
        // hundred bytes is not copied once more).
        let mark = policy.mark();
        let _scope = Scope::enter(mark);
        ResponseFuture {
            state: State::First {
                fut: self.inner.call(req),
                rest: Some(Rest {
                    shared: self.shared.clone(),
                    backup,
                    ctx,
                    origin_known,
                    mark,
                }),
            },
        }
    }
}

struct Rest<S, B, P> {
    shared: Arc<Shared<S, P>>,
    backup: Option<RequestCopy<B>>,
    ctx: CallCtx,
    /// Whether `ctx.origin` is set; if not, it is read from `backup` when an outcome may be
    /// retried (the only time a policy looks at it).
    origin_known: bool,
    /// This layer's mark, put on the thread while it polls the inner future.
    mark: RetryAfterMark,
}

pin_project_lite::pin_project! {
    /// The future of a [`RetryService`] call.
    pub struct ResponseFuture<S, B, P>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future, Rest<S, B, P>, S::Response>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, R, T> {
        First { #[pin] fut: F, rest: Option<R> },
        Slow { fut: BoxFuture<'static, Result<T, BoxError>>, mark: RetryAfterMark },
    }
}

impl<S, B, P> fmt::Debug for ResponseFuture<S, B, P>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, P, B, RB> Future for ResponseFuture<S, B, P>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    P: TowerRetryPolicy,
    B: TryCloneBody + Send + 'static,
    RB: Send + 'static,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::First { fut, rest } => {
                    let Some(r) = rest.as_mut() else {
                        return Poll::Ready(Err("ResponseFuture polled after completion".into()));
                    };
                    let scope = Scope::enter(r.mark);
                    let polled = fut.poll(cx);
                    drop(scope);
                    let result = ready!(polled).map_err(Into::into);
                    // A status no policy retries is done: no clock read, no decision, nothing
                    // stamped (rule R7: one attempt is the absence of a count), and the rest is
                    // dropped in place (the success path moves nothing out).
                    if matches!(&result, Ok(r) if !retryable_status(r.status())) {
                        *rest = None;
                        return Poll::Ready(result);
                    }
                    let Some(mut rest) = rest.take() else {
                        return Poll::Ready(Err("ResponseFuture polled after completion".into()));
                    };
                    if !rest.origin_known {
                        if let Some(b) = &rest.backup {
                            rest.ctx.origin = b.origin_key();
                        }
                    }
                    let outcome = driver::outcome::<TowerTransport<S, B>>(&result);
                    let decision = rest.shared.policy.decide(
                        &rest.ctx,
                        Progress::default(),
                        outcome,
                        Instant::now(),
                    );
                    if decision == Decision::Done {
                        return Poll::Ready(result);
                    }
                    let fut = driver::resume(
                        rest.shared.policy.clone(),
                        TowerTransport::new(rest.shared.service()),
                        rest.ctx,
                        rest.backup,
                        result,
                        decision,
                    );
                    this.state.set(State::Slow {
                        fut: Box::pin(fut),
                        mark: rest.mark,
                    });
                }
                StateProj::Slow { fut, mark } => {
                    // The retries call and poll the inner layers from in here.
                    let _scope = Scope::enter(*mark);
                    return fut.as_mut().poll(cx);
                }
            }
        }
    }
}

/// Sends through a clone of the wrapped tower service.
pub(crate) struct TowerTransport<S, B> {
    svc: S,
    _body: PhantomData<fn() -> B>,
}

impl<S, B> TowerTransport<S, B> {
    pub(crate) fn new(svc: S) -> Self {
        TowerTransport {
            svc,
            _body: PhantomData,
        }
    }
}

impl<S, B, RB> Transport for TowerTransport<S, B>
where
    S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: TryCloneBody + Send + 'static,
    RB: Send + 'static,
{
    type Req = Request<B>;
    type Resp = Response<RB>;
    type Err = BoxError;

    type Copy = RequestCopy<B>;

    fn try_copy(&mut self, req: &Self::Req) -> Option<Self::Copy> {
        RequestCopy::of(req)
    }

    fn resend(copy: &Self::Copy) -> Option<Self::Req> {
        copy.to_request()
    }

    fn into_request(copy: Self::Copy) -> Option<Self::Req> {
        Some(copy.into_request())
    }

    fn copy_origin_key(copy: &Self::Copy) -> u64 {
        copy.origin_key()
    }

    fn origin_key(req: &Self::Req) -> u64 {
        Origin::of_request(req.uri(), req.headers()).gate_key()
    }

    #[allow(clippy::manual_async_fn)] // an `async fn` keeps its arguments twice
    fn send(
        &mut self,
        req: Self::Req,
    ) -> impl Future<Output = Result<Self::Resp, Self::Err>> + Send {
        // An `async` block, not an `async fn`: the request is kept once, not twice.
        async move {
            let svc = self.svc.ready().await.map_err(Into::into)?;
            svc.call(req).await.map_err(Into::into)
        }
    }

    fn req_headers_mut(req: &mut Self::Req) -> &mut HeaderMap {
        req.headers_mut()
    }

    fn head(resp: &Self::Resp) -> (StatusCode, &HeaderMap, &Extensions) {
        (resp.status(), resp.headers(), resp.extensions())
    }

    fn extensions_mut(resp: &mut Self::Resp) -> &mut Extensions {
        resp.extensions_mut()
    }

    fn outer_gate(&self, _req: &Self::Req) -> Option<Arc<ThrottleGate>> {
        outer_retry_after_gate()
    }

    fn error_kind(err: &Self::Err) -> ErrorKind {
        classify_error(err.as_ref())
    }

    fn throttled(retry_after: Duration) -> Self::Err {
        Box::new(Error::Throttled { retry_after })
    }
}
