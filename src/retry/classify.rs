//! What happened to an attempt, and the request/response markers the layers share.

use std::time::Duration;

use http::Method;

use tokio::time::Instant;

/// The kind of a failed attempt that produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(unreachable_pub)]
pub enum ErrorKind {
    /// A per-attempt timeout elapsed.
    Timeout,
    /// The connection could not be made or broke.
    Connect,
    /// Anything else: not retried.
    Other,
}

/// The number of requests sent on the wire for one call, in the response's extensions (rule R7).
///
/// Each retry layer adds up the attempts of the layers inside it, so the outermost layer's
/// count is the total. A response that took one attempt carries none: a count stamped on
/// every response would cost each call three allocations (a response's extensions map is
/// empty until something goes in), so the first-attempt path leaves the map alone. Read it
/// with [`Attempts::of`], which counts a response without it as one attempt.
///
/// ```
/// use resilient_auth::Attempts;
///
/// let mut response = http::Response::new(());
/// assert_eq!(Attempts::of(response.extensions()), 1);
/// response.extensions_mut().insert(Attempts(3));
/// assert_eq!(Attempts::of(response.extensions()), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts(pub u32);

impl Attempts {
    /// The attempt count of a response, from its extensions: the stamped count, or 1 if
    /// there is none.
    pub fn of(extensions: &http::Extensions) -> u32 {
        extensions.get::<Attempts>().map_or(1, |a| a.0)
    }
}

/// A per-call deadline, in the request's extensions. Retry layers never start a wait that would
/// end after it: they give up at once (a held request fails with
/// [`Error::Throttled`](crate::Error::Throttled)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// A deadline `d` from now.
    pub fn after(d: Duration) -> Self {
        Deadline(Instant::now() + d)
    }
}

/// Marks a response a retry layer gave up on: outer retry layers return it as it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryExhausted;

/// GET, HEAD, OPTIONS, TRACE, PUT, DELETE (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Classifies an error by walking its source chain: this crate's timeout, an I/O timeout or a
/// connection failure.
pub(crate) fn classify_error(err: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(e) = e.downcast_ref::<crate::Error>() {
            if matches!(e, crate::Error::Timeout { .. }) {
                return ErrorKind::Timeout;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::TimedOut => return ErrorKind::Timeout,
                K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::BrokenPipe
                | K::AddrNotAvailable
                | K::UnexpectedEof => return ErrorKind::Connect,
                _ => {}
            }
        }
        cur = e.source();
    }
    ErrorKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r4_idempotent_methods() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }

    #[test]
    fn r4_errors_classified_through_their_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let refused = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(classify_error(&refused), ErrorKind::Connect);
        let timeout = crate::Error::Timeout {
            after: Duration::from_secs(1),
        };
        assert_eq!(classify_error(&timeout), ErrorKind::Timeout);
        let other = std::io::Error::other("x");
        assert_eq!(classify_error(&other), ErrorKind::Other);
    }
}
