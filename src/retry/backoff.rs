//! Exponential back-off with a floor that always holds (rule R3).
//!
//! The n-th retry (0-based) waits `initial × factorⁿ`, capped at `max`, plus a random jitter that
//! only ever *adds* (up to `jitter × delay`, and never past `max`). Subtractive ("full") jitter
//! would spread replicas further, but it would break the guidance this crate implements: after a
//! 5xx or a timeout the first retry comes at least 5 s later, on every replica.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Error;

/// Exponential back-off settings. Build with [`Backoff::builder`]; the default is the one the
/// Entra guidance asks for: first retry after 5 s, factor 2, cap 60 s, 20 % additive jitter,
/// at most 3 retries.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    factor: f64,
    max: Duration,
    jitter: f64,
    max_retries: u32,
    rng: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(5),
            factor: 2.0,
            max: Duration::from_secs(60),
            jitter: 0.2,
            max_retries: 3,
            rng: Jitter::default(),
        }
    }
}

impl Backoff {
    /// A builder starting from the defaults.
    pub fn builder() -> BackoffBuilder {
        BackoffBuilder {
            inner: Backoff::default(),
        }
    }

    /// The delay before retry number `retry` (0 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.base_delay(retry);
        if self.jitter == 0.0 || base >= self.max {
            return base;
        }
        let extra = base.mul_f64(self.jitter * self.rng.next_f64());
        (base + extra).min(self.max)
    }

    /// The delay before retry number `retry` without jitter: the floor the jitter adds to.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let exp = i32::try_from(retry).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.factor.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs).max(self.initial)
        }
    }

    /// The first delay.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// How many retries at most.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The cap on a single delay.
    pub fn max_delay(&self) -> Duration {
        self.max
    }
}

/// Builds a validated [`Backoff`].
#[derive(Debug, Clone)]
pub struct BackoffBuilder {
    inner: Backoff,
}

impl BackoffBuilder {
    /// The first delay (default 5 s). Below 5 s the resilience report flags it.
    #[must_use]
    pub fn initial(mut self, initial: Duration) -> Self {
        self.inner.initial = initial;
        self
    }

    /// The growth factor (default 2, must be finite and ≥ 1).
    #[must_use]
    pub fn factor(mut self, factor: f64) -> Self {
        self.inner.factor = factor;
        self
    }

    /// The cap on a single delay (default 60 s, must be ≥ `initial`).
    #[must_use]
    pub fn max(mut self, max: Duration) -> Self {
        self.inner.max = max;
        self
    }

    /// Additive jitter as a fraction of the delay (default 0.2, range 0..=1).
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.inner.jitter = jitter;
        self
    }

    /// How many retries at most (default 3, at most 10).
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.inner.max_retries = max_retries;
        self
    }

    /// Seeds the jitter's random number generator (for reproducible tests).
    #[must_use]
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.inner.rng = Jitter::seeded(seed);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero initial delay, a factor below 1 or not finite, a cap below
    /// the initial delay, a jitter outside 0..=1, or more than 10 retries.
    pub fn build(self) -> Result<Backoff, Error> {
        let b = self.inner;
        if b.initial.is_zero() {
            return Err(Error::config("back-off initial delay must be > 0"));
        }
        if !b.factor.is_finite() || b.factor < 1.0 {
            return Err(Error::config(format!(
                "back-off factor must be finite and >= 1, got {}",
                b.factor
            )));
        }
        if b.max < b.initial {
            return Err(Error::config(format!(
                "back-off max delay {:?} is below the initial delay {:?}",
                b.max, b.initial
            )));
        }
        if !(0.0..=1.0).contains(&b.jitter) {
            return Err(Error::config(format!(
                "back-off jitter must be within 0..=1, got {}",
                b.jitter
            )));
        }
        if b.max_retries > 10 {
            return Err(Error::config(format!(
                "at most 10 retries, got {}",
                b.max_retries
            )));
        }
        Ok(b)
    }
}

/// The jitter's random source: the thread-local generator, or a seeded one for tests.
#[derive(Clone, Default)]
struct Jitter(Option<Arc<Mutex<fastrand::Rng>>>);

impl Jitter {
    fn seeded(seed: u64) -> Self {
        Jitter(Some(Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)))))
    }

    fn next_f64(&self) -> f64 {
        match &self.0 {
            None => fastrand::f64(),
            Some(rng) => match rng.lock() {
                Ok(mut rng) => rng.f64(),
                Err(poisoned) => poisoned.into_inner().f64(),
            },
        }
    }
}

impl std::fmt::Debug for Jitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Jitter(seeded)"
        } else {
            "Jitter(thread_rng)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn r3_defaults_first_retry_at_least_5s_factor_2_cap_60s() {
        let b = Backoff::default();
        assert_eq!(b.base_delay(0), Duration::from_secs(5));
        assert_eq!(b.base_delay(1), Duration::from_secs(10));
        assert_eq!(b.base_delay(2), Duration::from_secs(20));
        assert_eq!(b.base_delay(3), Duration::from_secs(40));
        assert_eq!(b.base_delay(4), Duration::from_secs(60));
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(60));
        assert_eq!(b.max_retries(), 3);
    }

    #[test]
    fn r3_invalid_settings_rejected_when_built() {
        assert!(Backoff::builder().factor(0.0).build().is_err());
        assert!(Backoff::builder().factor(f64::NAN).build().is_err());
        assert!(Backoff::builder().factor(f64::INFINITY).build().is_err());
        assert!(Backoff::builder().initial(Duration::ZERO).build().is_err());
        assert!(Backoff::builder()
            .initial(Duration::from_secs(10))
            .max(Duration::from_secs(5))
            .build()
            .is_err());
        assert!(Backoff::builder().jitter(-0.1).build().is_err());
        assert!(Backoff::builder().jitter(f64::NAN).build().is_err());
        assert!(Backoff::builder().max_retries(11).build().is_err());
        assert!(Backoff::builder().build().is_ok());
    }

    #[test]
    fn r3_seeded_jitter_is_reproducible() {
        let a = Backoff::builder().jitter_seed(7).build().unwrap();
        let b = Backoff::builder().jitter_seed(7).build().unwrap();
        let da: Vec<_> = (0..4).map(|i| a.delay(i)).collect();
        let db: Vec<_> = (0..4).map(|i| b.delay(i)).collect();
        assert_eq!(da, db);
        assert!(da.iter().any(|d| d.subsec_nanos() != 0), "jitter applied");
    }

    proptest! {
        #[test]
        fn r3_jitter_only_adds_and_cap_holds(seed in any::<u64>(), retry in 0u32..12, jitter in 0.0f64..=1.0) {
            let b = Backoff::builder().jitter(jitter).jitter_seed(seed).build().unwrap();
            let d = b.delay(retry);
            prop_assert!(d >= b.base_delay(retry));
            prop_assert!(d >= Duration::from_secs(5));
            prop_assert!(d <= Duration::from_secs(60));
        }
    }
}
