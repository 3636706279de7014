//! One worker process of the multi-process store tests (`tests/redis_store.rs`,
//! `tests/file_store.rs`): builds a `ClientSecretCredential` posting to `IDP_URL`, puts a
//! `TokenCache` with a shared store in front of it, calls `token()` once and prints a marker
//! line with the token's length (never the token).
//!
//! Environment: `IDP_URL` (token endpoint), `STORE` (`redis`, the default, or `file:DIR`),
//! `REDIS_URL` (default `redis://127.0.0.1:6379`) and `PREFIX` (Redis key prefix).
//!
//! ```text
//! IDP_URL=http://127.0.0.1:8080/token PREFIX=demo: cargo run --example store_worker --features redis
//! ```

use std::time::Duration;

use resilient_auth::{ClientSecretCredential, RedisStore, TokenCache};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let idp = std::env::var("IDP_URL").map_err(|_| "IDP_URL is not set")?;
    let store = std::env::var("STORE").unwrap_or_else(|_| "redis".to_owned());
    let credential = ClientSecretCredential::builder("tenant", "client", "worker-secret")
        .token_url(idp)
        .build()?;
    let builder = TokenCache::builder(credential, ["api://store-worker/.default"])
        .store_peer_wait(Duration::from_secs(10));
    let builder = match store.strip_prefix("file:") {
        Some(dir) => file_store(builder, dir)?,
        None => {
            let url =
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
            let prefix = std::env::var("PREFIX").unwrap_or_else(|_| "resilient-auth:".to_owned());
            builder.store(RedisStore::builder(&url).prefix(prefix).build()?)
        }
    };
    let tokens = builder.build()?;
    let token = tokens.token().await?;
    let stats = tokens.stats();
    println!(
        "store_worker ok len={} idp_requests={} store_hits={}",
        token.secret().len(),
        stats.idp_requests,
        stats.store_hits
    );
    Ok(())
}

#[cfg(feature = "file-store")]
fn file_store(
    builder: resilient_auth::TokenCacheBuilder,
    dir: &str,
) -> Result<resilient_auth::TokenCacheBuilder, Box<dyn std::error::Error>> {
    Ok(builder.store(resilient_auth::FileStore::new(dir)))
}

#[cfg(not(feature = "file-store"))]
fn file_store(
    _: resilient_auth::TokenCacheBuilder,
    _: &str,
) -> Result<resilient_auth::TokenCacheBuilder, Box<dyn std::error::Error>> {
    Err("STORE=file:DIR needs the file-store feature".into())
}
