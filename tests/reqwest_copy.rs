//! The reqwest-middleware stack takes one copy of a request per call, however many of the
//! layers that resend are stacked (issue 14): the outermost one lends its copy to the layers
//! inside it. What the server sees must not change: every resend is the request that layer was
//! handed — including what a middleware between two layers changed.
//!
//! No network: a last middleware plays the server and records each request it gets, on the
//! paused tokio clock (the back-off waits take no real time).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_resends_of_503_429_401, counting_tokens, no_jitter};
use http::Extensions;
use reqwest_middleware::{ClientBuilder, Middleware, Next};
use resilient_auth::{Attempts, AuthLayer, RetryAfterLayer, TimeoutLayer};
use tokio::time::Instant;

/// A request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Plays the server: answers with the scripted statuses (then 200), recording what it got.
#[derive(Clone, Default)]
struct Server {
    script: Arc<Mutex<Vec<http::Response<&'static str>>>>,
    seen: Arc<Mutex<Vec<(Instant, Seen)>>>,
}

impl Server {
    fn new(script: Vec<http::Response<&'static str>>) -> Self {
        Server {
            script: Arc::new(Mutex::new(script.into_iter().rev().collect())),
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl Middleware for Server {
    async fn handle(
        &self,
        req: reqwest::Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let mut headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        headers.sort();
        let seen = Seen {
            method: req.method().to_string(),
            url: req.url().to_string(),
            headers,
            body: req
                .body()
                .and_then(|b| b.as_bytes())
                .unwrap_or_default()
                .to_vec(),
        };
        self.seen.lock().unwrap().push((Instant::now(), seen));
        let next = self.script.lock().unwrap().pop();
        let resp = next.unwrap_or_else(|| http::Response::new("ok"));
        Ok(reqwest::Response::from(resp))
    }
}

fn respond(
    status: u16,
    header: Option<(&'static str, &'static str)>,
) -> http::Response<&'static str> {
    let mut b = http::Response::builder().status(status);
    if let Some((k, v)) = header {
        b = b.header(k, v);
    }
    b.body("").unwrap()
}

/// Adds a header and rewrites the body of every request it passes on: a layer between two of
/// the crate's that changes the request (a signer, a compressor).
struct Rewrite(AtomicUsize);

#[async_trait::async_trait]
impl Middleware for Rewrite {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        req.headers_mut()
            .insert("x-signature", format!("sig-{n}").parse().unwrap());
        let body = req
            .body()
            .and_then(|b| b.as_bytes())
            .unwrap()
            .to_ascii_uppercase();
        *req.body_mut() = Some(body.into());
        next.run(req, extensions).await
    }
}

/// A request with body `abc` as the server sees it after [`Rewrite`]: signed `sig`, body
/// `ABC`, with the bearer token if given.
fn rewritten(method: &str, url: &str, sig: &str, token: Option<&str>) -> Seen {
    let mut headers = Vec::new();
    if let Some(token) = token {
        headers.push(("authorization".into(), format!("Bearer {token}")));
    }
    headers.push(("x-signature".into(), sig.into()));
    Seen {
        method: method.into(),
        url: url.into(),
        headers,
        body: b"ABC".to_vec(),
    }
}

/// The four layers with a 503 (back-off retry), a 429 with `Retry-After` (Retry-After retry)
/// and a 401 `invalid_token` (resend with a new token): each resend is the request the caller
/// sent — method, URL, headers, body — with the current token, sent at the waits the rules ask.
#[tokio::test(start_paused = true)]
async fn r2_r3_a2_stacked_reqwest_layers_resend_the_callers_request_from_one_copy() {
    let tokens = counting_tokens().await;
    let server = Server::new(vec![
        respond(503, None),
        respond(429, Some(("retry-after", "2"))),
        respond(
            401,
            Some(("www-authenticate", r#"Bearer error="invalid_token""#)),
        ),
    ]);
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(RetryAfterLayer::default())
        .with(no_jitter())
        .with(AuthLayer::new(tokens.clone()))
        .with(TimeoutLayer::new(Duration::from_secs(10)))
        .with(server.clone())
        .build();
    let t0 = Instant::now();
    let resp = client
        .post("https://api.example.com/items?x=1")
        .header("content-type", "application/json")
        .header("x-request-id", "abc")
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let expected = |token: &str| Seen {
        method: "POST".into(),
        url: "https://api.example.com/items?x=1".into(),
        headers: vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("content-type".into(), "application/json".into()),
            ("x-request-id".into(), "abc".into()),
        ],
        body: br#"{"name":"x"}"#.to_vec(),
    };
    let at: Vec<Duration> = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| *t - t0)
        .collect();
    assert_resends_of_503_429_401(
        &server.seen(),
        &at,
        expected,
        Attempts::of(resp.extensions()),
    );
}

/// A middleware between `RetryAfterLayer` and `ExpBackoffLayer` signs the request and rewrites
/// its body. The back-off retry resends what `ExpBackoffLayer` was handed — signed, rewritten —
/// not the caller's request that `RetryAfterLayer` holds; and a Retry-After retry goes through
/// the middleware again.
#[tokio::test(start_paused = true)]
async fn r3_a_retry_resends_the_request_as_a_middleware_in_between_changed_it() {
    let server = Server::new(vec![
        respond(503, None),
        respond(429, Some(("retry-after", "1"))),
    ]);
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(RetryAfterLayer::default())
        .with(Rewrite(AtomicUsize::new(0)))
        .with(no_jitter())
        .with(server.clone())
        .build();
    let resp = client
        .post("https://api.example.com/items")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let signed = |sig| rewritten("POST", "https://api.example.com/items", sig, None);
    assert_eq!(seen[0], signed("sig-1"));
    assert_eq!(
        seen[1],
        signed("sig-1"),
        "the back-off retry resends the signed request"
    );
    assert_eq!(
        seen[2],
        signed("sig-2"),
        "the Retry-After retry is signed again"
    );
}

/// The same with the 401 resend: a middleware between a retry layer and `AuthLayer` changes
/// the request; the resend after a 401 carries the change.
#[tokio::test(start_paused = true)]
async fn a2_the_401_resend_carries_what_a_middleware_in_between_changed() {
    let tokens = counting_tokens().await;
    let server = Server::new(vec![respond(
        401,
        Some(("www-authenticate", r#"Bearer error="invalid_token""#)),
    )]);
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(no_jitter())
        .with(Rewrite(AtomicUsize::new(0)))
        .with(AuthLayer::new(tokens.clone()))
        .with(server.clone())
        .build();
    let resp = client
        .put("https://api.example.com/items/1")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let sent = |token| {
        rewritten(
            "PUT",
            "https://api.example.com/items/1",
            "sig-1",
            Some(token),
        )
    };
    assert_eq!(seen[0], sent("token-1"));
    assert_eq!(seen[1], sent("token-2"));
}

/// Marks the `x-api-key` header sensitive (its value unchanged), so it stays out of `Debug`
/// output from here on.
struct MarkSensitive;

#[async_trait::async_trait]
impl Middleware for MarkSensitive {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if let Some(v) = req.headers_mut().get_mut("x-api-key") {
            v.set_sensitive(true);
        }
        next.run(req, extensions).await
    }
}

/// Answers 503 once, then 200; records whether `x-api-key` arrived marked sensitive.
#[derive(Clone, Default)]
struct SensitiveSeen(Arc<Mutex<Vec<bool>>>);

#[async_trait::async_trait]
impl Middleware for SensitiveSeen {
    async fn handle(
        &self,
        req: reqwest::Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let mut seen = self.0.lock().unwrap();
        seen.push(req.headers()["x-api-key"].is_sensitive());
        let status = if seen.len() == 1 { 503 } else { 200 };
        Ok(reqwest::Response::from(respond(status, None)))
    }
}

/// A middleware between the layers that only marks a header sensitive changes the request too:
/// the back-off retry keeps the mark (a resend from the outer layer's copy would drop it, and
/// the value would show in a `Debug` of the request).
#[tokio::test(start_paused = true)]
async fn x1_a_retry_keeps_a_sensitive_mark_set_between_the_layers() {
    let seen = SensitiveSeen::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(RetryAfterLayer::default())
        .with(MarkSensitive)
        .with(no_jitter())
        .with(seen.clone())
        .build();
    let resp = client
        .get("https://api.example.com/items")
        .header("x-api-key", "k-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(*seen.0.lock().unwrap(), [true, true]);
}
