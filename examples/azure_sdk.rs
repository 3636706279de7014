//! A real Azure SDK client — Key Vault secrets (`azure_security_keyvault_secrets::SecretClient`)
//! — against the testkit over HTTPS on loopback, with and without the `azure` adapters.
//!
//! ```sh
//! cargo run --example azure_sdk     # features azure + testkit-tls (on for examples via the dev-dependency)
//! ```
//!
//! The script (seconds since start; a `get_secret` started every 0.5 s for 22 s, each on its
//! own task as a service would; 16 s tokens):
//! - 1.9–2.2 s: the vault throttles, `429 Retry-After: 2`;
//! - 4.9–5.2 s: the vault answers 503 without `Retry-After`;
//! - 9–20 s: the identity provider answers 503, across both runs' token refresh points.
//!
//! **With the adapters:** the four layers as the SDK's transport (`AzureTransport`, the SDK's
//! retry switched off, the token attached per attempt from a `TokenCache`), and
//! `AzureCredential` over the same cache as the SDK's credential. Default settings, except the
//! cache's skew (1 s, as the tokens live only 12 s).
//!
//! **Without:** the SDK's defaults (its retry policy: from 200 ms, ×2, up to 8 retries; its
//! bearer-token policy), over a plain reqwest transport, and a credential that caches like
//! `azure_identity`'s: refresh shortly before expiry (scaled: the last 1/12 of the lifetime,
//! as 5 minutes are of an hour) and return the error when that refresh fails.
//! (`azure_core` is built without its own reqwest client here, so "plain" is `AzureTransport`
//! over a reqwest client with no layers.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials as az;
use azure_core::http::ClientOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use reqwest_middleware::ClientBuilder;
use resilient_auth::azure::{AzureCredential, AzureTransport};
use resilient_auth::testkit::{FakeIdentityProvider, Fault, FaultKind, HttpsEndpoint, Target};
use resilient_auth::{
    AuthLayer, BoxError, ClientSecretCredential, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer,
    TokenCache,
};
use tokio::time::{Instant, MissedTickBehavior};

const TENANT: &str = "contoso";
const SCOPE: &str = "https://vault.azure.net/.default";
const LIFETIME: Duration = Duration::from_secs(16);
const SCRIPT: Duration = Duration::from_secs(22);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The script's faults, their windows measured from `base` (the provider's clock when the
/// run starts).
fn faults(base: Duration) -> Vec<Fault> {
    let at = |from: f64, to: f64| base + secs(from)..base + secs(to);
    vec![
        Fault::new(
            Target::Api,
            at(1.9, 2.2),
            FaultKind::TooManyRequests {
                retry_after: secs(2.0),
            },
        ),
        Fault::new(
            Target::Api,
            at(4.9, 5.2),
            FaultKind::Unavailable { retry_after: None },
        ),
        Fault::new(
            Target::Token,
            at(9.0, 20.0),
            FaultKind::Unavailable { retry_after: None },
        ),
    ]
}

#[derive(Debug, Default)]
struct Summary {
    ok: u32,
    failed: u32,
    api_requests: usize,
    max_requests_per_call: usize,
    token_requests: usize,
    token_failed: usize,
    shortest_wait_after_429: Option<Duration>,
    shortest_wait_after_503: Option<Duration>,
    longest_call: Duration,
}

/// Starts a `get_secret` every 0.5 s, each on its own task and for its own secret name (so the
/// vault's log tells the calls apart), and summarizes what the vault and the callers saw.
async fn run(
    label: &'static str,
    idp: &FakeIdentityProvider,
    https: &HttpsEndpoint,
    client: SecretClient,
) -> Result<Summary, BoxError> {
    let client = Arc::new(client);
    for f in faults(idp.elapsed()) {
        idp.add_fault(f);
    }
    let mut tick = tokio::time::interval(secs(0.5));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let t0 = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let failed = Arc::new(AtomicU32::new(0));
    let mut n = 0;
    while t0.elapsed() < SCRIPT {
        tick.tick().await;
        n += 1;
        let (client, failures) = (client.clone(), failed.clone());
        calls.spawn(async move {
            let started = Instant::now();
            let result = client
                .get_secret(&format!("s{n}"), None)
                .await
                .and_then(|r| r.into_model());
            let ok = matches!(&result, Ok(secret) if secret.value.is_some());
            if !ok && failures.fetch_add(1, Ordering::Relaxed) < 3 {
                let at = started.duration_since(t0).as_secs_f64();
                let why = result.err().map(|e| e.to_string()).unwrap_or_default();
                println!("  [{label}] call started at {at:>4.1} s failed: {why}");
            }
            (ok, started.elapsed())
        });
        if n % 8 == 0 {
            println!(
                "  [{label}] {:>4.1} s  calls started {n:>3}, failed so far {}",
                t0.elapsed().as_secs_f64(),
                failed.load(Ordering::Relaxed)
            );
        }
    }
    let mut s = Summary::default();
    while let Some(done) = calls.join_next().await {
        let (ok, took) = done?;
        if ok {
            s.ok += 1;
        } else {
            s.failed += 1;
        }
        s.longest_call = s.longest_call.max(took);
    }
    let log = idp.log();
    let token: Vec<_> = log.iter().filter(|r| r.target == Target::Token).collect();
    s.token_requests = token.len();
    s.token_failed = token.iter().filter(|r| r.status != Some(200)).count();
    let vault = https.requests();
    s.api_requests = vault.len();
    for call in 1..=n {
        let path = format!("/secrets/s{call}/");
        let mine: Vec<_> = vault.iter().filter(|r| r.path == path).collect();
        s.max_requests_per_call = s.max_requests_per_call.max(mine.len());
        for pair in mine.windows(2) {
            let slot = match pair[0].status {
                Some(429) => &mut s.shortest_wait_after_429,
                Some(503) => &mut s.shortest_wait_after_503,
                _ => continue,
            };
            let gap = pair[1].at - pair[0].at;
            *slot = Some(slot.map_or(gap, |g| g.min(gap)));
        }
    }
    Ok(s)
}

async fn provider() -> Result<(FakeIdentityProvider, HttpsEndpoint), BoxError> {
    let idp = FakeIdentityProvider::builder()
        .token_lifetime(LIFETIME)
        .start()
        .await?;
    let https = idp.start_https().await?;
    Ok((idp, https))
}

fn secret_client(
    https: &HttpsEndpoint,
    credential: Arc<dyn az::TokenCredential>,
    client_options: ClientOptions,
) -> Result<SecretClient, BoxError> {
    Ok(SecretClient::new(
        &https.uri(),
        credential,
        Some(SecretClientOptions {
            client_options,
            verify_challenge_resource: Some(false), // the testkit is localhost, not *.vault.azure.net
            ..Default::default()
        }),
    )?)
}

async fn with_adapters() -> Result<Summary, BoxError> {
    let (idp, https) = provider().await?;
    let credential = ClientSecretCredential::builder(TENANT, "demo-client", "demo-secret")
        .token_url(idp.token_url(TENANT))
        .timeout(secs(2.0))
        .build()?;
    let tokens = TokenCache::builder(credential, [SCOPE])
        .skew(secs(1.0))
        .build()?;
    // --- the lines a user adds ---
    let stack = ClientBuilder::new(https.reqwest_builder()?.build()?)
        .with(RetryAfterLayer::default())
        .with(ExpBackoffLayer::default())
        .with(AuthLayer::new(tokens.clone()).allow_origins([https.uri()])?)
        .with(TimeoutLayer::new(secs(5.0)))
        .build();
    let options = AzureTransport::new(stack)
        .authorize_in_transport(true)
        .client_options();
    let client = secret_client(
        &https,
        Arc::new(AzureCredential::from_cache(tokens)),
        options,
    )?;
    // ---
    run("adapters", &idp, &https, client).await
}

/// Caches like `azure_identity`'s credentials: refresh in the last part of the lifetime and
/// return the error when that refresh fails, even while the cached token is still valid.
#[derive(Debug)]
struct NaiveCredential {
    token_url: String,
    http: reqwest::Client,
    cached: Mutex<Option<az::AccessToken>>,
}

#[async_trait]
impl az::TokenCredential for NaiveCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<az::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<az::AccessToken> {
        let window = azure_core::time::Duration::seconds_f64(LIFETIME.as_secs_f64() / 12.0);
        let now = azure_core::time::OffsetDateTime::now_utc();
        if let Some(t) = self.cached.lock().unwrap().clone() {
            if t.expires_on - window > now {
                return Ok(t);
            }
        }
        let fail = |e: reqwest::Error| {
            azure_core::Error::with_error(
                azure_core::error::ErrorKind::Credential,
                e,
                "token request failed",
            )
        };
        let body: serde_json::Value = self
            .http
            .post(&self.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "demo-client"),
                ("client_secret", "demo-secret"),
                ("scope", &scopes.join(" ")),
            ])
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(fail)?
            .json()
            .await
            .map_err(fail)?;
        let secs: i64 = body["expires_in"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let token = az::AccessToken::new(
            body["access_token"].as_str().unwrap_or_default().to_owned(),
            now + azure_core::time::Duration::seconds(secs),
        );
        *self.cached.lock().unwrap() = Some(token.clone());
        Ok(token)
    }
}

async fn without_adapters() -> Result<Summary, BoxError> {
    let (idp, https) = provider().await?;
    let credential = NaiveCredential {
        token_url: idp.token_url(TENANT),
        http: reqwest::Client::new(),
        cached: Mutex::new(None),
    };
    let plain = ClientBuilder::new(https.reqwest_builder()?.build()?).build();
    // the SDK's retry policy stays on (ClientOptions::default())
    let options = ClientOptions {
        transport: Some(azure_core::http::Transport::new(Arc::new(
            AzureTransport::new(plain),
        ))),
        ..Default::default()
    };
    let client = secret_client(&https, Arc::new(credential), options)?;
    run("without", &idp, &https, client).await
}

fn wait(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    println!(
        "Key Vault SecretClient against the testkit (HTTPS on loopback), {} s script:",
        SCRIPT.as_secs()
    );
    println!("  vault 429 Retry-After: 2 at 1.9-2.2 s; vault 503 at 4.9-5.2 s; identity provider 503 from 9 to 20 s");
    println!("with the adapters (AzureTransport + AzureCredential, SDK retry off):");
    let a = with_adapters().await?;
    println!("without (SDK defaults, azure_identity-style credential):");
    let b = without_adapters().await?;
    println!();
    println!(
        "{:<42} {:>14} {:>14}",
        "summary", "with adapters", "without"
    );
    println!("{:-<42} {:->14} {:->14}", "", "", "");
    let rows: [(&str, String, String); 9] = [
        ("get_secret calls ok", a.ok.to_string(), b.ok.to_string()),
        (
            "get_secret calls failed",
            a.failed.to_string(),
            b.failed.to_string(),
        ),
        (
            "requests at the vault (calls + retries)",
            a.api_requests.to_string(),
            b.api_requests.to_string(),
        ),
        (
            "most requests for one call",
            a.max_requests_per_call.to_string(),
            b.max_requests_per_call.to_string(),
        ),
        (
            "token requests sent",
            a.token_requests.to_string(),
            b.token_requests.to_string(),
        ),
        (
            "token requests failed",
            a.token_failed.to_string(),
            b.token_failed.to_string(),
        ),
        (
            "a call's wait after a 429 (Retry-After 2)",
            wait(a.shortest_wait_after_429),
            wait(b.shortest_wait_after_429),
        ),
        (
            "a call's shortest wait after a 503",
            wait(a.shortest_wait_after_503),
            wait(b.shortest_wait_after_503),
        ),
        (
            "longest call",
            wait(Some(a.longest_call)),
            wait(Some(b.longest_call)),
        ),
    ];
    for (name, x, y) in rows {
        println!("{name:<42} {x:>14} {y:>14}");
    }
    let held = a.failed == 0
        && a.shortest_wait_after_429.is_some_and(|w| w >= secs(2.0))
        && a.shortest_wait_after_503.is_some_and(|w| w >= secs(5.0));
    println!();
    println!(
        "with the adapters: {}",
        if held {
            "no failed call, every Retry-After honoured, no 5xx retried within 5 s"
        } else {
            "SOMETHING DID NOT HOLD (see the table)"
        }
    );
    if held {
        Ok(())
    } else {
        Err("a check failed".into())
    }
}
