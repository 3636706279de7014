//! The fetch path: single-flight (T4, T9), the identity-provider request and its back-off (T5,
//! T12, T13), the refresh point (T2, T10) and background refresh (T3, T11).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use futures_util::future::FutureExt;
use tokio::time::Instant;

use super::store::StoredToken;
use super::{bump, lock, ms, Cached, Entry, Inner, TokenCache};
use crate::retry::policy::{later, Failure};
use crate::token::{check_lifetime, refresh_point};
use crate::{AccessToken, Error, TokenRequest, TokenResponse};

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

impl TokenCache {
    /// Joins the entry's fetch in flight, or starts one. `accept` says whether a token already
    /// cached makes the fetch unnecessary (usable for callers, fresh for the refresher).
    pub(super) async fn single_flight(
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
    pub(super) async fn fetch(
        &self,
        entry: &Arc<Entry>,
        accept: fn(&Entry, Instant) -> Option<AccessToken>,
    ) -> Result<AccessToken, Error> {
        match &self.inner.store {
            Some(store) => self.fetch_via_store(store.as_ref(), entry, accept).await,
            None => self.fetch_from_idp(entry).await.map(|(t, _)| t),
        }
    }

    /// One request to the identity provider; stores the token in memory or sets the gate.
    pub(super) async fn fetch_from_idp(
        &self,
        entry: &Arc<Entry>,
    ) -> Result<(AccessToken, StoredToken), Error> {
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
                    inner.default_entry.install(Some(cached.clone()));
                }
                entry.install(Some(cached));
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

    pub(super) fn on_failure(&self, entry: &Arc<Entry>, error: &Error) {
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

    pub(super) fn make_token(
        &self,
        resp: TokenResponse,
        start: Instant,
    ) -> Result<(Cached, StoredToken), Error> {
        let lifetime = resp.expires_in;
        check_lifetime(lifetime)?;
        let cfg = &self.inner.config;
        let expires_at = start + lifetime;
        let serve_for = lifetime - cfg.skew.min(lifetime / 4);
        let refresh_after =
            refresh_point(resp.refresh_in, lifetime, serve_for, &cfg.refresh_plan());
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

    pub(super) fn spawn_refresh(&self, entry: Arc<Entry>) {
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
