//! The crate's main job: a daemon calling a protected API through all four layers.
//!
//! `cargo run --example daemon` (no arguments) starts the embedded fake identity provider and
//! API (`resilient_auth::testkit`) with a fault script — an identity-provider outage while a
//! token is cached, a 429 burst and 503s on the API — runs a daemon loop through the four layers
//! for ~30 s with a live line per second, then runs the same script without the layers, prints
//! both summaries side by side, and writes a timeline of both runs as an SVG file
//! (`target/demo.svg`; see `timeline/mod.rs`), whose path it prints.
//!
//! With arguments it is a real daemon against real endpoints:
//!
//! ```text
//! cargo run --example daemon -- --mode cca --scope api://x/.default --api https://api.example.com/data \
//!     [--idp URL] [--interval 0.5] [--duration 60] [--out report.jsonl] [--svg timeline.svg]
//! cargo run --example daemon -- --from report.jsonl --svg timeline.svg   # draw an earlier run
//! ```
//!
//! Credentials come from the usual environment (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//! `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH`, `AZURE_AUTHORITY_HOST`,
//! `AZURE_FEDERATED_TOKEN_FILE`, the managed-identity variables); `--mode cca|mi|workload`
//! picks the source and `--idp` overrides the authority host (or the IMDS base for `mi`). Extra trusted CAs come from `SSL_CERT_FILE`. With `--out`, one
//! JSON object a line per iteration, between a `{"event":"start"}` and an `{"event":"end"}` line.
//! A failed token acquisition prints its one-line cause (e.g. `identity provider returned
//! http_403`) and, for common setup mistakes, a hint. `--svg FILE` draws the run's timeline
//! (calls, waits, token requests, stretches of failures) the way the scripted demo does.

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

#[path = "timeline/mod.rs"]
pub(crate) mod timeline;
use timeline::{Call, Lane, Table, Timeline, TokenRequest, Window};

type BoxError = Box<dyn StdError + Send + Sync>;

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

/// A fault script and how long the daemon loop runs against it.
pub(crate) struct Scenario {
    /// How long each run's loop calls the API.
    pub(crate) run_for: Duration,
    /// One call per interval.
    pub(crate) interval: Duration,
    /// The lifetime of the tokens the fake identity provider issues.
    pub(crate) token_lifetime: Duration,
    /// (what happens, a short label for the timeline, the fault).
    pub(crate) faults: Vec<(&'static str, &'static str, Fault)>,
}

impl Scenario {
    async fn start(&self) -> Result<FakeIdentityProvider, BoxError> {
        let mut b = FakeIdentityProvider::builder().token_lifetime(self.token_lifetime);
        for (_, _, f) in &self.faults {
            b = b.fault(f.clone());
        }
        Ok(b.start().await?)
    }
}

/// The demo's fault script, in seconds since start.
fn script() -> Scenario {
    Scenario {
        run_for: secs(30),
        interval: Duration::from_millis(500),
        token_lifetime: secs(30),
        faults: vec![
            (
                "identity provider down (503) while a token is cached",
                "identity provider down: 503",
                Fault::new(
                    Target::Token,
                    secs(12)..secs(17),
                    FaultKind::Unavailable { retry_after: None },
                ),
            ),
            (
                "API throttles: 429 + Retry-After: 2",
                "API 429, Retry-After: 2",
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
                "API 503, no Retry-After",
                Fault::new(
                    Target::Api,
                    secs(25)..secs(27),
                    FaultKind::Unavailable { retry_after: None },
                ),
            ),
        ],
    }
}

/// What one run did.
#[derive(Debug, Default, Clone)]
pub(crate) struct Summary {
    pub(crate) api_ok: u64,
    pub(crate) api_failed: u64,
    pub(crate) token_requests: u64,
    pub(crate) token_failures: u64,
    pub(crate) retries: u64,
    pub(crate) retry_after_waits: u64,
    pub(crate) longest_wait: Duration,
    pub(crate) longest_call: Duration,
    /// Every API call, for the timeline.
    pub(crate) calls: Vec<Call>,
    /// Every token request the identity provider saw, for the timeline.
    pub(crate) tokens: Vec<TokenRequest>,
}

#[derive(Default)]
struct Live {
    ok: AtomicU64,
    failed: AtomicU64,
}

async fn demo() -> Result<(), BoxError> {
    let script = script();
    println!(
        "resilient-auth daemon demo: a daemon calls a protected API every 0.5 s for {} s.",
        script.run_for.as_secs()
    );
    println!("Tokens live 30 s (refreshed at about half-life). The fault script:");
    for (what, _, f) in &script.faults {
        println!(
            "  {:>4.0}-{:<3.0}s  {what}",
            f.window.start.as_secs_f64(),
            f.window.end.as_secs_f64()
        );
    }
    println!();
    println!("== with the four layers (RetryAfter, ExpBackoff, Auth, Timeout)");
    let with = run(&script, true).await?;
    println!();
    println!(
        "== the same script without them (plain reqwest; a naive token cache that refreshes at"
    );
    println!("   half-life and fails the call when the refresh fails; no retries)");
    let without = run(&script, false).await?;
    println!();
    print_summary(&with, &without);
    let path = demo_svg_path();
    std::fs::write(&path, demo_timeline(&script, &with, &without).to_svg())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!();
    println!(
        "Timeline of both runs (open it in a browser or an image viewer): {}",
        path.display()
    );
    Ok(())
}

/// `target/demo.svg` next to the example's binary (`target/debug/examples/daemon`), relative to
/// the working directory when it is under it; the binary's own directory otherwise.
fn demo_svg_path() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .ancestors()
        .nth(3)
        .filter(|_| exe.parent().and_then(|p| p.file_name()) == Some("examples".as_ref()))
        .or_else(|| exe.parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join("demo.svg");
    match std::env::current_dir() {
        Ok(cwd) => path
            .strip_prefix(&cwd)
            .map(std::path::Path::to_path_buf)
            .unwrap_or(path),
        Err(_) => path,
    }
}

/// The timeline of the two demo runs: one lane each, the script's fault windows, the summary.
pub(crate) fn demo_timeline(script: &Scenario, with: &Summary, without: &Summary) -> Timeline {
    let lane = |name: &str, s: &Summary| Lane {
        name: name.into(),
        calls: s.calls.clone(),
        tokens: s.tokens.clone(),
    };
    Timeline {
        title: "resilient-auth daemon demo".into(),
        subtitle: format!(
            "a call every {} for {}; one fault script, with the four layers and without",
            timeline::fmt_secs(script.interval.as_secs_f64()),
            timeline::fmt_secs(script.run_for.as_secs_f64()),
        ),
        notes: vec![
            "One dot per API call, where it started; an amber bar: the call waited that long (a held".into(),
            "Retry-After, a back-off) before its answer. Triangles: requests to the identity provider.".into(),
            "Shaded: the script's fault windows. Opened on its own, each mark has a tooltip.".into(),
        ],
        span: script.run_for.as_secs_f64(),
        windows: script
            .faults
            .iter()
            .map(|(_, label, f)| Window {
                start: f.window.start.as_secs_f64(),
                end: f.window.end.as_secs_f64(),
                label: (*label).into(),
            })
            .collect(),
        window_legend: "fault window".into(),
        lanes: vec![lane("with layers", with), lane("without", without)],
        summary: Table {
            header: vec!["summary".into(), "with layers".into(), "without".into()],
            rows: summary_rows(with, without)
                .into_iter()
                .map(|(name, a, b)| vec![name.into(), a, b])
                .collect(),
        },
    }
}

/// Runs the daemon loop once against a fresh fake identity provider playing `script`.
pub(crate) async fn run(script: &Scenario, layers: bool) -> Result<Summary, BoxError> {
    let idp = script.start().await?;
    let live = Arc::new(Live::default());
    let printer = tokio::spawn(print_live(live.clone(), Instant::now()));
    let summary = if layers {
        run_with_layers(script, &idp, &live).await?
    } else {
        run_without_layers(script, &idp, &live).await?
    };
    printer.abort();
    let log = idp.log();
    let token_requests = log.iter().filter(|r| r.target == Target::Token).count() as u64;
    let token_failures = log
        .iter()
        .filter(|r| r.target == Target::Token && r.status != Some(200))
        .count() as u64;
    let tokens = log
        .iter()
        .filter(|r| r.target == Target::Token)
        .map(|r| TokenRequest {
            at: r.at.as_secs_f64(),
            ok: r.status == Some(200),
            label: r.status.map_or("no answer".into(), |s| s.to_string()),
        })
        .collect();
    Ok(Summary {
        token_requests,
        token_failures,
        tokens,
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

fn every(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval(period);
    i.set_missed_tick_behavior(MissedTickBehavior::Skip);
    i
}

async fn run_with_layers(
    script: &Scenario,
    idp: &FakeIdentityProvider,
    live: &Live,
) -> Result<Summary, BoxError> {
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
    let mut tick = every(script.interval);
    let t0 = Instant::now();
    while t0.elapsed() < script.run_for {
        tick.tick().await;
        let (started, at) = (Instant::now(), idp.elapsed());
        let ok = matches!(client.get(idp.api_url()).send().await, Ok(r) if r.status().is_success());
        s.longest_call = s.longest_call.max(started.elapsed());
        count(&mut s, live, at, idp.elapsed(), ok);
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

/// Counts a call that ran from `start` to `end` (on the fake identity provider's clock).
fn count(s: &mut Summary, live: &Live, start: Duration, end: Duration, ok: bool) {
    s.calls.push(Call {
        start: start.as_secs_f64(),
        end: end.as_secs_f64(),
        ok,
    });
    if ok {
        s.api_ok += 1;
        live.ok.fetch_add(1, Ordering::Relaxed);
    } else {
        s.api_failed += 1;
        live.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The baseline: what a typical hand-rolled daemon does.
async fn run_without_layers(
    script: &Scenario,
    idp: &FakeIdentityProvider,
    live: &Live,
) -> Result<Summary, BoxError> {
    let http = reqwest::Client::builder().timeout(secs(2)).build()?;
    let mut token: Option<(String, Instant, Instant)> = None;
    let mut s = Summary::default();
    let mut tick = every(script.interval);
    let t0 = Instant::now();
    while t0.elapsed() < script.run_for {
        tick.tick().await;
        let (started, at) = (Instant::now(), idp.elapsed());
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
        count(&mut s, live, at, idp.elapsed(), ok);
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

/// The summary figures of both runs, for the console and the timeline.
fn summary_rows(with: &Summary, without: &Summary) -> [(&'static str, String, String); 8] {
    [
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
    ]
}

fn print_summary(with: &Summary, without: &Summary) {
    let rows = summary_rows(with, without);
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
    svg: Option<String>,
    from: Option<String>,
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
        svg: None,
        from: None,
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
            "--svg" => a.svg = Some(value()?),
            "--from" => a.from = Some(value()?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    if a.interval.is_zero() {
        return Err("--interval must be > 0".into());
    }
    Ok(a)
}

const USAGE: &str = "usage: daemon [--mode cca|mi|workload] [--idp URL] [--scope S] [--api URL] [--interval SECS] [--duration SECS] [--out FILE] [--svg FILE]
       daemon --from REPORT.jsonl --svg FILE";

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

/// The cause of a failed token acquisition on one line: what failed, with the identity
/// provider's status, error and first sentence of its description, or the innermost transport
/// error; no trace ids, never a secret (the crate's errors carry none).
pub(crate) fn cause(e: &resilient_auth::Error, source: &str) -> String {
    use resilient_auth::Error;
    match e {
        Error::IdentityProvider { status, details } => {
            let code = format!("http_{}", status.as_u16());
            let mut line = format!("identity provider returned {code}");
            if !details.error.is_empty() && details.error != code {
                line.push(' ');
                line.push_str(&details.error);
            }
            if let Some(d) = details.error_description.as_deref().map(first_sentence) {
                if !d.is_empty() {
                    line.push_str(": ");
                    line.push_str(d);
                }
            }
            line
        }
        Error::Unavailable { what, .. } => {
            let what = match source {
                "managed_identity/imds" => "IMDS",
                s if s.starts_with("managed_identity/") => "managed identity endpoint",
                _ => what,
            };
            match innermost(e) {
                Some(root) => format!("{what} unreachable: {root}"),
                None => format!("{what} unreachable"),
            }
        }
        other => one_line(other),
    }
}

/// An error and its innermost source on one line, e.g. `error sending request: connection
/// refused`.
fn one_line(e: &(dyn StdError + 'static)) -> String {
    let top = first_line(&e.to_string()).to_string();
    match innermost(e) {
        Some(root) if !top.contains(&root) => format!("{top}: {root}"),
        _ => top,
    }
}

fn innermost(e: &(dyn StdError + 'static)) -> Option<String> {
    let mut root = e.source()?;
    while let Some(next) = root.source() {
        root = next;
    }
    Some(first_line(&root.to_string()).to_string())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// The description up to its first sentence end or line break (Entra appends trace ids).
fn first_sentence(d: &str) -> &str {
    let line = first_line(d);
    let cut = line.find(". ").map_or(line.len(), |i| i + 1);
    let mut end = cut.min(200);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// A hint for a failure that usually means a setup mistake, if this one looks like one.
pub(crate) fn hint(e: &resilient_auth::Error, source: &str, idp: Option<&str>) -> Option<String> {
    use resilient_auth::Error;
    const FAKE: &str =
        "to try the daemon without Azure: `cargo run --example fake_idp`, then --idp <its URL>";
    match e {
        Error::Unavailable { .. } | Error::Timeout { .. } => Some(match idp {
            Some(url) => format!("nothing answered at --idp {url}: is it running and reachable?"),
            None if source.starts_with("managed_identity/") => format!(
                "managed identity answers only on an Azure host with an identity (VM, App Service, \
                 Functions, AKS, Container Apps, Arc); elsewhere use --mode cca with \
                 AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET; {FAKE}"
            ),
            None => "check the network path (proxy, firewall, DNS) to the identity provider, or \
                     AZURE_AUTHORITY_HOST"
                .into(),
        }),
        Error::IdentityProvider { status, details } => {
            let has = |code: i64| details.error_codes.contains(&code);
            let text = details.error_description.as_deref().unwrap_or("");
            Some(
                if has(7_000_215) || has(7_000_222) {
                    "AZURE_CLIENT_SECRET is wrong or expired: use the secret's value (not its ID) \
                     from the app registration's Certificates & secrets"
                } else if has(700_016) {
                    "no application with AZURE_CLIENT_ID in the tenant AZURE_TENANT_ID: check both \
                     values"
                } else if has(90_002) || has(900_023) {
                    "AZURE_TENANT_ID names no tenant: use the directory (tenant) ID or a verified \
                     domain"
                } else if has(70_011) || has(1_002_012) {
                    "--scope must be the resource's App ID URI followed by /.default, e.g. \
                     api://<app-id>/.default or https://vault.azure.net/.default"
                } else if has(500_011) {
                    "the resource in --scope is not in this tenant: check its App ID URI"
                } else if has(700_027) || has(700_024) {
                    "the client assertion was rejected: the certificate in \
                     AZURE_CLIENT_CERTIFICATE_PATH must be the one uploaded to the app \
                     registration (or the federated token has expired)"
                } else if has(70_021) {
                    "no federated credential on the app matches this token's issuer, subject and \
                     audience"
                } else if source.starts_with("managed_identity/")
                    && *status == 400
                    && text.to_ascii_lowercase().contains("identity not found")
                {
                    "this host has no managed identity with that id: enable one, or set (or unset) \
                     AZURE_CLIENT_ID to the user-assigned identity's client id"
                } else {
                    return None;
                }
                .into(),
            )
        }
        _ => None,
    }
}

/// The variables a `--mode` reads, for a setup error's hint.
fn setup_hint(mode: &str) -> &'static str {
    match mode {
        "workload" => "--mode workload reads AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE (set by AKS workload identity)",
        "mi" => "--mode mi reads the managed-identity variables of its Azure host (IDENTITY_ENDPOINT, MSI_ENDPOINT, ...) and AZURE_CLIENT_ID for a user-assigned identity",
        _ => "--mode cca reads AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH); to try it without Azure: `cargo run --example fake_idp`, then --idp <its URL>",
    }
}

fn write_svg(path: &str, timeline: &Timeline) -> Result<(), BoxError> {
    std::fs::write(path, timeline.to_svg()).map_err(|e| format!("writing {path}: {e}"))?;
    println!("timeline: {path}");
    Ok(())
}

pub(crate) async fn real(args: &[String]) -> Result<(), BoxError> {
    let args = parse_args(args)?;
    if let Some(from) = &args.from {
        let svg = args.svg.as_deref().ok_or("--from needs --svg FILE")?;
        let text = std::fs::read_to_string(from).map_err(|e| format!("reading {from}: {e}"))?;
        return write_svg(svg, &timeline::from_report(&text)?);
    }
    let http = http_client()?;
    let credential = credential(&args, &http).map_err(|e| {
        if e.to_string().ends_with("is not set") {
            format!("{e}\nhint: {}", setup_hint(&args.mode)).into()
        } else {
            e
        }
    })?;
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
    // The report, kept for `--svg`, which draws it the way `--from` draws a saved one.
    let mut report = String::new();
    let mut emit = |v: serde_json::Value| -> Result<(), BoxError> {
        if let Some(w) = out.as_mut() {
            writeln!(w, "{v}")?;
            w.flush()?;
        }
        if args.svg.is_some() {
            report.push_str(&v.to_string());
            report.push('\n');
        }
        Ok(())
    };
    emit(
        serde_json::json!({"event": "start", "ts": unix_now(), "mode": args.mode, "scope": scope, "api": api, "source": source, "interval_s": args.interval.as_secs_f64()}),
    )?;
    let mut hints_shown = std::collections::HashSet::new();
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
                    Some(one_line(&e)),
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
        let acquire_err = acquired.as_ref().err().map(|e| cause(e, source));
        println!(
            "#{i:<5} acquire {:<5} {acquire_s:>6.3}s  api {api_state:<8} {:<7} {}",
            if acquired.is_ok() { "ok" } else { "error" },
            api_s.map(|s| format!("{s:.3}s")).unwrap_or_default(),
            acquire_err.as_deref().or(api_err.as_deref()).unwrap_or("")
        );
        if let Some(h) = acquired
            .as_ref()
            .err()
            .and_then(|e| hint(e, source, args.idp.as_deref()))
        {
            if hints_shown.insert(h.clone()) {
                println!("       hint: {h}");
            }
        }
        let stats = tokens.stats();
        emit(serde_json::json!({
            "ts": ts, "i": i,
            "acquire": if acquired.is_ok() { "ok" } else { "error" },
            "acquire_s": acquire_s,
            "acquire_err": acquire_err,
            "token_source": acquired.is_ok().then_some(source),
            "api": api_state, "api_status": api_status, "api_s": api_s, "api_err": api_err,
            "token_requests": stats.idp_requests, "token_failures": stats.refresh_failures,
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
    if let Some(svg) = &args.svg {
        write_svg(svg, &timeline::from_report(&report)?)?;
    }
    Ok(())
}
