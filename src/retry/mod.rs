//! The retry policy shared by the layers and the token cache: `Retry-After` parsing, back-off,
//! the retry budget, the per-origin throttle gate and outcome classification.

pub mod backoff;
pub mod budget;
pub(crate) mod classify;
pub(crate) mod driver;
pub(crate) mod policy;
pub mod retry_after;
pub(crate) mod stats;
pub(crate) mod throttle;

pub use backoff::{Backoff, BackoffBuilder};
pub use budget::RetryBudget;
pub use classify::{Attempts, Deadline};
pub use stats::RetryStats;
