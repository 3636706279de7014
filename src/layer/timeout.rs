//! [`TimeoutLayer`]: a per-attempt timeout whose expiry is a typed, retryable error (rule R4).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use crate::{BoxError, Error};

/// Bounds each attempt. An attempt that runs out of time fails with [`Error::Timeout`] (boxed,
/// downcastable), which [`ExpBackoffLayer`](crate::ExpBackoffLayer) retries after its back-off
/// delay — never at once. Install it innermost, so that every retry gets its own timeout.
/// The timer starts the first time the attempt is polled and not answered at once (futures are
/// polled as soon as they are awaited), so an attempt answered at once never touches the timer
/// wheel.
///
/// ```
/// use resilient_auth::TimeoutLayer;
/// use std::time::Duration;
///
/// let layer = TimeoutLayer::new(Duration::from_secs(10));
/// assert_eq!(layer.timeout(), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// A per-attempt timeout of `timeout`. A zero timeout is a configuration error: every
    /// request through the layer fails with [`Error::Config`](crate::Error::Config), and
    /// [`try_new`](Self::try_new) refuses it when the layer is built.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }

    /// A per-attempt timeout of `timeout`, validated.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) for a zero timeout.
    pub fn try_new(timeout: Duration) -> Result<Self, crate::Error> {
        if timeout.is_zero() {
            return Err(zero_timeout_error());
        }
        Ok(TimeoutLayer { timeout })
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The error of a layer built with a zero timeout (both stacks send nothing).
pub(crate) fn zero_timeout_error() -> crate::Error {
    crate::Error::config(
        "a zero per-attempt timeout fails every request; give TimeoutLayer a timeout > 0",
    )
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service [`TimeoutLayer`] produces.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Timeout<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, R> Service<R> for Timeout<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        ResponseFuture {
            attempt: Timed::new(self.inner.call(req), self.timeout),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`Timeout`] call.
    pub struct ResponseFuture<F> {
        #[pin]
        attempt: Timed<F>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("after", &self.attempt.after)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().attempt.poll_attempt(
            cx,
            |result| result.map_err(Into::into),
            |not| Err(Box::new(not.into_error())),
        )
    }
}

/// Why a [`Timed`] attempt has no answer. Small, so that the answer is not moved through a
/// result the size of an [`Error`]; the caller makes the error.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NotAnswered {
    /// The timeout is zero: nothing was sent.
    ZeroTimeout,
    /// The attempt ran out of time.
    After(Duration),
}

impl NotAnswered {
    pub(crate) fn into_error(self) -> Error {
        match self {
            NotAnswered::ZeroTimeout => zero_timeout_error(),
            NotAnswered::After(after) => Error::Timeout { after },
        }
    }
}

pin_project_lite::pin_project! {
    /// One attempt under a timeout, on both stacks: its answer, or why there is none (see
    /// [`NotAnswered`]: a zero `after`, and the attempt is never polled; or `after` has passed).
    /// The timer starts the first time the attempt is not answered at once: an answer on the
    /// first poll never touches the clock or the timer wheel.
    pub(crate) struct Timed<F> {
        #[pin]
        inner: F,
        #[pin]
        timer: Timer,
        after: Duration,
    }
}

impl<F> Timed<F> {
    pub(crate) fn new(inner: F, after: Duration) -> Self {
        Timed {
            inner,
            timer: Timer::Unarmed,
            after,
        }
    }
}

pin_project_lite::pin_project! {
    /// The attempt's timer (see [`Timed`]).
    #[project = TimerProj]
    enum Timer {
        Unarmed,
        Armed { #[pin] sleep: Sleep },
    }
}

impl<F: Future> Timed<F> {
    /// Polls the attempt; `answered` or `not` makes the output in place (an answer is not moved
    /// through one more result).
    pub(crate) fn poll_attempt<O>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        answered: impl FnOnce(F::Output) -> O,
        not: impl FnOnce(NotAnswered) -> O,
    ) -> Poll<O> {
        let mut this = self.project();
        if this.after.is_zero() {
            // Nothing sent: the inner future is never polled.
            return Poll::Ready(not(NotAnswered::ZeroTimeout));
        }
        if let Poll::Ready(answer) = this.inner.poll(cx) {
            return Poll::Ready(answered(answer));
        }
        if let TimerProj::Unarmed = this.timer.as_mut().project() {
            this.timer.set(Timer::Armed {
                sleep: tokio::time::sleep(*this.after),
            });
        }
        let TimerProj::Armed { sleep } = this.timer.project() else {
            return Poll::Pending;
        };
        ready!(sleep.poll(cx));
        tracing::warn!(
            after_ms = this.after.as_millis() as u64,
            "attempt timed out"
        );
        Poll::Ready(not(NotAnswered::After(*this.after)))
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = Result<F::Output, NotAnswered>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_attempt(cx, Ok, Err)
    }
}
