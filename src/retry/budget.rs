//! The retry budget (rule R5).
//!
//! Why a budget and not only a maximum number of retries: with "3 retries per request", a
//! dependency that is down receives 4× the traffic exactly when it can least take it. A budget
//! bounds retries to a fraction of the requests seen over a sliding window (plus a small
//! per-second floor so a quiet client can still retry a blip), so a total outage amplifies load
//! by at most that fraction. This is tower's [`TpsBudget`] (the Finagle design) with validated
//! settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

use crate::Error;

/// A shared retry budget: clones draw from the same account.
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<TpsBudget>,
    window: Duration,
    ratio: f32,
    min_per_sec: u32,
}

impl RetryBudget {
    /// Retries may be at most `ratio` of the requests seen over `window`, plus `min_per_sec`
    /// retries per second.
    ///
    /// # Errors
    /// [`Error::Config`] if `window` is not within 1–60 s, `ratio` not within 0–1000 (or NaN),
    /// or `min_per_sec` above 1,000,000.
    pub fn new(window: Duration, ratio: f32, min_per_sec: u32) -> Result<Self, Error> {
        if window < Duration::from_secs(1) || window > Duration::from_secs(60) {
            return Err(Error::config(format!(
                "retry budget window must be within 1..=60 s, got {window:?}"
            )));
        }
        if !(0.0..=1000.0).contains(&ratio) {
            return Err(Error::config(format!(
                "retry budget ratio must be within 0..=1000, got {ratio}"
            )));
        }
        if min_per_sec > 1_000_000 {
            return Err(Error::config(format!(
                "retry budget floor must be at most 1000000 per second, got {min_per_sec}"
            )));
        }
        Ok(RetryBudget {
            inner: Arc::new(TpsBudget::new(window, min_per_sec, ratio)),
            window,
            ratio,
            min_per_sec,
        })
    }

    /// Records a first attempt (earns retry credit).
    pub fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes credit for one retry; `false` means the budget is spent and the retry must not
    /// be sent.
    pub fn withdraw(&self) -> bool {
        self.inner.withdraw()
    }

    /// The fraction of requests that may be retried.
    pub fn ratio(&self) -> f32 {
        self.ratio
    }
}

impl Default for RetryBudget {
    /// Retries ≤ 20 % of requests over 10 s, plus 1 per second.
    fn default() -> Self {
        RetryBudget {
            inner: Arc::new(TpsBudget::new(Duration::from_secs(10), 1, 0.2)),
            window: Duration::from_secs(10),
            ratio: 0.2,
            min_per_sec: 1,
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("window", &self.window)
            .field("ratio", &self.ratio)
            .field("min_per_sec", &self.min_per_sec)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn r5_budget_bounds_retries_to_ratio_plus_floor() {
        let b = RetryBudget::new(Duration::from_secs(10), 0.2, 1).unwrap();
        for _ in 0..100 {
            b.deposit();
        }
        let mut granted = 0;
        while b.withdraw() {
            granted += 1;
            assert!(granted < 1000);
        }
        // 20 % of 100 requests, plus a floor of 1/s over the 10 s window.
        assert_eq!(granted, 20 + 10);
    }

    #[tokio::test(start_paused = true)]
    async fn r5_budget_recovers_after_window() {
        let b = RetryBudget::new(Duration::from_secs(1), 0.0, 0).unwrap();
        assert!(!b.withdraw());
        let b = RetryBudget::new(Duration::from_secs(1), 1.0, 0).unwrap();
        b.deposit();
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    #[test]
    fn r5_invalid_budget_rejected() {
        assert!(RetryBudget::new(Duration::ZERO, 0.2, 1).is_err());
        assert!(RetryBudget::new(Duration::from_secs(61), 0.2, 1).is_err());
        assert!(RetryBudget::new(Duration::from_secs(10), f32::NAN, 1).is_err());
        assert!(RetryBudget::new(Duration::from_secs(10), -1.0, 1).is_err());
        assert!(RetryBudget::new(Duration::from_secs(10), 0.2, u32::MAX).is_err());
    }
}
