//! The throttle gate: "don't send to X until T" (rules R2 and T6).
//!
//! The gate only stores holds. Keys are 64-bit hashes computed by their owners: an origin's by
//! `Origin::gate_key` in the origin module (scheme, host, port), a token-cache key's by the
//! cache; so checking the gate allocates nothing. When no key is held — the normal case — a
//! check is one atomic load and takes no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How many keys a gate holds at most (X3: no unbounded growth). Expired keys are pruned first;
/// past this, new holds are dropped and logged.
const MAX_KEYS: usize = 4096;

/// A set of "held until" instants, one per key.
#[derive(Debug)]
#[allow(unreachable_pub)]
pub struct ThrottleGate {
    base: Instant,
    /// Milliseconds after `base` until which some key may be held; 0 = none ever held.
    any_until_ms: AtomicU64,
    held: Mutex<HashMap<u64, Instant>>,
}

impl Default for ThrottleGate {
    fn default() -> Self {
        ThrottleGate {
            base: Instant::now(),
            any_until_ms: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl ThrottleGate {
    /// Holds `key` until `until` (never shortens an existing hold).
    pub(crate) fn hold(&self, key: u64, until: Instant) {
        let now = Instant::now();
        if until <= now {
            return;
        }
        let mut held = lock(&self.held);
        if held.len() >= MAX_KEYS {
            held.retain(|_, t| *t > now);
            if held.len() >= MAX_KEYS {
                tracing::warn!(keys = held.len(), "throttle gate full, hold not recorded");
                return;
            }
        }
        let entry = held.entry(key).or_insert(until);
        if *entry < until {
            *entry = until;
        }
        let ms = ms_ceil(until.saturating_duration_since(self.base));
        self.any_until_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Whether any key may be held now: one atomic load while no key was ever held (the normal
    /// case, no clock read), then a clock read.
    pub(crate) fn any_held(&self) -> bool {
        let any = self.any_until_ms.load(Ordering::Acquire);
        if any == 0 {
            return false;
        }
        let now_ms = Instant::now()
            .saturating_duration_since(self.base)
            .as_millis();
        u128::from(any) > now_ms
    }

    /// The instant until which `key` is held, if that is still in the future.
    pub(crate) fn held_until(&self, key: u64) -> Option<Instant> {
        let now = Instant::now();
        let now_ms = now.saturating_duration_since(self.base).as_millis();
        if u128::from(self.any_until_ms.load(Ordering::Acquire)) <= now_ms {
            return None;
        }
        let held = lock(&self.held);
        held.get(&key).copied().filter(|t| *t > now)
    }
}

fn ms_ceil(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::Origin;

    fn origin_key(scheme: &str, host: &str, port: Option<u16>) -> u64 {
        Origin::new(scheme, host, port).gate_key()
    }

    #[tokio::test(start_paused = true)]
    async fn r2_gate_holds_until_instant_then_releases() {
        let g = ThrottleGate::default();
        let k = origin_key("https", "api.example.com", None);
        assert_eq!(g.held_until(k), None);
        let until = Instant::now() + Duration::from_millis(1500);
        g.hold(k, until);
        assert_eq!(g.held_until(k), Some(until));
        assert_eq!(
            g.held_until(origin_key("https", "other.example.com", None)),
            None
        );
        // A shorter hold never shortens the existing one.
        g.hold(k, Instant::now() + Duration::from_millis(10));
        assert_eq!(g.held_until(k), Some(until));
        tokio::time::advance(Duration::from_millis(1499)).await;
        assert_eq!(g.held_until(k), Some(until));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(g.held_until(k), None);
    }

    #[tokio::test(start_paused = true)]
    async fn x3_gate_is_bounded() {
        let g = ThrottleGate::default();
        let until = Instant::now() + Duration::from_secs(60);
        for k in 0..(MAX_KEYS as u64 + 100) {
            g.hold(k, until);
        }
        assert!(lock(&g.held).len() <= MAX_KEYS);
        tokio::time::advance(Duration::from_secs(61)).await;
        g.hold(1, Instant::now() + Duration::from_secs(1));
        assert_eq!(lock(&g.held).len(), 1);
    }
}
