#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `RedisStore` against a real Redis (rule S3): cross-cache and cross-process single-flight,
//! TTLs, encryption, the lock, and Redis down / paused never failing a call.
//!
//! Needs a Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`); each test uses its own
//! random key prefix. Tests run one at a time (one of them pauses Redis).

use std::process::Stdio;
use std::time::Duration;

use resilient_auth::{
    ClientSecretCredential, Error, RedisStore, StoredToken, TokenCache, TokenStore,
};
use tokio::time::Instant;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[path = "support/worker.rs"]
mod worker;

const SCOPE: &str = "api://store-worker/.default";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A raw connection for assertions; fails the test with how to start Redis if none answers.
async fn raw() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    let hint = format!(
        "no Redis answers at {url} (set REDIS_URL, or start one: \
         redis-server --daemonize yes --port 6379 --save \"\" --appendonly no)"
    );
    let client = redis::Client::open(url.as_str()).expect(&hint);
    let mut conn = tokio::time::timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect(&hint)
    .expect(&hint);
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect(&hint);
    assert_eq!(pong, "PONG", "{hint}");
    conn
}

fn prefix() -> String {
    format!("ra-test-{:016x}:", fastrand::u64(..))
}

fn token_body(secret: &str) -> serde_json::Value {
    serde_json::json!({"access_token": secret, "token_type": "Bearer", "expires_in": 3600})
}

async fn idp(expect: Option<u64>, delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    let mock = Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(token_body("idp-access-token-0123456789"))
                .set_delay(delay),
        );
    match expect {
        Some(n) => mock.expect(n),
        None => mock,
    }
    .mount(&server)
    .await;
    server
}

fn credential(server: &MockServer) -> ClientSecretCredential {
    ClientSecretCredential::builder("tenant", "client", "worker-secret")
        .token_url(format!("{}/token", server.uri()))
        .build()
        .unwrap()
}

fn cache(server: &MockServer, store: &RedisStore) -> TokenCache {
    TokenCache::builder(credential(server), [SCOPE])
        .store(store.clone())
        .build()
        .unwrap()
}

/// The cache's store key (documented layout).
fn cache_key(c: &TokenCache) -> String {
    let id = c.identity();
    format!(
        "resilient-auth:v1:{}:{}:{}:{}:{}",
        id.kind,
        id.authority,
        id.tenant.as_deref().unwrap_or("-"),
        id.client_id.as_deref().unwrap_or("-"),
        c.scopes().join(" ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_eight_caches_sharing_redis_make_one_idp_request() {
    let _serial = SERIAL.lock().await;
    raw().await;
    let server = idp(Some(1), Duration::from_millis(300)).await;
    let store = RedisStore::builder(&redis_url())
        .prefix(prefix())
        .build()
        .unwrap();
    let caches: Vec<_> = (0..8).map(|_| cache(&server, &store)).collect();
    let tasks: Vec<_> = caches
        .iter()
        .cloned()
        .map(|c| tokio::spawn(async move { c.token().await }))
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.unwrap().unwrap().secret(),
            "idp-access-token-0123456789"
        );
    }
    let idp_requests: u64 = caches.iter().map(|c| c.stats().idp_requests).sum();
    let store_hits: u64 = caches.iter().map(|c| c.stats().store_hits).sum();
    let store_errors: u64 = caches.iter().map(|c| c.stats().store_errors).sum();
    println!(
        "8 caches: idp_requests={idp_requests} store_hits={store_hits} store_errors={store_errors}"
    );
    assert_eq!(idp_requests, 1);
    assert_eq!(store_hits, 7);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_eight_processes_sharing_redis_make_one_idp_request() {
    let _serial = SERIAL.lock().await;
    raw().await;
    let bin = tokio::task::spawn_blocking(worker::store_worker)
        .await
        .unwrap();
    let server = idp(Some(1), Duration::from_millis(300)).await;
    let prefix = prefix();
    let children: Vec<_> = (0..8)
        .map(|_| {
            tokio::process::Command::new(&bin)
                .env("IDP_URL", format!("{}/token", server.uri()))
                .env("REDIS_URL", redis_url())
                .env("PREFIX", &prefix)
                .env("STORE", "redis")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut idp_requests = 0;
    for child in children {
        let out = child.wait_with_output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "worker failed: {text}");
        assert!(text.starts_with("store_worker ok len=27"), "{text}");
        assert!(!text.contains("idp-access-token"), "{text}");
        idp_requests += u64::from(text.contains("idp_requests=1"));
    }
    assert_eq!(idp_requests, 1, "one process fetched, seven read Redis");
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_ttl_is_the_remaining_lifetime_and_the_lock_is_released() {
    let _serial = SERIAL.lock().await;
    let mut conn = raw().await;
    let server = idp(Some(1), Duration::ZERO).await;
    let store = RedisStore::builder(&redis_url())
        .prefix(prefix())
        .build()
        .unwrap();
    let c = cache(&server, &store);
    c.token().await.unwrap();
    let key = store.redis_key(&cache_key(&c));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    println!("PTTL {key} = {pttl} ms");
    assert!(pttl > 0 && pttl <= 3_600_000, "{pttl}");
    assert!(pttl > 3_500_000, "{pttl}");
    let locks: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}lock:*", store.redis_key("")))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(locks.is_empty(), "{locks:?}");

    // An entry with a refresh token lives for the retention, not the access token's lifetime.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut rt = StoredToken::new("", now, now, now);
    rt.refresh_token = Some("rt".into());
    let store = RedisStore::builder(&redis_url())
        .prefix(prefix())
        .refresh_token_retention(Duration::from_secs(3 * 24 * 3600))
        .build()
        .unwrap();
    store
        .save("resilient-auth:v1:refresh_token:x", &rt)
        .await
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(store.redis_key("resilient-auth:v1:refresh_token:x"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        pttl > 3 * 24 * 3_600_000 - 60_000 && pttl <= 3 * 24 * 3_600_000,
        "{pttl}"
    );
    // An expired entry without a refresh token is not written.
    let dead = StoredToken::new("x", 1, 2, 3);
    store.save("resilient-auth:v1:dead", &dead).await.unwrap();
    assert_eq!(store.load("resilient-auth:v1:dead").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_encrypted_values_are_unreadable_without_the_key() {
    let _serial = SERIAL.lock().await;
    let mut conn = raw().await;
    let server = idp(Some(1), Duration::ZERO).await;
    let prefix = prefix();
    let key_a = [0x11; 32];
    let store = RedisStore::builder(&redis_url())
        .prefix(&prefix)
        .encryption_key(key_a)
        .build()
        .unwrap();
    let c = cache(&server, &store);
    c.token().await.unwrap();
    let cache_key = cache_key(&c);
    let raw_value: Vec<u8> = redis::cmd("GET")
        .arg(store.redis_key(&cache_key))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(raw_value.len() > 28);
    for needle in [&b"idp-access-token"[..], b"access_token", b"expires_on_ms"] {
        assert!(
            !raw_value.windows(needle.len()).any(|w| w == needle),
            "plaintext in the raw value"
        );
    }
    let same = RedisStore::builder(&redis_url())
        .prefix(&prefix)
        .encryption_key(key_a)
        .build()
        .unwrap();
    let loaded = same.load(&cache_key).await.unwrap().unwrap();
    assert_eq!(loaded.access_token, "idp-access-token-0123456789");
    let other = RedisStore::builder(&redis_url())
        .prefix(&prefix)
        .encryption_key([0x22; 32])
        .build()
        .unwrap();
    assert_eq!(
        other.load(&cache_key).await.unwrap(),
        None,
        "wrong key: a miss"
    );
    let plain = RedisStore::builder(&redis_url())
        .prefix(&prefix)
        .build()
        .unwrap();
    assert_eq!(
        plain.load(&cache_key).await.unwrap(),
        None,
        "no key: a miss"
    );
    // A tampered value is a miss, and a cache with the wrong key still gets a token.
    let mut tampered = raw_value.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x80;
    let _: () = redis::cmd("SET")
        .arg(store.redis_key(&cache_key))
        .arg(tampered)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(same.load(&cache_key).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_lock_is_exclusive_expires_and_is_released_only_by_its_owner() {
    let _serial = SERIAL.lock().await;
    let mut conn = raw().await;
    let store = RedisStore::builder(&redis_url())
        .prefix(prefix())
        .build()
        .unwrap();
    let key = "resilient-auth:v1:lock-test";
    let held = store
        .lock(key, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .lock(key, Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    let mut forged = held.clone();
    forged.owner = "someone-else".into();
    store.unlock(&forged).await.unwrap();
    assert!(
        store
            .lock(key, Duration::from_secs(5))
            .await
            .unwrap()
            .is_none(),
        "a foreign unlock must not release it"
    );
    let lock_key = format!("{}lock:v1:lock-test", store.redis_key(""));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&lock_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 5_000, "{pttl}");
    store.unlock(&held).await.unwrap();
    let again = store
        .lock(key, Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        store
            .lock(key, Duration::from_secs(1))
            .await
            .unwrap()
            .is_some(),
        "an expired lock is free"
    );
    store.unlock(&again).await.unwrap();
}

/// Latencies in ms: (p50, max).
fn summary(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
    )
}

/// One cold `token()` per fresh cache (its own memory level), so each call goes to the store.
async fn cold_calls(
    server: &MockServer,
    store: Option<&RedisStore>,
    n: usize,
    failures: &mut usize,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    for _ in 0..n {
        let mut b = TokenCache::builder(credential(server), [SCOPE]);
        if let Some(s) = store {
            b = b.store(s.clone());
        }
        let c = b.build().unwrap();
        let t0 = Instant::now();
        match c.token().await {
            Ok(t) => assert_eq!(t.secret(), "idp-access-token-0123456789"),
            Err(e) => {
                eprintln!("token() failed: {e}");
                *failures += 1;
            }
        }
        samples.push(t0.elapsed());
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_redis_down_or_paused_never_fails_a_call_and_adds_bounded_latency() {
    let _serial = SERIAL.lock().await;
    let mut admin = raw().await;
    let server = idp(None, Duration::ZERO).await;
    let mut failures = 0;
    let mut report = Vec::new();

    let mut base = cold_calls(&server, None, 20, &mut failures).await;
    let (base_p50, base_max) = summary(&mut base);
    report.push(("no store", base_p50, base_max));

    let healthy = RedisStore::builder(&redis_url())
        .prefix(prefix())
        .build()
        .unwrap();
    let mut h = cold_calls(&server, Some(&healthy), 20, &mut failures).await;
    let (p50, max) = summary(&mut h);
    report.push(("redis healthy", p50, max));

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = RedisStore::connect(&format!("redis://:hunter2-pw@127.0.0.1:{closed}")).unwrap();
    let mut d = cold_calls(&server, Some(&down), 20, &mut failures).await;
    let (down_p50, down_max) = summary(&mut d);
    report.push(("redis closed port", down_p50, down_max));
    let e = down.load("resilient-auth:v1:x").await.unwrap_err();
    assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");

    // Pause Redis mid-run (all commands of all clients block for 2 s).
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let paused_at = Instant::now();
    let mut p = Vec::new();
    while paused_at.elapsed() < Duration::from_millis(1300) {
        p.extend(cold_calls(&server, Some(&healthy), 1, &mut failures).await);
    }
    assert!(
        paused_at.elapsed() < Duration::from_millis(2000),
        "calls ran past the pause"
    );
    let (paused_p50, paused_max) = summary(&mut p);
    report.push((
        "redis paused (CLIENT PAUSE 2000 ALL)",
        paused_p50,
        paused_max,
    ));
    tokio::time::sleep_until(paused_at + Duration::from_millis(2100)).await;

    // After the pause the store serves again.
    let after_cache = cache(&server, &healthy);
    let t0 = Instant::now();
    let mut recovered = false;
    while t0.elapsed() < Duration::from_secs(3) {
        let c = cache(&server, &healthy);
        c.token().await.unwrap();
        if c.stats().store_hits == 1 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(after_cache);
    let mut r = cold_calls(&server, Some(&healthy), 10, &mut failures).await;
    let (p50, max) = summary(&mut r);
    report.push(("redis after pause", p50, max));

    println!("token() latency, cold cache per call, op timeout 150 ms:");
    println!("{:<34} {:>9} {:>9}", "scenario", "p50 ms", "max ms");
    for (name, p50, max) in &report {
        println!("{name:<34} {p50:>9.1} {max:>9.1}");
    }
    println!("failed token() calls: {failures}");
    assert_eq!(failures, 0);
    assert!(recovered, "the store did not serve again after the pause");
    for (name, _, max) in &report {
        assert!(
            *max - base_p50 <= 1000.0,
            "{name}: added latency {:.1} ms",
            max - base_p50
        );
    }
    let _ = base_max;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_a_retry_after_seen_by_one_process_holds_the_others_through_redis() {
    let _serial = SERIAL.lock().await;
    raw().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "60")
                .set_body_json(serde_json::json!({"error": "temporarily_unavailable"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let prefix = prefix();
    // Two "processes": separate stores (connections) on one prefix, separate caches.
    let store = |p: &str| {
        RedisStore::builder(&redis_url())
            .prefix(p.to_owned())
            .build()
            .unwrap()
    };
    let (a, b) = (
        cache(&server, &store(&prefix)),
        cache(&server, &store(&prefix)),
    );
    assert!(a.token().await.is_err());
    let e = b.token().await.unwrap_err();
    assert!(
        matches!(e, Error::Throttled { retry_after } if retry_after > Duration::from_secs(50)),
        "{e:?}"
    );
    assert_eq!(b.stats().idp_requests, 0, "the other process held too");
    server.verify().await;
}
