//! The IMDS retry loop (MSAL's IMDS policy): 404, 408, 410, 429, 5xx, connection errors and
//! timeouts are retried with exponential back-off, never sooner than a `Retry-After`; a 410
//! (IMDS upgrading) is retried every 10 s until 70 s have passed since the first one.

use std::future::Future;
use std::time::Duration;

use http::StatusCode;
use tokio::time::{sleep, Instant};

use crate::retry::Backoff;
use crate::{Error, TokenResponse};

/// The wait between attempts after a 410.
pub(crate) const GONE_INTERVAL: Duration = Duration::from_secs(10);
/// How long after the first 410 the loop keeps trying.
pub(crate) const GONE_WINDOW: Duration = Duration::from_secs(70);
/// A server wait longer than this ends the loop: the token cache's throttle gate holds it.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(60);

/// MSAL's IMDS back-off: 1 s, ×2, cap 4 s, at most 3 retries (plus 20 % additive jitter).
pub(crate) fn default_backoff() -> Result<Backoff, Error> {
    Backoff::builder()
        .initial(Duration::from_secs(1))
        .factor(2.0)
        .max(Duration::from_secs(4))
        .max_retries(3)
        .build()
}

/// The retry policy of the IMDS source.
#[derive(Debug, Clone)]
pub(crate) struct ImdsRetry {
    backoff: Backoff,
    gone_interval: Duration,
    gone_window: Duration,
}

impl ImdsRetry {
    pub(crate) fn new(
        backoff: Backoff,
        gone_interval: Duration,
        gone_window: Duration,
    ) -> Result<Self, Error> {
        if gone_interval.is_zero() || gone_interval > gone_window {
            return Err(Error::config(
                "IMDS 410 retry interval must be > 0 and not longer than its window",
            ));
        }
        if gone_window > Duration::from_secs(600) {
            return Err(Error::config(
                "IMDS 410 retry window must be at most 10 min",
            ));
        }
        Ok(ImdsRetry {
            backoff,
            gone_interval,
            gone_window,
        })
    }

    /// Runs `attempt` until it succeeds, fails with an error IMDS does not retry, or the policy
    /// gives up; returns the last outcome.
    pub(crate) async fn run<F, Fut>(&self, mut attempt: F) -> Result<TokenResponse, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<TokenResponse, Error>>,
    {
        let mut retries = 0u32;
        let mut first_gone: Option<Instant> = None;
        loop {
            let error = match attempt().await {
                Ok(token) => return Ok(token),
                Err(e) => e,
            };
            let status = match &error {
                Error::IdentityProvider { status, .. } if retried(*status) => Some(*status),
                Error::Unavailable { .. } | Error::Timeout { .. } => None,
                _ => return Err(error),
            };
            let server_wait = error.retry_after().unwrap_or_default();
            let delay = if status == Some(StatusCode::GONE) {
                let since = *first_gone.get_or_insert_with(Instant::now);
                let delay = self.gone_interval.max(server_wait);
                if since.elapsed() + delay > self.gone_window {
                    tracing::debug!(
                        source = "imds",
                        status = 410,
                        "IMDS still upgrading, giving up"
                    );
                    return Err(error);
                }
                delay
            } else {
                if retries >= self.backoff.max_retries() {
                    tracing::debug!(
                        source = "imds",
                        status = status.map(|s| s.as_u16()),
                        retries,
                        "IMDS retries exhausted"
                    );
                    return Err(error);
                }
                let delay = self.backoff.delay(retries).max(server_wait);
                retries += 1;
                delay
            };
            if delay > MAX_INLINE_WAIT {
                tracing::debug!(
                    source = "imds",
                    wait_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "IMDS asked for a long wait, leaving it to the token cache"
                );
                return Err(error);
            }
            tracing::debug!(
                source = "imds",
                status = status.map(|s| s.as_u16()),
                error = %error,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "retrying IMDS"
            );
            sleep(delay).await;
        }
    }
}

/// The statuses MSAL retries on IMDS.
fn retried(status: StatusCode) -> bool {
    matches!(status.as_u16(), 404 | 408 | 410 | 429) || status.is_server_error()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use http::HeaderMap;

    use crate::credential::managed_identity::mi_error;

    /// One scripted answer: success, or a status (0 = connection error) with a Retry-After.
    type Step = Result<(), (u16, Option<&'static str>)>;

    /// A scripted IMDS: each attempt takes the next step and records when it ran.
    #[derive(Clone)]
    struct Script {
        steps: Arc<Mutex<Vec<Step>>>,
        at: Arc<Mutex<Vec<Instant>>>,
    }

    impl Script {
        fn new(steps: Vec<Step>) -> Self {
            let mut steps = steps;
            steps.reverse();
            Script {
                steps: Arc::new(Mutex::new(steps)),
                at: Arc::new(Mutex::new(Vec::new())),
            }
        }

        async fn attempt(&self) -> Result<TokenResponse, Error> {
            self.at.lock().unwrap().push(Instant::now());
            let step = self.steps.lock().unwrap().pop().unwrap_or(Ok(()));
            match step {
                Ok(()) => Ok(TokenResponse::new("tok", Duration::from_secs(3600))),
                Err((0, _)) => Err(Error::Unavailable {
                    what: "identity provider",
                    source: None,
                }),
                Err((status, retry_after)) => {
                    let mut headers = HeaderMap::new();
                    if let Some(r) = retry_after {
                        headers.insert(http::header::RETRY_AFTER, r.parse().unwrap());
                    }
                    Err(mi_error(
                        StatusCode::from_u16(status).unwrap(),
                        &headers,
                        br#"{"error":"x","error_description":"y"}"#,
                    ))
                }
            }
        }

        /// Offsets of the attempts from the first one.
        fn offsets(&self) -> Vec<Duration> {
            let at = self.at.lock().unwrap();
            at.iter().map(|t| *t - at[0]).collect()
        }
    }

    fn policy() -> ImdsRetry {
        let backoff = default_backoff().unwrap();
        ImdsRetry::new(backoff, GONE_INTERVAL, GONE_WINDOW).unwrap()
    }

    fn no_jitter() -> ImdsRetry {
        let backoff = Backoff::builder()
            .initial(Duration::from_secs(1))
            .max(Duration::from_secs(4))
            .jitter(0.0)
            .max_retries(3)
            .build()
            .unwrap();
        ImdsRetry::new(backoff, GONE_INTERVAL, GONE_WINDOW).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn c3_imds_410_retries_for_about_70_seconds() {
        let script = Script::new(vec![Err((410, None)); 20]);
        let started = Instant::now();
        let e = policy().run(|| script.attempt()).await.unwrap_err();
        assert!(matches!(e, Error::IdentityProvider { status, .. } if status == 410));
        let offsets = script.offsets();
        // one attempt every 10 s, the last one 70 s after the first 410
        assert_eq!(offsets.len(), 8, "{offsets:?}");
        for (i, o) in offsets.iter().enumerate() {
            assert_eq!(*o, Duration::from_secs(10 * i as u64));
        }
        assert_eq!(started.elapsed(), Duration::from_secs(70));
    }

    #[tokio::test(start_paused = true)]
    async fn c3_imds_410_then_success() {
        let script = Script::new(vec![Err((410, None)), Err((410, None)), Ok(())]);
        let token = policy().run(|| script.attempt()).await.unwrap();
        assert_eq!(token.secret(), "tok");
        assert_eq!(
            script.offsets(),
            [
                Duration::ZERO,
                Duration::from_secs(10),
                Duration::from_secs(20)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn c3_imds_429_honours_retry_after() {
        let script = Script::new(vec![Err((429, Some("7"))), Err((429, Some("2"))), Ok(())]);
        policy().run(|| script.attempt()).await.unwrap();
        let offsets = script.offsets();
        // 7 s (> the 1 s back-off), then max(2 s retry-after, 2-2.4 s back-off)
        assert_eq!(offsets[1], Duration::from_secs(7));
        let second = offsets[2] - offsets[1];
        assert!(
            second >= Duration::from_secs(2) && second <= Duration::from_millis(2400),
            "{second:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn c3_imds_long_retry_after_is_left_to_the_cache() {
        let script = Script::new(vec![Err((429, Some("120")))]);
        let e = policy().run(|| script.attempt()).await.unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(120)));
        assert_eq!(script.offsets().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn c3_imds_5xx_backoff_floor_then_gives_up() {
        let script = Script::new(vec![Err((500, None)); 10]);
        let started = Instant::now();
        let e = no_jitter().run(|| script.attempt()).await.unwrap_err();
        assert!(matches!(e, Error::IdentityProvider { status, .. } if status == 500));
        // 1 + 3 retries at 1 s, 2 s, 4 s
        assert_eq!(
            script.offsets(),
            [0, 1, 3, 7].map(Duration::from_secs).to_vec()
        );
        assert_eq!(started.elapsed(), Duration::from_secs(7));

        // with jitter the floor still holds
        let script = Script::new(vec![Err((503, None)), Err((504, None)), Ok(())]);
        policy().run(|| script.attempt()).await.unwrap();
        let o = script.offsets();
        assert!(o[1] >= Duration::from_secs(1) && o[1] <= Duration::from_millis(1200));
        assert!(o[2] - o[1] >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn c3_imds_404_408_and_connection_errors_are_retried() {
        let script = Script::new(vec![
            Err((404, None)),
            Err((408, None)),
            Err((0, None)),
            Ok(()),
        ]);
        no_jitter().run(|| script.attempt()).await.unwrap();
        assert_eq!(
            script.offsets(),
            [0, 1, 3, 7].map(Duration::from_secs).to_vec()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn c3_imds_400_identity_not_found_is_not_retried() {
        let script = Script::new(vec![Err((400, None)), Ok(())]);
        let started = Instant::now();
        let e = policy().run(|| script.attempt()).await.unwrap_err();
        assert!(matches!(e, Error::IdentityProvider { status, .. } if status == 400));
        assert_eq!(script.offsets().len(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
        for status in [401, 403] {
            let script = Script::new(vec![Err((status, None)), Ok(())]);
            assert!(policy().run(|| script.attempt()).await.is_err());
            assert_eq!(script.offsets().len(), 1);
        }
    }

    #[test]
    fn c3_imds_policy_validates() {
        let b = default_backoff().unwrap();
        assert!(ImdsRetry::new(b.clone(), Duration::ZERO, GONE_WINDOW).is_err());
        assert!(ImdsRetry::new(b.clone(), Duration::from_secs(80), GONE_WINDOW).is_err());
        assert!(ImdsRetry::new(b, GONE_INTERVAL, Duration::from_secs(3600)).is_err());
    }
}
