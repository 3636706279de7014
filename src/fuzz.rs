//! Entry points for the fuzz targets under `fuzz/` and for `tests/fuzz_parsers.rs` (rule X4).
//!
//! Not part of the public API: hidden, and compiled only with the non-default feature `fuzzing`.
//! Each function takes arbitrary bytes, hands them to one parser of untrusted input the way the
//! crate receives them (a response body, header values, a stored entry), and panics only if the
//! parser panics or breaks one of its stated invariants: a lifetime that is zero or longer than
//! 7 days, a `refresh_in` not shorter than the lifetime, a wait that is not the largest header's,
//! decoded claims that are not a JSON object, a stored entry that does not round-trip, a secret in
//! an error message.
//!
//! The first byte of the input chooses a *mode*; most modes wrap the rest in a near-valid
//! envelope (a token response around an `expires_on` string, a `Bearer` challenge around a
//! `claims` value, an encrypted Redis value around a plaintext) so that the fuzzer spends its
//! time in the field parsers instead of on JSON or AES-GCM syntax.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};

use crate::token::{parse_token_response, MAX_LIFETIME};
use crate::{AccessToken, Error};

/// The first byte (the mode) and the rest; mode 0 for empty input.
pub(crate) fn split_mode(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((mode, rest)) => (*mode, rest),
        None => (0, data),
    }
}

/// Up to 16 `\n`-separated lines.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == b'\n').take(16)
}

/// `name: value` lines up to the first empty line as headers (lines that are not a valid header
/// are skipped), and the bytes after the empty line as the body. Without an empty line, all of
/// `data` is the body.
#[cfg(feature = "reqwest")]
pub(crate) fn headers_and_body(data: &[u8]) -> (HeaderMap, &[u8]) {
    let Some(split) = data.windows(2).position(|w| w == b"\n\n") else {
        return (HeaderMap::new(), data);
    };
    let mut headers = HeaderMap::new();
    for line in lines(&data[..split]) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    (headers, &data[split + 2..])
}

/// A status from two bytes: always a valid code, 100..=599.
#[cfg(feature = "reqwest")]
pub(crate) fn status(data: &[u8]) -> (http::StatusCode, &[u8]) {
    let (hi, rest) = split_mode(data);
    let (lo, rest) = split_mode(rest);
    let code = 100 + (u16::from_be_bytes([hi, lo]) % 500);
    (
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK),
        rest,
    )
}

/// 2019-06-20T02:00:00Z, the clock of the App Service date examples.
const JUNE_2019: u64 = 1_560_996_000;
/// 9999-12-31T23:59:59Z, the last instant an HTTP-date or an App Service date can name.
const YEAR_9999: u64 = 253_402_300_799;

fn clock(i: u8) -> SystemTime {
    let secs = match i % 4 {
        0 => JUNE_2019,
        1 => 0,
        2 => 1_700_000_000,
        _ => YEAR_9999,
    };
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The `access_token` string of a JSON body, if it has one long enough to be told apart from
/// the words of an error message.
fn secret_in(body: &[u8]) -> Option<String> {
    let serde_json::Value::Object(map) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let token = map.get("access_token")?.as_str()?;
    // The one field an error may quote is an unsupported `token_type`; a server that echoes its
    // token there has published it already.
    let echoed = map
        .get("token_type")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|t| t.contains(token));
    (token.len() >= 24 && !echoed).then(|| token.to_owned())
}

/// Checks what [`parse_token_response`] made of `body` at `now` (rule T1).
pub(crate) fn check_token_response(result: Result<crate::TokenResponse, Error>, body: &[u8]) {
    match result {
        Ok(r) => {
            assert!(!r.expires_in.is_zero(), "zero lifetime accepted");
            assert!(
                r.expires_in <= MAX_LIFETIME,
                "lifetime over 7 days accepted"
            );
            if let Some(hint) = r.refresh_in {
                assert!(
                    !hint.is_zero() && hint < r.expires_in,
                    "refresh_in {hint:?} kept for a lifetime of {:?}",
                    r.expires_in
                );
            }
            assert!(r.refresh_token.as_ref().is_none_or(|t| !t.is_empty()));
            let now = tokio::time::Instant::now();
            let token = AccessToken::new(
                r.access_token.clone(),
                now + r.expires_in,
                now + r.refresh_in.unwrap_or(r.expires_in / 2),
            )
            .expect("a parsed token is a valid header value");
            assert!(token.header_value().is_sensitive());
            if r.access_token.len() >= 24 {
                let shown = format!("{r:?} {token:?}");
                assert!(!shown.contains(&r.access_token), "token in Debug: {shown}");
            }
        }
        Err(e) => {
            assert!(matches!(e, Error::InvalidResponse(_)), "{e:?}");
            let shown = format!("{e} {e:?}");
            if let Some(secret) = secret_in(body) {
                assert!(!shown.contains(&secret), "token in error: {shown}");
            }
        }
    }
}

/// A token response body (`src/token.rs`, rules T1, X1).
///
/// Modes (first byte % 5): 0 the rest as the body; 1 the rest as the `expires_on` string (unix
/// seconds or an App Service date such as `06/20/2019 02:57:58 +00:00`); 2 the rest as the raw
/// JSON of `expires_in` and `refresh_in`; 3 the rest as the string value of `expires_in` and
/// `refresh_in`; 4 the rest as the raw JSON of `expires_on`. Each body is parsed against four
/// clocks (1970, 2019, 2023, 9999).
pub fn token_response(data: &[u8]) {
    let (mode, rest) = split_mode(data);
    let text = String::from_utf8_lossy(rest);
    let token = "fuzz-access-token-0123456789abcdef";
    let body = match mode % 5 {
        0 => rest.to_vec(),
        1 => serde_json::json!({ "access_token": token, "expires_on": text })
            .to_string()
            .into_bytes(),
        2 => format!(
            r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{text},"refresh_in":{text}}}"#
        )
        .into_bytes(),
        3 => serde_json::json!({ "access_token": token, "expires_in": text, "refresh_in": text })
            .to_string()
            .into_bytes(),
        _ => format!(r#"{{"access_token":"{token}","expires_on":{text}}}"#).into_bytes(),
    };
    for i in 0..4 {
        check_token_response(parse_token_response(&body, clock(i)), &body);
    }
}

/// `Retry-After`, `retry-after-ms` and `x-ms-retry-after-ms` values (`src/retry/retry_after.rs`,
/// rule R1).
///
/// The rest after the mode byte is parsed whole by both parsers, then split into lines that go
/// into the three headers in turn (the mode rotates which comes first); the combined wait must be
/// the largest single one. The mode also picks the clock an HTTP-date is measured from.
pub fn retry_after(data: &[u8]) {
    use crate::retry::retry_after::{
        parse_retry_after, parse_retry_after_ms, retry_after, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS,
    };
    let (mode, rest) = split_mode(data);
    let now = clock(mode);
    let whole = parse_retry_after(rest, now);
    let whole_ms = parse_retry_after_ms(rest);
    let trimmed = rest.trim_ascii();
    let digits = !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_digit);
    assert_eq!(whole_ms.is_some(), digits, "milliseconds are 1*DIGIT");
    if let Some(ms) = whole_ms {
        // the same number, read as seconds by the one and as milliseconds by the other
        let n = u64::try_from(ms.as_millis()).expect("from_millis of a u64");
        assert_eq!(whole, Some(Duration::from_secs(n)));
    }
    let names = [
        http::header::RETRY_AFTER,
        RETRY_AFTER_MS,
        X_MS_RETRY_AFTER_MS,
    ];
    let mut headers = HeaderMap::new();
    let mut single = Vec::new();
    for (i, line) in lines(rest).enumerate() {
        let Ok(value) = HeaderValue::from_bytes(line) else {
            continue;
        };
        let which = (i + usize::from(mode / 4)) % 3;
        single.push(if which == 0 {
            parse_retry_after(value.as_bytes(), now)
        } else {
            parse_retry_after_ms(value.as_bytes())
        });
        headers.append(names[which].clone(), value);
    }
    let largest = single.into_iter().flatten().max();
    let got = retry_after(&headers, now);
    if let Some(wait) = got {
        assert_eq!(Some(wait), largest, "not the largest single wait");
    }
    if largest.is_some_and(|w| !w.is_zero()) {
        assert!(got.is_some(), "a valid wait of {largest:?} was dropped");
    }
}

/// `WWW-Authenticate` challenges of a 401 (`src/layer/challenge.rs`, rule A2), including the
/// base64 `claims` of a CAE `insufficient_claims` challenge.
///
/// Modes (first byte % 5): 0 the rest's lines as `WWW-Authenticate` headers; 1 the rest as the
/// `claims` value of an `insufficient_claims` challenge; 2 the rest as a base64 claims value;
/// 3 the rest base64-encoded (standard or URL-safe, padded or not), so the decoded claims must
/// be exactly the rest when it is a JSON-object-like text; 4 the rest as one header value.
pub fn www_authenticate(data: &[u8]) {
    use crate::layer::challenge::{challenge, decode_claims, parse_bearer, Challenge};
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;

    fn check(c: Option<Challenge>) {
        if let Some(Challenge::InsufficientClaims(claims)) = c {
            let t = claims.trim();
            assert!(
                t.starts_with('{') && t.ends_with('}'),
                "claims are not an object"
            );
        }
    }
    let (mode, rest) = split_mode(data);
    let text = String::from_utf8_lossy(rest);
    match mode % 5 {
        0 => {
            let mut headers = HeaderMap::new();
            for line in lines(rest) {
                if let Ok(v) = HeaderValue::from_bytes(line) {
                    headers.append(http::header::WWW_AUTHENTICATE, v);
                }
            }
            check(challenge(&headers));
        }
        1 => check(parse_bearer(&format!(
            r#"Bearer realm="", error="insufficient_claims", claims="{text}""#
        ))),
        2 => {
            if let Some(claims) = decode_claims(&text) {
                check(Some(Challenge::InsufficientClaims(claims)));
            }
        }
        3 => {
            let engines = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD];
            let b64 = engines[usize::from(mode / 5) % 4].encode(rest);
            let want = std::str::from_utf8(rest)
                .ok()
                .filter(|t| t.trim().starts_with('{') && t.trim().ends_with('}'));
            assert_eq!(decode_claims(&b64).as_deref(), want, "claims {b64:?}");
            let header = format!(r#"Bearer error="insufficient_claims", claims="{b64}""#);
            assert_eq!(
                parse_bearer(&header),
                want.map(|w| Challenge::InsufficientClaims(w.to_owned()))
            );
        }
        _ => check(parse_bearer(&text)),
    }
}

/// Identity-provider error bodies of any non-2xx answer (`src/credential/http.rs`, rule C7).
///
/// Two bytes choose the status, then `name: value` header lines, an empty line and the body.
#[cfg(feature = "reqwest")]
pub fn idp_error(data: &[u8]) {
    let (status, rest) = status(data);
    let (headers, body) = headers_and_body(rest);
    check_idp_error(
        crate::credential::http::identity_provider_error(status, &headers, body),
        status,
    );
}

/// Checks an [`Error::IdentityProvider`] built from an error response.
#[cfg(feature = "reqwest")]
pub(crate) fn check_idp_error(e: Error, status: http::StatusCode) {
    let shown = format!("{e} {e:?}");
    let Error::IdentityProvider {
        status: got,
        details,
    } = &e
    else {
        panic!("not an identity-provider error: {shown}");
    };
    assert_eq!(*got, status);
    assert!(!details.error.is_empty());
    assert!(details.error.chars().count() <= 128, "unbounded error");
    assert!(details
        .error_description
        .as_ref()
        .is_none_or(|d| d.chars().count() <= 2048));
    assert!(details.error_codes.len() <= 16);
    for field in [&details.trace_id, &details.correlation_id] {
        assert!(field.as_ref().is_none_or(|t| t.chars().count() <= 128));
    }
    let _ = (e.is_transient(), e.needs_interaction(), e.retry_after());
}

/// Managed-identity responses (`src/credential/managed_identity`, rule C3): `map_response` and
/// `mi_error` over any status, headers and body, the App Service `expires_on` dates, and the
/// Azure Arc `401 WWW-Authenticate: Basic realm=<key file>` challenge with its key-file checks.
///
/// Modes (first byte % 4): 0 status, headers, body into `map_response`; 1 the rest as the
/// `expires_on` string of a 200; 2 status, headers, body into `mi_error`; 3 the rest as the
/// `WWW-Authenticate` value of an Azure Arc 401, against a tokens directory holding a valid key,
/// an empty, an oversized, a binary key, a `.key` directory and a symbolic link leading out.
#[cfg(feature = "reqwest")]
pub fn managed_identity(data: &[u8]) {
    crate::credential::managed_identity::fuzz::response(data);
}

/// Entries of the file store (`src/cache/file.rs`, `src/cache/codec.rs`, rule S2): the bytes of
/// an entry file as `FileStore::load` reads them, and lock-file records.
///
/// Modes (first byte % 3): 0 the rest as an entry file; 1 the rest's lines as the raw JSON of
/// `issued_on_ms`, `refresh_on_ms`, `expires_on_ms` and `access_token` in a version-1 envelope;
/// 2 the rest as a lock-file record. A readable entry must encode back to itself.
#[cfg(feature = "file-store")]
pub fn file_entry(data: &[u8]) {
    use crate::cache::file::parse_record;
    let (mode, rest) = split_mode(data);
    let now_ms = match mode / 3 % 3 {
        0 => 0,
        1 => 1_700_000_000_000,
        _ => u64::MAX,
    };
    let retention = Duration::from_secs(u64::from(mode)) * 86_400;
    match mode % 3 {
        0 => check_entry(rest, now_ms, retention),
        1 => check_entry(&envelope(rest), now_ms, retention),
        _ => {
            if let Some(r) = parse_record(&String::from_utf8_lossy(rest)) {
                assert!(!r.owner.is_empty() && !r.owner.contains(char::is_whitespace));
                let _ = (r.until, r.taken_over);
            }
        }
    }
}

#[cfg(feature = "file-store")]
fn check_entry(bytes: &[u8], now_ms: u64, retention: Duration) {
    use crate::cache::codec::{keep_until_ms, MAX_ENTRY};
    use crate::cache::file::read_entry;
    match read_entry(bytes, now_ms, retention) {
        Ok(Some(t)) => {
            assert!(now_ms < keep_until_ms(&t, retention));
            check_roundtrip(&t);
        }
        Ok(None) => {}
        Err(e) => {
            let _ = e.as_str();
            assert!(bytes.len() <= MAX_ENTRY || e == crate::cache::codec::DecodeError::TooLarge);
        }
    }
}

/// A decoded entry encodes to bytes that decode to it again, and passes its invariant.
#[cfg(any(feature = "file-store", feature = "redis"))]
fn check_roundtrip(t: &crate::StoredToken) {
    use crate::cache::codec::{decode, encode};
    assert!(t.expires_on_ms >= t.issued_on_ms, "expired before issued");
    assert_eq!(
        decode(&encode(t)).as_ref(),
        Ok(t),
        "entry does not round-trip"
    );
    let shown = format!("{t:?}");
    if t.access_token.len() >= 24 {
        assert!(!shown.contains(&t.access_token), "token in Debug");
    }
    let _ = t.remaining(SystemTime::now());
}

/// A version-1 envelope whose fields are the raw JSON in the lines of `data`.
#[cfg(any(feature = "file-store", feature = "redis"))]
fn envelope(data: &[u8]) -> Vec<u8> {
    let mut fields = lines(data).map(String::from_utf8_lossy);
    let mut next = |default: &'static str| {
        fields
            .next()
            .filter(|f| !f.is_empty())
            .unwrap_or(std::borrow::Cow::Borrowed(default))
    };
    let issued = next("1700000000000");
    let refresh = next("1700001800000");
    let expires = next("1700003600000");
    let token = next("\"fuzz-access-token-0123456789abcdef\"");
    let refresh_token = next("null");
    format!(
        r#"{{"v":1,"token":{{"access_token":{token},"issued_on_ms":{issued},"refresh_on_ms":{refresh},"expires_on_ms":{expires},"refresh_token":{refresh_token}}}}}"#
    )
    .into_bytes()
}

/// Values of the Redis store (`src/cache/redis.rs`, `src/cache/codec.rs`, rule S3): plain and
/// AES-256-GCM-sealed entries, decoded with and without the key.
///
/// Modes (first byte % 4): 0 the rest as a value read from Redis, with no key, the key, and the
/// key after the `RAE1` prefix; 1 the rest sealed under the key as the plaintext of an
/// encrypted value, which must decode exactly as the plain value does, and fail once tampered;
/// 2 a near-valid envelope (as [`file_entry`] mode 1), plain and sealed; 3 the rest sealed under
/// another Redis key, which must not decrypt.
#[cfg(feature = "redis")]
pub fn redis_entry(data: &[u8]) {
    use crate::cache::codec::{decode, DecodeError};
    use crate::cache::redis::{decode_value, MAGIC};

    let cipher = fuzz_cipher();
    let key = "resilient-auth:fuzz";
    let (mode, rest) = split_mode(data);
    match mode % 4 {
        0 => {
            for c in [None, Some(&cipher)] {
                if let Ok(t) = decode_value(c, key, rest) {
                    check_roundtrip(&t);
                }
            }
            let mut magic = MAGIC.to_vec();
            magic.extend_from_slice(rest);
            if magic.len() > crate::cache::codec::MAX_ENTRY {
                return;
            }
            assert_eq!(
                decode_value(Some(&cipher), key, &magic).err(),
                Some(DecodeError::Decrypt),
                "a forged value decrypted"
            );
        }
        1 | 2 => {
            let plain = if mode % 4 == 1 {
                rest.to_vec()
            } else {
                envelope(rest)
            };
            let sealed = seal(&cipher, key, &plain, mode);
            let want = decode(&plain);
            let got = decode_value(Some(&cipher), key, &sealed);
            assert_eq!(got, want, "sealed and plain entries decode differently");
            if let Ok(t) = &got {
                check_roundtrip(t);
            }
            assert_eq!(
                decode_value(None, key, &sealed).err(),
                Some(DecodeError::Decrypt),
                "a sealed value read without the key"
            );
            if got.is_ok() {
                assert_eq!(
                    decode_value(Some(&cipher), key, &plain).err(),
                    Some(DecodeError::Decrypt),
                    "a plain value accepted where encryption is required"
                );
            }
            let mut tampered = sealed;
            let i = usize::from(mode) % tampered.len();
            tampered[i] ^= 1 << (mode % 8);
            assert!(
                decode_value(Some(&cipher), key, &tampered).is_err(),
                "a tampered value decrypted"
            );
        }
        _ => {
            let sealed = seal(&cipher, "resilient-auth:other", rest, mode);
            assert_eq!(
                decode_value(Some(&cipher), key, &sealed).err(),
                Some(DecodeError::Decrypt),
                "a value moved from another key decrypted"
            );
        }
    }
}

#[cfg(feature = "redis")]
fn fuzz_cipher() -> aes_gcm::Aes256Gcm {
    use aes_gcm::KeyInit;
    aes_gcm::Aes256Gcm::new_from_slice(&[7; 32]).expect("a 32-byte key")
}

/// `RAE1` ‖ nonce ‖ ciphertext, as `RedisStore` writes it, around any plaintext.
#[cfg(feature = "redis")]
fn seal(cipher: &aes_gcm::Aes256Gcm, redis_key: &str, plain: &[u8], nonce: u8) -> Vec<u8> {
    use crate::cache::redis::{MAGIC, NONCE_LEN};
    use aes_gcm::aead::{Aead, Payload};
    let nonce = [nonce; NONCE_LEN];
    let sealed = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: plain,
                aad: redis_key.as_bytes(),
            },
        )
        .expect("encryption of a short plaintext");
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}
