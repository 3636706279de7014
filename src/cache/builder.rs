//! [`TokenCacheBuilder`] and the cache's settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::store::TokenStore;
use super::TokenCache;
use crate::retry::policy::WaitPolicy;
use crate::retry::Backoff;
use crate::token::RefreshPlan;
use crate::{Error, TokenCredential};

#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) skew: Duration,
    pub(super) refresh_ratio: f64,
    pub(super) max_jitter: Duration,
    pub(super) wait: WaitPolicy,
    pub(super) fetch_timeout: Duration,
    pub(super) store_timeout: Duration,
    pub(super) store_lock_ttl: Duration,
    pub(super) store_peer_wait: Option<Duration>,
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
    /// The settings of the refresh point (T2, T10).
    pub(super) fn refresh_plan(&self) -> RefreshPlan {
        RefreshPlan {
            refresh_ratio: self.refresh_ratio,
            max_jitter: self.max_jitter,
            retry_floor: self.wait.backoff().initial(),
        }
    }

    /// How long a process waits for another's fetch (S4): as long as the lock holder may
    /// legitimately take — its fetch timeout plus its store operations — unless set.
    pub(super) fn peer_wait(&self) -> Duration {
        self.store_peer_wait
            .unwrap_or_else(|| self.fetch_timeout + self.store_timeout * 4)
    }
}

/// Builds a [`TokenCache`] with non-default settings.
pub struct TokenCacheBuilder {
    pub(super) credential: Arc<dyn TokenCredential>,
    pub(super) scopes: Arc<[String]>,
    pub(super) config: Config,
    pub(super) backoff: Backoff,
    pub(super) max_server_wait: Duration,
    pub(super) cold_cap: Duration,
    pub(super) store: Option<Arc<dyn TokenStore>>,
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
