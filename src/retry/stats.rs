//! Counters a user can read without a metrics stack (rule O2).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Shards of a [`ShardedCounter`].
const SHARDS: usize = 8;

/// One shard, on its own cache line.
#[derive(Default)]
#[repr(align(128))]
struct Shard(AtomicU64);

/// A counter bumped on every request: each thread adds to its own shard (its own cache line),
/// so threads on different cores do not contend for one line; reading sums the shards.
#[derive(Default)]
pub(crate) struct ShardedCounter {
    shards: [Shard; SHARDS],
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard_index() -> usize {
    SHARD.with(|s| {
        let i = s.get();
        if i < SHARDS {
            return i;
        }
        let i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
        s.set(i);
        i
    })
}

impl ShardedCounter {
    /// Adds one.
    pub(crate) fn bump(&self) {
        self.shards[shard_index()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// The total.
    pub(crate) fn get(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |n, s| n.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

impl fmt::Debug for ShardedCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

/// The raw counters behind [`RetryStats`].
#[derive(Debug, Default)]
#[allow(unreachable_pub, private_interfaces)]
pub struct Counters {
    pub(crate) requests: ShardedCounter,
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
        self.counters.requests.get()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn o2_sharded_counter_counts_every_bump_from_every_thread() {
        let c = ShardedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..(SHARDS + 3) {
                s.spawn(|| {
                    for _ in 0..1000 {
                        c.bump();
                    }
                });
            }
        });
        assert_eq!(c.get(), (SHARDS as u64 + 3) * 1000);
    }
}
