//! What every source shares on the way in and out: the one scope becomes a resource, and a
//! response becomes a token or an [`Error::IdentityProvider`] read from any of the sources'
//! error shapes.

use std::time::SystemTime;

use http::{HeaderMap, StatusCode};

use crate::credential::http::{identity_provider_error, RawResponse};
use crate::credential::TokenRequest;
use crate::token::parse_token_response;
use crate::{Error, TokenResponse};

/// The resource of a request's one scope: `https://x/.default` → `https://x`.
pub(crate) fn resource_of(request: &TokenRequest) -> Result<String, Error> {
    match &*request.scopes {
        [scope] => {
            let scope = scope.trim();
            let resource = scope.strip_suffix("/.default").unwrap_or(scope);
            if resource.is_empty() {
                Err(Error::config("managed identity scope is empty"))
            } else {
                Ok(resource.to_owned())
            }
        }
        [] => Err(Error::config(
            "managed identity needs exactly one scope, got none",
        )),
        scopes => Err(Error::config(format!(
            "managed identity takes exactly one scope (a resource), got {}",
            scopes.len()
        ))),
    }
}

/// A 2xx → the token; anything else → [`Error::IdentityProvider`] from the source's error body.
pub(crate) fn map_response(raw: RawResponse) -> Result<TokenResponse, Error> {
    if raw.status.is_success() {
        parse_token_response(&raw.body, SystemTime::now())
    } else {
        Err(mi_error(raw.status, &raw.headers, &raw.body))
    }
}

/// [`identity_provider_error`] that also reads the managed identity sources' own error shapes:
/// `{"statusCode":400,"message":".."}` (App Service), `{"error":{"code":..,"message":..}}`
/// (App Service, Cloud Shell), `{"error":{"correlationId":..,"code":..,"message":..}}`
/// (Service Fabric) and a top-level `message` / `correlationId`.
pub(crate) fn mi_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    fn text(v: Option<&serde_json::Value>, max: usize) -> Option<String> {
        match v {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
                Some(s.chars().take(max).collect())
            }
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
    let mut error = identity_provider_error(status, headers, body);
    let Error::IdentityProvider { details, .. } = &mut error else {
        return error;
    };
    let Ok(serde_json::Value::Object(root)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return error;
    };
    let nested = root.get("error").and_then(serde_json::Value::as_object);
    let get = |key: &str| {
        nested
            .and_then(|n| n.get(key))
            .or_else(|| root.get(key))
            .or_else(|| root.get(&capitalised(key)))
    };
    if details.error.starts_with("http_") {
        if let Some(code) = text(get("code"), 128) {
            details.error = code;
        }
    }
    if details.error_description.is_none() {
        details.error_description = text(get("message"), 2048);
    }
    if details.correlation_id.is_none() {
        details.correlation_id = text(get("correlationId"), 128);
    }
    error
}

fn capitalised(key: &str) -> String {
    let mut chars = key.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}
