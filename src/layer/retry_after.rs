//! [`RetryAfterLayer`]: wait exactly as long as the server says (rules R1, R2).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use tower_layer::Layer;

use super::retry::{register_gate, RetryAfterMark, RetryService, TowerRetryPolicy, NO_GATE};
use crate::retry::driver::{CallCtx, Decision, Outcome, Progress, RetryPolicy};
use crate::retry::policy::{later, retryable_status, server_wait, DEFAULT_MAX_SERVER_WAIT};
use crate::retry::stats::{Counters, RetryStats};
use crate::retry::throttle::ThrottleGate;
use crate::Error;

/// The longest cap a `RetryAfterLayer` accepts.
pub const MAX_WAIT_LIMIT: Duration = crate::retry::policy::MAX_SERVER_WAIT_LIMIT;

/// Retries a 429, or any 5xx that carries `Retry-After` / `retry-after-ms` /
/// `x-ms-retry-after-ms`, after exactly the wait the server asked for — never a millisecond
/// earlier — and holds every other request to the same origin (scheme, host, port) until the
/// wait has passed.
///
/// A call is retried for as long as the server keeps asking it to wait, up to a total wait of
/// the cap (default 5 min, at most 1 h) or the call's [`Deadline`](crate::retry::Deadline)
/// (rule R10) — not a small fixed count. A single wait longer than the cap or the deadline is
/// not slept: the response is returned as it is, and requests held by the origin's gate fail
/// at once with [`Error::Throttled`]. The hold covers every layer inside this one: an
/// `ExpBackoffLayer`'s retry to a held origin waits it out too. Responses without a usable
/// retry header — none, garbage, zero or a date in the past (rule R9) — are left to
/// [`ExpBackoffLayer`](crate::ExpBackoffLayer).
///
/// Clones share the origin gate and the counters, so install one layer per client.
///
/// ```
/// use resilient_auth::RetryAfterLayer;
/// use std::time::Duration;
///
/// let layer = RetryAfterLayer::builder()
///     .max_wait(Duration::from_secs(60))
///     .max_retries(2)
///     .build()?;
/// assert_eq!(layer.stats().retries(), 0);
/// # Ok::<(), resilient_auth::Error>(())
/// ```
#[derive(Clone)]
pub struct RetryAfterLayer {
    shared: Arc<Shared>,
}

struct Shared {
    max_wait: Duration,
    max_retries: u32,
    hold_origin: bool,
    gate: Arc<ThrottleGate>,
    /// What this layer puts on the thread for the layers inside it (its gate's number).
    mark: RetryAfterMark,
    counters: Arc<Counters>,
}

impl Default for RetryAfterLayer {
    /// Total wait capped at 5 min, no count limit, origin hold on.
    fn default() -> Self {
        RetryAfterLayerBuilder::default().finish()
    }
}

impl fmt::Debug for RetryAfterLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryAfterLayer")
            .field("max_wait", &self.shared.max_wait)
            .field("max_retries", &self.shared.max_retries)
            .field("hold_origin", &self.shared.hold_origin)
            .finish()
    }
}

impl RetryAfterLayer {
    /// A builder starting from the defaults.
    pub fn builder() -> RetryAfterLayerBuilder {
        RetryAfterLayerBuilder::default()
    }

    /// The layer's counters (shared by its clones).
    pub fn stats(&self) -> RetryStats {
        RetryStats {
            counters: self.shared.counters.clone(),
        }
    }

    /// The cap on a single wait.
    pub fn max_wait(&self) -> Duration {
        self.shared.max_wait
    }
}

/// Builds a validated [`RetryAfterLayer`].
#[derive(Debug, Clone)]
pub struct RetryAfterLayerBuilder {
    max_wait: Duration,
    max_retries: u32,
    hold_origin: bool,
}

impl Default for RetryAfterLayerBuilder {
    fn default() -> Self {
        RetryAfterLayerBuilder {
            max_wait: DEFAULT_MAX_SERVER_WAIT,
            max_retries: u32::MAX,
            hold_origin: true,
        }
    }
}

impl RetryAfterLayerBuilder {
    /// The longest total wait of one call, and so of any single wait (default 5 min, at most
    /// 1 h). A longer one fails fast.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How many retries per call at most, on top of the total-wait cap (default: no count
    /// limit — the server's waits and the cap bound the call, rule R10).
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Whether a wait holds all requests to the origin (default `true`).
    #[must_use]
    pub fn hold_origin(mut self, hold_origin: bool) -> Self {
        self.hold_origin = hold_origin;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// [`Error::Config`] if the cap is zero or above 1 h, or `max_retries` is 0.
    pub fn build(self) -> Result<RetryAfterLayer, Error> {
        if self.max_wait.is_zero() || self.max_wait > MAX_WAIT_LIMIT {
            return Err(Error::config(format!(
                "retry-after cap must be within (0, 1 h], got {:?}",
                self.max_wait
            )));
        }
        if self.max_retries == 0 {
            return Err(Error::config(
                "a retry-after layer needs at least 1 retry (remove the layer instead)",
            ));
        }
        Ok(self.finish())
    }

    fn finish(self) -> RetryAfterLayer {
        let gate = Arc::default();
        let mark = match self.hold_origin {
            true => register_gate(&gate),
            false => NO_GATE,
        };
        RetryAfterLayer {
            shared: Arc::new(Shared {
                max_wait: self.max_wait,
                max_retries: self.max_retries,
                hold_origin: self.hold_origin,
                gate,
                mark,
                counters: Arc::default(),
            }),
        }
    }
}

impl<S: Clone> Layer<S> for RetryAfterLayer {
    type Service = RetryAfter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService::new(inner, self.clone())
    }
}

/// The service [`RetryAfterLayer`] produces.
pub type RetryAfter<S> = RetryService<S, RetryAfterLayer>;

impl RetryPolicy for RetryAfterLayer {
    const NAME: &'static str = "retry_after";

    fn on_call(&self) {
        self.shared.counters.requests.bump();
    }

    fn gate_may_hold(&self) -> bool {
        self.shared.gate.any_held()
    }

    fn held_until(&self, ctx: &CallCtx) -> Option<Instant> {
        self.shared.gate.held_until(ctx.origin)
    }

    fn max_wait(&self) -> Duration {
        self.shared.max_wait
    }

    fn decide(&self, ctx: &CallCtx, done: Progress, seen: Outcome<'_>, at: Instant) -> Decision {
        let Outcome::Response {
            status,
            headers,
            exhausted: false,
        } = seen
        else {
            return Decision::Done;
        };
        if status == StatusCode::REQUEST_TIMEOUT || !retryable_status(status) {
            return Decision::Done;
        }
        let Some(wait) = server_wait(headers) else {
            return Decision::Done;
        };
        let until = later(at, wait.min(MAX_WAIT_LIMIT));
        if self.shared.hold_origin {
            self.shared.gate.hold(ctx.origin, until);
        }
        if wait > self.shared.max_wait {
            return Decision::GiveUp("retry-after exceeds the cap");
        }
        if done.waited.saturating_add(wait) > self.shared.max_wait {
            return Decision::GiveUp("total wait would exceed the cap");
        }
        if done.retries >= self.shared.max_retries {
            return Decision::GiveUp("max retries reached");
        }
        Decision::Retry {
            until,
            why: "retry-after",
        }
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }
}

impl TowerRetryPolicy for RetryAfterLayer {
    fn mark(&self) -> RetryAfterMark {
        self.shared.mark
    }
}
