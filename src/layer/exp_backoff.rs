//! [`ExpBackoffLayer`]: exponential back-off that never fast-retries (rules R3, R4, R5).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use tower_layer::Layer;

use super::retry::{RetryAfterMark, RetryService, TowerRetryPolicy, NO_MARK};
use crate::retry::driver::{CallCtx, Decision, ErrorKind, Outcome, Progress, RetryPolicy};
use crate::retry::policy::{later, Failure};
use crate::retry::stats::{Counters, RetryStats};
use crate::retry::{Backoff, RetryBudget};
use crate::Error;

/// Retries 5xx, 408 and 429 responses without a retry header, connection errors and timed-out
/// attempts with exponential back-off: the first retry at least 5 s after the failure, then
/// ×2 up to 60 s, with jitter that only adds, at most 3 retries, within a retry budget (retries
/// ≤ 20 % of requests over 10 s, plus 1 per second).
///
/// - A timed-out attempt is never retried at once: it waits the back-off delay like any other
///   failure. Non-idempotent requests (POST, PATCH) are not retried after a timeout or a
///   connection error — the server may have acted on them — unless
///   [`retry_non_idempotent`](ExpBackoffLayerBuilder::retry_non_idempotent) is set.
/// - Installed inside a [`RetryAfterLayer`](crate::RetryAfterLayer), it leaves responses that
///   carry a valid retry header to that layer, so no response is retried by both. Alone, it
///   treats a retry header as a lower bound on its delay.
/// - A request whose body cannot be copied (a stream) is sent once.
///
/// ```
/// use resilient_auth::ExpBackoffLayer;
/// use resilient_auth::retry::Backoff;
/// use std::time::Duration;
///
/// let layer = ExpBackoffLayer::builder()
///     .backoff(Backoff::builder().initial(Duration::from_secs(5)).max_retries(2).build()?)
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), resilient_auth::Error>(())
/// ```
#[derive(Clone)]
pub struct ExpBackoffLayer {
    shared: Arc<Shared>,
}

struct Shared {
    backoff: Backoff,
    budget: Option<RetryBudget>,
    max_wait: Duration,
    retry_non_idempotent: bool,
    counters: Arc<Counters>,
}

impl Default for ExpBackoffLayer {
    fn default() -> Self {
        ExpBackoffLayerBuilder::default().finish()
    }
}

impl fmt::Debug for ExpBackoffLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpBackoffLayer")
            .field("backoff", &self.shared.backoff)
            .field("budget", &self.shared.budget)
            .field("max_wait", &self.shared.max_wait)
            .field("retry_non_idempotent", &self.shared.retry_non_idempotent)
            .finish()
    }
}

impl ExpBackoffLayer {
    /// A builder starting from the defaults.
    pub fn builder() -> ExpBackoffLayerBuilder {
        ExpBackoffLayerBuilder::default()
    }

    /// The layer's counters (shared by its clones).
    pub fn stats(&self) -> RetryStats {
        RetryStats {
            counters: self.shared.counters.clone(),
        }
    }

    /// The back-off settings.
    pub fn backoff(&self) -> &Backoff {
        &self.shared.backoff
    }

    /// The retry budget, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budget.as_ref()
    }
}

/// Builds a validated [`ExpBackoffLayer`].
#[derive(Debug, Clone)]
pub struct ExpBackoffLayerBuilder {
    backoff: Backoff,
    budget: Option<RetryBudget>,
    max_wait: Duration,
    retry_non_idempotent: bool,
}

impl Default for ExpBackoffLayerBuilder {
    fn default() -> Self {
        ExpBackoffLayerBuilder {
            backoff: Backoff::default(),
            budget: Some(RetryBudget::default()),
            max_wait: Duration::from_secs(300),
            retry_non_idempotent: false,
        }
    }
}

impl ExpBackoffLayerBuilder {
    /// The back-off (default: 5 s, ×2, cap 60 s, 20 % additive jitter, 3 retries).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The retry budget, or `None` for no budget (not recommended). Clones of one
    /// [`RetryBudget`] share it, so several layers may draw from one account.
    #[must_use]
    pub fn budget(mut self, budget: Option<RetryBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// The longest wait a retry header may impose when this layer honours it alone (default
    /// 5 min, at most 1 h); a longer one gives up.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Retry non-idempotent requests (POST, PATCH) after a timeout or connection error too
    /// (default `false`). Only for servers that deduplicate requests.
    #[must_use]
    pub fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.retry_non_idempotent = yes;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// [`Error::Config`] if `max_wait` is zero or above 1 h.
    pub fn build(self) -> Result<ExpBackoffLayer, Error> {
        if self.max_wait.is_zero() || self.max_wait > super::retry_after::MAX_WAIT_LIMIT {
            return Err(Error::config(format!(
                "back-off max wait must be within (0, 1 h], got {:?}",
                self.max_wait
            )));
        }
        Ok(self.finish())
    }

    fn finish(self) -> ExpBackoffLayer {
        ExpBackoffLayer {
            shared: Arc::new(Shared {
                backoff: self.backoff,
                budget: self.budget,
                max_wait: self.max_wait,
                retry_non_idempotent: self.retry_non_idempotent,
                counters: Arc::default(),
            }),
        }
    }
}

impl<S: Clone> Layer<S> for ExpBackoffLayer {
    type Service = ExpBackoff<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService::new(inner, self.clone())
    }
}

/// The service [`ExpBackoffLayer`] produces.
pub type ExpBackoff<S> = RetryService<S, ExpBackoffLayer>;

impl ExpBackoffLayer {
    fn retry(
        &self,
        retries: u32,
        at: Instant,
        floor: Option<Duration>,
        why: &'static str,
    ) -> Decision {
        let s = &self.shared;
        if retries >= s.backoff.max_retries() {
            return Decision::GiveUp("max retries reached");
        }
        let delay = s.backoff.delay(retries).max(floor.unwrap_or_default());
        if delay > s.max_wait {
            return Decision::GiveUp("retry-after exceeds the cap");
        }
        if let Some(budget) = &s.budget {
            if !budget.withdraw() {
                Counters::bump(&s.counters.budget_refusals);
                return Decision::GiveUp("retry budget exhausted");
            }
        }
        Decision::Retry {
            until: later(at, delay),
            why,
        }
    }
}

impl RetryPolicy for ExpBackoffLayer {
    const NAME: &'static str = "exp_backoff";

    fn on_call(&self) {
        self.shared.counters.requests.bump();
        if let Some(budget) = &self.shared.budget {
            budget.deposit();
        }
    }

    fn max_wait(&self) -> Duration {
        self.shared.max_wait
    }

    fn decide(&self, ctx: &CallCtx, done: Progress, seen: Outcome<'_>, at: Instant) -> Decision {
        let retries = done.retries;
        let (failure, why) = match seen {
            Outcome::Response {
                exhausted: true, ..
            } => return Decision::Done,
            Outcome::Response {
                status, headers, ..
            } => match Failure::of_response(status, headers) {
                None => return Decision::Done,
                // The Retry-After layer outside handles it.
                Some(Failure::ServerWait(_))
                    if ctx.retry_after_outside && status != StatusCode::REQUEST_TIMEOUT =>
                {
                    return Decision::Done
                }
                Some(failure) => (failure, "status"),
            },
            Outcome::Error(kind) => {
                let failure = Failure::of_error_kind(kind);
                if failure == Failure::Permanent {
                    return Decision::Done;
                }
                if !ctx.idempotent && !self.shared.retry_non_idempotent {
                    return Decision::GiveUp(
                        "non-idempotent request after a timeout or connection error",
                    );
                }
                let why = if kind == ErrorKind::Timeout {
                    "timeout"
                } else {
                    "connect"
                };
                (failure, why)
            }
        };
        self.retry(retries, at, failure.server_wait(), why)
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }
}

impl TowerRetryPolicy for ExpBackoffLayer {
    fn mark(&self) -> RetryAfterMark {
        NO_MARK
    }
}
