//! An axum gateway (rule U3): its handler calls a protected downstream API through **one
//! shared** tower stack of the four layers around a hyper-util client — the token cache, the
//! per-origin `Retry-After` hold and the retry budget are shared by every request the gateway
//! serves.
//!
//! ```sh
//! cargo run --example axum_gateway -- --self-test
//! cargo run --example axum_gateway -- --listen 127.0.0.1:8080 --downstream https://api.contoso.com/data --scope api://contoso-api/.default
//! ```
//!
//! `--self-test` runs the gateway against the testkit (fake Entra ID + protected API on
//! loopback) and checks, through the gateway's own HTTP port: 20 concurrent cold calls cost one
//! token request; calls keep succeeding through an identity-provider outage; a downstream 429
//! is waited out exactly (`Retry-After: 1`); a downstream 503 is retried no sooner than 5 s.
//! It exits 0 when every check holds (about 10 s).
//!
//! Without `--self-test` it is a real gateway: `GET /data` on `--listen` fetches `--downstream`
//! with a token for `--scope` from a client secret (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//! `AZURE_CLIENT_SECRET`) or, without a secret, managed identity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use resilient_auth::retry::Backoff;
use resilient_auth::testkit::{FakeIdentityProvider, Fault, FaultKind, Target};
use resilient_auth::{
    Attempts, AuthLayer, BoxError, ClientSecretCredential, Error, ExpBackoffLayer,
    ManagedIdentityCredential, RetryAfterLayer, TimeoutLayer, TokenCache,
};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

/// The shared downstream stack: one value, cloned into each request (clones share state).
type Downstream = BoxCloneSyncService<
    http::Request<Full<Bytes>>,
    http::Response<hyper::body::Incoming>,
    BoxError,
>;

#[derive(Clone)]
struct Gateway {
    downstream: Downstream,
    url: http::Uri,
}

/// The four layers, outermost first, around a hyper-util client.
fn downstream_stack(
    tokens: TokenCache,
    origin: &str,
    backoff: Backoff,
) -> Result<Downstream, Error> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::default())
        .layer(ExpBackoffLayer::builder().backoff(backoff).build()?)
        .layer(AuthLayer::new(tokens).allow_origins([origin])?)
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .service(client);
    Ok(BoxCloneSyncService::new(svc))
}

async fn data(State(gw): State<Gateway>) -> Response {
    let req = http::Request::get(gw.url.clone())
        .body(Full::new(Bytes::new()))
        .expect("a GET with an empty body");
    match gw.downstream.oneshot(req).await {
        Ok(rsp) => {
            let status = rsp.status();
            let attempts = Attempts::of(rsp.extensions());
            let body = rsp.into_body().collect().await.map(|b| b.to_bytes());
            match body {
                Ok(body) => {
                    let mut out = (status, body).into_response();
                    if let Ok(v) = HeaderValue::from_str(&attempts.to_string()) {
                        out.headers_mut().insert("x-downstream-attempts", v);
                    }
                    out
                }
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            }
        }
        // The downstream asked for a longer wait than we may hold a caller: pass it on.
        Err(e) => match e.downcast_ref::<Error>() {
            Some(Error::Throttled { retry_after }) => {
                let mut out = StatusCode::SERVICE_UNAVAILABLE.into_response();
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    out.headers_mut().insert(http::header::RETRY_AFTER, v);
                }
                out
            }
            Some(Error::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT.into_response(),
            _ => {
                eprintln!("gateway: downstream call failed: {e}");
                StatusCode::BAD_GATEWAY.into_response()
            }
        },
    }
}

/// The gateway's router over a shared downstream stack.
fn router(downstream: Downstream, url: http::Uri) -> Router {
    Router::new()
        .route("/data", get(data))
        .with_state(Gateway { downstream, url })
}

async fn serve(router: Router, listen: SocketAddr) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

/// One check of the self-test.
#[derive(Debug)]
pub(crate) struct Check {
    /// What was checked.
    pub(crate) name: &'static str,
    /// Whether it held.
    pub(crate) ok: bool,
    /// What was seen.
    pub(crate) detail: String,
}

/// Runs the gateway against the testkit and returns its checks. `floor` is the back-off's
/// first delay (5 s in the example; tests compress it).
pub(crate) async fn self_test(floor: Duration) -> Result<Vec<Check>, BoxError> {
    const TENANT: &str = "contoso";
    let secs = Duration::from_secs_f64;
    // 4 s tokens refreshed at ~2 s; the identity provider is down from 1.5 to 3 s.
    let idp = FakeIdentityProvider::builder()
        .token_lifetime(Duration::from_secs(4))
        .fault(Fault::new(
            Target::Token,
            secs(1.5)..secs(3.0),
            FaultKind::Unavailable { retry_after: None },
        ))
        .start()
        .await?;
    let credential = ClientSecretCredential::builder(TENANT, "gateway", "secret")
        .token_url(idp.token_url(TENANT))
        .timeout(secs(1.0))
        .build()?;
    // The tokens live 4 s here, so the cache's own retry interval is scaled down with them.
    let tokens = TokenCache::builder(credential, ["api://downstream/.default"])
        .skew(secs(0.5))
        .backoff(
            Backoff::builder()
                .initial(secs(0.2))
                .max(secs(0.4))
                .build()?,
        )
        .build()?;
    let backoff = Backoff::builder().initial(floor).max(floor * 12).build()?;
    let downstream = downstream_stack(tokens, &idp.uri(), backoff)?;
    let addr = serve(
        router(downstream, idp.api_url().parse()?),
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let gateway = format!("http://{addr}/data");
    let http = reqwest::Client::new();
    let call = |http: reqwest::Client, url: String| async move {
        let t = tokio::time::Instant::now();
        let status = http.get(url).send().await.map(|r| r.status().as_u16()).ok();
        (status, t.elapsed())
    };
    let mut checks = Vec::new();

    // 1. cold start: 20 concurrent calls, one token request
    let burst: Vec<_> = (0..20)
        .map(|_| tokio::spawn(call(http.clone(), gateway.clone())))
        .collect();
    let mut statuses = Vec::new();
    for b in burst {
        statuses.push(b.await?.0);
    }
    let token_requests = idp.requests(Target::Token);
    checks.push(Check {
        name: "20 concurrent cold calls: all 200, one token request",
        ok: statuses.iter().all(|s| *s == Some(200)) && token_requests == 1,
        detail: format!(
            "{} ok, {token_requests} token request(s)",
            statuses.iter().filter(|s| **s == Some(200)).count()
        ),
    });

    // 2. identity-provider outage across the refresh point: calls keep working
    let mut failed = 0;
    let mut n = 0;
    while idp.elapsed() < secs(3.3) {
        n += 1;
        if call(http.clone(), gateway.clone()).await.0 != Some(200) {
            failed += 1;
        }
        tokio::time::sleep(secs(0.1)).await;
    }
    let token_503 = idp
        .log()
        .iter()
        .filter(|r| r.target == Target::Token && r.status == Some(503))
        .count();
    checks.push(Check {
        name: "identity provider down 1.5-3 s: no failed call",
        ok: failed == 0 && token_503 >= 1 && n >= 10,
        detail: format!("{n} calls, {failed} failed, {token_503} token request(s) refused"),
    });

    // 3. the downstream throttles: 429 Retry-After: 1 is waited out, exactly
    let now = idp.elapsed();
    idp.add_fault(Fault::new(
        Target::Api,
        now..now + secs(0.5),
        FaultKind::TooManyRequests {
            retry_after: secs(1.0),
        },
    ));
    let before = idp.log().len();
    let (status, took) = call(http.clone(), gateway.clone()).await;
    let api: Vec<_> = idp
        .log()
        .into_iter()
        .skip(before)
        .filter(|r| r.target == Target::Api)
        .collect();
    let gap = (api.len() == 2).then(|| api[1].at - api[0].at);
    checks.push(Check {
        name: "downstream 429 Retry-After: 1: one retry, 1 s later",
        ok: status == Some(200)
            && api.first().and_then(|r| r.status) == Some(429)
            && gap.is_some_and(|g| g >= secs(1.0) && g < secs(1.5)),
        detail: format!(
            "gateway answered {status:?} after {took:.2?}; downstream saw {:?}, gap {gap:.2?}",
            api.iter().map(|r| r.status).collect::<Vec<_>>()
        ),
    });

    // 4. the downstream fails: a 503 without Retry-After is retried no sooner than the floor
    let now = idp.elapsed();
    idp.add_fault(Fault::new(
        Target::Api,
        now..now + floor / 2,
        FaultKind::Unavailable { retry_after: None },
    ));
    let before = idp.log().len();
    let (status, took) = call(http.clone(), gateway.clone()).await;
    let api: Vec<_> = idp
        .log()
        .into_iter()
        .skip(before)
        .filter(|r| r.target == Target::Api)
        .collect();
    let gap = (api.len() == 2).then(|| api[1].at - api[0].at);
    checks.push(Check {
        name: "downstream 503: one retry, no sooner than the back-off floor",
        ok: status == Some(200)
            && api.first().and_then(|r| r.status) == Some(503)
            && gap.is_some_and(|g| g >= floor),
        detail: format!("gateway answered {status:?} after {took:.2?}; downstream saw {:?}, gap {gap:.2?} (floor {floor:?})", api.iter().map(|r| r.status).collect::<Vec<_>>()),
    });
    Ok(checks)
}

async fn real(args: &[String]) -> Result<(), BoxError> {
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(downstream), Some(scope)) = (arg("--downstream"), arg("--scope")) else {
        eprintln!(
            "usage: axum_gateway --self-test | --downstream URL --scope SCOPE [--listen ADDR]"
        );
        std::process::exit(2);
    };
    let listen: SocketAddr = arg("--listen")
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;
    let url: http::Uri = downstream.parse()?;
    let origin = format!(
        "{}://{}",
        url.scheme_str().unwrap_or("https"),
        url.authority().map_or("", |a| a.as_str())
    );
    let tokens = if std::env::var_os("AZURE_CLIENT_SECRET").is_some() {
        TokenCache::new(ClientSecretCredential::from_env()?, [scope])
    } else {
        TokenCache::new(ManagedIdentityCredential::from_env()?, [scope])
    };
    let stack = downstream_stack(tokens, &origin, Backoff::default())?;
    let addr = serve(router(stack, url), listen).await?;
    println!("gateway on http://{addr}/data -> {downstream}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--self-test") {
        return real(&args).await;
    }
    let checks = self_test(Duration::from_secs(5)).await?;
    let mut all = true;
    for c in &checks {
        all &= c.ok;
        println!(
            "[{}] {}: {}",
            if c.ok { "ok" } else { "FAILED" },
            c.name,
            c.detail
        );
    }
    if all {
        println!("self-test: every check holds");
        Ok(())
    } else {
        Err("self-test: a check failed".into())
    }
}
