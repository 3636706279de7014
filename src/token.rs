//! Access tokens and the parsing of token responses (rules T1, T2).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use crate::Error;

/// A bearer access token held by the cache.
///
/// Cheap to clone (an `Arc`). The `Authorization` header value is built once, when the token
/// arrives, and marked sensitive, so attaching it to a request copies a reference count and
/// nothing else. `Debug` never shows the token; [`AccessToken::secret`] is the only way to read it.
#[derive(Clone)]
pub struct AccessToken {
    inner: Arc<Inner>,
}

struct Inner {
    secret: String,
    header: HeaderValue,
    expires_at: Instant,
    refresh_at: Instant,
}

impl AccessToken {
    /// Builds a token. `refresh_at` is clamped to `expires_at`.
    ///
    /// # Errors
    /// [`Error::InvalidResponse`] if the token cannot be sent in an HTTP header (control
    /// characters, non-visible ASCII).
    pub fn new(
        secret: impl Into<String>,
        expires_at: Instant,
        refresh_at: Instant,
    ) -> Result<Self, Error> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(Error::invalid_response("empty access token"));
        }
        let mut header = HeaderValue::try_from(format!("Bearer {secret}"))
            .map_err(|_| Error::invalid_response("access token is not a valid header value"))?;
        header.set_sensitive(true);
        Ok(AccessToken {
            inner: Arc::new(Inner {
                secret,
                header,
                expires_at,
                refresh_at: refresh_at.min(expires_at),
            }),
        })
    }

    /// The token itself. Handle with care: this is a credential.
    pub fn secret(&self) -> &str {
        &self.inner.secret
    }

    /// When the token stops being valid (monotonic clock).
    pub fn expires_at(&self) -> Instant {
        self.inner.expires_at
    }

    /// When the cache starts refreshing it in the background (monotonic clock).
    pub fn refresh_at(&self) -> Instant {
        self.inner.refresh_at
    }

    /// The `Authorization: Bearer …` value, built once per token, marked sensitive. Crate-only:
    /// [`secret`](Self::secret) is the one public way to read a token.
    pub(crate) fn header_value(&self) -> &HeaderValue {
        &self.inner.header
    }

    /// `true` if both tokens are the same issued token (the same allocation).
    pub fn same_as(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.inner.expires_at)
            .field("refresh_at", &self.inner.refresh_at)
            .finish()
    }
}

/// What a [`TokenCredential`](crate::TokenCredential) returns: a token with its lifetime as the
/// identity provider stated it. The cache turns it into an [`AccessToken`] with a refresh point.
#[derive(Clone)]
pub struct TokenResponse {
    pub(crate) access_token: String,
    pub(crate) expires_in: Duration,
    pub(crate) refresh_in: Option<Duration>,
    pub(crate) refresh_token: Option<String>,
}

impl TokenResponse {
    /// A token valid for `expires_in` from now.
    pub fn new(access_token: impl Into<String>, expires_in: Duration) -> Self {
        TokenResponse {
            access_token: access_token.into(),
            expires_in,
            refresh_in: None,
            refresh_token: None,
        }
    }

    /// The identity provider's `refresh_in` hint.
    #[must_use]
    pub fn with_refresh_in(mut self, refresh_in: Duration) -> Self {
        self.refresh_in = Some(refresh_in);
        self
    }

    /// A refresh token that came with the access token (public clients).
    #[must_use]
    pub fn with_refresh_token(mut self, refresh_token: impl Into<String>) -> Self {
        self.refresh_token = Some(refresh_token.into());
        self
    }

    /// The stated lifetime.
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }

    /// The stated refresh hint, if any.
    pub fn refresh_in(&self) -> Option<Duration> {
        self.refresh_in
    }

    /// The access token. Handle with care.
    pub fn secret(&self) -> &str {
        &self.access_token
    }

    /// The refresh token, if any. Handle with care.
    pub fn refresh_token(&self) -> Option<&str> {
        self.refresh_token.as_deref()
    }
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("refresh_in", &self.refresh_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
/// The longest lifetime a token response may state before it is rejected as absurd (rule T1).
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The fields of a token response this crate reads. Every field is a raw JSON value so that a
/// field of an unexpected type is reported by name, never by a serde message that could quote
/// the token.
#[derive(serde::Deserialize)]
struct RawTokenResponse {
    access_token: Option<serde_json::Value>,
    token_type: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    expires_on: Option<serde_json::Value>,
    refresh_in: Option<serde_json::Value>,
    refresh_token: Option<serde_json::Value>,
}

#[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
/// Parses a successful token response body (rule T1).
///
/// The lifetime comes from `expires_in` (a JSON number or numeric string; a float such as
/// `3599.0` is tolerated and rounded down), else from `expires_on` (unix seconds as a number or
/// string, or the old App Service date strings `06/20/2019 02:57:58 +00:00` and
/// `1/16/2020 5:24:12 AM +00:00`) relative to `now`. `refresh_in` is kept only if it is shorter
/// than the lifetime and not zero. The access token is never decoded, and no error message
/// quotes it.
///
/// # Errors
/// [`Error::InvalidResponse`] for a body that is not a JSON object, a missing or empty
/// `access_token`, a missing, zero, negative, past or absurd (> 7 days) lifetime, or a
/// `token_type` other than `Bearer`.
pub(crate) fn parse_token_response(
    body: &[u8],
    now: std::time::SystemTime,
) -> Result<TokenResponse, Error> {
    use serde_json::Value;

    let raw: RawTokenResponse = serde_json::from_slice(body).map_err(|e| {
        // serde_json's own message can quote the input (e.g. a bare JSON string), so only its
        // category and position are reported.
        match e.classify() {
            serde_json::error::Category::Data => {
                Error::invalid_response("token response is not a JSON object")
            }
            serde_json::error::Category::Eof => Error::invalid_response(format!(
                "token response is truncated JSON (line {} column {})",
                e.line(),
                e.column()
            )),
            _ => Error::invalid_response(format!(
                "token response is not valid JSON (line {} column {})",
                e.line(),
                e.column()
            )),
        }
    })?;

    let access_token = match raw.access_token {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => {
            return Err(Error::invalid_response(
                "access_token in token response is empty",
            ))
        }
        None | Some(Value::Null) => {
            return Err(Error::invalid_response(
                "token response has no access_token",
            ))
        }
        Some(_) => {
            return Err(Error::invalid_response(
                "access_token in token response is not a string",
            ))
        }
    };
    if HeaderValue::from_str(&access_token).is_err() {
        return Err(Error::invalid_response(
            "access_token contains characters not allowed in an HTTP header",
        ));
    }

    match raw.token_type {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(Value::String(t))
            if t.len() <= 32 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            return Err(Error::invalid_response(format!(
                "unsupported token_type {t:?} (expected Bearer)"
            )))
        }
        Some(_) => {
            return Err(Error::invalid_response(
                "unsupported token_type (expected Bearer)",
            ))
        }
    }

    let expires_in = match raw.expires_in {
        Some(v) if !v.is_null() => seconds_field(&v, "expires_in")?,
        _ => match raw.expires_on {
            Some(v) if !v.is_null() => expires_on_field(&v, now)?,
            _ => {
                return Err(Error::invalid_response(
                    "token response has neither expires_in nor expires_on",
                ))
            }
        },
    };
    if expires_in.is_zero() {
        return Err(Error::invalid_response("token lifetime is zero"));
    }
    if expires_in > MAX_LIFETIME {
        return Err(Error::invalid_response(format!(
            "token lifetime of {}s exceeds 7 days",
            expires_in.as_secs()
        )));
    }

    // `refresh_in` is only a hint: an unreadable, zero or too-long one is dropped, not fatal.
    let refresh_in = raw
        .refresh_in
        .as_ref()
        .and_then(|v| seconds_field(v, "refresh_in").ok())
        .filter(|r| !r.is_zero() && *r < expires_in);

    let refresh_token = match raw.refresh_token {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };

    Ok(TokenResponse {
        access_token,
        expires_in,
        refresh_in,
        refresh_token,
    })
}

/// A number of seconds given as a JSON number or a numeric string. Floats are rounded down.
fn seconds_field(v: &serde_json::Value, name: &str) -> Result<Duration, Error> {
    let secs = match v {
        serde_json::Value::Number(n) => number_seconds(n.as_u64(), n.as_i64(), n.as_f64()),
        serde_json::Value::String(s) => {
            let s = s.trim();
            number_seconds(s.parse().ok(), s.parse().ok(), s.parse().ok())
        }
        _ => Err(NumberProblem::NotANumber),
    };
    secs.map(Duration::from_secs).map_err(|p| match p {
        NumberProblem::NotANumber => Error::invalid_response(format!("{name} is not a number")),
        NumberProblem::Negative => Error::invalid_response(format!("{name} is negative")),
        NumberProblem::TooLarge => Error::invalid_response(format!("{name} is out of range")),
    })
}

enum NumberProblem {
    NotANumber,
    Negative,
    TooLarge,
}

/// Whole seconds from the readings of one number as u64, i64 and f64 (first that fits wins).
fn number_seconds(
    unsigned: Option<u64>,
    signed: Option<i64>,
    float: Option<f64>,
) -> Result<u64, NumberProblem> {
    if let Some(u) = unsigned {
        return Ok(u);
    }
    if let Some(i) = signed {
        return if i < 0 {
            Err(NumberProblem::Negative)
        } else {
            u64::try_from(i).map_err(|_| NumberProblem::TooLarge)
        };
    }
    match float {
        Some(f) if f.is_nan() => Err(NumberProblem::NotANumber),
        Some(f) if f < 0.0 => Err(NumberProblem::Negative),
        // 2^53: past this an f64 no longer counts seconds exactly; no lifetime is that long.
        Some(f) if f >= 9_007_199_254_740_992.0 => Err(NumberProblem::TooLarge),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(f) => Ok(f.floor() as u64),
        None => Err(NumberProblem::NotANumber),
    }
}

/// `expires_on`: unix seconds (number or string) or an old App Service date string, turned into
/// the time left from `now`.
fn expires_on_field(v: &serde_json::Value, now: std::time::SystemTime) -> Result<Duration, Error> {
    let at = match v {
        serde_json::Value::String(s) if looks_like_date(s) => app_service_date(s.trim())?,
        _ => {
            let secs = seconds_field(v, "expires_on")?;
            std::time::UNIX_EPOCH
                .checked_add(secs)
                .ok_or_else(|| Error::invalid_response("expires_on is out of range"))?
        }
    };
    match at.duration_since(now) {
        Ok(left) if !left.is_zero() => Ok(left),
        _ => Err(Error::invalid_response("expires_on is in the past")),
    }
}

fn looks_like_date(s: &str) -> bool {
    s.contains('/')
}

/// Parses `06/20/2019 02:57:58 +00:00` and `1/16/2020 5:24:12 AM +00:00`.
fn app_service_date(s: &str) -> Result<std::time::SystemTime, Error> {
    use time::macros::format_description;
    let h24 = format_description!(
        "[month padding:none]/[day padding:none]/[year] [hour padding:none]:[minute]:[second] [offset_hour sign:mandatory]:[offset_minute]"
    );
    let h12 = format_description!(
        "[month padding:none]/[day padding:none]/[year] [hour repr:12 padding:none]:[minute]:[second] [period case_sensitive:false] [offset_hour sign:mandatory]:[offset_minute]"
    );
    let parsed = time::OffsetDateTime::parse(s, h24)
        .or_else(|_| time::OffsetDateTime::parse(s, h12))
        .map_err(|_| Error::invalid_response("expires_on is not a recognised date"))?;
    Ok(parsed.into())
}

/// The shortest refresh period (T10): however short the server's `refresh_in`, a key is not
/// refreshed more often than this (nor later than its token stops being served).
pub(crate) const MIN_REFRESH_PERIOD: Duration = Duration::from_secs(5);

/// A token cache's settings for the refresh point (T2, T10).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefreshPlan {
    /// Where in its lifetime a token is refreshed without a server `refresh_in`.
    pub(crate) refresh_ratio: f64,
    /// The most the jitter moves a refresh point earlier.
    pub(crate) max_jitter: Duration,
    /// The first back-off delay: the margin left to retry a failed refresh.
    pub(crate) retry_floor: Duration,
}

/// A lifetime within (0, 7 days] (T1), for tokens from any source, stored ones included.
pub(crate) fn check_lifetime(lifetime: Duration) -> Result<(), Error> {
    if lifetime.is_zero() || lifetime > MAX_LIFETIME {
        return Err(Error::invalid_response(format!(
            "token lifetime {lifetime:?} is outside (0, 7 days]"
        )));
    }
    Ok(())
}

/// The refresh point after issue (T2, T10): the server's `refresh_in` if given, else
/// `refresh_ratio` of the lifetime; never after the token stops being served (`serve_for`),
/// never sooner than [`MIN_REFRESH_PERIOD`] (nor than half the serving time, for very short
/// tokens). The jitter moves it earlier by at most 5 % of the time to it (and at most
/// `max_jitter`), so it never lies in the past.
pub(crate) fn refresh_point(
    refresh_in: Option<Duration>,
    lifetime: Duration,
    serve_for: Duration,
    plan: &RefreshPlan,
) -> Duration {
    let wanted = match refresh_in {
        Some(r) if !r.is_zero() => r,
        _ => lifetime.mul_f64(plan.refresh_ratio),
    };
    // Leave a tenth of the serving time (at least the back-off floor, where it fits) to retry
    // a failed refresh before the token stops being served.
    let margin = (serve_for / 10).max(plan.retry_floor.min(serve_for / 2));
    let latest = serve_for.saturating_sub(margin);
    let earliest = MIN_REFRESH_PERIOD.min(serve_for / 2);
    let point = wanted.min(latest).max(earliest);
    let jitter_cap = plan.max_jitter.min(point / 20);
    point.saturating_sub(jitter_cap.mul_f64(fastrand::f64()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2ln";

    fn now() -> SystemTime {
        // 2019-06-20T02:00:00Z
        UNIX_EPOCH + Duration::from_secs(1_560_996_000)
    }

    fn parse(json: &str) -> Result<TokenResponse, Error> {
        parse_token_response(json.as_bytes(), now())
    }

    fn err(json: &str) -> String {
        let e = parse(json).expect_err("should fail");
        assert!(matches!(e, Error::InvalidResponse(_)), "{e:?}");
        let s = e.to_string();
        assert!(!s.contains(TOKEN) && !s.contains("c2VjcmV0"), "{s}");
        s
    }

    #[test]
    fn t1_expires_in_number() {
        let r = parse(&format!(
            r#"{{"token_type":"Bearer","access_token":"{TOKEN}","expires_in":3599}}"#
        ))
        .unwrap();
        assert_eq!(r.secret(), TOKEN);
        assert_eq!(r.expires_in(), Duration::from_secs(3599));
        assert_eq!(r.refresh_in(), None);
        assert_eq!(r.refresh_token(), None);
    }

    #[test]
    fn t1_expires_in_string_float_and_entra_shape() {
        let r = parse(&format!(
            r#"{{"token_type":"bearer","expires_in":"3599","ext_expires_in":"3599","expires_on":"1","refresh_in":"1799","access_token":"{TOKEN}","refresh_token":"rt"}}"#
        ))
        .unwrap();
        assert_eq!(r.expires_in(), Duration::from_secs(3599));
        assert_eq!(r.refresh_in(), Some(Duration::from_secs(1799)));
        assert_eq!(r.refresh_token(), Some("rt"));
        let r = parse(r#"{"access_token":"a","expires_in":3599.0}"#).unwrap();
        assert_eq!(r.expires_in(), Duration::from_secs(3599));
        let r = parse(r#"{"access_token":"a","expires_in":" 3599.9 "}"#).unwrap();
        assert_eq!(r.expires_in(), Duration::from_secs(3599));
    }

    #[test]
    fn t1_expires_on_unix_seconds_number_and_string() {
        let at = 1_560_996_000 + 3600;
        for body in [
            format!(r#"{{"access_token":"a","expires_on":{at}}}"#),
            format!(r#"{{"access_token":"a","expires_on":"{at}"}}"#),
            format!(r#"{{"access_token":"a","expires_in":null,"expires_on":"{at}"}}"#),
        ] {
            assert_eq!(
                parse(&body).unwrap().expires_in(),
                Duration::from_secs(3600)
            );
        }
    }

    #[test]
    fn t1_expires_on_app_service_dates() {
        // now() is 2019-06-20T02:00:00Z
        let r = parse(r#"{"access_token":"a","expires_on":"06/20/2019 02:57:58 +00:00"}"#).unwrap();
        assert_eq!(r.expires_in(), Duration::from_secs(57 * 60 + 58));
        let r =
            parse(r#"{"access_token":"a","expires_on":"6/20/2019 2:57:58 AM +00:00"}"#).unwrap();
        assert_eq!(r.expires_in(), Duration::from_secs(57 * 60 + 58));
        let r =
            parse(r#"{"access_token":"a","expires_on":"6/20/2019 4:00:00 AM +01:00"}"#).unwrap();
        assert_eq!(r.expires_in(), Duration::from_secs(3600));
        let r =
            parse(r#"{"access_token":"a","expires_on":"6/20/2019 1:00:00 PM +10:00"}"#).unwrap();
        assert_eq!(r.expires_in(), Duration::from_secs(3600));
        // the documented example, relative to a clock just before it
        let jan = UNIX_EPOCH + Duration::from_secs(1_579_152_252 - 60); // 2020-01-16T05:24:12Z - 60 s
        let r = parse_token_response(
            br#"{"access_token":"a","expires_on":"1/16/2020 5:24:12 AM +00:00"}"#,
            jan,
        )
        .unwrap();
        assert_eq!(r.expires_in(), Duration::from_secs(60));
    }

    #[test]
    fn t1_missing_zero_negative_past_absurd_lifetimes_are_errors() {
        assert!(err(r#"{"access_token":"a"}"#).contains("neither expires_in nor expires_on"));
        assert!(err(r#"{"access_token":"a","expires_in":0}"#).contains("zero"));
        assert!(err(r#"{"access_token":"a","expires_in":"0"}"#).contains("zero"));
        assert!(err(r#"{"access_token":"a","expires_in":-5}"#).contains("negative"));
        assert!(err(r#"{"access_token":"a","expires_in":"-5"}"#).contains("negative"));
        assert!(err(r#"{"access_token":"a","expires_in":-0.5}"#).contains("negative"));
        assert!(err(r#"{"access_token":"a","expires_in":604801}"#).contains("exceeds 7 days"));
        assert!(err(r#"{"access_token":"a","expires_in":1e300}"#).contains("out of range"));
        assert!(err(r#"{"access_token":"a","expires_in":"soon"}"#).contains("not a number"));
        assert!(err(r#"{"access_token":"a","expires_in":true}"#).contains("not a number"));
        assert!(err(r#"{"access_token":"a","expires_on":1000}"#).contains("in the past"));
        assert!(
            err(r#"{"access_token":"a","expires_on":"06/19/2019 02:57:58 +00:00"}"#)
                .contains("in the past")
        );
        assert!(
            err(r#"{"access_token":"a","expires_on":"13/45/2019 02:57:58 +00:00"}"#)
                .contains("not a recognised date")
        );
        assert!(
            err(r#"{"access_token":"a","expires_on":"06/29/2019 02:57:58 +00:00"}"#)
                .contains("exceeds 7 days")
        );
        assert_eq!(
            parse(r#"{"access_token":"a","expires_in":604800}"#)
                .unwrap()
                .expires_in(),
            MAX_LIFETIME
        );
    }

    #[test]
    fn t1_access_token_required_and_never_in_errors() {
        assert!(err(r#"{"expires_in":3600}"#).contains("no access_token"));
        assert!(err(r#"{"access_token":"","expires_in":3600}"#).contains("empty"));
        assert!(err(r#"{"access_token":42,"expires_in":3600}"#).contains("not a string"));
        err(&format!(r#""{TOKEN}""#));
        err(&format!(r#"["{TOKEN}"]"#));
        err(&format!(
            r#"{{"access_token":"{TOKEN}","expires_in":"{TOKEN}"}}"#
        ));
        err(&format!(
            r#"{{"access_token":"{TOKEN}","token_type":"{TOKEN}","expires_in":1}}"#
        ));
        err(&format!(r#"{{"access_token":"{TOKEN}\n","expires_in":1}}"#));
        err(&format!(r#"{{"access_token":"{TOKEN}","expires_in":1"#));
        err(&format!(r#"{{"access_token":"{TOKEN}" "expires_in":1}}"#));
        err(&format!(
            r#"{{"access_token":"{TOKEN}","access_token":"{TOKEN}","expires_in":1}}"#
        ));
        let ok = parse(&format!(r#"{{"access_token":"{TOKEN}","expires_in":1}}"#)).unwrap();
        assert!(!format!("{ok:?}").contains(TOKEN));
    }

    #[test]
    fn t1_token_type_must_be_bearer() {
        assert!(err(r#"{"access_token":"a","expires_in":60,"token_type":"pop"}"#).contains("pop"));
        err(r#"{"access_token":"a","expires_in":60,"token_type":7}"#);
        assert!(parse(r#"{"access_token":"a","expires_in":60,"token_type":"BEARER"}"#).is_ok());
    }

    #[test]
    fn t1_refresh_in_dropped_when_zero_too_long_or_unreadable() {
        for hint in ["0", "3600", "4000", "\"x\"", "-1", "null", "[]"] {
            let r = parse(&format!(
                r#"{{"access_token":"a","expires_in":3600,"refresh_in":{hint}}}"#
            ))
            .unwrap();
            assert_eq!(r.refresh_in(), None, "{hint}");
        }
        let r = parse(r#"{"access_token":"a","expires_in":3600,"refresh_in":3599}"#).unwrap();
        assert_eq!(r.refresh_in(), Some(Duration::from_secs(3599)));
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
            "[0-9 ./:+-APM]{0,30}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::hash_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn t1_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_token_response(&body, SystemTime::now());
        }

        #[test]
        fn t1_never_panics_on_arbitrary_field_values(
            access_token in json_value(),
            token_type in json_value(),
            expires_in in json_value(),
            expires_on in json_value(),
            refresh_in in json_value(),
            refresh_token in json_value(),
            now_secs in any::<u32>(),
        ) {
            let body = serde_json::json!({
                "access_token": access_token,
                "token_type": token_type,
                "expires_in": expires_in,
                "expires_on": expires_on,
                "refresh_in": refresh_in,
                "refresh_token": refresh_token,
            });
            let now = UNIX_EPOCH + Duration::from_secs(u64::from(now_secs));
            if let Ok(r) = parse_token_response(body.to_string().as_bytes(), now) {
                prop_assert!(!r.expires_in().is_zero() && r.expires_in() <= MAX_LIFETIME);
                prop_assert!(r.refresh_in().is_none_or(|h| h < r.expires_in()));
            }
        }

        #[test]
        fn t1_numeric_and_string_expires_in_agree(secs in any::<i64>(), frac in prop::bool::ANY) {
            let (num, string) = if frac {
                (format!("{secs}.0"), format!("\"{secs}.0\""))
            } else {
                (secs.to_string(), format!("\"{secs}\""))
            };
            let a = parse_token_response(format!(r#"{{"access_token":"a","expires_in":{num}}}"#).as_bytes(), now());
            let b = parse_token_response(format!(r#"{{"access_token":"a","expires_in":{string}}}"#).as_bytes(), now());
            match (a, b) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a.expires_in(), b.expires_in()),
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => prop_assert!(false, "disagree: {:?} vs {:?}", a, b),
            }
        }
    }
}
