//! The one retry loop behind both retry layers, for both stacks (tower and reqwest-middleware).
//!
//! A *policy* (the layer's settings) decides what to do with each outcome; a *transport* sends
//! a request and lets the loop look at the result. Items are `pub` in this private module only
//! so that public services can name them in bounds (sealed).
#![allow(unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, HeaderMap, StatusCode};
use tokio::time::Instant;

pub use super::classify::ErrorKind;
use super::classify::{Attempts, RetryExhausted};
use super::policy::retryable_status;
use super::stats::Counters;
use super::throttle::ThrottleGate;

/// An attempt's result as the policies see it.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// A response arrived.
    Response {
        /// Its status.
        status: StatusCode,
        /// Its headers.
        headers: &'a HeaderMap,
        /// An inner retry layer already gave up on it.
        exhausted: bool,
    },
    /// No response.
    Error(ErrorKind),
}

/// What a policy wants done with an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not retryable: return it.
    Done,
    /// Retryable, but not retried: return it, marked so outer layers don't retry it either.
    GiveUp(&'static str),
    /// Send again, no earlier than `until`.
    Retry {
        /// When.
        until: Instant,
        /// Why (for the trace).
        why: &'static str,
    },
}

/// How far a call has come: retries sent and the time spent waiting before them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Retries sent so far.
    pub retries: u32,
    /// Time spent waiting before them.
    pub waited: Duration,
}

/// What a policy knows about the call.
#[derive(Debug, Clone, Copy)]
pub struct CallCtx {
    /// Gate key of the request's origin.
    pub origin: u64,
    /// Whether the method is idempotent.
    pub idempotent: bool,
    /// The caller's deadline, if any.
    pub deadline: Option<Instant>,
    /// A `RetryAfterLayer` is outside this one.
    pub retry_after_outside: bool,
}

/// A retry layer's decisions.
pub trait RetryPolicy: Clone + Send + Sync + 'static {
    /// The layer's name, for traces.
    const NAME: &'static str;
    /// Counts a new call (and earns retry budget).
    fn on_call(&self);
    /// Whether this policy's gate may hold some origin now (cheap: no hashing, and no clock
    /// read while nothing was ever held).
    fn gate_may_hold(&self) -> bool {
        false
    }
    /// Until when the call's origin is held, if it is (checked before every attempt).
    fn held_until(&self, _ctx: &CallCtx) -> Option<Instant> {
        None
    }
    /// The longest hold a call may wait out before failing with `Throttled`.
    fn max_wait(&self) -> Duration;
    /// What to do after attempt number `done.retries + 1`, whose outcome was `seen` at `at`.
    fn decide(&self, ctx: &CallCtx, done: Progress, seen: Outcome<'_>, at: Instant) -> Decision;
    /// The layer's counters.
    fn counters(&self) -> &Counters;
}

/// Sends requests and shows the loop their results.
pub trait Transport: Send {
    /// The request type.
    type Req: Send;
    /// The response type.
    type Resp: Send;
    /// The error type.
    type Err: Send;
    /// What a call keeps to send the request again.
    type Copy: Send;
    /// A copy of the request for a retry, or `None` if its body cannot be copied (rule R6).
    /// Called once per call, before the request is sent.
    fn try_copy(&mut self, req: &Self::Req) -> Option<Self::Copy>;
    /// A request to send again from a copy, which stays for later attempts.
    fn resend(copy: &Self::Copy) -> Option<Self::Req>;
    /// The request to send again, using up the copy.
    fn into_request(copy: Self::Copy) -> Option<Self::Req>;
    /// The gate key of the request's origin.
    fn origin_key(req: &Self::Req) -> u64;
    /// The gate key of a copy's origin.
    fn copy_origin_key(copy: &Self::Copy) -> u64;
    /// Sends one attempt.
    fn send(
        &mut self,
        req: Self::Req,
    ) -> impl Future<Output = Result<Self::Resp, Self::Err>> + Send;
    /// The request's headers.
    fn req_headers_mut(req: &mut Self::Req) -> &mut HeaderMap;
    /// Status and headers of a response.
    fn head(resp: &Self::Resp) -> (StatusCode, &HeaderMap, &Extensions);
    /// The response's extensions.
    fn extensions_mut(resp: &mut Self::Resp) -> &mut Extensions;
    /// The origin gate of a `RetryAfterLayer` outside this one, if any (rule R10).
    fn outer_gate(&self, req: &Self::Req) -> Option<Arc<ThrottleGate>>;
    /// What kind of failure an error is.
    fn error_kind(err: &Self::Err) -> ErrorKind;
    /// The error for a call that would have to wait `retry_after`, longer than allowed.
    fn throttled(retry_after: Duration) -> Self::Err;
}

/// The outcome of a result.
pub fn outcome<T: Transport>(result: &Result<T::Resp, T::Err>) -> Outcome<'_> {
    match result {
        Ok(resp) => {
            let (status, headers, ext) = T::head(resp);
            Outcome::Response {
                status,
                headers,
                exhausted: ext.get::<RetryExhausted>().is_some(),
            }
        }
        Err(e) => Outcome::Error(T::error_kind(e)),
    }
}

/// The requests a result took: its stamped count, or one.
pub fn attempts_of<T: Transport>(result: &Result<T::Resp, T::Err>) -> u32 {
    match result {
        Ok(resp) => Attempts::of(T::head(resp).2),
        Err(_) => 1,
    }
}

/// Stamps the attempt count (and the give-up mark) on a final result. A count of one is not
/// stamped: [`Attempts::of`] reads its absence as one, and leaving the response's extensions
/// empty keeps the first-attempt path free of allocations (rule R7).
pub fn finish<T: Transport>(
    mut result: Result<T::Resp, T::Err>,
    attempts: u32,
    exhausted: bool,
) -> Result<T::Resp, T::Err> {
    if let Ok(resp) = &mut result {
        if attempts > 1 || exhausted {
            let ext = T::extensions_mut(resp);
            if attempts > 1 {
                ext.insert(Attempts(attempts));
            }
            if exhausted {
                ext.insert(RetryExhausted);
            }
        }
    }
    result
}

/// Waits while the call's origin is held — by this policy's gate or by the gate of a
/// `RetryAfterLayer` outside it (R10: one hold per origin for every layer). `Err(wait)` if the
/// hold is longer than the policy's cap or the call's deadline allows.
pub async fn wait_for_gate<P: RetryPolicy>(
    policy: &P,
    ctx: &CallCtx,
    outer: Option<&ThrottleGate>,
) -> Result<(), Duration> {
    loop {
        let own = policy.held_until(ctx);
        let other = outer.and_then(|g| g.held_until(ctx.origin));
        let Some(until) = own.max(other) else {
            return Ok(());
        };
        let wait = until.saturating_duration_since(Instant::now());
        if wait > policy.max_wait() || ctx.deadline.is_some_and(|d| until > d) {
            Counters::bump(&policy.counters().throttled);
            tracing::warn!(
                layer = P::NAME,
                wait_ms = wait.as_millis() as u64,
                "origin throttled for longer than allowed; failing fast"
            );
            return Err(wait);
        }
        Counters::bump(&policy.counters().held);
        policy.counters().record_wait(wait);
        tracing::info!(
            layer = P::NAME,
            wait_ms = wait.as_millis() as u64,
            "origin throttled; holding request"
        );
        tokio::time::sleep_until(until).await;
    }
}

/// The whole call: gate, first attempt, then [`resume`].
///
/// Written as a function returning an `async` block rather than an `async fn`: an `async fn`
/// keeps each argument twice in its future (rust-lang/rust#62958), which for a reqwest request
/// pushed the boxed future of each reqwest-middleware call past the allocator's fast-path size.
#[allow(clippy::manual_async_fn)] // an `async fn` keeps its arguments twice
pub fn run<P: RetryPolicy, T: Transport>(
    policy: P,
    mut transport: T,
    req: T::Req,
    mut ctx: CallCtx,
) -> impl Future<Output = Result<T::Resp, T::Err>> {
    async move {
        // The origin's key is hashed only when a gate may hold it or an outcome may be retried.
        let gate_may_hold = policy.gate_may_hold();
        if gate_may_hold {
            ctx.origin = T::origin_key(&req);
            if policy.held_until(&ctx).is_some() {
                // Rare: the origin is held. Waiting is boxed so the common call's future stays
                // small.
                if let Err(wait) = Box::pin(wait_for_gate(&policy, &ctx, None)).await {
                    return Err(T::throttled(wait));
                }
            }
        }
        let backup = transport.try_copy(&req);
        if !gate_may_hold && backup.is_none() {
            ctx.origin = T::origin_key(&req);
        }
        let result = transport.send(req).await;
        // A status no policy retries is done: no clock read, no decision, nothing stamped (a
        // first attempt's count is the absence of one).
        if matches!(&result, Ok(resp) if !retryable_status(T::head(resp).0)) {
            return result;
        }
        if !gate_may_hold {
            if let Some(b) = &backup {
                ctx.origin = T::copy_origin_key(b);
            }
        }
        let decision = policy.decide(
            &ctx,
            Progress::default(),
            outcome::<T>(&result),
            Instant::now(),
        );
        if decision == Decision::Done {
            return result;
        }
        // The retry loop is boxed, so the future of every call stays small (a few hundred bytes
        // instead of over 2 KB): calls that need no retry never pay for the loop's state.
        Box::pin(resume(policy, transport, ctx, backup, result, decision)).await
    }
}

/// Carries on after an attempt whose result and decision are known.
/// (A function returning an `async` block, for the reason given at [`run`].)
#[allow(clippy::manual_async_fn)] // an `async fn` keeps its arguments twice
pub fn resume<P: RetryPolicy, T: Transport>(
    policy: P,
    mut transport: T,
    ctx: CallCtx,
    backup: Option<T::Copy>,
    mut result: Result<T::Resp, T::Err>,
    mut decision: Decision,
) -> impl Future<Output = Result<T::Resp, T::Err>> {
    async move {
        let mut progress = Progress::default();
        let mut sent = attempts_of::<T>(&result);
        loop {
            let (until, why) = match decision {
                Decision::Done => return finish::<T>(result, sent, false),
                Decision::GiveUp(reason) => return give_up::<P, T>(&policy, result, sent, reason),
                Decision::Retry { until, why } => (until, why),
            };
            let Some(copy) = &backup else {
                return give_up::<P, T>(&policy, result, sent, "request body cannot be cloned");
            };
            if ctx.deadline.is_some_and(|d| until > d) {
                return give_up::<P, T>(&policy, result, sent, "wait would pass the deadline");
            }
            let Some(req) = T::resend(copy) else {
                return give_up::<P, T>(&policy, result, sent, "request body cannot be cloned");
            };
            let outer = transport.outer_gate(&req);
            let wait = until.saturating_duration_since(Instant::now());
            let status = match &result {
                Ok(resp) => Some(T::head(resp).0.as_u16()),
                Err(_) => None,
            };
            drop(result);
            Counters::bump(&policy.counters().retries);
            policy.counters().record_wait(wait);
            tracing::info!(
                layer = P::NAME,
                status,
                why,
                delay_ms = wait.as_millis() as u64,
                attempt = progress.retries + 2,
                "retrying"
            );
            let slept_from = Instant::now();
            tokio::time::sleep_until(until).await;
            if let Err(wait) = wait_for_gate(&policy, &ctx, outer.as_deref()).await {
                return Err(T::throttled(wait));
            }
            progress.waited = progress.waited.saturating_add(slept_from.elapsed());
            result = transport.send(req).await;
            progress.retries += 1;
            sent = sent.saturating_add(attempts_of::<T>(&result));
            decision = policy.decide(&ctx, progress, outcome::<T>(&result), Instant::now());
        }
    }
}

fn give_up<P: RetryPolicy, T: Transport>(
    policy: &P,
    result: Result<T::Resp, T::Err>,
    sent: u32,
    reason: &'static str,
) -> Result<T::Resp, T::Err> {
    Counters::bump(&policy.counters().give_ups);
    let status = match &result {
        Ok(resp) => Some(T::head(resp).0.as_u16()),
        Err(_) => None,
    };
    tracing::warn!(
        layer = P::NAME,
        status,
        reason,
        attempts = sent,
        "giving up"
    );
    finish::<T>(result, sent, true)
}
