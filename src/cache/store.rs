//! Second-level token stores (rule S1): what lets several processes share one token.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::{BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};

use crate::Error;

/// A token as a store keeps it: wall-clock times (milliseconds since the Unix epoch), so that
/// other processes can use it. `Debug` never shows the tokens.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredToken {
    /// The access token.
    pub access_token: String,
    /// When it was issued.
    pub issued_on_ms: u64,
    /// When the cache should refresh it.
    pub refresh_on_ms: u64,
    /// When it expires.
    pub expires_on_ms: u64,
    /// A refresh token, for public clients (rule C5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl StoredToken {
    /// A stored token.
    pub fn new(
        access_token: impl Into<String>,
        issued_on_ms: u64,
        refresh_on_ms: u64,
        expires_on_ms: u64,
    ) -> Self {
        StoredToken {
            access_token: access_token.into(),
            issued_on_ms,
            refresh_on_ms,
            expires_on_ms,
            refresh_token: None,
        }
    }

    /// Time left before it expires, measured against the wall clock `now`.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        Duration::from_millis(self.expires_on_ms.saturating_sub(unix_ms(now)))
    }
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_token", &"<redacted>")
            .field("issued_on_ms", &self.issued_on_ms)
            .field("refresh_on_ms", &self.refresh_on_ms)
            .field("expires_on_ms", &self.expires_on_ms)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A held store lock: release it with [`TokenStore::unlock`]. `owner` is a random value that
/// makes the release owner-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLock {
    /// The key it locks.
    pub key: String,
    /// The holder's random id.
    pub owner: String,
}

impl StoreLock {
    /// A lock on `key` with a fresh random owner id.
    pub fn new(key: impl Into<String>) -> Self {
        StoreLock {
            key: key.into(),
            owner: format!("{:032x}", fastrand::u128(..)),
        }
    }
}

/// A second level behind the in-memory cache: load, save and remove entries by key, and a
/// best-effort lock for cross-process single-flight (rule S1).
///
/// Keys never contain secrets. Implementations should fail fast (the cache also bounds each
/// call with a short timeout) and must not panic on corrupt data: a value that cannot be read is
/// a miss (`Ok(None)`), logged.
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// The entry under `key`, if there is a readable one.
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<StoredToken>, Error>>;
    /// Writes the entry under `key` (replacing any).
    fn save<'a>(&'a self, key: &'a str, token: &'a StoredToken)
        -> BoxFuture<'a, Result<(), Error>>;
    /// Removes the entry under `key`.
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    /// Tries to take the lock on `key` for at most `ttl`. `Ok(None)`: someone else holds it.
    fn lock<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, Error>>;
    /// Releases `lock` if it is still held by its owner.
    fn unlock<'a>(&'a self, lock: &'a StoreLock) -> BoxFuture<'a, Result<(), Error>>;

    /// How long the store keeps entries that hold a refresh token, if it persists them across
    /// restarts (`None`: not persistent, e.g. memory). The resilience report checks it against
    /// the backup authentication system's requirement of at least 3 days.
    fn persistent_retention(&self) -> Option<Duration> {
        None
    }

    /// Records that no process should ask the identity provider for `key`'s token before
    /// `hold.until_ms` (rule S4: a `Retry-After` or back-off seen by one process holds the
    /// others). The default keeps it as a marker entry under `{key}:hold` through
    /// [`save`](Self::save), so every store shares holds without extra code.
    fn save_hold<'a>(&'a self, key: &'a str, hold: StoreHold) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let marker = StoredToken::new(
                String::new(),
                hold.since_ms,
                if hold.server_directed {
                    hold.until_ms
                } else {
                    hold.since_ms
                },
                hold.until_ms,
            );
            self.save(&hold_key(key), &marker).await
        }
        .boxed()
    }

    /// The hold recorded for `key` by [`save_hold`](Self::save_hold), if any.
    fn load_hold<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<StoreHold>, Error>> {
        async move {
            Ok(self
                .load(&hold_key(key))
                .await?
                .filter(|m| m.access_token.is_empty())
                .map(|m| StoreHold {
                    since_ms: m.issued_on_ms,
                    until_ms: m.expires_on_ms,
                    server_directed: m.refresh_on_ms == m.expires_on_ms
                        && m.expires_on_ms != m.issued_on_ms,
                }))
        }
        .boxed()
    }
}

/// A shared hold on identity-provider requests for one key (rule S4), in wall-clock
/// milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreHold {
    /// When the failure that set it happened.
    pub since_ms: u64,
    /// Until when no request should be sent.
    pub until_ms: u64,
    /// The identity provider asked for the wait (`Retry-After`), rather than a back-off.
    pub server_directed: bool,
}

impl StoreHold {
    /// A hold from `since_ms` until `until_ms`.
    pub fn new(since_ms: u64, until_ms: u64, server_directed: bool) -> Self {
        StoreHold {
            since_ms,
            until_ms,
            server_directed,
        }
    }
}

fn hold_key(key: &str) -> String {
    format!("{key}:hold")
}

impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<StoredToken>, Error>> {
        (**self).load(key)
    }
    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        (**self).save(key, token)
    }
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        (**self).remove(key)
    }
    fn lock<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, Error>> {
        (**self).lock(key, ttl)
    }
    fn unlock<'a>(&'a self, lock: &'a StoreLock) -> BoxFuture<'a, Result<(), Error>> {
        (**self).unlock(lock)
    }
    fn persistent_retention(&self) -> Option<Duration> {
        (**self).persistent_retention()
    }
    fn save_hold<'a>(&'a self, key: &'a str, hold: StoreHold) -> BoxFuture<'a, Result<(), Error>> {
        (**self).save_hold(key, hold)
    }
    fn load_hold<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<StoreHold>, Error>> {
        (**self).load_hold(key)
    }
}

/// A store in this process's memory: shares tokens between several [`TokenCache`](crate::TokenCache)s
/// of one process, and stands in for a real store in tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    entries: HashMap<String, StoredToken>,
    locks: HashMap<String, (String, tokio::time::Instant)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut MemoryInner) -> R) -> R {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }
}

impl TokenStore for MemoryStore {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<StoredToken>, Error>> {
        let v = self.with(|m| m.entries.get(key).cloned());
        async move { Ok(v) }.boxed()
    }
    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.with(|m| m.entries.insert(key.to_string(), token.clone()));
        async { Ok(()) }.boxed()
    }
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        self.with(|m| m.entries.remove(key));
        async { Ok(()) }.boxed()
    }
    fn lock<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, Error>> {
        let now = tokio::time::Instant::now();
        let got = self.with(|m| {
            if m.locks.get(key).is_some_and(|(_, until)| *until > now) {
                return None;
            }
            let lock = StoreLock::new(key);
            m.locks
                .insert(key.to_string(), (lock.owner.clone(), now + ttl));
            Some(lock)
        });
        async move { Ok(got) }.boxed()
    }
    fn unlock<'a>(&'a self, lock: &'a StoreLock) -> BoxFuture<'a, Result<(), Error>> {
        self.with(|m| {
            if m.locks
                .get(&lock.key)
                .is_some_and(|(owner, _)| *owner == lock.owner)
            {
                m.locks.remove(&lock.key);
            }
        });
        async { Ok(()) }.boxed()
    }
}

/// FNV-1a, 64 bit: a hash that is the same in every process and Rust version (for keys).
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
