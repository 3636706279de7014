//! The tower layers. Each is also a `reqwest_middleware::Middleware` (feature `reqwest`).
//!
//! # Stacking order
//!
//! Outermost first: [`RetryAfterLayer`],
//! [`ExpBackoffLayer`], [`AuthLayer`], [`TimeoutLayer`].
//!
//! - `RetryAfterLayer` outside `ExpBackoffLayer`: a server-directed wait holds the whole origin,
//!   including the back-off layer's retries; the back-off layer leaves responses with a retry
//!   header to it (each response is retried by exactly one layer). On tower, the retry layers
//!   see each other while one calls and polls the services inside it (a mark on the thread, so
//!   the request carries no marker and no allocation); keep them in one service stack — a
//!   layer between them that calls the inner service from another task (tower's `Buffer`)
//!   hides the outer one, and the inner layer then acts as if it were alone.
//! - The auth layer inside both retry layers: every retry picks up the current token (it may
//!   have been refreshed during the wait).
//! - `TimeoutLayer` innermost: the timeout bounds one attempt, not the whole call with its
//!   waits; a timed-out attempt is then retried by `ExpBackoffLayer` after the back-off delay.
//! - A redirect follower (tower-http's `FollowRedirectLayer`) may go outside all four: the auth
//!   layer sees every redirected request and attaches the token only to the origins it is for
//!   (see [`crate::origin`]), so a `302` to another origin does not carry it there.

pub(crate) mod auth;
mod body;
pub(crate) mod challenge;
mod exp_backoff;
pub(crate) mod retry;
mod retry_after;
pub(crate) mod timeout;

pub use auth::{Auth, AuthLayer, ResponseFuture as AuthFuture};
pub use body::TryCloneBody;
pub use exp_backoff::{ExpBackoff, ExpBackoffLayer, ExpBackoffLayerBuilder};
pub use retry::{ResponseFuture, RetryService};
pub use retry_after::{RetryAfter, RetryAfterLayer, RetryAfterLayerBuilder, MAX_WAIT_LIMIT};
pub use timeout::{Timeout, TimeoutLayer};

/// The future of a [`Timeout`] call.
pub type TimeoutFuture<F> = timeout::ResponseFuture<F>;
