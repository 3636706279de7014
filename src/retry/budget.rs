//! The retry budget (rule R5).
//!
//! Why a budget and not only a maximum number of retries: with "3 retries per request", a
//! dependency that is down receives 4× the traffic exactly when it can least take it. A budget
//! bounds retries to a fraction of the requests seen over a sliding window (plus a small
//! per-second floor so a quiet client can still retry a blip), so a total outage amplifies load
//! by at most that fraction.
//!
//! It keeps the semantics of tower's `TpsBudget` (the Finagle design: ten slots over the window,
//! deposits counted in the current slot, a reserve of `min_per_sec × window`) without its mutex: the current slot and its start time are one atomic word, and the thread that moves it
//! on (compare-and-swap) is the one that retires the slots that fell out of the window. A
//! deposit is one atomic load and one atomic add: it reads the clock only once the current
//! slot has ended, which a timer task on the runtime marks (or every time, without a runtime).
//! A withdrawal always reads the clock.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;

/// A shared retry budget: clones draw from the same account.
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Account>,
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
            inner: Arc::new(Account::new(window, min_per_sec, ratio)),
            window,
            ratio,
            min_per_sec,
        })
    }

    /// Records a first attempt (earns retry credit).
    pub fn deposit(&self) {
        Account::deposit(&self.inner);
    }

    /// Takes credit for one retry; `false` means the budget is spent and the retry must not
    /// be sent.
    pub fn withdraw(&self) -> bool {
        self.inner.try_get(self.inner.withdraw_amount)
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
            inner: Arc::new(Account::new(Duration::from_secs(10), 1, 0.2)),
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

/// Slots over the window.
const SLOTS: usize = 10;
/// Bits of the packed generation word that hold the slot index.
const INDEX_BITS: u32 = 4;

/// The lock-free account behind [`RetryBudget`].
struct Account {
    /// Start of the current slot (nanoseconds after `base`) << `INDEX_BITS` | its index.
    generation: AtomicU64,
    base: Instant,
    reserve: isize,
    slots: [AtomicIsize; SLOTS],
    /// How long one slot lasts, in nanoseconds.
    slot_ns: u64,
    /// Deposits and withdrawals of the current slot.
    writer: AtomicIsize,
    /// Whether the current slot may have ended, so the next deposit must read the clock: set
    /// by a timer task at the slot's end (or when that task is dropped unfinished), cleared by
    /// the deposit that moves the slot on and arms the next timer.
    due: AtomicBool,
    /// Cleared for good when a timer task ended before its time (its runtime shut down, or has
    /// no timers): every deposit then reads the clock, as without a runtime.
    timers: AtomicBool,
    deposit_amount: isize,
    withdraw_amount: isize,
}

impl Account {
    /// `window` is within 1..=60 s and `ratio` within 0..=1000 (checked by the caller).
    fn new(window: Duration, min_per_sec: u32, ratio: f32) -> Self {
        // Integer amounts, as tower's TpsBudget: each deposit earns `deposit_amount`, each
        // retry costs `withdraw_amount`.
        let (deposit_amount, withdraw_amount) = if ratio == 0.0 {
            (0, 1)
        } else if ratio <= 1.0 {
            (1, (1.0 / ratio) as isize)
        } else {
            (1000, (1000.0 / ratio) as isize)
        };
        let reserve = (min_per_sec as isize)
            .saturating_mul(window.as_secs() as isize)
            .saturating_mul(withdraw_amount);
        let slot_ns = u64::try_from((window / SLOTS as u32).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Account {
            generation: AtomicU64::new(0),
            base: Instant::now(),
            reserve,
            slots: Default::default(),
            slot_ns,
            writer: AtomicIsize::new(0),
            due: AtomicBool::new(true),
            timers: AtomicBool::new(true),
            deposit_amount,
            withdraw_amount,
        }
    }

    fn now_ns(&self) -> u64 {
        let ns = Instant::now()
            .saturating_duration_since(self.base)
            .as_nanos();
        // 2^60 ns is 36 years.
        u64::try_from(ns)
            .unwrap_or(u64::MAX)
            .min(u64::MAX >> INDEX_BITS)
    }

    /// Moves the current slot on once it is over (as tower's `TpsBudget::expire`): the thread
    /// whose compare-and-swap wins commits the current count to the old slot and clears the
    /// slots skipped since; the others carry on.
    fn expire(&self) {
        let now = self.now_ns();
        let current = self.generation.load(Ordering::Acquire);
        let (since, index) = (current >> INDEX_BITS, (current & 0xf) as usize);
        let diff = now.saturating_sub(since);
        if diff < self.slot_ns {
            return;
        }
        // Slots to clear: one per whole slot length beyond the first (a full turn clears all,
        // the old slot last).
        let skipped = (diff - 1) / self.slot_ns;
        let next = ((index as u64 + 1 + skipped % SLOTS as u64) % SLOTS as u64) as usize;
        let packed = (now << INDEX_BITS) | next as u64;
        if self
            .generation
            .compare_exchange(current, packed, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let committed = self.writer.swap(0, Ordering::AcqRel);
        self.slots[index].store(committed, Ordering::Release);
        for j in 1..=skipped.min(SLOTS as u64) as usize {
            self.slots[(index + j) % SLOTS].store(0, Ordering::Release);
        }
    }

    fn windowed(&self) -> isize {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .fold(0, isize::saturating_add)
    }

    /// Records a first attempt: the clock is read only when the current slot may have ended.
    fn deposit(this: &Arc<Self>) {
        if this.due.load(Ordering::Acquire)
            && this
                .due
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            this.expire();
            Account::arm(this);
        }
        if this.deposit_amount != 0 {
            this.writer.fetch_add(this.deposit_amount, Ordering::AcqRel);
        }
    }

    /// Sets `due` again when the current slot ends, by a timer task on the current runtime;
    /// without a runtime (or after a timer task ended early), at once: every deposit then reads
    /// the clock.
    fn arm(this: &Arc<Self>) {
        let rt = match tokio::runtime::Handle::try_current() {
            Ok(rt) if this.timers.load(Ordering::Acquire) => rt,
            _ => {
                this.due.store(true, Ordering::Release);
                return;
            }
        };
        let since_ns = this.generation.load(Ordering::Acquire) >> INDEX_BITS;
        let end = this
            .base
            .checked_add(Duration::from_nanos(since_ns.saturating_add(this.slot_ns)))
            .unwrap_or_else(Instant::now);
        let due = Due {
            account: Arc::downgrade(this),
            on_time: false,
        };
        rt.spawn(async move {
            let mut due = due; // the whole guard lives in the task
            tokio::time::sleep_until(end).await;
            due.on_time = true;
        });
    }

    fn try_get(&self, amount: isize) -> bool {
        self.expire();
        // Take first and give back on overdraw, so two concurrent withdrawals never both spend
        // the same credit.
        let before = self.writer.fetch_sub(amount, Ordering::AcqRel);
        if before
            .saturating_add(self.windowed())
            .saturating_add(self.reserve)
            >= amount
        {
            true
        } else {
            self.writer.fetch_add(amount, Ordering::AcqRel);
            false
        }
    }
}

/// Marks the account's slot as ended when dropped: at the slot's end, or earlier if the timer
/// task is dropped (its runtime shut down) or panicked (a runtime without timers); then the
/// account stops using timers.
struct Due {
    account: Weak<Account>,
    on_time: bool,
}

impl Drop for Due {
    fn drop(&mut self) {
        if let Some(account) = self.account.upgrade() {
            if !self.on_time {
                account.timers.store(false, Ordering::Release);
            }
            account.due.store(true, Ordering::Release);
        }
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

    /// A deposit reads the clock only after a timer marked the slot as ended: the requests of
    /// 5 s ago are in the window 6 s later, those of 11 s ago are not.
    #[tokio::test(start_paused = true)]
    async fn r5_deposits_count_in_the_slot_of_their_time_without_a_clock_read_each() {
        let b = RetryBudget::new(Duration::from_secs(10), 0.2, 0).unwrap();
        for _ in 0..100 {
            b.deposit();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        for _ in 0..100 {
            b.deposit();
        }
        tokio::time::sleep(Duration::from_secs(6)).await;
        let mut granted = 0;
        while b.withdraw() {
            granted += 1;
            assert!(granted < 1000);
        }
        assert_eq!(granted, 20, "20 % of the 100 requests still in the window");
    }

    /// A timer task that ends before its time (its runtime shut down, or one without timers
    /// panicked) makes the budget read the clock on every deposit from then on, never re-arm
    /// a timer per deposit; it keeps counting right.
    #[test]
    fn r5_a_budget_whose_timer_runtime_is_gone_reads_the_clock_again() {
        let b = RetryBudget::new(Duration::from_secs(10), 0.2, 0).unwrap();
        {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async { b.deposit() });
            assert!(b.inner.timers.load(Ordering::Acquire));
        }
        assert!(
            !b.inner.timers.load(Ordering::Acquire),
            "no timers any more"
        );
        assert!(
            b.inner.due.load(Ordering::Acquire),
            "every deposit reads the clock"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..99 {
                b.deposit();
            }
            assert_eq!(rt.metrics().num_alive_tasks(), 0, "no timer task armed");
        });
        let mut granted = 0;
        while b.withdraw() {
            granted += 1;
            assert!(granted < 1000);
        }
        assert_eq!(granted, 20, "20 % of 100 requests");
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

    #[test]
    fn r5_budget_empty_without_deposits_or_floor() {
        let b = RetryBudget::new(Duration::from_secs(1), 1.0, 0).unwrap();
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn r5_budget_deposits_leave_the_window() {
        let b = RetryBudget::new(Duration::from_secs(1), 1.0, 0).unwrap();
        b.deposit();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!b.withdraw());
    }

    /// tower's `tps_slots`, step for step: deposits move from slot to slot and expire a window
    /// later.
    #[tokio::test(start_paused = true)]
    async fn r5_budget_slots_slide_like_tower_tps_budget() {
        // `sleep`, not `advance`: a slot's end is marked by a timer, which `advance` skips over
        // without running it.
        let b = RetryBudget::new(Duration::from_secs(1), 0.5, 0).unwrap();
        b.deposit();
        b.deposit();
        tokio::time::sleep(Duration::from_millis(901)).await;
        assert!(b.withdraw());
        assert!(!b.withdraw(), "two deposits at 50 % earn one retry");
        tokio::time::sleep(Duration::from_millis(2001)).await;
        b.deposit();
        tokio::time::sleep(Duration::from_millis(301)).await;
        b.deposit();
        tokio::time::sleep(Duration::from_millis(801)).await;
        b.deposit();
        // The first of the three left the window; the last two earn one retry.
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    #[test]
    fn r5_budget_floor_is_per_second_times_window() {
        let b = RetryBudget::new(Duration::from_secs(1), 1.0, 5).unwrap();
        for _ in 0..5 {
            assert!(b.withdraw());
        }
        assert!(!b.withdraw());
    }

    /// Many threads depositing and withdrawing at once never get more retries than the
    /// deposits earn plus the floor.
    #[test]
    fn r5_budget_is_exact_under_contention() {
        let b = RetryBudget::new(Duration::from_secs(60), 0.2, 1).unwrap();
        let granted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        b.deposit();
                        if b.withdraw() {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let mut granted = granted.into_inner();
        // A withdrawal racing another may be refused while that one's credit is taken; what
        // is left is still there.
        while b.withdraw() {
            granted += 1;
        }
        // 20 % of 40,000 deposits, plus 1/s over 60 s: exactly, not one more.
        assert_eq!(granted, 8_000 + 60);
    }
}
