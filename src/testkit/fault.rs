//! Fault scripts: which endpoint misbehaves, when, and how.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Which endpoint a fault applies to (and which endpoint a logged request reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// The Entra token endpoint, `POST /{tenant}/oauth2/v2.0/token`.
    Token,
    /// The IMDS endpoint, `GET /metadata/identity/oauth2/token`.
    Imds,
    /// The protected API, `/api/...`.
    Api,
}

/// A retry header the fake sends with a fault's answer.
///
/// Every form works on every [`Target`]. [`wait`](Self::wait) is what the header means, which
/// is what [`RequestLog`](super::RequestLog)'s checks hold a client to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryAfter {
    /// `Retry-After: <delta-seconds>`, rounded up to whole seconds (`Seconds(ZERO)` sends `0`).
    Seconds(Duration),
    /// `Retry-After: <HTTP-date>`: the date this long after the answer is sent, rounded up to
    /// the next whole second (an HTTP-date has one-second resolution, so the header asks for
    /// this wait plus less than one second; [`wait`](Self::wait) reports the nominal value).
    /// The date comes from the wall clock (`SystemTime`), as a client parses it.
    HttpDate(Duration),
    /// `retry-after-ms: <milliseconds>` (Microsoft's header), rounded up to whole milliseconds.
    Millis(Duration),
    /// `x-ms-retry-after-ms: <milliseconds>`, rounded up to whole milliseconds.
    XMsMillis(Duration),
    /// `Retry-After: <value>` exactly as given: `"0"`, `"99999999999999999999"`, `"soon"`, a
    /// date in the past, …
    Raw(Arc<str>),
}

impl RetryAfter {
    /// `Retry-After: 0`, which the seeds treat as no `Retry-After` at all.
    pub fn zero() -> Self {
        RetryAfter::Seconds(Duration::ZERO)
    }

    /// `Retry-After: <value>` verbatim (see [`RetryAfter::Raw`]).
    pub fn raw(value: impl Into<Arc<str>>) -> Self {
        RetryAfter::Raw(value.into())
    }

    /// The header's name.
    pub fn header_name(&self) -> &'static str {
        match self {
            RetryAfter::Millis(_) => "retry-after-ms",
            RetryAfter::XMsMillis(_) => "x-ms-retry-after-ms",
            _ => "retry-after",
        }
    }

    /// The header's value if sent at wall-clock time `now`.
    pub fn header_value(&self, now: SystemTime) -> String {
        match self {
            RetryAfter::Seconds(d) => ceil_secs(*d).to_string(),
            RetryAfter::Millis(d) | RetryAfter::XMsMillis(d) => ceil_millis(*d).to_string(),
            RetryAfter::HttpDate(d) => {
                let at = now.checked_add(*d).unwrap_or(now);
                let since_epoch = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                let secs = ceil_secs(since_epoch);
                let rounded = SystemTime::UNIX_EPOCH
                    .checked_add(Duration::from_secs(secs))
                    .unwrap_or(at);
                httpdate::fmt_http_date(rounded)
            }
            RetryAfter::Raw(v) => v.to_string(),
        }
    }

    /// What the header asks a client to wait: the nominal duration of the typed forms (rounded
    /// as sent), and for [`Raw`](RetryAfter::Raw) delta-seconds (saturating: a number too large
    /// for a `u64` is [`Duration::MAX`]) or an HTTP-date relative to now (zero if past).
    /// `None` for a raw value that is neither (a client ignores it).
    pub fn wait(&self) -> Option<Duration> {
        match self {
            RetryAfter::Seconds(d) => Some(Duration::from_secs(ceil_secs(*d))),
            RetryAfter::Millis(d) | RetryAfter::XMsMillis(d) => {
                Some(Duration::from_millis(ceil_millis(*d)))
            }
            RetryAfter::HttpDate(d) => Some(*d),
            RetryAfter::Raw(v) => raw_wait(v),
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

fn ceil_millis(d: Duration) -> u64 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    ms.saturating_add(u64::from(!d.subsec_nanos().is_multiple_of(1_000_000)))
}

fn raw_wait(value: &str) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(match v.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => Duration::MAX,
        });
    }
    let date = httpdate::parse_http_date(v).ok()?;
    Some(date.duration_since(SystemTime::now()).unwrap_or_default())
}

/// How an endpoint misbehaves.
///
/// The answer bodies have the shape of the target: an Entra OAuth error on the token
/// endpoint, an IMDS error on IMDS, a JSON error on the API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// 429 with `Retry-After` in whole seconds, rounded up (shorthand for
    /// [`Status`](FaultKind::Status) with [`RetryAfter::Seconds`]).
    TooManyRequests {
        /// The wait asked for.
        retry_after: Duration,
    },
    /// 503, with `Retry-After` in whole seconds if given (shorthand for
    /// [`Status`](FaultKind::Status) with [`RetryAfter::Seconds`]).
    Unavailable {
        /// The wait asked for, if any.
        retry_after: Option<Duration>,
    },
    /// 500 with an Entra-shaped `server_error` body.
    ServerError,
    /// Any status (e.g. 429, 500, 503, 504, 408) with any retry header, or none.
    Status {
        /// The status sent (a value outside 100..=999 is sent as 500).
        status: u16,
        /// The retry header, if any.
        retry_after: Option<RetryAfter>,
    },
    /// Never answers: the request hangs until the client gives up (its timeout, or dropping
    /// the call), or for one hour.
    Hang,
    /// Closes the connection without answering (in memory: a `ConnectionReset` I/O error).
    Drop,
    /// API only: `401` with `WWW-Authenticate: Bearer error="invalid_token"` whatever token the
    /// request carries. On the token endpoint and IMDS this fault does not apply.
    InvalidToken,
    /// API only (CAE): a request whose token was not issued with exactly these `claims` (the
    /// `claims` form field of its token request) gets `401` with `WWW-Authenticate: Bearer
    /// error="insufficient_claims", claims="<base64 of claims>"`; a token issued with them is
    /// accepted. IMDS takes no claims, so its tokens never satisfy this. On the token endpoint
    /// and IMDS this fault does not apply.
    InsufficientClaims {
        /// The claims JSON the API demands, e.g.
        /// `{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}`.
        claims: Arc<str>,
    },
}

impl FaultKind {
    /// `status` with `retry_after`.
    pub fn status(status: u16, retry_after: Option<RetryAfter>) -> Self {
        FaultKind::Status {
            status,
            retry_after,
        }
    }

    /// A CAE challenge for `claims` (see [`FaultKind::InsufficientClaims`]).
    pub fn insufficient_claims(claims: impl Into<Arc<str>>) -> Self {
        FaultKind::InsufficientClaims {
            claims: claims.into(),
        }
    }

    /// Whether this fault can apply to `target`.
    pub(crate) fn applies_to(&self, target: Target) -> bool {
        match self {
            FaultKind::InvalidToken | FaultKind::InsufficientClaims { .. } => target == Target::Api,
            _ => true,
        }
    }
}

/// A fault on one target during a window of time since the provider was built or started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Where.
    pub target: Target,
    /// When, measured from start on the tokio clock (half-open: the end is excluded).
    pub window: Range<Duration>,
    /// What.
    pub kind: FaultKind,
}

impl Fault {
    /// A fault of `kind` on `target` during `window`.
    pub fn new(target: Target, window: Range<Duration>, kind: FaultKind) -> Self {
        Fault {
            target,
            window,
            kind,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let s = RetryAfter::Seconds(Duration::from_millis(1500));
        assert_eq!(
            (s.header_name(), s.header_value(now).as_str()),
            ("retry-after", "2")
        );
        assert_eq!(s.wait(), Some(Duration::from_secs(2)));
        assert_eq!(RetryAfter::zero().header_value(now), "0");
        let ms = RetryAfter::Millis(Duration::from_micros(1500));
        assert_eq!(
            (ms.header_name(), ms.header_value(now).as_str()),
            ("retry-after-ms", "2")
        );
        let date = RetryAfter::HttpDate(Duration::from_secs(10));
        let value = date.header_value(now);
        let parsed = httpdate::parse_http_date(&value).unwrap();
        // 1_700_000_010.25 rounded up
        assert_eq!(
            parsed,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_011)
        );
        assert_eq!(date.wait(), Some(Duration::from_secs(10)));
        let huge = RetryAfter::raw("99999999999999999999");
        assert_eq!(huge.header_value(now), "99999999999999999999");
        assert_eq!(huge.wait(), Some(Duration::MAX));
        assert_eq!(RetryAfter::raw("soon").wait(), None);
        assert_eq!(
            RetryAfter::raw("Thu, 01 Jan 1970 00:00:00 GMT").wait(),
            Some(Duration::ZERO)
        );
    }
}
