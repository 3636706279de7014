//! The retry policy shared by the layers and the token cache: `Retry-After` parsing, back-off,
//! the retry budget, the per-origin throttle gate and outcome classification.

pub mod retry_after;
