//! The store tier behind the in-memory cache (rules S1–S4): load, lock, fetch and save, shared
//! holds, and the wall clock stored entries are read against.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::store::{stable_hash, unix_ms, StoreHold, StoreLock, StoredToken, TokenStore};
use super::{bump, ms, Cached, Entry, TokenCache, MAX_STORE_CLOCK_SKEW};
use crate::retry::policy::{later, Failure};
use crate::token::check_lifetime;
use crate::{AccessToken, Error};

/// Wall-clock time derived from the monotonic clock: the wall time when the cache was built
/// plus monotonic time since. Stored entries need wall time (other processes read them); deriving
/// it this way keeps it consistent with the cache's `Instant`s (and with paused-time tests), and
/// a wall-clock step during the run cannot make a token look fresher or older than it is.
#[derive(Debug)]
pub(super) struct WallClock {
    wall: u64,
    mono: Instant,
}

impl WallClock {
    pub(super) fn new() -> Self {
        WallClock {
            wall: unix_ms(SystemTime::now()),
            mono: Instant::now(),
        }
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.wall.saturating_add(ms(self.mono.elapsed()))
    }
}

/// What reading the store gave.
pub(super) enum StoreRead {
    /// A token the caller can use.
    Token(AccessToken),
    /// The store answered, with nothing usable.
    Miss,
    /// The store failed or timed out (logged and counted).
    Unreachable,
}

impl TokenCache {
    /// The store-backed fetch: the store's entry if it will do; else take the store lock and
    /// fetch (one process fetches, the others wait briefly for its entry); a store that fails
    /// or is slow never fails the call — the cache falls back to fetching directly (S3).
    pub(super) async fn fetch_via_store(
        &self,
        store: &dyn TokenStore,
        entry: &Arc<Entry>,
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
    pub(super) async fn fetch_holding_lock(
        &self,
        store: &dyn TokenStore,
        entry: &Arc<Entry>,
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
    pub(super) async fn check_store_hold(
        &self,
        store: &dyn TokenStore,
        entry: &Arc<Entry>,
    ) -> Result<(), Error> {
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

    pub(super) async fn fetch_and_save(
        &self,
        store: &dyn TokenStore,
        entry: &Arc<Entry>,
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

    pub(super) async fn release(&self, store: &dyn TokenStore, held: &StoreLock) {
        self.store_op("unlock", store.unlock(held)).await;
    }

    /// The store's entry as a cached token, if it is readable and `accept` takes it.
    pub(super) async fn load_from_store(
        &self,
        store: &dyn TokenStore,
        entry: &Arc<Entry>,
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
    pub(super) fn accept_stored(
        &self,
        stored: Option<StoredToken>,
        entry: &Arc<Entry>,
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
        let previous = entry.install(Some(Arc::new(cached)));
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
                entry.install(previous);
                None
            }
        }
    }

    /// Runs one store operation with the store timeout; `None` (logged, counted) if it failed.
    pub(super) async fn store_op<T>(
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
    pub(super) fn cached_from_stored(&self, stored: &StoredToken) -> Result<Cached, Error> {
        let now_ms = self.inner.clock.now_ms();
        let now = Instant::now();
        let at = |ms: u64| later(now, Duration::from_millis(ms.saturating_sub(now_ms)));
        let lifetime =
            Duration::from_millis(stored.expires_on_ms.saturating_sub(stored.issued_on_ms));
        if check_lifetime(lifetime).is_err() {
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
}
