//! Parsing of `Retry-After`, `retry-after-ms` and `x-ms-retry-after-ms` (rule R1).
//!
//! `Retry-After` is delta-seconds or an HTTP-date (RFC 9110 §10.2.3); the two Microsoft headers
//! are milliseconds. When several are present, the largest valid wait wins: a server that says
//! "wait 30 s" in one header and "wait 500 ms" in another means at least 30 s. Garbage is ignored,
//! never a panic.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, RETRY_AFTER};

/// `retry-after-ms` (milliseconds).
pub const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
/// `x-ms-retry-after-ms` (milliseconds).
pub const X_MS_RETRY_AFTER_MS: HeaderName = HeaderName::from_static("x-ms-retry-after-ms");

/// Parses one `Retry-After` value: delta-seconds or an HTTP-date relative to `now`.
///
/// A date in the past means "no wait" (`Some(Duration::ZERO)`). Numbers too large for a `u64`
/// saturate (a server asking for forever gets a wait longer than any cap). Anything else —
/// signs, fractions, other date formats, non-ASCII — is `None`.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = trim(value);
    if let Some(n) = parse_digits(value) {
        return Some(Duration::from_secs(n));
    }
    let text = std::str::from_utf8(value).ok()?;
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a milliseconds value (`retry-after-ms`, `x-ms-retry-after-ms`).
pub fn parse_retry_after_ms(value: &[u8]) -> Option<Duration> {
    parse_digits(trim(value)).map(Duration::from_millis)
}

/// The largest valid wait among all `Retry-After`, `retry-after-ms` and `x-ms-retry-after-ms`
/// values in `headers`, or `None` if there is no valid one.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let secs = headers
        .get_all(RETRY_AFTER)
        .iter()
        .filter_map(|v| parse_retry_after(v.as_bytes(), now));
    let ms = headers
        .get_all(RETRY_AFTER_MS)
        .iter()
        .chain(headers.get_all(X_MS_RETRY_AFTER_MS).iter())
        .filter_map(|v| parse_retry_after_ms(v.as_bytes()));
    secs.chain(ms).max()
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// 1*DIGIT, saturating at `u64::MAX`.
fn parse_digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn r1_delta_seconds() {
        assert_eq!(parse_retry_after(b"7", now()), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(b" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(b"99999999999999999999999", now()),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn r1_http_date() {
        let later = now() + Duration::from_secs(120);
        let text = httpdate::fmt_http_date(later);
        assert_eq!(
            parse_retry_after(text.as_bytes(), now()),
            Some(Duration::from_secs(120))
        );
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(5));
        assert_eq!(
            parse_retry_after(past.as_bytes(), now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn r1_garbage_is_ignored() {
        for bad in [
            &b""[..],
            b"-1",
            b"1.5",
            b"+3",
            b"soon",
            b"\xff\xfe",
            b"Mon, 99 Foo 2020 25:61:61 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now()), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after_ms(b"1e3"), None);
    }

    #[test]
    fn r1_largest_valid_header_wins() {
        let mut h = HeaderMap::new();
        h.append(RETRY_AFTER, HeaderValue::from_static("2"));
        h.append(RETRY_AFTER, HeaderValue::from_static("garbage"));
        h.append(RETRY_AFTER_MS, HeaderValue::from_static("3500"));
        h.append(X_MS_RETRY_AFTER_MS, HeaderValue::from_static("1200"));
        assert_eq!(retry_after(&h, now()), Some(Duration::from_millis(3500)));
        let mut only_garbage = HeaderMap::new();
        only_garbage.append(RETRY_AFTER, HeaderValue::from_static("later"));
        assert_eq!(retry_after(&only_garbage, now()), None);
        assert_eq!(retry_after(&HeaderMap::new(), now()), None);
    }

    proptest! {
        #[test]
        fn r1_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_retry_after(&bytes, now());
            let _ = parse_retry_after_ms(&bytes);
        }

        #[test]
        fn r1_http_date_round_trips(secs in 0u64..10_000_000) {
            let later = now() + Duration::from_secs(secs);
            let text = httpdate::fmt_http_date(later);
            prop_assert_eq!(parse_retry_after(text.as_bytes(), now()), Some(Duration::from_secs(secs)));
        }

        #[test]
        fn r1_delta_seconds_round_trip(secs in any::<u64>()) {
            prop_assert_eq!(parse_retry_after(secs.to_string().as_bytes(), now()), Some(Duration::from_secs(secs)));
        }

        #[test]
        fn r1_largest_of_three_wins(a in 0u64..100_000, b in 0u64..100_000_000, c in 0u64..100_000_000, garbage in "[a-z ]{0,8}") {
            let mut h = HeaderMap::new();
            h.append(RETRY_AFTER, HeaderValue::from_str(&a.to_string()).unwrap());
            if let Ok(v) = HeaderValue::from_str(&garbage) { h.append(RETRY_AFTER, v); }
            h.append(RETRY_AFTER_MS, HeaderValue::from_str(&b.to_string()).unwrap());
            h.append(X_MS_RETRY_AFTER_MS, HeaderValue::from_str(&c.to_string()).unwrap());
            let want = Duration::from_secs(a).max(Duration::from_millis(b)).max(Duration::from_millis(c));
            prop_assert_eq!(retry_after(&h, now()), Some(want));
        }
    }
}
