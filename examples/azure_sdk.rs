//! A real Azure SDK client — Key Vault secrets (`azure_security_keyvault_secrets::SecretClient`)
//! — against the testkit over HTTPS on loopback, with and without the `azure` adapters.
//!
//! ```sh
//! cargo run --example azure_sdk     # features azure + testkit-tls (on for examples via the dev-dependency)
//! ```
//!
//! The script (seconds since start, a `get_secret` every 0.5 s for 23 s; 12 s tokens):
//! - 7–15 s: the identity provider answers 503, across the token's refresh point;
//! - 15.5–16.5 s: the vault throttles, `429 Retry-After: 2`;
//! - 17–18 s: the vault answers 503 without `Retry-After`.
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
const LIFETIME: Duration = Duration::from_secs(12);
const SCRIPT: Duration = Duration::from_secs(23);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn faults() -> Vec<Fault> {
    vec![
        Fault::new(
            Target::Token,
            secs(7.0)..secs(15.0),
            FaultKind::Unavailable { retry_after: None },
        ),
        Fault::new(
            Target::Api,
            secs(15.5)..secs(16.5),
            FaultKind::TooManyRequests {
                retry_after: secs(2.0),
            },
        ),
        Fault::new(
            Target::Api,
            secs(17.0)..secs(18.0),
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

async fn run(
    label: &str,
    idp: &FakeIdentityProvider,
    client: &SecretClient,
) -> Result<Summary, BoxError> {
    let mut s = Summary::default();
    let mut tick = tokio::time::interval(secs(0.5));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let t0 = Instant::now();
    let mut last_report = 0;
    while t0.elapsed() < SCRIPT {
        tick.tick().await;
        let before = idp.requests(Target::Api);
        let started = Instant::now();
        let result = client.get_secret("db-password", None).await;
        s.longest_call = s.longest_call.max(started.elapsed());
        s.max_requests_per_call = s
            .max_requests_per_call
            .max(idp.requests(Target::Api) - before);
        match result.and_then(|r| r.into_model()) {
            Ok(secret) if secret.value.is_some() => s.ok += 1,
            Ok(_) => s.failed += 1,
            Err(e) => {
                s.failed += 1;
                if s.failed <= 3 {
                    println!(
                        "  [{label}] {:>5.1} s  call failed: {e}",
                        t0.elapsed().as_secs_f64()
                    );
                }
            }
        }
        let now = t0.elapsed().as_secs();
        if now != last_report && now.is_multiple_of(4) {
            last_report = now;
            println!(
                "  [{label}] {now:>3} s  ok {:>3}  failed {:>3}",
                s.ok, s.failed
            );
        }
    }
    let log = idp.log();
    let api: Vec<_> = log.iter().filter(|r| r.target == Target::Api).collect();
    s.api_requests = api.len();
    let token: Vec<_> = log.iter().filter(|r| r.target == Target::Token).collect();
    s.token_requests = token.len();
    s.token_failed = token.iter().filter(|r| r.status != Some(200)).count();
    for pair in api.windows(2) {
        let gap = pair[1].at - pair[0].at;
        let slot = match pair[0].status {
            Some(429) => &mut s.shortest_wait_after_429,
            Some(503) => &mut s.shortest_wait_after_503,
            _ => continue,
        };
        *slot = Some(slot.map_or(gap, |g| g.min(gap)));
    }
    Ok(s)
}

async fn provider() -> Result<(FakeIdentityProvider, HttpsEndpoint), BoxError> {
    let mut b = FakeIdentityProvider::builder().token_lifetime(LIFETIME);
    for f in faults() {
        b = b.fault(f);
    }
    let idp = b.start().await?;
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
    run("adapters", &idp, &client).await
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
    run("without", &idp, &client).await
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
    println!("  identity provider 503 7-15 s; vault 429 Retry-After: 2 at 15.5-16.5 s; vault 503 17-18 s");
    println!("with the adapters (AzureTransport + AzureCredential, SDK retry off):");
    let a = with_adapters().await?;
    println!("without (SDK defaults, azure_identity-style credential):");
    let b = without_adapters().await?;
    println!();
    println!(
        "{:<34} {:>14} {:>14}",
        "summary", "with adapters", "without"
    );
    println!("{:-<34} {:->14} {:->14}", "", "", "");
    let rows: [(&str, String, String); 9] = [
        ("get_secret calls ok", a.ok.to_string(), b.ok.to_string()),
        (
            "get_secret calls failed",
            a.failed.to_string(),
            b.failed.to_string(),
        ),
        (
            "requests at the vault",
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
            "shortest wait after a 429 (RA 2 s)",
            wait(a.shortest_wait_after_429),
            wait(b.shortest_wait_after_429),
        ),
        (
            "shortest wait after a 503",
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
        println!("{name:<34} {x:>14} {y:>14}");
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
