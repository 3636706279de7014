//! SDK-shaped API surfaces on the testkit's HTTPS port (feature `testkit-tls`).
//!
//! | path | answers like |
//! | --- | --- |
//! | `GET /secrets/{name}[/{version}]` | Azure Key Vault "get secret": a `SecretBundle` JSON (`value`, `id`, `attributes`) |
//! | `POST /openai/deployments/{deployment}/chat/completions` | Azure OpenAI chat completions: one assistant choice |
//!
//! Each is the testkit's protected API underneath (target [`Api`](super::Target::Api)): a
//! request needs an unexpired token this provider issued, the `Api` faults apply, and it is
//! logged like any API request — so tests count an SDK's requests at the testkit. A Key Vault
//! request **without** `Authorization` gets Key Vault's challenge
//! (`Bearer authorization="…", resource="https://vault.azure.net"`), which Key Vault clients
//! use to discover the scope.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::handler::{handle, lock, unreadable_body, Answer, State, MAX_BODY};

/// One request the HTTPS port answered, with its path (the testkit's own log has no paths), so
/// tests can tell an SDK's calls apart (e.g. one secret name per call).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpsRequest {
    /// When it arrived, since the provider started (the same clock as
    /// [`LoggedRequest::at`](super::LoggedRequest)).
    pub at: Duration,
    /// The method.
    pub method: String,
    /// The path as sent (before any mapping), without the query.
    pub path: String,
    /// The status answered (`None` for a hang or a dropped connection).
    pub status: Option<u16>,
}

pub(super) type HttpsLog = Arc<Mutex<Vec<HttpsRequest>>>;

enum Surface {
    /// Not an SDK path: the testkit's own.
    Plain,
    KeyVaultSecret {
        name: String,
    },
    OpenAiChat {
        deployment: String,
    },
}

/// Routes an HTTPS request: SDK paths become the protected API, their answers are reshaped.
pub(super) async fn handle_https(
    state: Arc<State>,
    log: HttpsLog,
    req: Request<Incoming>,
) -> Answer {
    let at = state.elapsed();
    let (parts, body) = req.into_parts();
    let Ok(body) = Limited::new(body, MAX_BODY).collect().await else {
        return Ok(unreadable_body());
    };
    let mut req = Request::from_parts(parts, body.to_bytes());
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let had_auth = req.headers().contains_key(http::header::AUTHORIZATION);
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let surface = route(&req);
    if !matches!(surface, Surface::Plain) {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        if let Ok(uri) = format!("/api/sdk{pq}").parse() {
            *req.uri_mut() = uri;
        }
    }
    let answer = handle(&state, req)
        .await
        .map(|a| shape(&surface, a, had_auth, &host));
    lock(&log).push(HttpsRequest {
        at,
        method,
        path,
        status: answer.as_ref().ok().map(|r| r.status().as_u16()),
    });
    answer
}

fn route<B>(req: &Request<B>) -> Surface {
    let segments: Vec<&str> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (req.method(), segments.as_slice()) {
        (&http::Method::GET, ["secrets", name] | ["secrets", name, _]) => Surface::KeyVaultSecret {
            name: (*name).to_owned(),
        },
        (&http::Method::POST, ["openai", "deployments", deployment, "chat", "completions"]) => {
            Surface::OpenAiChat {
                deployment: (*deployment).to_owned(),
            }
        }
        _ => Surface::Plain,
    }
}

fn shape(
    surface: &Surface,
    mut answer: Response<Full<Bytes>>,
    had_auth: bool,
    host: &str,
) -> Response<Full<Bytes>> {
    let status = answer.status();
    match surface {
        Surface::Plain => answer,
        Surface::KeyVaultSecret { name } if status == StatusCode::OK => {
            let body = serde_json::json!({
                "value": format!("fake-secret-value-of-{name}"),
                "id": format!("https://{host}/secrets/{name}/00000000000000000000000000000001"),
                "attributes": {
                    "enabled": true,
                    "created": 1_700_000_000,
                    "updated": 1_700_000_000,
                    "recoveryLevel": "Recoverable+Purgeable"
                }
            });
            *answer.body_mut() = Full::new(Bytes::from(body.to_string()));
            answer
        }
        Surface::KeyVaultSecret { .. } if status == StatusCode::UNAUTHORIZED && !had_auth => {
            answer.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static(
                    r#"Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net""#,
                ),
            );
            answer
        }
        Surface::OpenAiChat { deployment } if status == StatusCode::OK => {
            let body = serde_json::json!({
                "id": "chatcmpl-testkit",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": deployment,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop"
                }],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            });
            *answer.body_mut() = Full::new(Bytes::from(body.to_string()));
            answer
        }
        _ => answer,
    }
}
