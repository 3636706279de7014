//! A fake identity provider and protected API on loopback, with scripted faults (feature
//! `testkit`): for this crate's tests and examples, and for your own tests.
//!
//! [`FakeIdentityProvider`] serves, on one `http://127.0.0.1:<port>`:
//!
//! | path | what |
//! | --- | --- |
//! | `POST /{tenant}/oauth2/v2.0/token` | Entra v2.0 token endpoint: `client_credentials` with `client_secret` or `client_assertion`, and `refresh_token` |
//! | `GET /metadata/identity/oauth2/token` | IMDS (needs `Metadata: true`); point `AZURE_POD_IDENTITY_AUTHORITY_HOST` or the IMDS base here |
//! | `GET /api/data` | a protected API that accepts only unexpired tokens this provider issued |
//!
//! A [`Fault`] makes one [`Target`] misbehave during a time window measured from
//! [`start`](FakeIdentityProviderBuilder::start) on the tokio clock (so paused-time tests drive it):
//! 429 with `Retry-After`, 503 with or without `Retry-After`, a hang, or a dropped connection.
//! Every request is logged with its time and outcome.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use resilient_auth::testkit::{Fault, FaultKind, FakeIdentityProvider, Target};
//!
//! let idp = FakeIdentityProvider::builder()
//!     .token_lifetime(Duration::from_secs(3600))
//!     .fault(Fault::new(Target::Token, Duration::from_secs(10)..Duration::from_secs(70), FaultKind::Unavailable { retry_after: None }))
//!     .start()
//!     .await?;
//! let token_url = idp.token_url("my-tenant");
//! # let _ = token_url;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Error;

#[cfg(feature = "testkit-tls")]
pub mod sdk_api;
#[cfg(feature = "testkit-tls")]
mod tls;
#[cfg(feature = "testkit-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit-tls")))]
pub use {sdk_api::HttpsRequest, tls::HttpsEndpoint};

/// Which endpoint a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// The Entra token endpoint.
    Token,
    /// The IMDS endpoint.
    Imds,
    /// The protected API.
    Api,
}

/// How an endpoint misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// 429 with `Retry-After` (whole seconds, rounded up).
    TooManyRequests {
        /// The wait asked for.
        retry_after: Duration,
    },
    /// 503, with `Retry-After` if given.
    Unavailable {
        /// The wait asked for, if any.
        retry_after: Option<Duration>,
    },
    /// 500 with an Entra-shaped error body.
    ServerError,
    /// Never answers (until the client gives up).
    Hang,
    /// Closes the connection without answering.
    Drop,
}

/// A fault on one target during a window of time since the provider started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Where.
    pub target: Target,
    /// When, measured from start.
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

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoggedRequest {
    /// When it arrived, since start.
    pub at: Duration,
    /// Which endpoint.
    pub target: Target,
    /// The status answered (`None` for a hang or a dropped connection).
    pub status: Option<u16>,
    /// The fault applied, if any.
    pub fault: Option<FaultKind>,
}

/// Builds a [`FakeIdentityProvider`].
#[derive(Debug, Clone)]
pub struct FakeIdentityProviderBuilder {
    lifetime: Duration,
    refresh_in: Option<Duration>,
    faults: Vec<Fault>,
}

impl FakeIdentityProviderBuilder {
    /// The lifetime of issued tokens (`expires_in`, default 1 h; whole seconds).
    #[must_use]
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// A `refresh_in` hint in token responses (default none).
    #[must_use]
    pub fn refresh_in(mut self, refresh_in: Duration) -> Self {
        self.refresh_in = Some(refresh_in);
        self
    }

    /// Adds a fault.
    #[must_use]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the port cannot be bound.
    pub async fn start(self) -> Result<FakeIdentityProvider, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::unavailable("loopback listener", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::unavailable("loopback listener", e))?;
        let state = Arc::new(State {
            start: Instant::now(),
            lifetime: self.lifetime,
            refresh_in: self.refresh_in,
            faults: Mutex::new(self.faults),
            issued: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
        });
        let task = tokio::spawn(serve(listener, state.clone()));
        Ok(FakeIdentityProvider { addr, state, task })
    }
}

struct State {
    start: Instant,
    lifetime: Duration,
    refresh_in: Option<Duration>,
    faults: Mutex<Vec<Fault>>,
    issued: Mutex<HashMap<String, Instant>>,
    log: Mutex<Vec<LoggedRequest>>,
    counter: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fake Entra ID + IMDS + protected API on loopback. Stops when dropped.
pub struct FakeIdentityProvider {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl fmt::Debug for FakeIdentityProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeIdentityProvider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeIdentityProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeIdentityProvider {
    /// A builder: 1 h tokens, no faults.
    pub fn builder() -> FakeIdentityProviderBuilder {
        FakeIdentityProviderBuilder {
            lifetime: Duration::from_secs(3600),
            refresh_in: None,
            faults: Vec::new(),
        }
    }

    /// `http://127.0.0.1:<port>`: the authority host (and IMDS base).
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token endpoint for `tenant`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.uri())
    }

    /// The protected API.
    pub fn api_url(&self) -> String {
        format!("{}/api/data", self.uri())
    }

    /// Adds a fault while running (windows are still measured from start).
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.state.faults).push(fault);
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        lock(&self.state.faults).clear();
    }

    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        self.state.start.elapsed()
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<LoggedRequest> {
        lock(&self.state.log).clone()
    }

    /// How many requests reached `target`.
    pub fn requests(&self, target: Target) -> usize {
        lock(&self.state.log)
            .iter()
            .filter(|r| r.target == target)
            .count()
    }

    /// How many tokens were issued.
    pub fn tokens_issued(&self) -> u64 {
        self.state.counter.load(Ordering::Relaxed)
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The outcome of one request: a response, or "hang up without answering".
type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_string();
    let target = if path == "/metadata/identity/oauth2/token" {
        Target::Imds
    } else if path.starts_with("/api/") {
        Target::Api
    } else if path.ends_with("/oauth2/v2.0/token") {
        Target::Token
    } else {
        return Ok(json(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found"}"#.into(),
        ));
    };
    let at = state.start.elapsed();
    let fault = lock(&state.faults)
        .iter()
        .find(|f| f.target == target && f.window.contains(&at))
        .map(|f| f.kind);
    let answer = match fault {
        Some(kind) => fault_answer(kind).await,
        None => match target {
            Target::Token => Ok(token_endpoint(&state, req).await),
            Target::Imds => Ok(imds(&state, &req)),
            Target::Api => Ok(api(&state, &req)),
        },
    };
    lock(&state.log).push(LoggedRequest {
        at,
        target,
        status: answer.as_ref().ok().map(|r| r.status().as_u16()),
        fault,
    });
    answer
}

async fn fault_answer(kind: FaultKind) -> Answer {
    let secs = |d: Duration| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).to_string();
    match kind {
        FaultKind::TooManyRequests { retry_after } => {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"error":"temporarily_unavailable","error_description":"AADSTS50196: throttled"}"#.into(),
            );
            insert(&mut r, "retry-after", &secs(retry_after));
            Ok(r)
        }
        FaultKind::Unavailable { retry_after } => {
            let mut r = json(StatusCode::SERVICE_UNAVAILABLE, String::new());
            if let Some(ra) = retry_after {
                insert(&mut r, "retry-after", &secs(ra));
            }
            Ok(r)
        }
        FaultKind::ServerError => Ok(json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"server_error","error_description":"AADSTS90033: A transient error has occurred"}"#.into(),
        )),
        FaultKind::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Err(std::io::Error::other("hang ended"))
        }
        FaultKind::Drop => Err(std::io::Error::other("connection dropped")),
    }
}

fn insert(r: &mut Response<Full<Bytes>>, name: &'static str, value: &str) {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn issue(state: &State) -> (String, u64) {
    let n = state.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("fake-at-{n}-{:016x}", fastrand::u64(..));
    let secs = state.lifetime.as_secs().max(1);
    lock(&state.issued).insert(token.clone(), Instant::now() + Duration::from_secs(secs));
    (token, secs)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Full<Bytes>> {
    json(
        status,
        format!(
            r#"{{"error":"{error}","error_description":"{description}","error_codes":[7000215],"trace_id":"00000000-0000-0000-0000-000000000001","correlation_id":"00000000-0000-0000-0000-000000000002"}}"#
        ),
    )
}

async fn token_endpoint(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "POST only",
        );
    }
    let Ok(body) = Limited::new(req.into_body(), 64 * 1024).collect().await else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unreadable body",
        );
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body.to_bytes())
        .into_owned()
        .collect();
    let has = |k: &str| form.get(k).is_some_and(|v| !v.is_empty());
    let ok = match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            has("client_id") && has("scope") && (has("client_secret") || has("client_assertion"))
        }
        Some("refresh_token") => has("client_id") && has("refresh_token"),
        _ => false,
    };
    if !ok {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: missing or unsupported parameters",
        );
    }
    let (token, secs) = issue(state);
    let refresh_in = state
        .refresh_in
        .map(|r| format!(r#","refresh_in":{}"#, r.as_secs()))
        .unwrap_or_default();
    let refresh_token = if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        format!(r#","refresh_token":"fake-rt-{:016x}""#, fastrand::u64(..))
    } else {
        String::new()
    };
    json(
        StatusCode::OK,
        format!(
            r#"{{"token_type":"Bearer","expires_in":"{secs}","ext_expires_in":"{secs}","access_token":"{token}"{refresh_in}{refresh_token}}}"#
        ),
    )
}

fn imds(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.headers().get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#.into(),
        );
    }
    let query = req.uri().query().unwrap_or("");
    let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let Some(resource) = params.get("resource") else {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_request","error_description":"Required audience parameter not specified"}"#.into(),
        );
    };
    let (token, secs) = issue(state);
    let expires_on = crate::cache::store::unix_ms(std::time::SystemTime::now()) / 1000 + secs;
    let resource = resource.replace('"', "");
    json(
        StatusCode::OK,
        format!(
            r#"{{"access_token":"{token}","refresh_token":"","expires_in":"{secs}","expires_on":"{expires_on}","not_before":"{}","resource":"{resource}","token_type":"Bearer"}}"#,
            expires_on - secs
        ),
    )
}

fn api(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = token.is_some_and(|t| {
        lock(&state.issued)
            .get(t)
            .is_some_and(|exp| Instant::now() < *exp)
    });
    if valid {
        json(StatusCode::OK, r#"{"data":"ok"}"#.into())
    } else {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_token"}"#.into(),
        );
        insert(
            &mut r,
            "www-authenticate",
            r#"Bearer error="invalid_token", error_description="The access token is missing, unknown or expired""#,
        );
        r
    }
}
