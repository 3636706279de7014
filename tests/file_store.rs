#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `FileStore` (rule S2): permissions, atomic replace, corrupt entries, cross-cache and
//! cross-process sharing, the lock, and a refresh token written three days ago still signing
//! in silently through `RefreshTokenCredential` (rule C5).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use resilient_auth::{
    ClientSecretCredential, FileStore, RefreshTokenCredential, StoredToken, TokenCache,
    TokenCredential, TokenRequest, TokenStore,
};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[path = "support/worker.rs"]
mod worker;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A fresh directory under the system temp dir (removed when dropped).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("ra-file-store-{:016x}", fastrand::u64(..)));
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn token(secret: &str) -> StoredToken {
    let now = now_ms();
    StoredToken::new(secret, now, now + 1_800_000, now + 3_600_000)
}

async fn client_secret_idp(expect: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({
                    "access_token": "idp-access-token-0123456789",
                    "token_type": "Bearer",
                    "expires_in": 3600
                }))
                .set_delay(Duration::from_millis(200)),
        )
        .expect(expect)
        .mount(&server)
        .await;
    server
}

fn cache(server: &MockServer, store: FileStore) -> TokenCache {
    let credential = ClientSecretCredential::builder("tenant", "client", "worker-secret")
        .token_url(format!("{}/token", server.uri()))
        .build()
        .unwrap();
    TokenCache::builder(credential, ["api://store-worker/.default"])
        .store(store)
        .build()
        .unwrap()
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[cfg(unix)]
#[tokio::test]
async fn s2_entries_are_0600_in_a_created_0700_directory_and_named_by_hash() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new();
    let dir = tmp.0.join("nested").join("tokens");
    let store = FileStore::new(&dir);
    let key =
        "resilient-auth:v1:client_secret:https://login.microsoftonline.com:tenant-x:client-y:s";
    store.save(key, &token("at-secret")).await.unwrap();
    let held = store
        .lock(key, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&store.entry_path(key)), 0o600);
    for name in names(&dir) {
        assert_eq!(mode(&dir.join(&name)), 0o600, "{name}");
        assert!(
            !name.contains("tenant-x") && !name.contains("client-y"),
            "{name}"
        );
        assert!(!name.ends_with(".tmp"), "temp file left behind: {name}");
    }
    assert_eq!(names(&dir).len(), 2, "entry + lock file");
    store.unlock(&held).await.unwrap();
    let dbg = format!("{store:?}");
    assert!(!dbg.contains("at-secret"), "{dbg}");
}

#[tokio::test]
async fn s2_crash_between_temp_write_and_rename_leaves_the_old_entry() {
    let tmp = TempDir::new();
    let store = FileStore::new(&tmp.0);
    let key = "resilient-auth:v1:k";
    let old = token("old-token");
    store.save(key, &old).await.unwrap();
    // A writer died after writing (part of) its temp file, before the rename.
    let entry = store.entry_path(key);
    let stem = entry.file_stem().unwrap().to_string_lossy().into_owned();
    let stray = tmp.0.join(format!(".{stem}.99999.00000000deadbeef.tmp"));
    std::fs::write(&stray, br#"{"v":1,"token":{"access_token":"new-tok"#).unwrap();
    assert_eq!(store.load(key).await.unwrap(), Some(old.clone()));
    // A new save still replaces the entry atomically; the stray file is never read.
    let new = token("new-token");
    store.save(key, &new).await.unwrap();
    assert_eq!(store.load(key).await.unwrap(), Some(new));
    assert!(stray.exists());
}

#[tokio::test]
async fn s2_corrupt_or_truncated_entry_is_a_miss_and_is_rewritten() {
    let tmp = TempDir::new();
    let store = FileStore::new(&tmp.0);
    let server = client_secret_idp(2).await;
    let c = cache(&server, store.clone());
    let key = {
        let id = c.identity();
        format!(
            "resilient-auth:v1:{}:{}:tenant:client:api://store-worker/.default",
            id.kind, id.authority
        )
    };
    c.token().await.unwrap();
    let entry = store.entry_path(&key);
    let good = std::fs::read(&entry).unwrap();
    for corrupt in [
        good[..good.len() / 2].to_vec(),
        b"\x00\xff garbage".to_vec(),
        Vec::new(),
    ] {
        std::fs::write(&entry, &corrupt).unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None);
    }
    // A new cache finds the corrupt entry, fetches, and the save rewrites it.
    let c2 = cache(&server, store.clone());
    assert_eq!(
        c2.token().await.unwrap().secret(),
        "idp-access-token-0123456789"
    );
    assert_eq!(c2.stats().store_hits, 0);
    let rewritten = store.load(&key).await.unwrap().unwrap();
    assert_eq!(rewritten.access_token, "idp-access-token-0123456789");
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_caches_sharing_a_directory_make_one_idp_request() {
    let tmp = TempDir::new();
    let server = client_secret_idp(1).await;
    // Separate FileStore values (as separate processes would have), one directory.
    let caches: Vec<_> = (0..4)
        .map(|_| cache(&server, FileStore::new(&tmp.0)))
        .collect();
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
    let hits: u64 = caches.iter().map(|c| c.stats().store_hits).sum();
    assert_eq!(hits, 3);
    server.verify().await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_processes_sharing_a_directory_make_one_idp_request() {
    let bin = tokio::task::spawn_blocking(worker::store_worker)
        .await
        .unwrap();
    let tmp = TempDir::new();
    let server = client_secret_idp(1).await;
    let children: Vec<_> = (0..4)
        .map(|_| {
            tokio::process::Command::new(&bin)
                .env("IDP_URL", format!("{}/token", server.uri()))
                .env("STORE", format!("file:{}", tmp.0.display()))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut fetched = 0;
    for child in children {
        let out = child.wait_with_output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "worker failed: {text}");
        assert!(text.starts_with("store_worker ok len=27"), "{text}");
        fetched += u32::from(text.contains("idp_requests=1"));
    }
    assert_eq!(fetched, 1);
    server.verify().await;
}

#[tokio::test]
async fn s2_lock_is_exclusive_across_handles_freed_on_drop_and_expires() {
    let tmp = TempDir::new();
    let key = "resilient-auth:v1:lock";
    let a = FileStore::new(&tmp.0);
    let b = FileStore::new(&tmp.0);
    let held = a.lock(key, Duration::from_secs(30)).await.unwrap().unwrap();
    assert!(b
        .lock(key, Duration::from_secs(30))
        .await
        .unwrap()
        .is_none());
    assert!(a
        .lock(key, Duration::from_secs(30))
        .await
        .unwrap()
        .is_none());
    a.unlock(&held).await.unwrap();
    let held_b = b.lock(key, Duration::from_secs(30)).await.unwrap().unwrap();
    // The holder "dies": the OS drops its lock with its handles.
    drop(b);
    let held_a = a.lock(key, Duration::from_secs(30)).await.unwrap().unwrap();
    let _ = held_b;
    // A holder alive past its TTL loses the lock to the next process that asks...
    let later = FileStore::new(&tmp.0).with_clock(|| SystemTime::now() + Duration::from_secs(31));
    let taken = later
        .lock(key, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    // ...which then holds it against a third, even though it has no OS lock.
    let c = FileStore::new(&tmp.0).with_clock(|| SystemTime::now() + Duration::from_secs(32));
    assert!(c
        .lock(key, Duration::from_secs(30))
        .await
        .unwrap()
        .is_none());
    a.unlock(&held_a).await.unwrap();
    assert!(c
        .lock(key, Duration::from_secs(30))
        .await
        .unwrap()
        .is_none());
    later.unlock(&taken).await.unwrap();
    assert!(c
        .lock(key, Duration::from_secs(30))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn s2_expired_entries_are_misses_unless_they_hold_a_retained_refresh_token() {
    let tmp = TempDir::new();
    let at = || SystemTime::now() + 3 * DAY;
    let writer = FileStore::new(&tmp.0);
    writer.save("k:access", &token("at")).await.unwrap();
    let mut with_rt = token("at");
    with_rt.refresh_token = Some("rt".into());
    writer.save("k:refresh", &with_rt).await.unwrap();

    let later = FileStore::new(&tmp.0).refresh_token_retention(3 * DAY + Duration::from_secs(3600));
    let later = later.with_clock(at);
    assert_eq!(later.load("k:access").await.unwrap(), None);
    assert_eq!(
        later.load("k:refresh").await.unwrap(),
        Some(with_rt.clone())
    );
    let too_late = FileStore::new(&tmp.0)
        .refresh_token_retention(3 * DAY)
        .with_clock(move || at() + Duration::from_secs(60));
    assert_eq!(too_late.load("k:refresh").await.unwrap(), None);
}

#[tokio::test]
async fn s2_c5_refresh_token_written_three_days_ago_still_signs_in_silently() {
    let tmp = TempDir::new();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=rt-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "at-day-0", "token_type": "Bearer",
            "expires_in": 3600, "refresh_token": "rt-2"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=rt-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "at-day-3", "token_type": "Bearer",
            "expires_in": "3600", "refresh_token": "rt-3"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let native_app = |store: FileStore, rt: Option<&str>| {
        let mut b = RefreshTokenCredential::builder("tenant", "native-client")
            .token_url(format!("{}/token", server.uri()))
            .store(store.clone());
        if let Some(rt) = rt {
            b = b.refresh_token(rt);
        }
        TokenCache::builder(b.build().unwrap(), ["api://x/.default"])
            .store(store)
            .build()
            .unwrap()
    };

    // Day 0: signed in (refresh token rt-1 from an interactive flow); rt-2 comes back and is
    // persisted.
    let day0 = native_app(FileStore::new(&tmp.0), Some("rt-1"));
    assert_eq!(day0.token().await.unwrap().secret(), "at-day-0");
    drop(day0);

    // Day 3: the app starts again with no refresh token of its own; the access token in the
    // store has long expired, the refresh token is retained.
    let store = FileStore::new(&tmp.0)
        .refresh_token_retention(3 * DAY + Duration::from_secs(600))
        .with_clock(|| SystemTime::now() + 3 * DAY);
    let day3 = native_app(store.clone(), None);
    assert_eq!(day3.token().await.unwrap().secret(), "at-day-3");
    assert_eq!(day3.stats().idp_requests, 1);
    let credential_key =
        "resilient-auth:v1:refresh_token:".to_owned() + &server.uri() + ":tenant:native-client";
    let rt = store.load(&credential_key).await.unwrap().unwrap();
    assert_eq!(rt.refresh_token.as_deref(), Some("rt-3"));
    server.verify().await;

    // Past the retention the refresh token is gone: interactive sign-in is needed, and no
    // request is sent.
    let gone = FileStore::new(&tmp.0)
        .refresh_token_retention(DAY)
        .with_clock(|| SystemTime::now() + 2 * DAY);
    let credential = RefreshTokenCredential::builder("tenant", "native-client")
        .token_url(format!("{}/token", server.uri()))
        .store(gone)
        .build()
        .unwrap();
    let e = credential
        .get_token(&TokenRequest::new(["api://x/.default"]))
        .await
        .unwrap_err();
    assert!(e.needs_interaction(), "{e}");
    assert!(
        e.to_string().contains("interactive sign-in is needed"),
        "{e}"
    );
}
