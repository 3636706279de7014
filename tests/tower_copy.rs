//! The tower stack copies a request's headers once per call, however many of the layers that
//! resend are stacked (issue 14): the outermost retry layer offers its copy to the layers inside
//! it, which keep a reference to it when they were handed the same headers. What the server sees
//! must not change: every resend is the request that layer was handed — including what a layer
//! between two of the crate's changed.
//!
//! No network: the innermost service plays the server and records each request it gets, on the
//! paused tokio clock (the back-off waits take no real time).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{assert_resends_of_503_429_401, counting_tokens, no_jitter};
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use resilient_auth::{Attempts, AuthLayer, BoxError, RetryAfterLayer, TimeoutLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// A request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    uri: String,
    /// In the order they were sent, with their sensitive marks.
    headers: Vec<(String, String, bool)>,
    body: Vec<u8>,
}

/// Plays the server: answers with the scripted statuses (then 200), recording what it got.
#[derive(Clone, Default)]
struct Server {
    script: Arc<Mutex<Vec<Response<()>>>>,
    seen: Arc<Mutex<Vec<(Instant, Seen)>>>,
}

impl Server {
    fn new(script: Vec<Response<()>>) -> Self {
        Server {
            script: Arc::new(Mutex::new(script.into_iter().rev().collect())),
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|(_, s)| s.clone()).collect()
    }

    fn times(&self, t0: Instant) -> Vec<Duration> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|(t, _)| *t - t0).collect()
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<Full<Bytes>>,
        Response = Response<()>,
        Error = BoxError,
        Future = BoxFuture<'static, Result<Response<()>, BoxError>>,
    > + Clone {
        let server = self.clone();
        tower::service_fn(move |req: Request<Full<Bytes>>| {
            let server = server.clone();
            Box::pin(async move {
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        let value = v.to_str().unwrap().to_owned();
                        (k.to_string(), value, v.is_sensitive())
                    })
                    .collect();
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes().to_vec();
                let seen = Seen {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers,
                    body,
                };
                server.seen.lock().unwrap().push((Instant::now(), seen));
                let next = server.script.lock().unwrap().pop();
                Ok::<_, BoxError>(next.unwrap_or_else(|| Response::new(())))
            }) as BoxFuture<'static, _>
        })
    }
}

fn respond(status: u16, header: Option<(&'static str, &'static str)>) -> Response<()> {
    let mut b = Response::builder().status(status);
    if let Some((k, v)) = header {
        b = b.header(k, v);
    }
    b.body(()).unwrap()
}

fn invalid_token() -> Response<()> {
    respond(
        401,
        Some(("www-authenticate", r#"Bearer error="invalid_token""#)),
    )
}

/// The caller's request: a POST with three headers and a body.
fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.example.com/items?x=1")
        .header("content-type", "application/json")
        .header("x-request-id", "abc")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"name":"x"}"#)))
        .unwrap()
}

/// The caller's request as the server should see it, with `x-request-id` set to `id` and, if
/// given, the bearer token (marked sensitive) after the caller's headers.
fn sent(id: &str, token: Option<&str>) -> Seen {
    let header = |name: &str, value: &str| (name.to_owned(), value.to_owned(), false);
    let mut headers = vec![
        header("content-type", "application/json"),
        header("x-request-id", id),
        header("accept", "application/json"),
    ];
    if let Some(token) = token {
        headers.push(("authorization".into(), format!("Bearer {token}"), true));
    }
    Seen {
        method: "POST".into(),
        uri: "https://api.example.com/items?x=1".into(),
        headers,
        body: br#"{"name":"x"}"#.to_vec(),
    }
}

/// A layer between two of the crate's that changes every request it passes on: it replaces the
/// value of `x-request-id` with another of the same length (the header count stays the same),
/// numbered per request, and optionally marks `accept` sensitive (its value unchanged).
#[derive(Clone)]
struct Rewrite {
    count: Arc<AtomicUsize>,
    mark_only: bool,
}

impl Rewrite {
    fn new() -> Self {
        Rewrite {
            count: Arc::default(),
            mark_only: false,
        }
    }

    fn mark_only() -> Self {
        Rewrite {
            count: Arc::default(),
            mark_only: true,
        }
    }
}

impl<S> Layer<S> for Rewrite {
    type Service = Rewriting<S>;

    fn layer(&self, inner: S) -> Rewriting<S> {
        Rewriting {
            inner,
            rewrite: self.clone(),
        }
    }
}

/// The service [`Rewrite`] produces.
#[derive(Clone)]
struct Rewriting<S> {
    inner: S,
    rewrite: Rewrite,
}

impl<S: Service<Request<Full<Bytes>>>> Service<Request<Full<Bytes>>> for Rewriting<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Full<Bytes>>) -> S::Future {
        if self.rewrite.mark_only {
            if let Some(v) = req.headers_mut().get_mut("accept") {
                v.set_sensitive(true);
            }
        } else {
            let n = self.rewrite.count.fetch_add(1, Ordering::SeqCst) + 1;
            req.headers_mut().insert(
                "x-request-id",
                HeaderValue::try_from(format!("r-{n}")).unwrap(),
            );
        }
        self.inner.call(req)
    }
}

/// The four layers with a 503 (back-off retry), a 429 with `Retry-After` (Retry-After retry)
/// and a 401 `invalid_token` (resend with a new token): each resend is the request the caller
/// sent — method, URI, headers in order, body — with the current token, at the waits the rules
/// ask. The inner layers resend from the one copy of the headers the outermost took.
#[tokio::test(start_paused = true)]
async fn r2_r3_a2_stacked_tower_layers_resend_the_callers_headers_from_one_copy() {
    let tokens = counting_tokens().await;
    let server = Server::new(vec![
        respond(503, None),
        respond(429, Some(("retry-after", "2"))),
        invalid_token(),
    ]);
    let svc = RetryAfterLayer::default().layer(
        no_jitter().layer(
            AuthLayer::new(tokens.clone())
                .layer(TimeoutLayer::new(Duration::from_secs(10)).layer(server.service())),
        ),
    );
    let t0 = Instant::now();
    let resp = svc.oneshot(request()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_resends_of_503_429_401(
        &server.seen(),
        &server.times(t0),
        |token| sent("abc", Some(token)),
        Attempts::of(resp.extensions()),
    );
}

/// A layer between `RetryAfterLayer` and `ExpBackoffLayer` replaces a header's value with
/// another of the same length. The back-off retry resends what `ExpBackoffLayer` was handed
/// (`r-1`), not the caller's headers that `RetryAfterLayer` holds; and the Retry-After retry
/// goes through the layer again (`r-2`).
#[tokio::test(start_paused = true)]
async fn r3_a_tower_retry_resends_the_headers_a_layer_in_between_changed() {
    let server = Server::new(vec![
        respond(503, None),
        respond(429, Some(("retry-after", "1"))),
    ]);
    let svc =
        RetryAfterLayer::default().layer(Rewrite::new().layer(no_jitter().layer(server.service())));
    let resp = svc.oneshot(request()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(seen[0], sent("r-1", None));
    assert_eq!(seen[1], sent("r-1", None), "the back-off retry resends r-1");
    assert_eq!(
        seen[2],
        sent("r-2", None),
        "the Retry-After retry passes the layer again"
    );
}

/// The same with the 401 resend: a layer between a retry layer and `AuthLayer` changes a
/// header; the resend after a 401 carries the change.
#[tokio::test(start_paused = true)]
async fn a2_the_tower_401_resend_carries_the_headers_a_layer_in_between_changed() {
    let tokens = counting_tokens().await;
    let server = Server::new(vec![invalid_token()]);
    let svc = no_jitter()
        .layer(Rewrite::new().layer(AuthLayer::new(tokens.clone()).layer(server.service())));
    let resp = svc.oneshot(request()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0], sent("r-1", Some("token-1")));
    assert_eq!(
        seen[1],
        sent("r-1", Some("token-2")),
        "the resend, with the new token"
    );
}

/// A layer in between that only marks a header sensitive changes the headers too: the back-off
/// retry keeps the mark (a resend from the outer layer's copy would drop it, and the value would
/// show in a `Debug` of the request).
#[tokio::test(start_paused = true)]
async fn x1_a_tower_retry_keeps_a_sensitive_mark_set_between_the_layers() {
    let server = Server::new(vec![respond(503, None)]);
    let svc = RetryAfterLayer::default()
        .layer(Rewrite::mark_only().layer(no_jitter().layer(server.service())));
    let resp = svc.oneshot(request()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    for s in &seen {
        assert!(
            s.headers
                .contains(&("accept".into(), "application/json".into(), true)),
            "{s:#?}"
        );
    }
}
