//! The one wait policy (rules R1, R3, R8, R9, T5, T13): every path that waits — the retry
//! layers, the token cache's refresh and throttle gate, the managed-identity sources through
//! the cache, the regional-to-global fallback and the store peer wait — asks this module how
//! long.
//!
//! The invariants live here and nowhere else:
//! - every wait a server asks for is capped ([`WaitPolicy::max_server_wait`], default 5 min,
//!   at most 1 h);
//! - instant arithmetic saturates ([`later`]): no header value, however large, can overflow;
//! - a `Retry-After` of zero or in the past counts as absent ([`server_wait`]);
//! - after a 5xx, a timeout or a connection error without a usable `Retry-After`, the next
//!   attempt to that target waits at least the back-off floor (5 s), then exponentially
//!   ([`Failure::Transient`]);
//! - consecutive failures of one cache key wait max(`Retry-After`, back-off(n))
//!   ([`WaitPolicy::refresh_wait`]); a key with nothing to serve caps its back-off low (T13).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::classify::ErrorKind;
use super::retry_after::retry_after;
use crate::Error;

/// The longest cap on a server-directed wait that any setting accepts (R8).
pub(crate) const MAX_SERVER_WAIT_LIMIT: Duration = Duration::from_secs(3600);
/// The default cap on a server-directed wait (R1, R8).
pub(crate) const DEFAULT_MAX_SERVER_WAIT: Duration = Duration::from_secs(300);
/// The default cap on the back-off of a key that has no usable token (T13).
pub(crate) const DEFAULT_COLD_CAP: Duration = Duration::from_secs(10);

/// `at + d`, saturating: a wait too large for the clock ends about a century from now instead
/// of panicking (R8).
pub(crate) fn later(at: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    at.checked_add(d)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

/// The wait a response's retry headers ask for, if it is usable: the largest valid
/// `Retry-After` / `retry-after-ms` / `x-ms-retry-after-ms` (R1). Zero, or a date in the past,
/// counts as absent (R9): a server that says "retry now" gets the back-off instead.
pub(crate) fn server_wait(headers: &HeaderMap) -> Option<Duration> {
    retry_after(headers, SystemTime::now()).filter(|d| !d.is_zero())
}

/// What a failed attempt calls for, as far as waiting goes. One classification for every path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server asked for this wait (a usable `Retry-After`, uncapped).
    ServerWait(Duration),
    /// A 5xx, 408 or 429 without a usable `Retry-After`, a timeout or a connection error:
    /// back off (first wait ≥ the floor).
    Transient,
    /// Anything else (a 4xx, bad configuration, a malformed response): not retried by the
    /// layers; the token cache still backs off before asking again.
    Permanent,
}

impl Failure {
    /// A response: `None` if its status is not a failure worth waiting on.
    pub(crate) fn of_response(status: StatusCode, headers: &HeaderMap) -> Option<Failure> {
        if !retryable_status(status) {
            return None;
        }
        Some(match server_wait(headers) {
            Some(wait) => Failure::ServerWait(wait),
            None => Failure::Transient,
        })
    }

    /// An attempt that produced no response.
    pub(crate) fn of_error_kind(kind: ErrorKind) -> Failure {
        match kind {
            ErrorKind::Timeout | ErrorKind::Connect => Failure::Transient,
            ErrorKind::Other => Failure::Permanent,
        }
    }

    /// A failed identity-provider (or managed-identity) request.
    pub(crate) fn of_error(error: &Error) -> Failure {
        match error {
            Error::Throttled { retry_after } if !retry_after.is_zero() => {
                Failure::ServerWait(*retry_after)
            }
            Error::Throttled { .. } | Error::Timeout { .. } | Error::Unavailable { .. } => {
                Failure::Transient
            }
            Error::IdentityProvider {
                status, details, ..
            } => match details.retry_after.filter(|d| !d.is_zero()) {
                Some(wait) => Failure::ServerWait(wait),
                None if retryable_status(*status) => Failure::Transient,
                None => Failure::Permanent,
            },
            Error::InvalidResponse(_) | Error::Config(_) => Failure::Permanent,
        }
    }

    /// The server-directed wait, if any.
    pub(crate) fn server_wait(self) -> Option<Duration> {
        match self {
            Failure::ServerWait(d) => Some(d),
            _ => None,
        }
    }

    /// A failure that may go away by itself.
    pub(crate) fn is_transient(self) -> bool {
        !matches!(self, Failure::Permanent)
    }
}

/// 429, 408 and every 5xx.
pub(crate) fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// How long to wait after failures: the back-off, the cap on server-directed waits and the cap
/// on the back-off of a key with nothing to serve.
#[derive(Debug, Clone)]
pub(crate) struct WaitPolicy {
    backoff: Backoff,
    max_server_wait: Duration,
    cold_cap: Duration,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy {
            backoff: Backoff::default(),
            max_server_wait: DEFAULT_MAX_SERVER_WAIT,
            cold_cap: DEFAULT_COLD_CAP,
        }
    }
}

impl WaitPolicy {
    /// A policy; `cold_cap` is raised to the back-off's floor if it is below it, and
    /// `max_server_wait` must be within (0, 1 h].
    pub(crate) fn new(
        backoff: Backoff,
        max_server_wait: Duration,
        cold_cap: Duration,
    ) -> Result<Self, Error> {
        if max_server_wait.is_zero() || max_server_wait > MAX_SERVER_WAIT_LIMIT {
            return Err(Error::config(format!(
                "the cap on server-directed waits must be within (0, 1 h], got {max_server_wait:?}"
            )));
        }
        let cold_cap = cold_cap.max(backoff.initial());
        Ok(WaitPolicy {
            backoff,
            max_server_wait,
            cold_cap,
        })
    }

    /// The back-off.
    pub(crate) fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The cap on a server-directed wait.
    pub(crate) fn max_server_wait(&self) -> Duration {
        self.max_server_wait
    }

    /// The cap on the back-off of a key with no usable token.
    pub(crate) fn cold_cap(&self) -> Duration {
        self.cold_cap
    }

    /// The wait before the next attempt of a key after its `n`-th consecutive failure
    /// (0-based): max(`Retry-After`, back-off(n)), the server's part capped at
    /// `max_server_wait` (R8, R9). `cold`: the key has nothing to serve, so its back-off is
    /// capped at `cold_cap` (T13) — a server-directed wait is still honoured in full (up to
    /// the cap). `serving_for`: how long the key's token is still served, if it is (warm); the
    /// back-off then ends early enough to try again before the token stops being served (T13),
    /// never sooner than the floor.
    pub(crate) fn refresh_wait(
        &self,
        failure: Failure,
        n: u32,
        serving_for: Option<Duration>,
    ) -> Duration {
        let mut backoff = self.backoff.delay(n);
        match serving_for {
            None => backoff = backoff.min(self.cold_cap),
            Some(left) => backoff = backoff.min(left / 2).max(self.backoff.initial()),
        }
        match failure.server_wait() {
            Some(server) => server.min(self.max_server_wait).max(backoff),
            None => backoff,
        }
    }

    /// The back-off after the `n`-th consecutive failure of a target that is tried again only
    /// when it is next needed (the regional token endpoint, a store): ≥ the floor, exponential.
    #[cfg(feature = "reqwest")]
    pub(crate) fn target_wait(&self, failure: Failure, n: u32) -> Duration {
        self.refresh_wait(failure, n, Some(Duration::MAX))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::header::RETRY_AFTER;
    use http::HeaderValue;

    fn headers(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static(v));
        h
    }

    #[tokio::test(start_paused = true)]
    async fn r8_instant_arithmetic_saturates() {
        let now = Instant::now();
        let far = later(now, Duration::from_secs(u64::MAX));
        assert!(far > now + Duration::from_secs(50 * 365 * 24 * 3600));
        assert_eq!(
            later(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
    }

    #[test]
    fn r9_retry_after_zero_or_past_counts_as_absent() {
        assert_eq!(server_wait(&headers("0")), None);
        assert_eq!(server_wait(&headers("Mon, 01 Jan 2001 00:00:00 GMT")), None);
        assert_eq!(server_wait(&headers("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            Failure::of_response(StatusCode::SERVICE_UNAVAILABLE, &headers("0")),
            Some(Failure::Transient)
        );
        assert_eq!(
            Failure::of_response(StatusCode::TOO_MANY_REQUESTS, &headers("3")),
            Some(Failure::ServerWait(Duration::from_secs(3)))
        );
        assert_eq!(
            Failure::of_response(StatusCode::NOT_FOUND, &headers("3")),
            None
        );
        let zero = Error::Throttled {
            retry_after: Duration::ZERO,
        };
        assert_eq!(Failure::of_error(&zero), Failure::Transient);
    }

    #[test]
    fn r8_server_waits_are_capped() {
        let p = WaitPolicy::default();
        let huge = Failure::ServerWait(Duration::from_secs(u64::MAX));
        assert_eq!(p.refresh_wait(huge, 0, None), DEFAULT_MAX_SERVER_WAIT);
        assert_eq!(
            p.refresh_wait(huge, 9, Some(Duration::from_secs(10))),
            DEFAULT_MAX_SERVER_WAIT
        );
        assert!(WaitPolicy::new(Backoff::default(), Duration::ZERO, DEFAULT_COLD_CAP).is_err());
        assert!(WaitPolicy::new(
            Backoff::default(),
            Duration::from_secs(3601),
            DEFAULT_COLD_CAP
        )
        .is_err());
    }

    #[test]
    fn r9_consecutive_failures_wait_max_of_retry_after_and_backoff() {
        let b = Backoff::builder().jitter(0.0).build().unwrap();
        let p = WaitPolicy::new(b, DEFAULT_MAX_SERVER_WAIT, DEFAULT_COLD_CAP).unwrap();
        let warm = Some(Duration::from_secs(3600));
        // Retry-After 1 s after the third failure: the back-off (20 s) wins.
        let ra = Failure::ServerWait(Duration::from_secs(1));
        assert_eq!(p.refresh_wait(ra, 2, warm), Duration::from_secs(20));
        // Retry-After 90 s: it wins.
        let ra = Failure::ServerWait(Duration::from_secs(90));
        assert_eq!(p.refresh_wait(ra, 0, warm), Duration::from_secs(90));
        // Transient: floor 5 s, then ×2, cap 60 s.
        let waits: Vec<_> = (0..6)
            .map(|n| p.refresh_wait(Failure::Transient, n, warm).as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
    }

    #[test]
    fn t13_cold_key_backoff_capped_low_warm_key_before_token_stops() {
        let b = Backoff::builder().jitter(0.0).build().unwrap();
        let p = WaitPolicy::new(b, DEFAULT_MAX_SERVER_WAIT, DEFAULT_COLD_CAP).unwrap();
        let cold: Vec<_> = (0..6)
            .map(|n| p.refresh_wait(Failure::Transient, n, None).as_secs())
            .collect();
        assert_eq!(cold, [5, 10, 10, 10, 10, 10]);
        // A server-directed wait is still honoured in full on a cold key.
        let ra = Failure::ServerWait(Duration::from_secs(30));
        assert_eq!(p.refresh_wait(ra, 0, None), Duration::from_secs(30));
        // Warm, 50 s of serving left after the fifth failure: half of it, not 60 s.
        let w = p.refresh_wait(Failure::Transient, 4, Some(Duration::from_secs(50)));
        assert_eq!(w, Duration::from_secs(25));
        // ...but never below the floor.
        let w = p.refresh_wait(Failure::Transient, 4, Some(Duration::from_secs(4)));
        assert_eq!(w, Duration::from_secs(5));
        // The cold cap never goes below the floor.
        let p = WaitPolicy::new(
            Backoff::default(),
            DEFAULT_MAX_SERVER_WAIT,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(p.cold_cap(), Duration::from_secs(5));
    }
}
