//! [`TokenCache`]: cached tokens that survive identity-provider trouble (rules T2–T7, O1, O2).
//!
//! - **Hot path** (a token is cached and before its refresh point): a flag that a timer clears
//!   at the refresh point, one atomic load, no clock read, no lock a refresh could hold, no
//!   allocation; the `Authorization` header value was built when the token arrived.
//! - **Refresh ahead** (T2, T3): past the refresh point (the server's `refresh_in`, else half the
//!   lifetime, minus a small random jitter) the caller still gets the cached token at once and
//!   exactly one background task per key fetches a new one.
//! - **Outage** (T5, R9): a failed refresh keeps the old token in service until
//!   `expires_at - skew` and is retried after max(`Retry-After`, back-off) — back-off ≥ 5 s, ×2,
//!   ≤ 60 s, each attempt early enough to refresh before the token stops being served — one
//!   attempt in flight. The crate's one wait policy (`retry::policy`) decides every wait.
//! - **Cold key** (T13): while a key has nothing to serve, every caller fails, so its back-off is
//!   capped low — 5, 10, 10, … s ([`TokenCacheBuilder::cold_backoff_cap`], default 10 s): the
//!   first request after an outage ends comes within 10 s. The price is up to one request per
//!   10 s to an identity provider that is down; raise the cap to spare it.
//! - **Self-healing** (T9, T11): a fetch that errs, panics, hangs past the fetch timeout
//!   (default 30 s) or is cancelled clears its single-flight slot (a drop guard) and is backed
//!   off; background refreshes hold a weak handle and stop when the cache is dropped.
//! - **Cold start** (T4): concurrent callers with nothing cached share one request.
//! - **Throttle gate** (T6): after a failure no request for that key is sent until the back-off
//!   or `Retry-After` has passed; a caller without a usable token gets the failure at once
//!   ([`Error::Throttled`] after a 429 or a `Retry-After`), unless its deadline allows waiting.
//! - **Per key** (T7): each set of claims is its own entry with its own single-flight.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::future::{BoxFuture, Shared};
use tokio::time::Instant;

mod builder;
#[cfg(any(feature = "file-store", feature = "redis"))]
pub(crate) mod codec;
mod fetch;
#[cfg(feature = "file-store")]
pub(crate) mod file;
#[cfg(feature = "redis")]
pub(crate) mod redis;
pub(crate) mod store;
mod tier;

use builder::Config;
pub use builder::TokenCacheBuilder;
use tier::WallClock;

use store::{stable_hash, TokenStore};

use crate::retry::stats::ShardedCounter;
use crate::retry::throttle::ThrottleGate;
use crate::retry::Backoff;
use crate::{AccessToken, CredentialIdentity, Error, TokenCredential};

/// How many distinct claims sets a cache keeps (X3).
const MAX_CLAIMS_ENTRIES: usize = 64;
/// How far in the future a stored entry's issue time may lie before it is distrusted (S4):
/// clock skew between the machines sharing a store.
const MAX_STORE_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// A cheap-to-clone handle to cached tokens for one credential and one fixed set of scopes.
///
/// ```no_run
/// # async fn demo(credential: impl resilient_auth::TokenCredential) -> Result<(), resilient_auth::Error> {
/// use resilient_auth::TokenCache;
///
/// let tokens = TokenCache::new(credential, ["https://vault.azure.net/.default"]);
/// let token = tokens.token().await?;
/// assert!(!token.secret().is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    credential: Arc<dyn TokenCredential>,
    identity: CredentialIdentity,
    scopes: Arc<[String]>,
    config: Config,
    default_entry: Arc<Entry>,
    claims_entries: Mutex<HashMap<Arc<str>, Arc<Entry>>>,
    /// Holds of this cache's keys: an entry's back-off under its own key, an identity
    /// provider's `Retry-After` under `throttle_key` (T12).
    gate: ThrottleGate,
    /// The gate key of the identity (authority, client, scopes), whatever the claims.
    throttle_key: u64,
    counters: Counters,
    store: Option<Arc<dyn TokenStore>>,
    clock: WallClock,
}

type SharedFetch = Shared<BoxFuture<'static, Result<AccessToken, Error>>>;

struct Entry {
    claims: Option<Arc<str>>,
    gate_key: u64,
    store_key: String,
    current: ArcSwapOption<Cached>,
    /// The number of the token in `current` while it is before its refresh point, 0 otherwise:
    /// the hot path's one check (no clock read). Set when a token goes in, cleared by a timer
    /// task at its refresh point — or when that task is dropped unfinished (its runtime shut
    /// down) — and when the token is replaced or dropped. Cleared, callers take the checked
    /// path, which reads the clock.
    fresh: AtomicU64,
    /// Numbers the tokens put in `current`.
    installed: AtomicU64,
    /// The timer task of the token in `current`: aborted when another token goes in and when
    /// the entry is dropped, so no task outlives what it flags.
    fresh_timer: Mutex<Option<tokio::task::AbortHandle>>,
    refreshing: AtomicBool,
    inflight: Mutex<Option<(u64, SharedFetch)>>,
    /// Numbers the fetches, so a fetch's guard clears only its own slot.
    generation: AtomicU64,
    failures: AtomicU32,
    last_error: Mutex<Option<Error>>,
    /// A hash of the last token the resource rejected (A3): never taken from the store again.
    rejected: AtomicU64,
}

struct Cached {
    token: AccessToken,
    usable_until: Instant,
}

impl Entry {
    fn new(claims: Option<Arc<str>>, base_key: u64, base_store_key: &str) -> Self {
        let mut h = std::hash::DefaultHasher::new();
        base_key.hash(&mut h);
        claims.hash(&mut h);
        let store_key = match &claims {
            Some(c) => format!("{base_store_key}:claims-{:016x}", stable_hash(c.as_bytes())),
            None => base_store_key.to_string(),
        };
        Entry {
            claims,
            gate_key: h.finish(),
            store_key,
            current: ArcSwapOption::empty(),
            fresh: AtomicU64::new(0),
            installed: AtomicU64::new(0),
            fresh_timer: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            inflight: Mutex::new(None),
            generation: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            last_error: Mutex::new(None),
            rejected: AtomicU64::new(0),
        }
    }

    fn usable(&self, now: Instant) -> Option<AccessToken> {
        let cached = self.current.load();
        match cached.as_deref() {
            Some(c) if now < c.usable_until => Some(c.token.clone()),
            _ => None,
        }
    }

    fn fresh(&self, now: Instant) -> Option<AccessToken> {
        self.usable(now).filter(|t| now < t.refresh_at())
    }

    /// How long the cached token is still served, if it is.
    fn serving_for(&self, now: Instant) -> Option<Duration> {
        let cached = self.current.load();
        cached
            .as_deref()
            .filter(|c| now < c.usable_until)
            .map(|c| c.usable_until - now)
    }

    /// The cached token while it is before its refresh point, by the flag alone (the hot path).
    fn fresh_by_flag(&self) -> Option<AccessToken> {
        if self.fresh.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.current.load().as_deref().map(|c| c.token.clone())
    }

    /// Puts `cached` in (or empties the entry), returning what was there. A token before its
    /// refresh point is flagged fresh, and a timer task on the current runtime clears the flag
    /// at the refresh point; without a runtime the flag stays clear.
    fn install(self: &Arc<Self>, cached: Option<Arc<Cached>>) -> Option<Arc<Cached>> {
        self.fresh.store(0, Ordering::Release);
        let until = cached
            .as_deref()
            .map(|c| c.token.refresh_at().min(c.usable_until));
        let previous = self.current.swap(cached);
        let mut timer = lock(&self.fresh_timer);
        if let Some(old) = timer.take() {
            old.abort();
        }
        let Some(until) = until else {
            return previous;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return previous;
        };
        if Instant::now() >= until {
            return previous;
        }
        let number = self
            .installed
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            .max(1);
        self.fresh.store(number, Ordering::Release);
        let flag = FreshUntil {
            entry: Arc::downgrade(self),
            number,
        };
        let task = rt.spawn(async move {
            tokio::time::sleep_until(until).await;
            drop(flag);
        });
        *timer = Some(task.abort_handle());
        previous
    }

    /// Drops the cached token if it is `token` (by value); `true` if it did.
    fn drop_if(self: &Arc<Self>, token: &AccessToken) -> bool {
        let current = self.current.load();
        if current
            .as_deref()
            .is_some_and(|c| c.token.secret() == token.secret())
        {
            self.install(None);
            true
        } else {
            false
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(timer) = lock(&self.fresh_timer).take() {
            timer.abort();
        }
    }
}

/// Clears an entry's fresh flag when dropped — at the refresh point, or earlier if the timer
/// task is dropped — unless a later token has set it since.
struct FreshUntil {
    entry: std::sync::Weak<Entry>,
    number: u64,
}

impl Drop for FreshUntil {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.upgrade() {
            let _ =
                entry
                    .fresh
                    .compare_exchange(self.number, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    /// Bumped on every cache hit (the layers' hot path): sharded, so cores don't contend.
    hits: ShardedCounter,
    misses: AtomicU64,
    idp_requests: AtomicU64,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    throttled: AtomicU64,
    store_hits: AtomicU64,
    store_errors: AtomicU64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A snapshot of a [`TokenCache`]'s counters (rule O2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CacheStats {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that found no usable token.
    pub misses: u64,
    /// Requests sent to the identity provider.
    pub idp_requests: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Failed identity-provider requests.
    pub refresh_failures: u64,
    /// Calls answered with an error because the key was held (throttled or backing off).
    pub throttled: u64,
    /// Tokens taken from the second-level store instead of the identity provider.
    pub store_hits: u64,
    /// Store operations that failed or timed out (the cache carried on without the store).
    pub store_errors: u64,
}

impl TokenCache {
    /// A cache for `credential` and a fixed set of `scopes` (rule T8), with default settings:
    /// refresh at half the lifetime (or the server's `refresh_in`), serve until 30 s before
    /// expiry, back-off 5 s → 60 s between failed requests.
    pub fn new<C, I, S>(credential: C, scopes: I) -> Self
    where
        C: TokenCredential,
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        TokenCache::build_with(
            Arc::new(credential),
            scopes.into_iter().map(Into::into).collect(),
            Config::default(),
            None,
        )
    }

    /// A builder for the other settings.
    pub fn builder<C, I, S>(credential: C, scopes: I) -> TokenCacheBuilder
    where
        C: TokenCredential,
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let config = Config::default();
        TokenCacheBuilder {
            credential: Arc::new(credential),
            scopes: scopes.into_iter().map(Into::into).collect(),
            backoff: config.wait.backoff().clone(),
            max_server_wait: config.wait.max_server_wait(),
            cold_cap: config.wait.cold_cap(),
            config,
            store: None,
        }
    }

    fn build_with(
        credential: Arc<dyn TokenCredential>,
        scopes: Arc<[String]>,
        config: Config,
        store: Option<Arc<dyn TokenStore>>,
    ) -> Self {
        let identity = credential.identity();
        let mut h = std::hash::DefaultHasher::new();
        identity.hash(&mut h);
        scopes.hash(&mut h);
        let base_key = h.finish();
        let throttle_key = {
            let mut h = std::hash::DefaultHasher::new();
            base_key.hash(&mut h);
            "identity-throttle".hash(&mut h);
            h.finish()
        };
        let store_key = format!(
            "resilient-auth:v1:{}:{}:{}:{}:{}",
            identity.kind,
            identity.authority,
            identity.tenant.as_deref().unwrap_or("-"),
            identity.client_id.as_deref().unwrap_or("-"),
            scopes.join(" ")
        );
        TokenCache {
            inner: Arc::new(Inner {
                credential,
                identity,
                scopes,
                config,
                default_entry: Arc::new(Entry::new(None, base_key, &store_key)),
                claims_entries: Mutex::new(HashMap::new()),
                gate: ThrottleGate::default(),
                throttle_key,
                counters: Counters::default(),
                store,
                clock: WallClock::new(),
            }),
        }
    }

    /// A token for the cache's scopes.
    ///
    /// Returns the cached token at once while it is usable (refreshing it in the background
    /// past its refresh point). With nothing usable cached, it joins (or starts) the one
    /// request to the identity provider for this key.
    ///
    /// # Errors
    /// [`Error::Throttled`] while the identity provider's `Retry-After` runs; the last failure
    /// while the key backs off after one; otherwise the credential's error.
    pub async fn token(&self) -> Result<AccessToken, Error> {
        self.token_for(&self.inner.default_entry.clone(), None)
            .await
    }

    /// Like [`token`](Self::token), but waits out a throttle or back-off that ends before
    /// `deadline` instead of failing at once.
    ///
    /// # Errors
    /// As [`token`](Self::token).
    pub async fn token_before(&self, deadline: Instant) -> Result<AccessToken, Error> {
        self.token_for(&self.inner.default_entry.clone(), Some(deadline))
            .await
    }

    /// A token carrying `claims` (a JSON string from a CAE `insufficient_claims` challenge,
    /// rule A2). Each distinct claims value is its own cache key.
    ///
    /// # Errors
    /// As [`token`](Self::token).
    pub async fn token_with_claims(&self, claims: &str) -> Result<AccessToken, Error> {
        let entry = self.claims_entry(claims);
        self.token_for(&entry, None).await
    }

    /// The cached token if it is usable now, without waiting (the layers' hot path). Starts a
    /// background refresh if it is past its refresh point.
    ///
    /// Before the refresh point this is a flag check and a reference-count increment, with no
    /// clock read: a timer task on the runtime the token arrived on clears the flag at the
    /// refresh point (so a runtime too busy to run its timers starts the refresh that much
    /// later; the token is still served only until `expires_at - skew`, checked against the
    /// clock once the flag is clear). Without a runtime, every call reads the clock. In tests
    /// with a paused clock, move time with `tokio::time::sleep` rather than
    /// `tokio::time::advance`: `advance` does not run the timers it passes, so the flag is
    /// cleared only once the runtime next runs them.
    pub fn cached(&self) -> Option<AccessToken> {
        let entry = &self.inner.default_entry;
        if let Some(token) = entry.fresh_by_flag() {
            self.inner.counters.hits.bump();
            return Some(token);
        }
        let now = Instant::now();
        let token = entry.usable(now)?;
        self.inner.counters.hits.bump();
        if now >= token.refresh_at() {
            self.spawn_refresh(entry.clone());
        }
        Some(token)
    }

    /// Drops `token` everywhere after the resource rejected it with `invalid_token` (rule A3):
    /// from memory wherever this cache holds it (compared by value), and from the store, so
    /// neither this process nor a replica serves it again. The next call fetches a new one.
    pub fn invalidate(&self, token: &AccessToken) {
        let inner = &self.inner;
        let mut entries = vec![inner.default_entry.clone()];
        entries.extend(lock(&inner.claims_entries).values().cloned());
        let digest = stable_hash(token.secret().as_bytes());
        let mut dropped = false;
        for entry in &entries {
            entry.rejected.store(digest, Ordering::Relaxed);
            dropped |= entry.drop_if(token);
        }
        if dropped {
            tracing::info!(
                source = inner.identity.kind,
                "token rejected by the resource; dropped from the cache"
            );
        }
        let (Some(store), Ok(rt)) = (&inner.store, tokio::runtime::Handle::try_current()) else {
            return;
        };
        let store = store.clone();
        let this = Arc::downgrade(&self.inner);
        rt.spawn(async move {
            let Some(inner) = this.upgrade() else { return };
            let cache = TokenCache { inner };
            for entry in entries {
                let key = entry.store_key.as_str();
                let stored = cache.store_op("load", store.load(key)).await.flatten();
                if stored.is_some_and(|s| stable_hash(s.access_token.as_bytes()) == digest) {
                    cache.store_op("remove", store.remove(key)).await;
                }
            }
        });
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: c.hits.get(),
            misses: get(&c.misses),
            idp_requests: get(&c.idp_requests),
            refreshes: get(&c.refreshes),
            refresh_failures: get(&c.refresh_failures),
            throttled: get(&c.throttled),
            store_hits: get(&c.store_hits),
            store_errors: get(&c.store_errors),
        }
    }

    /// Who the credential is (no secrets).
    pub fn identity(&self) -> &CredentialIdentity {
        &self.inner.identity
    }

    /// The fixed scopes.
    pub fn scopes(&self) -> &[String] {
        &self.inner.scopes
    }

    /// The back-off between failed identity-provider requests.
    pub fn backoff(&self) -> &Backoff {
        self.inner.config.wait.backoff()
    }

    /// The second-level store's retention of refresh-token entries, if it has a persistent one.
    pub fn store_retention(&self) -> Option<Duration> {
        self.inner
            .store
            .as_ref()
            .and_then(|s| s.persistent_retention())
    }

    fn claims_entry(&self, claims: &str) -> Arc<Entry> {
        let mut map = lock(&self.inner.claims_entries);
        if let Some(e) = map.get(claims) {
            return e.clone();
        }
        if map.len() >= MAX_CLAIMS_ENTRIES {
            // Claims challenges are rare; forget the lot rather than grow without bound.
            map.clear();
        }
        let base = self.inner.default_entry.gate_key;
        let claims: Arc<str> = Arc::from(claims);
        let entry = Arc::new(Entry::new(
            Some(claims.clone()),
            base,
            &self.inner.default_entry.store_key,
        ));
        map.insert(claims, entry.clone());
        entry
    }

    async fn token_for(
        &self,
        entry: &Arc<Entry>,
        deadline: Option<Instant>,
    ) -> Result<AccessToken, Error> {
        let now = Instant::now();
        if let Some(token) = entry.usable(now) {
            self.inner.counters.hits.bump();
            if now >= token.refresh_at() {
                self.spawn_refresh(entry.clone());
            }
            return Ok(token);
        }
        bump(&self.inner.counters.misses);
        if self.inner.scopes.is_empty() {
            return Err(Error::config("a token cache needs at least one scope"));
        }
        while let Some(until) = self.held_until(entry) {
            if deadline.is_some_and(|d| until <= d) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            bump(&self.inner.counters.throttled);
            let remaining = until.saturating_duration_since(Instant::now());
            let last = lock(&entry.last_error).clone();
            return Err(match last {
                Some(e) if e.retry_after().is_none() => e,
                _ => Error::Throttled {
                    retry_after: remaining,
                },
            });
        }
        self.single_flight(entry, Entry::usable).await
    }

    /// Until when requests for `entry` are held: its own back-off, or the identity's throttle.
    fn held_until(&self, entry: &Entry) -> Option<Instant> {
        let gate = &self.inner.gate;
        gate.held_until(entry.gate_key)
            .max(gate.held_until(self.inner.throttle_key))
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("credential", &self.inner.credential)
            .field("scopes", &self.inner.scopes)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
