//! The HTTP plumbing every identity-provider credential shares: one attempt with a per-attempt
//! timeout, a capped body (rule X3), OAuth 2.0 / Entra error bodies mapped to
//! [`Error::IdentityProvider`] (rule C7), and the loopback-only rule for plain http (rule X2).
//!
//! A credential makes exactly one attempt per `get_token` call: retries, back-off and the
//! throttle gate belong to the token cache.
#![cfg(feature = "reqwest")]

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use reqwest::Url;
use tokio::time::Instant;

use crate::error::IdentityProviderError;
use crate::origin::Origin;
use crate::retry::retry_after::retry_after;
use crate::token::parse_token_response;
use crate::{Error, TokenResponse};

/// The largest identity-provider response body read (rule X3).
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// The default per-attempt timeout of an identity-provider request.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the identity provider is called in errors.
const WHAT: &str = "identity provider";

/// A response whose body was read under the cap.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// The default client of a credential: no redirects (a 307 would re-post the secret to another
/// host), rustls with the platform's roots.
pub(crate) fn default_client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|_| Error::config("could not build the default HTTP client"))
}

/// Rule X2: `https`, or plain `http` to a loopback host only (the [origin](crate::origin)
/// module's rule). `what` names the URL in errors.
pub(crate) fn check_url(url: &Url, what: &str) -> Result<(), Error> {
    check_origin(
        url,
        what,
        Origin::of_url(url).may_carry_token(),
        "loopback hosts",
    )
}

/// The scheme, host and credential checks of a URL a secret goes to; `allowed` is the X2
/// verdict on its origin, `local` names the hosts plain http may go to.
pub(crate) fn check_origin(url: &Url, what: &str, allowed: bool, local: &str) -> Result<(), Error> {
    match url.scheme() {
        "https" | "http" if allowed => {}
        "http" => {
            return Err(Error::config(format!(
                "{what} must use https (plain http is allowed only to {local})"
            )))
        }
        "https" => return Err(Error::config(format!("{what} has no host"))),
        other => {
            return Err(Error::config(format!(
                "{what} has unsupported scheme {other:?} (expected https)"
            )))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::config(format!(
            "{what} must not contain credentials"
        )));
    }
    Ok(())
}

/// Sends `request` once, with `timeout` covering the whole exchange (connect, headers and
/// body), and reads at most [`MAX_BODY`] bytes of the body. `kind` names the credential in
/// the `tracing` event.
///
/// # Errors
/// [`Error::Timeout`] when `timeout` elapses, [`Error::Unavailable`] on a transport error,
/// [`Error::InvalidResponse`] for an oversized body. Any status is returned as is.
pub(crate) async fn send_raw(
    client: &reqwest::Client,
    request: reqwest::Request,
    timeout: Duration,
    kind: &'static str,
) -> Result<RawResponse, Error> {
    let host = request.url().host_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, async {
        let mut response = client.execute(request).await.map_err(unavailable)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY as u64)
        {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawResponse {
            status,
            headers,
            body: body.freeze(),
        })
    })
    .await
    .unwrap_or(Err(Error::Timeout { after: timeout }));
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match &outcome {
        Ok(r) => tracing::debug!(
            kind,
            endpoint = %host,
            status = r.status.as_u16(),
            elapsed_ms,
            "identity provider request"
        ),
        Err(e) => tracing::debug!(
            kind,
            endpoint = %host,
            error = %e,
            elapsed_ms,
            "identity provider request failed"
        ),
    }
    outcome
}

/// Sends one token request and maps the answer: 2xx → [`parse_token_response`], anything else
/// → [`Error::IdentityProvider`] with the fields of an OAuth 2.0 / Entra error body and the
/// server's `Retry-After`.
///
/// # Errors
/// As [`send_raw`], plus [`Error::IdentityProvider`] and [`Error::InvalidResponse`].
pub(crate) async fn send_token_request(
    client: &reqwest::Client,
    request: reqwest::Request,
    timeout: Duration,
    kind: &'static str,
) -> Result<TokenResponse, Error> {
    let response = send_raw(client, request, timeout, kind).await?;
    if response.status.is_success() {
        parse_token_response(&response.body, SystemTime::now())
    } else {
        Err(identity_provider_error(
            response.status,
            &response.headers,
            &response.body,
        ))
    }
}

/// An [`Error::IdentityProvider`] from a non-2xx response. A body that is not an OAuth 2.0 error
/// object gives `error = "http_<status>"`.
pub(crate) fn identity_provider_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Error {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Body {
        error: Option<serde_json::Value>,
        error_description: Option<serde_json::Value>,
        error_codes: Option<serde_json::Value>,
        trace_id: Option<serde_json::Value>,
        correlation_id: Option<serde_json::Value>,
    }
    fn text(v: Option<serde_json::Value>, max: usize) -> Option<String> {
        match v {
            Some(serde_json::Value::String(s)) if !s.is_empty() => {
                Some(s.chars().take(max).collect())
            }
            _ => None,
        }
    }
    let parsed: Body = serde_json::from_slice(body).unwrap_or_default();
    let error_codes = match parsed.error_codes {
        Some(serde_json::Value::Array(codes)) => codes
            .iter()
            .filter_map(serde_json::Value::as_i64)
            .take(16)
            .collect(),
        _ => Vec::new(),
    };
    let details = IdentityProviderError {
        error: text(parsed.error, 128).unwrap_or_else(|| format!("http_{}", status.as_u16())),
        error_description: text(parsed.error_description, 2048),
        error_codes,
        trace_id: text(parsed.trace_id, 128),
        correlation_id: text(parsed.correlation_id, 128),
        retry_after: retry_after(headers, SystemTime::now()),
    };
    Error::IdentityProvider {
        status,
        details: Box::new(details),
    }
}

fn unavailable(e: reqwest::Error) -> Error {
    Error::Unavailable {
        what: WHAT,
        source: Some(std::sync::Arc::new(e)),
    }
}

fn too_large() -> Error {
    Error::invalid_response(format!(
        "identity provider response body exceeds {MAX_BODY} bytes"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn x2_plain_http_only_to_loopback() {
        for ok in [
            "https://login.microsoftonline.com/x",
            "http://127.0.0.1:8080/x",
            "http://127.9.9.9/x",
            "http://[::1]:1/x",
            "http://localhost/x",
            "http://LOCALHOST:99/x",
        ] {
            check_url(&Url::parse(ok).unwrap(), "token URL").unwrap();
        }
        for bad in [
            "http://login.microsoftonline.com/x",
            "http://10.0.0.1/x",
            "http://localhost.example.com/x",
            "http://[::2]/x",
            "ftp://localhost/x",
            "https://user:pw@login.microsoftonline.com/x",
        ] {
            let e = check_url(&Url::parse(bad).unwrap(), "token URL").unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{bad}: {e}");
            assert!(!e.to_string().contains("pw"));
        }
    }

    #[test]
    fn c7_error_body_fields_and_non_json() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215],"timestamp":"2024-01-01 00:00:00Z","trace_id":"t-1","correlation_id":"c-1"}"#;
        let e = identity_provider_error(StatusCode::UNAUTHORIZED, &headers, body);
        let Error::IdentityProvider { status, details } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*status, StatusCode::UNAUTHORIZED);
        assert_eq!(details.error, "invalid_client");
        assert_eq!(details.error_codes, vec![7000215]);
        assert_eq!(details.trace_id.as_deref(), Some("t-1"));
        assert_eq!(details.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));

        let e = identity_provider_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &HeaderMap::new(),
            b"<html>busy</html>",
        );
        let Error::IdentityProvider { details, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(details.error, "http_503");
        assert_eq!(details.error_description, None);
        assert_eq!(e.retry_after(), None);
    }
}
