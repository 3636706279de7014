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

// ---------- A3, S4 ----------

/// A credential with a scripted first answer and a latency, counting its calls.
#[derive(Debug, Clone, Default)]
struct Scripted {
    calls: Arc<AtomicUsize>,
    throttle_first: Option<Duration>,
    latency: Duration,
    prefix: &'static str,
}

impl TokenCredential for Scripted {
    fn get_token<'a>(&'a self, _: &'a TokenRequest) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.latency).await;
            if let (1, Some(wait)) = (n, self.throttle_first) {
                let mut d = resilient_auth::IdentityProviderError::default();
                d.error = "throttled".into();
                d.retry_after = Some(wait);
                return Err(Error::IdentityProvider {
                    status: http::StatusCode::TOO_MANY_REQUESTS,
                    details: Box::new(d),
                });
            }
            Ok(TokenResponse::new(
                format!("{}-token-{n}", self.prefix),
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

const KEY: &str =
    "resilient-auth:v1:counting:https://login.microsoftonline.com:t:c:api://x/.default";

fn cache_with(cred: &Scripted, store: &MemoryStore) -> TokenCache {
    TokenCache::builder(cred.clone(), ["api://x/.default"])
        .store(store.clone())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a3_a_rejected_token_is_gone_from_memory_and_the_store() {
    let store = MemoryStore::new();
    let a = Scripted {
        prefix: "a",
        ..Default::default()
    };
    let b = Scripted {
        prefix: "b",
        ..Default::default()
    };
    let (ca, cb) = (cache_with(&a, &store), cache_with(&b, &store));
    let rejected = ca.token().await.unwrap();
    assert_eq!(rejected.secret(), "a-token-1");
    // The resource answers 401 invalid_token: the token is dropped everywhere.
    ca.invalidate(&rejected);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = store.load(KEY).await.unwrap();
    assert!(stored.is_none_or(|s| s.access_token != "a-token-1"));
    // Neither this process nor a replica serves it again.
    assert_ne!(ca.token().await.unwrap().secret(), "a-token-1");
    assert_ne!(cb.token().await.unwrap().secret(), "a-token-1");
}

#[tokio::test(start_paused = true)]
async fn a3_a_rejected_token_left_in_the_store_is_not_reloaded() {
    // The store removal may fail or race with a replica writing the same token back: the
    // cache still never takes the rejected token from the store again.
    let store = MemoryStore::new();
    let a = Scripted {
        prefix: "a",
        ..Default::default()
    };
    let ca = cache_with(&a, &store);
    let rejected = ca.token().await.unwrap();
    let entry = store.load(KEY).await.unwrap().unwrap();
    ca.invalidate(&rejected);
    tokio::time::sleep(Duration::from_secs(1)).await;
    store.save(KEY, &entry).await.unwrap();
    assert_eq!(ca.token().await.unwrap().secret(), "a-token-2");
}

#[tokio::test(start_paused = true)]
async fn s4_a_stored_entry_issued_in_the_future_is_treated_as_absent() {
    let store = MemoryStore::new();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let day = 24 * 3600 * 1000;
    let forged = StoredToken::new(
        "forged",
        now_ms + day,
        now_ms + day + 1_000,
        now_ms + day + 3_600_000,
    );
    store.save(KEY, &forged).await.unwrap();
    let a = Scripted {
        prefix: "a",
        ..Default::default()
    };
    let c = cache_with(&a, &store);
    assert_eq!(c.token().await.unwrap().secret(), "a-token-1");
    assert_eq!(a.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn s4_a_retry_after_seen_by_one_process_holds_the_others() {
    let store = MemoryStore::new();
    let a = Scripted {
        prefix: "a",
        throttle_first: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let b = Scripted {
        prefix: "b",
        ..Default::default()
    };
    let (ca, cb) = (cache_with(&a, &store), cache_with(&b, &store));
    assert!(ca.token().await.is_err());
    let e = cb.token().await.unwrap_err();
    assert!(
        matches!(e, Error::Throttled { retry_after } if retry_after > Duration::from_secs(50)),
        "{e:?}"
    );
    assert_eq!(
        b.calls.load(Ordering::SeqCst),
        0,
        "the other process held too"
    );
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(cb.token().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn s4_a_waiting_process_waits_as_long_as_a_slow_lock_holder_may_take() {
    // The identity provider takes 12 s (well past the old 3 s peer wait): the waiting process
    // takes the holder's token instead of fetching its own.
    let store = MemoryStore::new();
    let a = Scripted {
        prefix: "a",
        latency: Duration::from_secs(12),
        ..Default::default()
    };
    let b = Scripted {
        prefix: "b",
        ..Default::default()
    };
    let (ca, cb) = (cache_with(&a, &store), cache_with(&b, &store));
    let first = tokio::spawn(async move { ca.token().await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let t = cb.token().await.unwrap();
    assert_eq!(t.secret(), "a-token-1");
    assert_eq!(b.calls.load(Ordering::SeqCst), 0);
    assert_eq!(first.await.unwrap().unwrap().secret(), "a-token-1");
}
