//! Shared test helpers: a scripted tower service and a tracing capture.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use resilient_auth::BoxError;
use tokio::time::Instant;

/// What the scripted service does for one call.
#[derive(Clone, Debug)]
pub enum Step {
    /// Answer with this status and headers.
    Status(u16, Vec<(&'static str, String)>),
    /// Never answer.
    Hang,
    /// Fail like a refused connection.
    Refused,
}

pub fn status(code: u16) -> Step {
    Step::Status(code, vec![])
}

pub fn with_header(code: u16, name: &'static str, value: impl Into<String>) -> Step {
    Step::Status(code, vec![(name, value.into())])
}

/// A tower service that plays a script and records when each call arrived.
#[derive(Clone, Default)]
pub struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
    fallback: Arc<Mutex<Option<Step>>>,
    calls: Arc<Mutex<Vec<(Instant, Method, String)>>>,
}

impl Script {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        let s = Script::default();
        s.steps.lock().unwrap().extend(steps);
        s
    }

    /// The step played once the script has run out (default 200).
    pub fn then_always(self, step: Step) -> Self {
        *self.fallback.lock().unwrap() = Some(step);
        self
    }

    pub fn calls(&self) -> Vec<(Instant, Method, String)> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Gaps between consecutive calls.
    pub fn gaps(&self) -> Vec<Duration> {
        let calls = self.calls();
        calls.windows(2).map(|w| w[1].0 - w[0].0).collect()
    }

    pub async fn call<B>(self, req: Request<B>) -> Result<Response<String>, BoxError> {
        self.calls.lock().unwrap().push((
            Instant::now(),
            req.method().clone(),
            req.uri().to_string(),
        ));
        let step = {
            let next = self.steps.lock().unwrap().pop_front();
            next.or_else(|| self.fallback.lock().unwrap().clone())
                .unwrap_or_else(|| status(200))
        };
        match step {
            Step::Status(code, headers) => {
                let mut resp = Response::new(String::new());
                *resp.status_mut() = StatusCode::from_u16(code).unwrap();
                for (k, v) in headers {
                    resp.headers_mut().append(k, v.parse().unwrap());
                }
                Ok(resp)
            }
            Step::Hang => std::future::pending().await,
            Step::Refused => Err(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
        }
    }

    pub fn service<B: Send + 'static>(
        &self,
    ) -> impl tower::Service<
        Request<B>,
        Response = Response<String>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        let me = self.clone();
        tower::service_fn(move |req: Request<B>| me.clone().call(req))
    }
}

/// Captures `tracing` output (all levels) of the current thread into a buffer.
///
/// One global subscriber (installed once per test binary) writes into the buffer of whichever
/// thread emitted the event. A thread-local `set_default` subscriber would race with tracing's
/// callsite-interest cache when other tests run concurrently (a callsite first hit on another
/// thread is cached as "never interested"), and miss events.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Capture>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the current thread's capture, if any.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CURRENT.with(|c| {
            if let Some(cap) = c.borrow().as_ref() {
                cap.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stops capturing on this thread when dropped.
pub struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Captures this thread's events until the guard is dropped.
    pub fn install(&self) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let sub = tracing_subscriber::fmt()
                .with_writer(|| ThreadWriter)
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(sub).expect("no other global subscriber");
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        CaptureGuard
    }
}

/// A credential that answers at once with `a-token`, valid for an hour.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedToken;

impl resilient_auth::TokenCredential for FixedToken {
    fn get_token<'a>(
        &'a self,
        _: &'a resilient_auth::TokenRequest,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<resilient_auth::TokenResponse, resilient_auth::Error>,
    > {
        Box::pin(std::future::ready(Ok(resilient_auth::TokenResponse::new(
            "a-token",
            Duration::from_secs(3600),
        ))))
    }

    fn identity(&self) -> resilient_auth::CredentialIdentity {
        resilient_auth::CredentialIdentity::new("fixed", "https://login.microsoftonline.com")
    }
}

/// A credential that hands out a new token on every fetch: `token-1`, `token-2`, …
#[derive(Debug, Clone, Default)]
pub struct Counting(pub Arc<std::sync::atomic::AtomicUsize>);

impl resilient_auth::TokenCredential for Counting {
    fn get_token<'a>(
        &'a self,
        _: &'a resilient_auth::TokenRequest,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<resilient_auth::TokenResponse, resilient_auth::Error>,
    > {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Box::pin(std::future::ready(Ok(resilient_auth::TokenResponse::new(
            format!("token-{n}"),
            Duration::from_secs(3600),
        ))))
    }

    fn identity(&self) -> resilient_auth::CredentialIdentity {
        resilient_auth::CredentialIdentity::new("counting", "https://login.microsoftonline.com")
    }
}

/// A cache for `https://api.example.com/.default` over [`Counting`], holding `token-1`.
pub async fn counting_tokens() -> resilient_auth::TokenCache {
    let tokens =
        resilient_auth::TokenCache::new(Counting::default(), ["https://api.example.com/.default"]);
    tokens.token().await.unwrap();
    tokens
}

/// `ExpBackoffLayer` with its default waits exactly (no jitter): 5 s, 10 s, …
pub fn no_jitter() -> resilient_auth::ExpBackoffLayer {
    resilient_auth::ExpBackoffLayer::builder()
        .backoff(
            resilient_auth::retry::Backoff::builder()
                .jitter(0.0)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// What the four stacked layers must do when the server answers 503, then 429 with
/// `Retry-After: 2`, then 401 `invalid_token`: four requests — the caller's with `token-1`, the
/// back-off retry 5 s later (R3), the Retry-After retry 2 s after that (R2), the 401 resend at
/// once with `token-2` (A2) — and a count of four attempts (R7). `seen` are the requests as the
/// server saw them, `at` their times from the call's start, `expected` the request with a token.
pub fn assert_resends_of_503_429_401<T: PartialEq + std::fmt::Debug>(
    seen: &[T],
    at: &[Duration],
    expected: impl Fn(&str) -> T,
    attempts: u32,
) {
    assert_eq!(seen.len(), 4, "{seen:#?}");
    assert_eq!(seen[0], expected("token-1"));
    assert_eq!(seen[1], expected("token-1"), "the back-off retry");
    assert_eq!(seen[2], expected("token-1"), "the Retry-After retry");
    assert_eq!(
        seen[3],
        expected("token-2"),
        "the 401 resend, with the new token"
    );
    assert_eq!(at[1], Duration::from_secs(5), "R3: first back-off 5 s");
    assert_eq!(
        at[2] - at[1],
        Duration::from_secs(2),
        "R2: the 2 s asked for"
    );
    assert_eq!(at[3], at[2], "the 401 resend waits for nothing");
    assert_eq!(attempts, 4);
}

/// A last reqwest-middleware middleware that answers every request with 200, without the
/// network.
#[cfg(feature = "reqwest")]
pub struct Answer;

#[cfg(feature = "reqwest")]
#[async_trait::async_trait]
impl reqwest_middleware::Middleware for Answer {
    async fn handle(
        &self,
        _req: reqwest::Request,
        _extensions: &mut http::Extensions,
        _next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        Ok(reqwest::Response::from(http::Response::new("ok")))
    }
}
