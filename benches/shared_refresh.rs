//! B5: 8 token caches (separate memory levels) sharing one `RedisStore`, against the testkit's
//! fake identity provider with 4 s tokens, each cache asked for a token every 50 ms for 12 s:
//! identity-provider requests per refresh, with the shared store vs without (baseline).
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). Prints `B5 …` lines that
//! `scripts/bench.sh` reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use resilient_auth::testkit::{FakeIdentityProvider, Target};
use resilient_auth::{ClientSecretCredential, RedisStore, TokenCache};

const CACHES: usize = 8;
const RUN: Duration = Duration::from_secs(12);
const LIFETIME: Duration = Duration::from_secs(4);

async fn run(shared: bool) -> (usize, usize) {
    let idp = FakeIdentityProvider::builder()
        .token_lifetime(LIFETIME)
        .start()
        .await
        .unwrap();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("resilient-auth-bench-{:016x}:", fastrand::u64(..));
    let caches: Vec<TokenCache> = (0..CACHES)
        .map(|_| {
            let cred = ClientSecretCredential::builder("t", "c", "s")
                .token_url(idp.token_url("t"))
                .build()
                .unwrap();
            let b = TokenCache::builder(cred, ["api://bench/.default"]);
            let b = if shared {
                b.store(
                    RedisStore::builder(&url)
                        .prefix(prefix.clone())
                        .build()
                        .unwrap(),
                )
            } else {
                b
            };
            b.build().unwrap()
        })
        .collect();
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = caches
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                let mut seen = HashSet::new();
                while start.elapsed() < RUN {
                    match c.token().await {
                        Ok(t) => {
                            seen.insert(t.secret().to_string());
                        }
                        Err(e) => panic!("token() failed: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                seen
            })
        })
        .collect();
    let mut tokens = HashSet::new();
    for t in tasks {
        tokens.extend(t.await.unwrap());
    }
    (idp.requests(Target::Token), tokens.len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (shared_requests, shared_tokens) = run(true).await;
    let (alone_requests, alone_tokens) = run(false).await;
    // Refresh cycles: every distinct token after the first was a refresh.
    let per_refresh = |requests: usize, tokens: usize| {
        (requests.saturating_sub(1)) as f64 / (tokens.saturating_sub(1).max(1)) as f64
    };
    let cycles = shared_tokens.saturating_sub(1);
    println!(
        "B5 shared_store caches={CACHES} requests={shared_requests} distinct_tokens={shared_tokens} refreshes={cycles} per_refresh={:.2}",
        per_refresh(shared_requests, shared_tokens)
    );
    println!(
        "B5 no_store caches={CACHES} requests={alone_requests} distinct_tokens={alone_tokens} per_refresh_cycle={:.2}",
        alone_requests.saturating_sub(CACHES) as f64 / cycles.max(1) as f64
    );
}
