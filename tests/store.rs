//! The cache's second level (rule S1) with the in-process `MemoryStore` and a broken store
//! (rule S3's fallback), under paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use resilient_auth::{
    CredentialIdentity, Error, MemoryStore, StoreLock, StoredToken, TokenCache, TokenCredential,
    TokenRequest, TokenResponse, TokenStore,
};
use tokio::time::Instant;

#[derive(Debug, Clone, Default)]
struct Counting {
    calls: Arc<AtomicUsize>,
}

impl TokenCredential for Counting {
    fn get_token<'a>(&'a self, _: &'a TokenRequest) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(TokenResponse::new(
                format!("secret-token-{n}"),
                Duration::from_secs(3600),
            ))
        }
        .boxed()
    }
    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity::new("counting", "https://login.microsoftonline.com")
            .with_tenant("t")
            .with_client_id("c")
    }
}

fn caches(n: usize, cred: &Counting, store: &MemoryStore) -> Vec<TokenCache> {
    (0..n)
        .map(|_| {
            TokenCache::builder(cred.clone(), ["api://x/.default"])
                .store(store.clone())
                .build()
                .unwrap()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn s1_eight_caches_sharing_a_store_make_one_request_cold_and_per_refresh() {
    let cred = Counting::default();
    let store = MemoryStore::new();
    let caches = caches(8, &cred, &store);
    let tasks: Vec<_> = caches
        .iter()
        .cloned()
        .map(|c| tokio::spawn(async move { c.token().await }))
        .collect();
    let mut secrets = Vec::new();
    for t in tasks {
        secrets.push(t.await.unwrap().unwrap().secret().to_string());
    }
    assert_eq!(
        cred.calls.load(Ordering::SeqCst),
        1,
        "one request for 8 cold caches"
    );
    assert!(secrets.iter().all(|s| s == "secret-token-1"));
    let store_hits: u64 = caches.iter().map(|c| c.stats().store_hits).sum();
    assert_eq!(store_hits, 7);

    // Past the refresh point every cache refreshes in the background: still one request.
    tokio::time::advance(Duration::from_secs(1801)).await;
    for c in &caches {
        c.token().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        cred.calls.load(Ordering::SeqCst),
        2,
        "one request per refresh"
    );
    for c in &caches {
        assert_eq!(c.token().await.unwrap().secret(), "secret-token-2");
    }
}

#[tokio::test(start_paused = true)]
async fn s1_store_keys_hold_no_secret_and_entries_are_redacted() {
    let cred = Counting::default();
    let store = MemoryStore::new();
    let c = &caches(1, &cred, &store)[0];
    c.token().await.unwrap();
    let key = "resilient-auth:v1:counting:https://login.microsoftonline.com:t:c:api://x/.default";
    let entry = store
        .load(key)
        .await
        .unwrap()
        .expect("saved under the documented key");
    assert!(!format!("{entry:?}").contains("secret-token"));
    assert!(entry.expires_on_ms > entry.refresh_on_ms && entry.refresh_on_ms > entry.issued_on_ms);
}

/// A store that fails every operation, or never answers.
#[derive(Debug, Clone)]
struct Broken {
    hang: bool,
    ops: Arc<Mutex<Vec<&'static str>>>,
}

impl Broken {
    fn op<T: Send + 'static>(&self, name: &'static str) -> BoxFuture<'static, Result<T, Error>> {
        self.ops.lock().unwrap().push(name);
        let hang = self.hang;
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Err(Error::Unavailable {
                what: "store",
                source: None,
            })
        }
        .boxed()
    }
}

impl TokenStore for Broken {
    fn load<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<StoredToken>, Error>> {
        self.op("load")
    }
    fn save<'a>(&'a self, _: &'a str, _: &'a StoredToken) -> BoxFuture<'a, Result<(), Error>> {
        self.op("save")
    }
    fn remove<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        self.op("remove")
    }
    fn lock<'a>(
        &'a self,
        _: &'a str,
        _: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, Error>> {
        self.op("lock")
    }
    fn unlock<'a>(&'a self, _: &'a StoreLock) -> BoxFuture<'a, Result<(), Error>> {
        self.op("unlock")
    }
}

#[tokio::test(start_paused = true)]
async fn s3_failing_or_hanging_store_never_fails_a_call_and_adds_bounded_latency() {
    for hang in [false, true] {
        let cred = Counting::default();
        let store = Broken {
            hang,
            ops: Arc::default(),
        };
        let c = TokenCache::builder(cred.clone(), ["api://x/.default"])
            .store(store.clone())
            .store_timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        let t0 = Instant::now();
        let t = c.token().await.unwrap();
        assert_eq!(t.secret(), "secret-token-1");
        let added = Instant::now() - t0 - Duration::from_millis(200);
        // load + lock + save, each bounded by the 100 ms store timeout.
        assert!(
            added <= Duration::from_millis(300),
            "hang={hang}: {added:?}"
        );
        assert_eq!(
            c.stats().store_errors,
            3,
            "hang={hang}: {:?}",
            store.ops.lock().unwrap()
        );
        // The memory level still serves.
        assert!(c.token().now_or_never().unwrap().unwrap().same_as(&t));
    }
}
