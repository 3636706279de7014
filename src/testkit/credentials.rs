//! [`TokenCredential`]s for tests: in-memory clients of the fake's token endpoint and IMDS, and
//! wrappers that make any credential panic, slow or counted.
//!
//! The wrappers compose (each wraps any `TokenCredential`) and use only the tokio clock, so
//! paused-time tests control them:
//!
//! ```no_run
//! # #[cfg(feature = "reqwest")]
//! # async fn demo() -> Result<(), resilient_auth::Error> {
//! use std::time::Duration;
//! use resilient_auth::testkit::credentials::{CountingCredential, PanickingCredential, SlowCredential};
//! use resilient_auth::testkit::FakeIdentityProvider;
//!
//! let idp = FakeIdentityProvider::builder().build()?;
//! // the first call panics, every call takes 2 s, and `calls` counts them
//! let credential = CountingCredential::new(SlowCredential::new(
//!     PanickingCredential::on_call(idp.credential("tenant", "client"), 1),
//!     Duration::from_secs(2),
//! ));
//! let calls = credential.counter();
//! # let _ = (credential, calls);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::handler::lock;
use crate::credential::{CredentialIdentity, TokenCredential, TokenRequest};
use crate::{Error, TokenResponse};

#[cfg(feature = "reqwest")]
pub use self::fake::{FakeClientSecretCredential, FakeImdsCredential};

/// How many [`CallRecord`]s a [`CallCounter`] keeps (the oldest go first; the totals count all).
pub const MAX_CALL_RECORDS: usize = 100_000;

/// When a [`PanickingCredential`] panics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PanicWhen {
    /// On these calls, numbered from 1.
    Calls(Range<u64>),
    /// On calls made during this window, measured from the credential's start (see
    /// [`PanickingCredential::since`]) on the tokio clock.
    Window(Range<Duration>),
}

/// A credential that panics on chosen calls, and otherwise calls `inner`.
///
/// The panic happens inside the returned future, when it is first polled: where a token cache
/// runs its fetch (a spawned task, typically). The call is counted either way.
///
/// # Panics
/// On purpose, on the calls its [`PanicWhen`] selects; never otherwise.
#[derive(Debug)]
pub struct PanickingCredential<C> {
    inner: C,
    when: PanicWhen,
    since: Instant,
    calls: AtomicU64,
}

impl<C: TokenCredential> PanickingCredential<C> {
    /// Panics on the `n`-th call (numbered from 1) only.
    pub fn on_call(inner: C, n: u64) -> Self {
        Self::new(inner, PanicWhen::Calls(n..n.saturating_add(1)))
    }

    /// Panics on the calls in `calls` (numbered from 1), e.g. `1..4` for the first three.
    pub fn on_calls(inner: C, calls: Range<u64>) -> Self {
        Self::new(inner, PanicWhen::Calls(calls))
    }

    /// Panics on every call made during `window`, measured from now (or from
    /// [`since`](Self::since)).
    pub fn during(inner: C, window: Range<Duration>) -> Self {
        Self::new(inner, PanicWhen::Window(window))
    }

    /// Measures [`PanicWhen::Window`] from `start` instead of from construction, e.g.
    /// [`FakeIdentityProvider::started_at`](super::FakeIdentityProvider::started_at) to share
    /// the fake's fault clock.
    #[must_use]
    pub fn since(mut self, start: Instant) -> Self {
        self.since = start;
        self
    }

    fn new(inner: C, when: PanicWhen) -> Self {
        PanickingCredential {
            inner,
            when,
            since: Instant::now(),
            calls: AtomicU64::new(0),
        }
    }

    /// How many calls it has had.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl<C: TokenCredential> TokenCredential for PanickingCredential<C> {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let panics = match &self.when {
            PanicWhen::Calls(calls) => calls.contains(&n),
            PanicWhen::Window(window) => window.contains(&self.since.elapsed()),
        };
        Box::pin(async move {
            if panics {
                panic!("testkit: PanickingCredential panics on call {n}");
            }
            self.inner.get_token(request).await
        })
    }

    fn identity(&self) -> CredentialIdentity {
        self.inner.identity()
    }
}

/// A credential that waits `delay` (tokio clock) before each call to `inner`: a slow or, with
/// a long delay, a hanging identity provider as a credential sees it.
#[derive(Debug)]
pub struct SlowCredential<C> {
    inner: C,
    delay: Duration,
}

impl<C: TokenCredential> SlowCredential<C> {
    /// Each call waits `delay`, then calls `inner`. `Duration::MAX` never finishes.
    pub fn new(inner: C, delay: Duration) -> Self {
        SlowCredential { inner, delay }
    }
}

impl<C: TokenCredential> TokenCredential for SlowCredential<C> {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.get_token(request).await
        })
    }

    fn identity(&self) -> CredentialIdentity {
        self.inner.identity()
    }
}

/// How a counted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallResult {
    /// Not finished yet.
    InFlight,
    /// Returned a token.
    Ok,
    /// Returned an error.
    Err,
    /// Its future was dropped before it finished: it panicked, or its caller cancelled it.
    Unfinished,
}

/// One counted call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallRecord {
    /// When it was made (tokio clock).
    pub at: Instant,
    /// When it finished or was dropped.
    pub ended: Option<Instant>,
    /// The claims it asked for.
    pub claims: Option<Arc<str>>,
    /// How it ended.
    pub result: CallResult,
}

#[derive(Debug, Default)]
struct Calls {
    records: VecDeque<CallRecord>,
    first: u64,
    total: u64,
    ok: u64,
    err: u64,
    unfinished: u64,
}

/// The shared counts of a [`CountingCredential`] (clones share them), readable after the
/// credential has moved into a cache.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    calls: Arc<Mutex<Calls>>,
}

impl CallCounter {
    /// Calls made.
    pub fn calls(&self) -> u64 {
        lock(&self.calls).total
    }

    /// Calls that returned a token.
    pub fn succeeded(&self) -> u64 {
        lock(&self.calls).ok
    }

    /// Calls that returned an error.
    pub fn failed(&self) -> u64 {
        lock(&self.calls).err
    }

    /// Calls whose future was dropped unfinished (a panic or a cancellation).
    pub fn unfinished(&self) -> u64 {
        lock(&self.calls).unfinished
    }

    /// Calls not finished yet.
    pub fn in_flight(&self) -> u64 {
        let c = lock(&self.calls);
        c.total - c.ok - c.err - c.unfinished
    }

    /// The last [`MAX_CALL_RECORDS`] calls, oldest first.
    pub fn records(&self) -> Vec<CallRecord> {
        lock(&self.calls).records.iter().cloned().collect()
    }

    fn start(&self, claims: Option<Arc<str>>) -> u64 {
        let mut c = lock(&self.calls);
        let id = c.total;
        c.total += 1;
        if c.records.len() >= MAX_CALL_RECORDS {
            c.records.pop_front();
            c.first += 1;
        }
        c.records.push_back(CallRecord {
            at: Instant::now(),
            ended: None,
            claims,
            result: CallResult::InFlight,
        });
        id
    }

    fn end(&self, id: u64, result: CallResult) {
        let mut c = lock(&self.calls);
        match result {
            CallResult::Ok => c.ok += 1,
            CallResult::Err => c.err += 1,
            CallResult::Unfinished => c.unfinished += 1,
            CallResult::InFlight => {}
        }
        let first = c.first;
        let index = id.checked_sub(first).and_then(|i| usize::try_from(i).ok());
        if let Some(r) = index.and_then(|i| c.records.get_mut(i)) {
            r.ended = Some(Instant::now());
            r.result = result;
        }
    }
}

/// Counts a call as unfinished if dropped before it ends.
struct CallGuard {
    counter: CallCounter,
    id: u64,
    done: bool,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done {
            self.counter.end(self.id, CallResult::Unfinished);
        }
    }
}

/// A credential that counts and records the calls to `inner`: made, succeeded, failed,
/// unfinished (panicked or cancelled), with their times and claims.
#[derive(Debug)]
pub struct CountingCredential<C> {
    inner: C,
    counter: CallCounter,
}

impl<C: TokenCredential> CountingCredential<C> {
    /// Counts the calls to `inner`.
    pub fn new(inner: C) -> Self {
        CountingCredential {
            inner,
            counter: CallCounter::default(),
        }
    }

    /// A handle on the counts that stays valid after the credential has moved.
    pub fn counter(&self) -> CallCounter {
        self.counter.clone()
    }
}

impl<C: TokenCredential> TokenCredential for CountingCredential<C> {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        let id = self.counter.start(request.claims.clone());
        let mut guard = CallGuard {
            counter: self.counter.clone(),
            id,
            done: false,
        };
        Box::pin(async move {
            let result = self.inner.get_token(request).await;
            guard.done = true;
            let r = if result.is_ok() {
                CallResult::Ok
            } else {
                CallResult::Err
            };
            guard.counter.end(guard.id, r);
            result
        })
    }

    fn identity(&self) -> CredentialIdentity {
        self.inner.identity()
    }
}

impl fmt::Display for CallResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallResult::InFlight => "in flight",
            CallResult::Ok => "ok",
            CallResult::Err => "error",
            CallResult::Unfinished => "unfinished",
        })
    }
}

#[cfg(feature = "reqwest")]
mod fake;
