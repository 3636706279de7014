//! [`TokenCache`]: cached tokens that survive identity-provider trouble (rules T2–T7, O1, O2).
//!
//! - **Hot path** (a token is cached and usable): one atomic load, no lock a refresh could
//!   hold, no allocation; the `Authorization` header value was built when the token arrived.
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
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

#[cfg(any(feature = "file-store", feature = "redis"))]
pub(crate) mod codec;
#[cfg(feature = "file-store")]
pub(crate) mod file;
#[cfg(feature = "redis")]
pub(crate) mod redis;
pub(crate) mod store;

use store::{stable_hash, unix_ms, StoreHold, StoreLock, StoredToken, TokenStore};

use crate::retry::policy::{later, Failure, WaitPolicy};
use crate::retry::throttle::ThrottleGate;
use crate::retry::Backoff;
use crate::{AccessToken, CredentialIdentity, Error, TokenCredential, TokenRequest, TokenResponse};

/// The longest token lifetime accepted (T1).
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// How many distinct claims sets a cache keeps (X3).
const MAX_CLAIMS_ENTRIES: usize = 64;
/// The shortest refresh period (T10): however short the server's `refresh_in`, a key is not
/// refreshed more often than this (nor later than its token stops being served).
const MIN_REFRESH_PERIOD: Duration = Duration::from_secs(5);
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

/// Wall-clock time derived from the monotonic clock: the wall time when the cache was built
/// plus monotonic time since. Stored entries need wall time (other processes read them); deriving
/// it this way keeps it consistent with the cache's `Instant`s (and with paused-time tests), and
/// a wall-clock step during the run cannot make a token look fresher or older than it is.
#[derive(Debug)]
struct WallClock {
    wall: u64,
    mono: Instant,
}

impl WallClock {
    fn new() -> Self {
        WallClock {
            wall: unix_ms(SystemTime::now()),
            mono: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.wall.saturating_add(ms(self.mono.elapsed()))
    }
}

#[derive(Debug, Clone)]
struct Config {
    skew: Duration,
    refresh_ratio: f64,
    max_jitter: Duration,
    wait: WaitPolicy,
    fetch_timeout: Duration,
    store_timeout: Duration,
    store_lock_ttl: Duration,
    store_peer_wait: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            skew: Duration::from_secs(30),
            refresh_ratio: 0.5,
            max_jitter: Duration::from_secs(60),
            wait: WaitPolicy::default(),
            fetch_timeout: Duration::from_secs(30),
            store_timeout: Duration::from_millis(250),
            store_lock_ttl: Duration::from_secs(40),
            store_peer_wait: None,
        }
    }
}

impl Config {
    /// How long a process waits for another's fetch (S4): as long as the lock holder may
    /// legitimately take — its fetch timeout plus its store operations — unless set.
    fn peer_wait(&self) -> Duration {
        self.store_peer_wait
            .unwrap_or_else(|| self.fetch_timeout + self.store_timeout * 4)
    }
}

type SharedFetch = Shared<BoxFuture<'static, Result<AccessToken, Error>>>;

struct Entry {
    claims: Option<Arc<str>>,
    gate_key: u64,
    store_key: String,
    current: ArcSwapOption<Cached>,
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

    /// Drops the cached token if it is `token` (by value); `true` if it did.
    fn drop_if(&self, token: &AccessToken) -> bool {
        let current = self.current.load();
        if current
            .as_deref()
            .is_some_and(|c| c.token.secret() == token.secret())
        {
            self.current.store(None);
            true
        } else {
            false
        }
    }
}

/// What reading the store gave.
enum StoreRead {
    /// A token the caller can use.
    Token(AccessToken),
    /// The store answered, with nothing usable.
    Miss,
    /// The store failed or timed out (logged and counted).
    Unreachable,
}

/// Clears an entry's single-flight slot when its fetch ends, however it ends (T9): completed,
/// failed, panicked or cancelled. A fetch that did not complete counts as a failure and is
/// backed off, so the next caller after the back-off starts a new one.
struct SlotGuard {
    cache: Weak<Inner>,
    entry: Arc<Entry>,
    generation: u64,
    completed: bool,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        {
            let mut slot = lock(&self.entry.inflight);
            if slot.as_ref().is_some_and(|(g, _)| *g == self.generation) {
                *slot = None;
            }
        }
        if !self.completed {
            if let Some(inner) = self.cache.upgrade() {
                let error = Error::Unavailable {
                    what: "token fetch (it panicked or was cancelled)",
                    source: None,
                };
                TokenCache { inner }.on_failure(&self.entry, &error);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
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
    pub fn cached(&self) -> Option<AccessToken> {
        let entry = &self.inner.default_entry;
        let now = Instant::now();
        let token = entry.usable(now)?;
        bump(&self.inner.counters.hits);
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
            hits: get(&c.hits),
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
            bump(&self.inner.counters.hits);
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

    /// Joins the entry's fetch in flight, or starts one. `accept` says whether a token already
    /// cached makes the fetch unnecessary (usable for callers, fresh for the refresher).
    async fn single_flight(
        &self,
        entry: &Arc<Entry>,
        accept: fn(&Entry, Instant) -> Option<AccessToken>,
    ) -> Result<AccessToken, Error> {
        let fut = {
            let mut slot = lock(&entry.inflight);
            if let Some(token) = accept(entry, Instant::now()) {
                return Ok(token);
            }
            match &*slot {
                Some((_, f)) => f.clone(),
                None => {
                    let generation = entry.generation.fetch_add(1, Ordering::Relaxed);
                    let mut guard = SlotGuard {
                        cache: Arc::downgrade(&self.inner),
                        entry: entry.clone(),
                        generation,
                        completed: false,
                    };
                    let this = self.clone();
                    let e = entry.clone();
                    let fetch = async move {
                        let result = this.fetch(&e, accept).await;
                        guard.completed = true;
                        drop(guard);
                        result
                    };
                    // On a Tokio runtime the fetch is its own task, so it completes (and fills
                    // the cache) even if every caller waiting on it goes away. Its guard clears
                    // the slot however it ends, a panic included (T9).
                    let f = match tokio::runtime::Handle::try_current() {
                        Ok(rt) => {
                            let handle = rt.spawn(fetch);
                            async move {
                                handle.await.unwrap_or_else(|join| {
                                    Err(Error::unavailable("token fetch task", join))
                                })
                            }
                            .boxed()
                        }
                        Err(_) => fetch.boxed(),
                    }
                    .shared();
                    *slot = Some((generation, f.clone()));
                    f
                }
            }
        };
        fut.await
    }

    /// Gets a token for the entry: from the store (if any), else with one request to the
    /// identity provider; clears the entry's in-flight slot.
    async fn fetch(
        &self,
        entry: &Entry,
        accept: fn(&Entry, Instant) -> Option<AccessToken>,
    ) -> Result<AccessToken, Error> {
        match &self.inner.store {
            Some(store) => self.fetch_via_store(store.as_ref(), entry, accept).await,
            None => self.fetch_from_idp(entry).await.map(|(t, _)| t),
        }
    }

    /// One request to the identity provider; stores the token in memory or sets the gate.
    async fn fetch_from_idp(&self, entry: &Entry) -> Result<(AccessToken, StoredToken), Error> {
        let inner = &self.inner;
        let mut request = TokenRequest::new(inner.scopes.iter().cloned());
        request.claims = entry.claims.clone();
        bump(&inner.counters.idp_requests);
        let start = Instant::now();
        let timeout = inner.config.fetch_timeout;
        let result =
            match tokio::time::timeout(timeout, inner.credential.get_token(&request)).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout { after: timeout }),
            }
            .and_then(|resp| self.make_token(resp, start));
        match result {
            Ok((cached, stored)) => {
                let token = cached.token.clone();
                let cached = Arc::new(cached);
                if entry.claims.is_some() {
                    // T12: the token that satisfied a CAE challenge is the one later requests
                    // get, until it expires or a new challenge arrives.
                    inner.default_entry.current.store(Some(cached.clone()));
                }
                entry.current.store(Some(cached));
                entry.failures.store(0, Ordering::Relaxed);
                *lock(&entry.last_error) = None;
                tracing::info!(
                    source = inner.identity.kind,
                    lifetime_s = token
                        .expires_at()
                        .saturating_duration_since(start)
                        .as_secs(),
                    refresh_in_s = token
                        .refresh_at()
                        .saturating_duration_since(start)
                        .as_secs(),
                    claims = entry.claims.is_some(),
                    "token fetched"
                );
                Ok((token, stored))
            }
            Err(e) => {
                self.on_failure(entry, &e);
                Err(e)
            }
        }
    }

    /// The store-backed fetch: the store's entry if it will do; else take the store lock and
    /// fetch (one process fetches, the others wait briefly for its entry); a store that fails
    /// or is slow never fails the call — the cache falls back to fetching directly (S3).
    async fn fetch_via_store(
        &self,
        store: &dyn TokenStore,
        entry: &Entry,
        accept: fn(&Entry, Instant) -> Option<AccessToken>,
    ) -> Result<AccessToken, Error> {
        let cfg = &self.inner.config;
        let key = entry.store_key.as_str();
        match self.load_from_store(store, entry, accept).await {
            StoreRead::Token(t) => return Ok(t),
            StoreRead::Miss => self.check_store_hold(store, entry).await?,
            StoreRead::Unreachable => {}
        }
        match self
            .store_op("lock", store.lock(key, cfg.store_lock_ttl))
            .await
        {
            Some(Some(held)) => {
                let result = self.fetch_holding_lock(store, entry, accept).await;
                self.release(store, &held).await;
                result
            }
            Some(None) => {
                // Another process is fetching (S4): wait as long as it may legitimately take,
                // for its token, its hold, or its lock to go.
                let until = later(Instant::now(), cfg.peer_wait());
                let mut poll = Duration::from_millis(50);
                while Instant::now() < until {
                    tokio::time::sleep(poll).await;
                    poll = (poll * 2).min(Duration::from_millis(500));
                    match self.load_from_store(store, entry, accept).await {
                        StoreRead::Token(t) => return Ok(t),
                        StoreRead::Miss => self.check_store_hold(store, entry).await?,
                        StoreRead::Unreachable => {}
                    }
                    if let Some(Some(held)) = self
                        .store_op("lock", store.lock(key, cfg.store_lock_ttl))
                        .await
                    {
                        // The holder went away without a token: this process fetches.
                        let result = self.fetch_holding_lock(store, entry, accept).await;
                        self.release(store, &held).await;
                        return result;
                    }
                }
                tracing::warn!(
                    key,
                    "store lock holder produced no token in time; fetching directly"
                );
                self.fetch_and_save(store, entry).await
            }
            None => self.fetch_and_save(store, entry).await,
        }
    }

    /// With the store lock held: the store's entry if a peer saved one meanwhile, else a fetch.
    async fn fetch_holding_lock(
        &self,
        store: &dyn TokenStore,
        entry: &Entry,
        accept: fn(&Entry, Instant) -> Option<AccessToken>,
    ) -> Result<AccessToken, Error> {
        match self.load_from_store(store, entry, accept).await {
            StoreRead::Token(t) => return Ok(t),
            StoreRead::Miss => self.check_store_hold(store, entry).await?,
            StoreRead::Unreachable => {}
        }
        self.fetch_and_save(store, entry).await
    }

    /// A hold another process recorded in the store (S4) holds this process too: `Err` (the
    /// caller's answer) while it runs.
    async fn check_store_hold(&self, store: &dyn TokenStore, entry: &Entry) -> Result<(), Error> {
        let Some(hold) = self
            .store_op("load hold", store.load_hold(&entry.store_key))
            .await
            .flatten()
        else {
            return Ok(());
        };
        let now_ms = self.inner.clock.now_ms();
        if hold.until_ms <= now_ms {
            return Ok(());
        }
        let wait = Duration::from_millis(hold.until_ms - now_ms)
            .min(self.inner.config.wait.max_server_wait());
        let until = later(Instant::now(), wait);
        let key = if hold.server_directed {
            self.inner.throttle_key
        } else {
            entry.gate_key
        };
        self.inner.gate.hold(key, until);
        bump(&self.inner.counters.throttled);
        tracing::info!(
            source = self.inner.identity.kind,
            wait_ms = ms(wait),
            server_directed = hold.server_directed,
            "another process holds token requests for this key; holding too"
        );
        Err(if hold.server_directed {
            Error::Throttled { retry_after: wait }
        } else {
            Error::Unavailable {
                what: "identity provider (another process's request failed; backing off)",
                source: None,
            }
        })
    }

    async fn fetch_and_save(
        &self,
        store: &dyn TokenStore,
        entry: &Entry,
    ) -> Result<AccessToken, Error> {
        match self.fetch_from_idp(entry).await {
            Ok((token, stored)) => {
                self.store_op("save", store.save(&entry.store_key, &stored))
                    .await;
                Ok(token)
            }
            Err(e) => {
                // S4: the others hold as long as this process does.
                if let Some(until) = self.held_until(entry) {
                    let now_ms = self.inner.clock.now_ms();
                    let wait = until.saturating_duration_since(Instant::now());
                    let hold = StoreHold::new(
                        now_ms,
                        now_ms.saturating_add(ms(wait)),
                        Failure::of_error(&e).server_wait().is_some(),
                    );
                    self.store_op("save hold", store.save_hold(&entry.store_key, hold))
                        .await;
                }
                Err(e)
            }
        }
    }

    async fn release(&self, store: &dyn TokenStore, held: &StoreLock) {
        self.store_op("unlock", store.unlock(held)).await;
    }

    /// The store's entry as a cached token, if it is readable and `accept` takes it.
    async fn load_from_store(
        &self,
        store: &dyn TokenStore,
        entry: &Entry,
        accept: fn(&Entry, Instant) -> Option<AccessToken>,
    ) -> StoreRead {
        let Some(stored) = self.store_op("load", store.load(&entry.store_key)).await else {
            return StoreRead::Unreachable;
        };
        match self.accept_stored(stored, entry, accept) {
            Some(t) => StoreRead::Token(t),
            None => StoreRead::Miss,
        }
    }

    /// A stored entry as the entry's token, if it is readable, not rejected, and `accept`
    /// takes it.
    fn accept_stored(
        &self,
        stored: Option<StoredToken>,
        entry: &Entry,
        accept: fn(&Entry, Instant) -> Option<AccessToken>,
    ) -> Option<AccessToken> {
        let stored = stored?;
        if stored.access_token.is_empty() {
            return None;
        }
        if stable_hash(stored.access_token.as_bytes()) == entry.rejected.load(Ordering::Relaxed) {
            // A3: the resource rejected this token; a peer's copy is no better.
            tracing::debug!("store entry holds a rejected token; ignored");
            return None;
        }
        let cached = match self.cached_from_stored(&stored) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "unusable store entry ignored");
                return None;
            }
        };
        let now = Instant::now();
        if now >= cached.usable_until {
            return None;
        }
        let previous = entry.current.swap(Some(Arc::new(cached)));
        match accept(entry, now) {
            Some(t) => {
                bump(&self.inner.counters.store_hits);
                tracing::debug!(
                    source = self.inner.identity.kind,
                    "token taken from the store"
                );
                Some(t)
            }
            None => {
                entry.current.store(previous);
                None
            }
        }
    }

    /// Runs one store operation with the store timeout; `None` (logged, counted) if it failed.
    async fn store_op<T>(
        &self,
        what: &'static str,
        op: BoxFuture<'_, Result<T, Error>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.inner.config.store_timeout, op).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                bump(&self.inner.counters.store_errors);
                tracing::warn!(op = what, error = %e, "token store failed; carrying on without it");
                None
            }
            Err(_) => {
                bump(&self.inner.counters.store_errors);
                tracing::warn!(
                    op = what,
                    timeout_ms = self.inner.config.store_timeout.as_millis() as u64,
                    "token store timed out; carrying on without it"
                );
                None
            }
        }
    }

    /// A stored token as a cached one (wall clock to monotonic clock).
    fn cached_from_stored(&self, stored: &StoredToken) -> Result<Cached, Error> {
        let now_ms = self.inner.clock.now_ms();
        let now = Instant::now();
        let at = |ms: u64| now + Duration::from_millis(ms.saturating_sub(now_ms));
        let lifetime =
            Duration::from_millis(stored.expires_on_ms.saturating_sub(stored.issued_on_ms));
        if lifetime.is_zero() || lifetime > MAX_LIFETIME {
            return Err(Error::invalid_response(
                "stored token has an absurd lifetime",
            ));
        }
        // S4: an entry issued in the future (beyond clock skew) is not trusted.
        if stored.issued_on_ms > now_ms.saturating_add(ms(MAX_STORE_CLOCK_SKEW)) {
            return Err(Error::invalid_response(
                "stored token was issued in the future",
            ));
        }
        let expires_at = at(stored.expires_on_ms);
        let usable_until = expires_at
            .checked_sub(self.inner.config.skew.min(lifetime / 4))
            .unwrap_or(now);
        let refresh_at = at(stored.refresh_on_ms).min(usable_until);
        let token = AccessToken::new(stored.access_token.clone(), expires_at, refresh_at)?;
        Ok(Cached {
            token,
            usable_until,
        })
    }

    fn on_failure(&self, entry: &Entry, error: &Error) {
        let inner = &self.inner;
        bump(&inner.counters.refresh_failures);
        let n = entry.failures.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let failure = Failure::of_error(error);
        let wait = inner
            .config
            .wait
            .refresh_wait(failure, n, entry.serving_for(now));
        let until = later(now, wait);
        inner.gate.hold(entry.gate_key, until);
        if let Some(server) = failure.server_wait() {
            // T12: the identity provider's wait holds every request of this identity.
            let server = server.min(inner.config.wait.max_server_wait());
            inner.gate.hold(inner.throttle_key, later(now, server));
        }
        *lock(&entry.last_error) = Some(error.clone());
        tracing::warn!(
            source = inner.identity.kind,
            error = %error,
            failures = n + 1,
            next_attempt_in_ms = wait.as_millis() as u64,
            "token request failed"
        );
    }

    fn make_token(
        &self,
        resp: TokenResponse,
        start: Instant,
    ) -> Result<(Cached, StoredToken), Error> {
        let lifetime = resp.expires_in;
        if lifetime.is_zero() || lifetime > MAX_LIFETIME {
            return Err(Error::invalid_response(format!(
                "token lifetime {lifetime:?} is outside (0, 7 days]"
            )));
        }
        let cfg = &self.inner.config;
        let expires_at = start + lifetime;
        let serve_for = lifetime - cfg.skew.min(lifetime / 4);
        let refresh_after = refresh_point(resp.refresh_in, lifetime, serve_for, cfg);
        let usable_until = start + serve_for;
        let issued_ms = self
            .inner
            .clock
            .now_ms()
            .saturating_sub(ms(start.elapsed()));
        let stored = StoredToken {
            access_token: resp.access_token.clone(),
            issued_on_ms: issued_ms,
            refresh_on_ms: issued_ms.saturating_add(ms(refresh_after)),
            expires_on_ms: issued_ms.saturating_add(ms(lifetime)),
            refresh_token: resp.refresh_token.clone(),
        };
        let token = AccessToken::new(resp.access_token, expires_at, start + refresh_after)?;
        Ok((
            Cached {
                token,
                usable_until,
            },
            stored,
        ))
    }

    fn spawn_refresh(&self, entry: Arc<Entry>) {
        if entry
            .refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // Not on a Tokio runtime: no background task; the token is refreshed by the first
            // async `token()` call once it is no longer usable.
            entry.refreshing.store(false, Ordering::Release);
            return;
        };
        bump(&self.inner.counters.refreshes);
        // T11: the task holds a weak handle; once every handle is dropped it stops.
        let cache = Arc::downgrade(&self.inner);
        rt.spawn(async move {
            let _reset = ResetOnDrop(&entry.refreshing);
            refresh_loop(cache, &entry).await;
        });
    }
}

/// Clears the entry's "refreshing" flag however the task ends (T9).
struct ResetOnDrop<'a>(&'a AtomicBool);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Refreshes until it succeeds, someone else refreshed, the old token is no longer usable (then
/// callers take the cold path), or the cache is gone (T11).
async fn refresh_loop(cache: Weak<Inner>, entry: &Arc<Entry>) {
    loop {
        let held = {
            let Some(inner) = cache.upgrade() else { return };
            TokenCache { inner }.held_until(entry)
        };
        if let Some(until) = held {
            tokio::time::sleep_until(until).await;
        }
        let Some(inner) = cache.upgrade() else {
            tracing::debug!("token cache dropped; background refresh stopped");
            return;
        };
        let this = TokenCache { inner };
        let now = Instant::now();
        if entry.usable(now).is_none() || entry.fresh(now).is_some() {
            return;
        }
        tracing::debug!(
            source = this.inner.identity.kind,
            "refreshing token ahead of expiry"
        );
        if this.single_flight(entry, Entry::fresh).await.is_ok() {
            return;
        }
    }
}

/// The refresh point after issue (T2, T10): the server's `refresh_in` if given, else
/// `refresh_ratio` of the lifetime; never after the token stops being served (`serve_for`),
/// never sooner than [`MIN_REFRESH_PERIOD`] (nor than half the serving time, for very short
/// tokens). The jitter moves it earlier by at most 5 % of the time to it (and at most
/// `max_jitter`), so it never lies in the past.
fn refresh_point(
    refresh_in: Option<Duration>,
    lifetime: Duration,
    serve_for: Duration,
    cfg: &Config,
) -> Duration {
    let wanted = match refresh_in {
        Some(r) if !r.is_zero() => r,
        _ => lifetime.mul_f64(cfg.refresh_ratio),
    };
    // Leave a tenth of the serving time (at least the back-off floor, where it fits) to retry
    // a failed refresh before the token stops being served.
    let margin = (serve_for / 10).max(cfg.wait.backoff().initial().min(serve_for / 2));
    let latest = serve_for.saturating_sub(margin);
    let earliest = MIN_REFRESH_PERIOD.min(serve_for / 2);
    let point = wanted.min(latest).max(earliest);
    let jitter_cap = cfg.max_jitter.min(point / 20);
    point.saturating_sub(jitter_cap.mul_f64(fastrand::f64()))
}

impl TokenCache {}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("credential", &self.inner.credential)
            .field("scopes", &self.inner.scopes)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TokenCache`] with non-default settings.
pub struct TokenCacheBuilder {
    credential: Arc<dyn TokenCredential>,
    scopes: Arc<[String]>,
    config: Config,
    backoff: Backoff,
    max_server_wait: Duration,
    cold_cap: Duration,
    store: Option<Arc<dyn TokenStore>>,
}

impl fmt::Debug for TokenCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCacheBuilder")
            .field("credential", &self.credential)
            .field("scopes", &self.scopes)
            .field("config", &self.config)
            .field("store", &self.store)
            .finish()
    }
}

impl TokenCacheBuilder {
    /// A second-level store behind the in-memory cache (rule S1): read memory first, then the
    /// store, then the credential — holding the store's lock, so that processes sharing the
    /// store make one identity-provider request per token. A failing or slow store never fails
    /// a call.
    #[must_use]
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The longest a single store operation may take before the cache carries on without it
    /// (default 250 ms).
    #[must_use]
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// How long the store lock is held at most (default 30 s; it is released as soon as the
    /// fetch ends).
    #[must_use]
    pub fn store_lock_ttl(mut self, ttl: Duration) -> Self {
        self.config.store_lock_ttl = ttl;
        self
    }

    /// How long to wait for another process's fetch before fetching directly (default: as
    /// long as the lock holder may legitimately take — the fetch timeout plus four store
    /// operations; rule S4). A waiting process takes the peer's token, or its hold, as soon as
    /// it appears, and fetches itself as soon as the peer's lock goes.
    #[must_use]
    pub fn store_peer_wait(mut self, wait: Duration) -> Self {
        self.config.store_peer_wait = Some(wait);
        self
    }

    /// The longest one identity-provider request may take, the credential's own retries
    /// included (default 30 s). A fetch that takes longer counts as a timeout and is backed
    /// off (T9); the store lock's TTL should exceed it.
    #[must_use]
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.config.fetch_timeout = timeout;
        self
    }

    /// The cap on the back-off of a key that has no usable token (default 10 s, never below
    /// the back-off's first delay; rule T13). While nothing can be served every caller fails,
    /// so each second of back-off past the end of an outage is an outage of its own: a cold
    /// key retries every 5, 10, 10, … s. A key that still serves a token keeps the full
    /// back-off (to 60 s), each attempt early enough to refresh before the token stops being
    /// served. Raise it to spare an identity provider that is down for long; lower it (to the
    /// floor) to recover sooner.
    #[must_use]
    pub fn cold_backoff_cap(mut self, cap: Duration) -> Self {
        self.cold_cap = cap;
        self
    }

    /// The cap on a wait the identity provider asks for with `Retry-After` (default 5 min, at
    /// most 1 h; rule R8). A longer one holds the key for the cap, then it is tried again.
    #[must_use]
    pub fn max_server_wait(mut self, cap: Duration) -> Self {
        self.max_server_wait = cap;
        self
    }

    /// A token stops being served this long before it expires (default 30 s; at most a
    /// quarter of a token's lifetime is taken).
    #[must_use]
    pub fn skew(mut self, skew: Duration) -> Self {
        self.config.skew = skew;
        self
    }

    /// Where in its lifetime a token is refreshed when the server gives no `refresh_in`
    /// (default 0.5: MSAL does this only for tokens of 2 h or more; half a lifetime of outage
    /// margin is worth one more request per token).
    #[must_use]
    pub fn refresh_ratio(mut self, ratio: f64) -> Self {
        self.config.refresh_ratio = ratio;
        self
    }

    /// The most the refresh point is moved earlier at random, to spread replicas (default
    /// 60 s, and never more than 5 % of the lifetime).
    #[must_use]
    pub fn max_refresh_jitter(mut self, jitter: Duration) -> Self {
        self.config.max_jitter = jitter;
        self
    }

    /// The back-off between failed identity-provider requests (default 5 s, ×2, cap 60 s).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// [`Error::Config`] for no scopes, a refresh ratio outside (0, 1], a zero store or
    /// fetch timeout, or a server-wait cap outside (0, 1 h].
    pub fn build(mut self) -> Result<TokenCache, Error> {
        self.config.wait = WaitPolicy::new(self.backoff, self.max_server_wait, self.cold_cap)?;
        if self.config.fetch_timeout.is_zero() {
            return Err(Error::config("fetch timeout must be > 0"));
        }
        if self.scopes.is_empty() || self.scopes.iter().any(|s| s.trim().is_empty()) {
            return Err(Error::config(
                "a token cache needs at least one non-empty scope",
            ));
        }
        let r = self.config.refresh_ratio;
        if !(r > 0.0 && r <= 1.0) {
            return Err(Error::config(format!(
                "refresh ratio must be within (0, 1], got {r}"
            )));
        }
        if self.config.store_timeout.is_zero() || self.config.store_lock_ttl.is_zero() {
            return Err(Error::config("store timeout and lock ttl must be > 0"));
        }
        Ok(TokenCache::build_with(
            self.credential,
            self.scopes,
            self.config,
            self.store,
        ))
    }
}
