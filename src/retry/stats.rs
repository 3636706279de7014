//! Counters a user can read without a metrics stack (rule O2).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The raw counters behind [`RetryStats`].
#[derive(Debug, Default)]
#[allow(unreachable_pub)]
pub struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) held: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) give_ups: AtomicU64,
    pub(crate) budget_refusals: AtomicU64,
    pub(crate) longest_wait_ms: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_wait(&self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.longest_wait_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

/// A live view of a retry layer's counters; clones of a layer share them.
#[derive(Debug, Clone)]
pub struct RetryStats {
    pub(crate) counters: Arc<Counters>,
}

impl RetryStats {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Calls that entered the layer.
    pub fn requests(&self) -> u64 {
        Self::get(&self.counters.requests)
    }

    /// Retries sent.
    pub fn retries(&self) -> u64 {
        Self::get(&self.counters.retries)
    }

    /// Calls held by the per-origin gate before being sent (`RetryAfterLayer`).
    pub fn held(&self) -> u64 {
        Self::get(&self.counters.held)
    }

    /// Calls failed fast with `Error::Throttled` because the wait was longer than the cap or the
    /// deadline.
    pub fn throttled(&self) -> u64 {
        Self::get(&self.counters.throttled)
    }

    /// Retryable outcomes returned without a retry (max retries, cap, deadline, body not
    /// cloneable, non-idempotent method).
    pub fn give_ups(&self) -> u64 {
        Self::get(&self.counters.give_ups)
    }

    /// Retries refused by the retry budget (`ExpBackoffLayer`).
    pub fn budget_refusals(&self) -> u64 {
        Self::get(&self.counters.budget_refusals)
    }

    /// The longest single wait so far.
    pub fn longest_wait(&self) -> Duration {
        Duration::from_millis(Self::get(&self.counters.longest_wait_ms))
    }
}
