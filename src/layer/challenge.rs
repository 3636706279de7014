//! `WWW-Authenticate: Bearer …` challenges (rule A2).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use http::HeaderMap;

/// What a 401 asks of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `error="invalid_token"`: the token was rejected; fetch a new one.
    InvalidToken,
    /// `error="insufficient_claims"` with decoded `claims` (CAE).
    InsufficientClaims(String),
}

/// The first actionable Bearer challenge in the response's `WWW-Authenticate` headers.
pub(crate) fn challenge(headers: &HeaderMap) -> Option<Challenge> {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_bearer)
}

/// Parses one header value: `Bearer k="v", k2=v2 …` (other schemes are skipped).
pub(crate) fn parse_bearer(value: &str) -> Option<Challenge> {
    let params = bearer_params(value)?;
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    };
    match get("error")? {
        "invalid_token" => Some(Challenge::InvalidToken),
        "insufficient_claims" => {
            let claims = decode_claims(get("claims")?)?;
            Some(Challenge::InsufficientClaims(claims))
        }
        _ => None,
    }
}

/// Claims arrive base64 (standard or URL-safe, padded or not) and must decode to UTF-8 JSON.
pub(crate) fn decode_claims(b64: &str) -> Option<String> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let b64 = b64.trim();
    let bytes = GeneralPurpose::new(&alphabet::STANDARD, config)
        .decode(b64)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, config).decode(b64))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    serde_json_like_object(&text).then_some(text)
}

/// A cheap sanity check (the identity provider validates the claims themselves).
fn serde_json_like_object(text: &str) -> bool {
    let t = text.trim();
    t.starts_with('{') && t.ends_with('}')
}

/// The auth-params after the `Bearer` scheme, if the value has a Bearer challenge.
fn bearer_params(value: &str) -> Option<Vec<(String, String)>> {
    let lower = value.to_ascii_lowercase();
    let start = lower
        .match_indices("bearer")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || matches!(value.as_bytes()[i - 1], b' ' | b','))?;
    let rest = &value[start + "bearer".len()..];
    let mut params = Vec::new();
    let mut chars = rest.char_indices().peekable();
    loop {
        // Skip separators.
        while chars
            .next_if(|(_, c)| *c == ' ' || *c == ',' || *c == '\t')
            .is_some()
        {}
        let Some(&(key_start, _)) = chars.peek() else {
            break;
        };
        while chars
            .next_if(|(_, c)| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .is_some()
        {}
        let key_end = chars.peek().map_or(rest.len(), |(i, _)| *i);
        let key = &rest[key_start..key_end];
        while chars.next_if(|(_, c)| *c == ' ').is_some() {}
        if key.is_empty() || chars.next_if(|(_, c)| *c == '=').is_none() {
            // Another scheme starts here (or junk): stop.
            break;
        }
        while chars.next_if(|(_, c)| *c == ' ').is_some() {}
        let mut val = String::new();
        if chars.next_if(|(_, c)| *c == '"').is_some() {
            while let Some((_, c)) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            val.push(e);
                        }
                    }
                    c => val.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| *c != ',' && *c != ' ') {
                val.push(c);
            }
        }
        params.push((key.to_string(), val));
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use proptest::prelude::*;

    const CLAIMS: &str = r#"{"access_token":{"nbf":{"essential":true,"value":"1597094022"}}}"#;

    #[test]
    fn a2_invalid_token() {
        let v = r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="invalid_token", error_description="expired""#;
        assert_eq!(parse_bearer(v), Some(Challenge::InvalidToken));
    }

    #[test]
    fn a2_insufficient_claims_any_base64_flavour() {
        for b64 in [
            STANDARD.encode(CLAIMS),
            URL_SAFE_NO_PAD.encode(CLAIMS),
            STANDARD.encode(CLAIMS).trim_end_matches('=').to_string(),
        ] {
            let v = format!(r#"Bearer realm="", error="insufficient_claims", claims="{b64}""#);
            assert_eq!(
                parse_bearer(&v),
                Some(Challenge::InsufficientClaims(CLAIMS.into())),
                "{v}"
            );
        }
    }

    #[test]
    fn a2_other_schemes_and_junk_ignored() {
        assert_eq!(parse_bearer(r#"Basic realm="x""#), None);
        assert_eq!(parse_bearer(r#"Bearer realm="x""#), None);
        assert_eq!(
            parse_bearer(r#"Bearer error="insufficient_claims", claims="%%%""#),
            None
        );
        assert_eq!(parse_bearer(r#"Bearer error="insufficient_claims""#), None);
        assert_eq!(
            parse_bearer(r#"Basic realm="a", Bearer error=invalid_token"#),
            Some(Challenge::InvalidToken)
        );
    }

    proptest! {
        #[test]
        fn a2_parser_never_panics(s in "\\PC{0,200}") {
            let _ = parse_bearer(&s);
            let _ = parse_bearer(&format!("Bearer {s}"));
            let _ = decode_claims(&s);
        }
    }
}
