//! The crate's main job: a daemon calling a protected API through all four layers.
//!
//! `cargo run --example daemon` (no arguments) starts the embedded fake identity provider and
//! API (`resilient_auth::testkit`) with a fault script — an identity-provider outage while a
//! token is cached, a 429 burst and 503s on the API — runs a daemon loop through the four layers
//! for ~30 s with a live line per second, then runs the same script without the layers and
//! prints both summaries side by side.
//!
//! With arguments it is a real daemon against real endpoints:
//!
//! ```text
//! cargo run --example daemon -- --mode cca --scope api://x/.default --api https://api.example.com/data \
//!     [--idp URL] [--interval 0.5] [--duration 60] [--out report.jsonl]
//! ```
//!
//! Credentials come from the usual environment (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//! `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH`, `AZURE_AUTHORITY_HOST`,
//! `AZURE_FEDERATED_TOKEN_FILE`, the managed-identity variables); `--mode cca|mi|workload`
//! picks the source and `--idp` overrides the authority host (or the IMDS base for `mi`). Extra trusted CAs come from `SSL_CERT_FILE`. With `--out`, one
//! JSON object a line per iteration, between a `{"event":"start"}` and an `{"event":"end"}` line.

use std::error::Error as StdError;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use resilient_auth::report::{resilience_report, Stack};
use resilient_auth::testkit::{FakeIdentityProvider, Fault, FaultKind, Target};
use resilient_auth::{
    AuthLayer, AuthorityHost, ClientCertificateCredential, ClientSecretCredential, ExpBackoffLayer,
    ManagedIdentityCredential, RetryAfterLayer, TimeoutLayer, TokenCache, TokenCredential,
    UserAssignedId, WorkloadIdentityCredential,
};
use tokio::time::{Instant, MissedTickBehavior};

type BoxError = Box<dyn StdError + Send + Sync>;

const DEMO_SECS: u64 = 30;
const TENANT: &str = "demo-tenant";
const SCOPE: &str = "api://demo/.default";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.is_empty() {
        demo().await
    } else {
        real(&args).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted demo
// ---------------------------------------------------------------------------------------------

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The fault script, in seconds since start.
fn script() -> FakeIdentityProviderBuilderExt {
    FakeIdentityProviderBuilderExt(vec![
        (
            "identity provider down (503) while a token is cached",
            Fault::new(
                Target::Token,
                secs(12)..secs(17),
                FaultKind::Unavailable { retry_after: None },
            ),
        ),
        (
            "API throttles: 429 + Retry-After: 2",
            Fault::new(
                Target::Api,
                secs(20)..secs(23),
                FaultKind::TooManyRequests {
                    retry_after: secs(2),
                },
            ),
        ),
        (
            "API answers 503 without Retry-After",
            Fault::new(
                Target::Api,
                secs(25)..secs(27),
                FaultKind::Unavailable { retry_after: None },
            ),
        ),
    ])
}

struct FakeIdentityProviderBuilderExt(Vec<(&'static str, Fault)>);

impl FakeIdentityProviderBuilderExt {
    async fn start(&self) -> Result<FakeIdentityProvider, BoxError> {
        let mut b = FakeIdentityProvider::builder().token_lifetime(secs(30));
        for (_, f) in &self.0 {
            b = b.fault(f.clone());
        }
        Ok(b.start().await?)
    }
}

#[derive(Debug, Default, Clone)]
struct Summary {
    api_ok: u64,
    api_failed: u64,
    token_requests: u64,
    token_failures: u64,
    retries: u64,
    retry_after_waits: u64,
    longest_wait: Duration,
    longest_call: Duration,
}

#[derive(Default)]
struct Live {
    ok: AtomicU64,
    failed: AtomicU64,
}

async fn demo() -> Result<(), BoxError> {
    println!(
        "resilient-auth daemon demo: a daemon calls a protected API every 0.5 s for {DEMO_SECS} s."
    );
    println!("Tokens live 30 s (refreshed at about half-life). The fault script:");
    for (what, f) in &script().0 {
        println!(
            "  {:>4.0}-{:<3.0}s  {what}",
            f.window.start.as_secs_f64(),
            f.window.end.as_secs_f64()
        );
    }
    println!();
    println!("== with the four layers (RetryAfter, ExpBackoff, Auth, Timeout)");
    let with = run(true).await?;
    println!();
    println!(
        "== the same script without them (plain reqwest; a naive token cache that refreshes at"
    );
    println!("   half-life and fails the call when the refresh fails; no retries)");
    let without = run(false).await?;
    println!();
    print_summary(&with, &without);
    Ok(())
}

async fn run(layers: bool) -> Result<Summary, BoxError> {
    let idp = script().start().await?;
    let live = Arc::new(Live::default());
    let printer = tokio::spawn(print_live(live.clone(), Instant::now()));
    let summary = if layers {
        run_with_layers(&idp, &live).await?
    } else {
        run_without_layers(&idp, &live).await?
    };
    printer.abort();
    let log = idp.log();
    let token_requests = log.iter().filter(|r| r.target == Target::Token).count() as u64;
    let token_failures = log
        .iter()
        .filter(|r| r.target == Target::Token && r.status != Some(200))
        .count() as u64;
    Ok(Summary {
        token_requests,
        token_failures,
        ..summary
    })
}

async fn print_live(live: Arc<Live>, t0: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        println!(
            "  t={:>2}s  api ok {:>3}  failed {:>3}",
            t0.elapsed().as_secs(),
            live.ok.load(Ordering::Relaxed),
            live.failed.load(Ordering::Relaxed)
        );
    }
}

fn every_half_second() -> tokio::time::Interval {
    let mut i = tokio::time::interval(Duration::from_millis(500));
    i.set_missed_tick_behavior(MissedTickBehavior::Skip);
    i
}

async fn run_with_layers(idp: &FakeIdentityProvider, live: &Live) -> Result<Summary, BoxError> {
    let credential = ClientSecretCredential::builder(TENANT, "demo-client", "demo-secret")
        .token_url(idp.token_url(TENANT))
        .timeout(secs(2))
        .build()?;
    let tokens = TokenCache::new(credential, [SCOPE]);
    let retry_after = RetryAfterLayer::default();
    let backoff = ExpBackoffLayer::default();
    let auth = AuthLayer::new(tokens.clone()).allow_origins([idp.uri()])?;
    let timeout = TimeoutLayer::new(secs(2));
    print_report(&auth, &retry_after, &backoff, &timeout);
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(retry_after.clone())
        .with(backoff.clone())
        .with(auth)
        .with(timeout)
        .build();
    let mut s = Summary::default();
    let mut tick = every_half_second();
    let t0 = Instant::now();
    while t0.elapsed() < secs(DEMO_SECS) {
        tick.tick().await;
        let started = Instant::now();
        let ok = matches!(client.get(idp.api_url()).send().await, Ok(r) if r.status().is_success());
        s.longest_call = s.longest_call.max(started.elapsed());
        count(&mut s, live, ok);
    }
    let (ra, eb) = (retry_after.stats(), backoff.stats());
    s.retries = ra.retries() + eb.retries();
    s.retry_after_waits = ra.retries() + ra.held();
    s.longest_wait = ra.longest_wait().max(eb.longest_wait());
    Ok(s)
}

fn print_report(auth: &AuthLayer, ra: &RetryAfterLayer, eb: &ExpBackoffLayer, t: &TimeoutLayer) {
    let stack = Stack {
        auth: Some(auth),
        retry_after: Some(ra),
        exp_backoff: Some(eb),
        timeout: Some(t),
        ..Stack::default()
    };
    println!("resilience report:");
    for line in resilience_report(&stack).to_string().lines() {
        println!("  {line}");
    }
    println!();
}

fn count(s: &mut Summary, live: &Live, ok: bool) {
    if ok {
        s.api_ok += 1;
        live.ok.fetch_add(1, Ordering::Relaxed);
    } else {
        s.api_failed += 1;
        live.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The baseline: what a typical hand-rolled daemon does.
async fn run_without_layers(idp: &FakeIdentityProvider, live: &Live) -> Result<Summary, BoxError> {
    let http = reqwest::Client::builder().timeout(secs(2)).build()?;
    let mut token: Option<(String, Instant, Instant)> = None;
    let mut s = Summary::default();
    let mut tick = every_half_second();
    let t0 = Instant::now();
    while t0.elapsed() < secs(DEMO_SECS) {
        tick.tick().await;
        let started = Instant::now();
        let needs_refresh = token
            .as_ref()
            .is_none_or(|(_, refresh_at, _)| Instant::now() >= *refresh_at);
        if needs_refresh {
            token = naive_fetch(&http, idp).await.ok();
        }
        let ok = match &token {
            Some((t, _, _)) => {
                matches!(http.get(idp.api_url()).bearer_auth(t).send().await, Ok(r) if r.status().is_success())
            }
            None => false,
        };
        s.longest_call = s.longest_call.max(started.elapsed());
        count(&mut s, live, ok);
    }
    Ok(s)
}

async fn naive_fetch(
    http: &reqwest::Client,
    idp: &FakeIdentityProvider,
) -> Result<(String, Instant, Instant), BoxError> {
    let resp = http
        .post(idp.token_url(TENANT))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
            ("scope", SCOPE),
        ])
        .send()
        .await?
        .error_for_status()?;
    let body: serde_json::Value = resp.json().await?;
    let token = body["access_token"]
        .as_str()
        .ok_or("no access_token")?
        .to_string();
    let life: u64 = body["expires_in"]
        .as_str()
        .ok_or("no expires_in")?
        .parse()?;
    let now = Instant::now();
    Ok((token, now + secs(life) / 2, now + secs(life)))
}

fn print_summary(with: &Summary, without: &Summary) {
    let rows: [(&str, String, String); 8] = [
        (
            "API calls ok",
            with.api_ok.to_string(),
            without.api_ok.to_string(),
        ),
        (
            "API calls failed",
            with.api_failed.to_string(),
            without.api_failed.to_string(),
        ),
        (
            "token requests sent",
            with.token_requests.to_string(),
            without.token_requests.to_string(),
        ),
        (
            "token requests failed",
            with.token_failures.to_string(),
            without.token_failures.to_string(),
        ),
        ("retries sent", with.retries.to_string(), "0 (none)".into()),
        (
            "Retry-After waits honoured",
            with.retry_after_waits.to_string(),
            "0 (ignored)".into(),
        ),
        ("longest retry wait", fmt_d(with.longest_wait), "-".into()),
        (
            "longest call",
            fmt_d(with.longest_call),
            fmt_d(without.longest_call),
        ),
    ];
    println!("{:<28} {:>16} {:>16}", "summary", "with layers", "without");
    println!("{:-<28} {:->16} {:->16}", "", "", "");
    for (name, a, b) in rows {
        println!("{name:<28} {a:>16} {b:>16}");
    }
    println!();
    println!(
        "With the layers the daemon failed {} of {} calls: the cached token was served through the",
        with.api_failed,
        with.api_ok + with.api_failed
    );
    println!(
        "identity-provider outage, 429s were retried after exactly their Retry-After, and 503s"
    );
    println!(
        "after a back-off of at least 5 s. Without them it failed {}.",
        without.api_failed
    );
}

fn fmt_d(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// The real daemon
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Args {
    mode: String,
    idp: Option<String>,
    scope: Option<String>,
    api: Option<String>,
    interval: Duration,
    duration: Option<Duration>,
    out: Option<String>,
}

fn parse_args(args: &[String]) -> Result<Args, BoxError> {
    let mut a = Args {
        mode: "cca".into(),
        idp: None,
        scope: None,
        api: None,
        interval: Duration::from_millis(500),
        duration: None,
        out: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--mode" => a.mode = value()?,
            "--idp" => a.idp = Some(value()?),
            "--scope" => a.scope = Some(value()?),
            "--api" => a.api = Some(value()?),
            "--interval" => a.interval = Duration::try_from_secs_f64(value()?.parse()?)?,
            "--duration" => a.duration = Some(Duration::try_from_secs_f64(value()?.parse()?)?),
            "--out" => a.out = Some(value()?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    if a.interval.is_zero() {
        return Err("--interval must be > 0".into());
    }
    Ok(a)
}

const USAGE: &str = "usage: daemon [--mode cca|mi|workload] [--idp URL] [--scope S] [--api URL] [--interval SECS] [--duration SECS] [--out FILE]";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn http_client() -> Result<reqwest::Client, BoxError> {
    let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(path) = env("SSL_CERT_FILE") {
        let pem = std::fs::read(&path).map_err(|e| format!("SSL_CERT_FILE {path}: {e}"))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
            b = b.add_root_certificate(cert);
        }
    }
    Ok(b.build()?)
}

fn credential(args: &Args, http: &reqwest::Client) -> Result<Arc<dyn TokenCredential>, BoxError> {
    let need = |name: &str| env(name).ok_or_else(|| format!("{name} is not set"));
    let host = match args
        .idp
        .as_deref()
        .map(String::from)
        .or_else(|| env("AZURE_AUTHORITY_HOST"))
    {
        Some(h) => AuthorityHost::parse(&h)?,
        None => AuthorityHost::AZURE_PUBLIC,
    };
    match args.mode.as_str() {
        "cca" => {
            let (tenant, client) = (need("AZURE_TENANT_ID")?, need("AZURE_CLIENT_ID")?);
            if let Some(secret) = env("AZURE_CLIENT_SECRET") {
                Ok(Arc::new(
                    ClientSecretCredential::builder(tenant, client, secret)
                        .authority_host(host)
                        .http_client(http.clone())
                        .build()?,
                ))
            } else {
                let path = need("AZURE_CLIENT_CERTIFICATE_PATH")?;
                Ok(Arc::new(
                    ClientCertificateCredential::builder_from_file(tenant, client, path)?
                        .authority_host(host)
                        .http_client(http.clone())
                        .build()?,
                ))
            }
        }
        "mi" => {
            let mut b = ManagedIdentityCredential::builder_from_env();
            if let Some(base) = &args.idp {
                b = b.endpoint(base.clone());
            }
            if let Some(id) = env("AZURE_CLIENT_ID") {
                b = b.user_assigned(UserAssignedId::ClientId(id));
            }
            Ok(Arc::new(b.build()?))
        }
        "workload" => {
            let (tenant, client) = (need("AZURE_TENANT_ID")?, need("AZURE_CLIENT_ID")?);
            let file = need("AZURE_FEDERATED_TOKEN_FILE")?;
            Ok(Arc::new(
                WorkloadIdentityCredential::builder(tenant, client, file)
                    .authority_host(host)
                    .http_client(http.clone())
                    .build()?,
            ))
        }
        other => Err(format!("--mode {other}: expected cca, mi or workload").into()),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn real(args: &[String]) -> Result<(), BoxError> {
    let args = parse_args(args)?;
    let http = http_client()?;
    let credential = credential(&args, &http)?;
    let source = credential.identity().kind;
    let scope = args.scope.clone().ok_or("--scope is required")?;
    let api = match (&args.api, &args.idp) {
        (Some(api), _) => api.clone(),
        (None, Some(idp)) => format!("{}/api/data", idp.trim_end_matches('/')),
        (None, None) => return Err("--api is required without --idp".into()),
    };
    let tokens = TokenCache::new(credential, [scope.clone()]);
    let origin = reqwest::Url::parse(&api)?.origin().ascii_serialization();
    let (retry_after, backoff) = (RetryAfterLayer::default(), ExpBackoffLayer::default());
    let auth = AuthLayer::new(tokens.clone()).allow_origins([origin])?;
    let timeout = TimeoutLayer::new(secs(10));
    print_report(&auth, &retry_after, &backoff, &timeout);
    let client: ClientWithMiddleware = ClientBuilder::new(http)
        .with(retry_after)
        .with(backoff)
        .with(auth)
        .with(timeout)
        .build();
    let mut out: Option<Box<dyn Write>> = match &args.out {
        Some(path) => Some(Box::new(std::io::BufWriter::new(std::fs::File::create(
            path,
        )?))),
        None => None,
    };
    let mut emit = |v: serde_json::Value| -> Result<(), BoxError> {
        if let Some(w) = out.as_mut() {
            writeln!(w, "{v}")?;
            w.flush()?;
        }
        Ok(())
    };
    emit(
        serde_json::json!({"event": "start", "ts": unix_now(), "mode": args.mode, "scope": scope, "api": api, "source": source}),
    )?;
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let t0 = Instant::now();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut i = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if args.duration.is_some_and(|d| t0.elapsed() >= d) {
            break;
        }
        i += 1;
        let ts = unix_now();
        let a0 = Instant::now();
        let acquired = tokens.token().await;
        let acquire_s = a0.elapsed().as_secs_f64();
        let (api_state, api_status, api_s, api_err) = if acquired.is_ok() {
            let c0 = Instant::now();
            match client.get(&api).send().await {
                Ok(r) if r.status().is_success() => (
                    "ok".to_string(),
                    Some(r.status().as_u16()),
                    Some(c0.elapsed().as_secs_f64()),
                    None,
                ),
                Ok(r) => (
                    format!("http_{}", r.status().as_u16()),
                    Some(r.status().as_u16()),
                    Some(c0.elapsed().as_secs_f64()),
                    None,
                ),
                Err(e) => (
                    "error".to_string(),
                    None,
                    Some(c0.elapsed().as_secs_f64()),
                    Some(e.to_string()),
                ),
            }
        } else {
            ("skipped".to_string(), None, None, None)
        };
        if api_state == "ok" {
            ok += 1
        } else {
            failed += 1
        }
        println!(
            "#{i:<5} acquire {:<5} {acquire_s:>6.3}s  api {api_state:<8} {}",
            if acquired.is_ok() { "ok" } else { "error" },
            api_s.map(|s| format!("{s:.3}s")).unwrap_or_default()
        );
        emit(serde_json::json!({
            "ts": ts, "i": i,
            "acquire": if acquired.is_ok() { "ok" } else { "error" },
            "acquire_s": acquire_s,
            "acquire_err": acquired.as_ref().err().map(|e| e.to_string()),
            "token_source": acquired.is_ok().then_some(source),
            "api": api_state, "api_status": api_status, "api_s": api_s, "api_err": api_err,
        }))?;
    }
    let stats = tokens.stats();
    emit(
        serde_json::json!({"event": "end", "ts": unix_now(), "iterations": i, "api_ok": ok, "api_failed": failed,
        "token_requests": stats.idp_requests, "token_failures": stats.refresh_failures}),
    )?;
    println!(
        "{i} iterations: api ok {ok}, failed {failed}; token requests {}",
        stats.idp_requests
    );
    Ok(())
}
