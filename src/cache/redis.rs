//! [`RedisStore`]: a token store in Redis (rule S3).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisResult, Script};
use aes_gcm::aead::{Aead, AeadCore, Generate, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use futures_util::future::{BoxFuture, FutureExt};

use super::codec::{decode, encode, keep_until_ms, DecodeError, DEFAULT_RETENTION, MAX_ENTRY};
use super::store::{unix_ms, StoreLock, StoredToken, TokenStore};
use crate::Error;

const WHAT: &str = "redis";
const DEFAULT_PREFIX: &str = "resilient-auth:";
/// The prefix of an encrypted value: `RAE1` ‖ nonce ‖ AES-256-GCM ciphertext and tag.
pub(crate) const MAGIC: &[u8; 4] = b"RAE1";
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
const UNLOCK: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

/// A [`TokenStore`] in Redis: key prefix, TTL = remaining lifetime, optional AES-256-GCM
/// encryption, `SET NX PX` lock with owner-checked release, short timeouts (rule S3).
///
/// Shared by every replica of a daemon, so that a cluster makes one identity-provider request
/// per token refresh — and keeps working when Redis does not. Cheap to clone. `Debug` shows the
/// server address, never the password or the encryption key.
///
/// ```no_run
/// # #[cfg(feature = "reqwest")]
/// # async fn demo(key: [u8; 32]) -> Result<(), resilient_auth::Error> {
/// use resilient_auth::{ClientSecretCredential, RedisStore, TokenCache};
///
/// let store = RedisStore::builder("redis://:password@redis.internal:6379/0")
///     .prefix("my-daemon:")
///     .encryption_key(key) // optional AES-256-GCM of every value
///     .build()?; // no I/O: connects on first use, reconnects by itself
/// let credential = ClientSecretCredential::from_env()?;
/// let tokens = TokenCache::builder(credential, ["https://vault.azure.net/.default"])
///     .store(store)
///     .build()?;
/// let token = tokens.token().await?;
/// # let _ = token; Ok(()) }
/// ```
///
/// # How it works
///
/// - Values are `SET {prefix}{key} value PX ttl` with `ttl` = the token's remaining lifetime
///   (or the refresh-token retention for an entry that carries a refresh token), so Redis drops
///   expired tokens by itself. A key of the cache (`resilient-auth:v1:…`) has its
///   `resilient-auth:` replaced by the prefix, so the default prefix keeps it as it is.
/// - With [`encryption_key`](RedisStoreBuilder::encryption_key), each value is AES-256-GCM
///   ciphertext with a fresh random 96-bit nonce, bound to its Redis key (associated data). A
///   value that does not decrypt (another key, tampered, plaintext) is a miss, logged — never
///   an error that fails a call, never a panic.
/// - The single-flight lock is `SET {prefix}lock:{key} owner NX PX ttl`, released by a Lua
///   script only by its owner.
/// - Every operation is bounded by a short timeout (default 150 ms). Construction does no I/O:
///   the connection is made on first use by a `redis::aio::ConnectionManager`, which
///   reconnects after Redis comes back. Redis down, slow or paused makes store operations fail
///   fast; the [`TokenCache`](crate::TokenCache) then carries on with its memory level and the
///   identity provider.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: ConnectionManagerConfig,
    manager: tokio::sync::OnceCell<ConnectionManager>,
    addr: String,
    prefix: String,
    op_timeout: Duration,
    retention: Duration,
    cipher: Option<Aes256Gcm>,
    unlock: Script,
}

impl RedisStore {
    /// A store at `url` (`redis://[:password@]host[:port][/db]`, or `rediss://` with TLS if the
    /// `redis` crate was built with it) with the defaults: prefix `resilient-auth:`, 150 ms per
    /// operation, no encryption. Does no I/O: see [`RedisStoreBuilder::build`].
    ///
    /// # Errors
    /// [`Error::Config`] if the URL cannot be parsed.
    pub fn connect(url: &str) -> Result<Self, Error> {
        RedisStore::builder(url).build()
    }

    /// A builder for a store at `url`.
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder {
            client: Client::open(url).ok(),
            prefix: DEFAULT_PREFIX.to_owned(),
            op_timeout: Duration::from_millis(150),
            retention: DEFAULT_RETENTION,
            key: None,
        }
    }

    /// The Redis key that holds the entry for the cache key `key`.
    pub fn redis_key(&self, key: &str) -> String {
        let rest = key.strip_prefix(DEFAULT_PREFIX).unwrap_or(key);
        format!("{}{rest}", self.inner.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        let rest = key.strip_prefix(DEFAULT_PREFIX).unwrap_or(key);
        format!("{}lock:{rest}", self.inner.prefix)
    }

    /// Runs one command under the operation timeout, connecting first if need be.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let inner = &self.inner;
        let attempt = async {
            let manager = inner
                .manager
                .get_or_try_init(|| async {
                    ConnectionManager::new_lazy_with_config(
                        inner.client.clone(),
                        inner.config.clone(),
                    )
                })
                .await?
                .clone();
            op(manager).await
        };
        match tokio::time::timeout(inner.op_timeout, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::unavailable(WHAT, e)),
            Err(_) => Err(Error::Timeout {
                after: inner.op_timeout,
            }),
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("addr", &self.inner.addr)
            .field("prefix", &self.inner.prefix)
            .field("op_timeout", &self.inner.op_timeout)
            .field("retention", &self.inner.retention)
            .field("encrypted", &self.inner.cipher.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
#[must_use]
pub struct RedisStoreBuilder {
    client: Option<Client>,
    prefix: String,
    op_timeout: Duration,
    retention: Duration,
    key: Option<Box<[u8; 32]>>,
}

impl RedisStoreBuilder {
    /// The prefix of every Redis key (default `resilient-auth:`), e.g. to share one Redis
    /// between applications.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest one operation (including connecting) may take before it fails with
    /// [`Error::Timeout`] (default 150 ms).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// How long an entry that carries a refresh token is kept after it was written (default
    /// 90 days).
    pub fn refresh_token_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Encrypts every value with AES-256-GCM under this 32-byte key (keep it out of Redis:
    /// a secret store, an environment variable). Replicas that share tokens need the same key.
    pub fn encryption_key(mut self, key: [u8; 32]) -> Self {
        self.key = Some(Box::new(key));
        self
    }

    /// Validates the settings. Does no I/O: the connection is made on first use (bounded by
    /// the operation timeout) and remade whenever it is lost, so an application starts even
    /// when Redis is down.
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that cannot be parsed (the message never repeats the URL,
    /// which may hold a password) or a zero operation timeout.
    pub fn build(self) -> Result<RedisStore, Error> {
        let client = self
            .client
            .ok_or_else(|| Error::config("redis URL is invalid"))?;
        if self.op_timeout.is_zero() {
            return Err(Error::config("redis operation timeout must not be zero"));
        }
        let cipher = match self.key.as_deref() {
            Some(k) => Some(
                Aes256Gcm::new_from_slice(k)
                    .map_err(|_| Error::config("encryption key must be 32 bytes"))?,
            ),
            None => None,
        };
        let addr = client.get_connection_info().addr().to_string();
        let connect_timeout = self.op_timeout.max(Duration::from_millis(500));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(connect_timeout))
            // One attempt per (re)connect: the next operation after a failure tries again, so
            // a dead Redis costs one refused connect per operation, not a retry loop.
            .set_number_of_retries(0);
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                config,
                manager: tokio::sync::OnceCell::new(),
                addr,
                prefix: self.prefix,
                op_timeout: self.op_timeout,
                retention: self.retention,
                cipher,
                unlock: Script::new(UNLOCK),
            }),
        })
    }
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field(
                "addr",
                &self
                    .client
                    .as_ref()
                    .map(|c| c.get_connection_info().addr().to_string()),
            )
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .field("retention", &self.retention)
            .field("encrypted", &self.key.is_some())
            .finish()
    }
}

/// A value as written to Redis: the entry, sealed if there is a cipher.
pub(crate) fn encode_value(
    cipher: Option<&Aes256Gcm>,
    redis_key: &str,
    token: &StoredToken,
) -> Result<Vec<u8>, Error> {
    let plain = encode(token);
    let Some(cipher) = cipher else {
        return Ok(plain);
    };
    let nonce: aes_gcm::Nonce<<Aes256Gcm as AeadCore>::NonceSize> =
        Generate::try_generate().map_err(|_| Error::config("no randomness for a nonce"))?;
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &plain,
                aad: redis_key.as_bytes(),
            },
        )
        .map_err(|_| Error::config("could not encrypt a token store entry"))?;
    let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(nonce.as_slice());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The entry in a value read from Redis. Never panics.
pub(crate) fn decode_value(
    cipher: Option<&Aes256Gcm>,
    redis_key: &str,
    bytes: &[u8],
) -> Result<StoredToken, DecodeError> {
    if bytes.len() > MAX_ENTRY + MAGIC.len() + NONCE_LEN + TAG_LEN {
        return Err(DecodeError::TooLarge);
    }
    let Some(cipher) = cipher else {
        if bytes.starts_with(MAGIC) {
            return Err(DecodeError::Decrypt);
        }
        return decode(bytes);
    };
    let rest = bytes.strip_prefix(MAGIC).ok_or(DecodeError::Decrypt)?;
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(DecodeError::Decrypt);
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| DecodeError::Decrypt)?;
    let plain = cipher
        .decrypt(
            (&nonce).into(),
            Payload {
                msg: sealed,
                aad: redis_key.as_bytes(),
            },
        )
        .map_err(|_| DecodeError::Decrypt)?;
    decode(&plain)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl TokenStore for RedisStore {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<StoredToken>, Error>> {
        async move {
            let rkey = self.redis_key(key);
            let value: Option<Vec<u8>> = self
                .run(|mut c| {
                    let cmd = ::redis::cmd("GET").arg(&rkey).clone();
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            let Some(bytes) = value else {
                return Ok(None);
            };
            match decode_value(self.inner.cipher.as_ref(), &rkey, &bytes) {
                Ok(t) => Ok(Some(t)),
                Err(e) => {
                    tracing::warn!(
                        key = %rkey,
                        reason = e.as_str(),
                        "unreadable redis token entry ignored"
                    );
                    Ok(None)
                }
            }
        }
        .boxed()
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let rkey = self.redis_key(key);
            let now = unix_ms(SystemTime::now());
            let ttl_ms = keep_until_ms(token, self.inner.retention).saturating_sub(now);
            if ttl_ms == 0 {
                return Ok(());
            }
            let value = encode_value(self.inner.cipher.as_ref(), &rkey, token)?;
            self.run(|mut c| {
                let cmd = ::redis::cmd("SET")
                    .arg(&rkey)
                    .arg(value)
                    .arg("PX")
                    .arg(ttl_ms)
                    .clone();
                async move { cmd.query_async::<()>(&mut c).await }
            })
            .await
        }
        .boxed()
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let rkey = self.redis_key(key);
            self.run(|mut c| {
                let cmd = ::redis::cmd("DEL").arg(&rkey).clone();
                async move { cmd.query_async::<()>(&mut c).await }
            })
            .await
        }
        .boxed()
    }

    fn lock<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, Error>> {
        async move {
            let lock = StoreLock::new(key);
            let lkey = self.lock_key(key);
            let reply: Option<String> = self
                .run(|mut c| {
                    let cmd = ::redis::cmd("SET")
                        .arg(&lkey)
                        .arg(&lock.owner)
                        .arg("NX")
                        .arg("PX")
                        .arg(ms(ttl).max(1))
                        .clone();
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            Ok(reply.map(|_| lock))
        }
        .boxed()
    }

    fn unlock<'a>(&'a self, lock: &'a StoreLock) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let lkey = self.lock_key(&lock.key);
            let script = &self.inner.unlock;
            self.run(|mut c| async move {
                script
                    .key(&lkey)
                    .arg(&lock.owner)
                    .invoke_async::<i64>(&mut c)
                    .await
                    .map(drop)
            })
            .await
        }
        .boxed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token() -> StoredToken {
        StoredToken::new("at-secret", 1_000, 2_000, 3_000)
    }

    fn cipher(k: u8) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&[k; 32]).unwrap()
    }

    #[test]
    fn s3_values_roundtrip_plain_and_sealed() {
        let t = token();
        let plain = encode_value(None, "k", &t).unwrap();
        assert_eq!(decode_value(None, "k", &plain).unwrap(), t);
        let c = cipher(1);
        let sealed = encode_value(Some(&c), "k", &t).unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"at-secret"));
        assert_eq!(decode_value(Some(&c), "k", &sealed).unwrap(), t);
        // Fresh nonce per value.
        assert_ne!(sealed, encode_value(Some(&c), "k", &t).unwrap());
        // Wrong key, other Redis key, no key, plaintext where a key is set, tampering: misses.
        assert_eq!(
            decode_value(Some(&cipher(2)), "k", &sealed),
            Err(DecodeError::Decrypt)
        );
        assert_eq!(
            decode_value(Some(&c), "other", &sealed),
            Err(DecodeError::Decrypt)
        );
        assert_eq!(decode_value(None, "k", &sealed), Err(DecodeError::Decrypt));
        assert_eq!(
            decode_value(Some(&c), "k", &plain),
            Err(DecodeError::Decrypt)
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            decode_value(Some(&c), "k", &tampered),
            Err(DecodeError::Decrypt)
        );
        assert_eq!(
            decode_value(Some(&c), "k", &sealed[..20]),
            Err(DecodeError::Decrypt)
        );
    }

    #[test]
    fn s3_redis_keys_take_the_prefix() {
        let s = RedisStore::builder("redis://127.0.0.1:1")
            .prefix("app:")
            .build()
            .unwrap();
        assert_eq!(s.redis_key("resilient-auth:v1:x"), "app:v1:x");
        assert_eq!(s.lock_key("resilient-auth:v1:x"), "app:lock:v1:x");
        assert_eq!(s.redis_key("other"), "app:other");
        let d = RedisStore::connect("redis://127.0.0.1:1").unwrap();
        assert_eq!(d.redis_key("resilient-auth:v1:x"), "resilient-auth:v1:x");
    }

    #[test]
    fn x1_redis_store_debug_and_errors_hide_password_and_key() {
        let s =
            RedisStore::builder("redis://user:hunter2-pw@127.0.0.1:6390/2").encryption_key([7; 32]);
        let dbg = format!("{s:?}");
        let s = s.build().unwrap();
        let dbg = format!("{dbg}{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("[7, 7"), "{dbg}");
        assert!(dbg.contains("127.0.0.1"), "{dbg}");
        let e = RedisStore::connect("redis://:hunter2-pw@[bad").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    proptest! {
        #[test]
        fn s3_decode_value_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let c = cipher(3);
            let _ = decode_value(None, "k", &bytes);
            let _ = decode_value(Some(&c), "k", &bytes);
            let mut magic = MAGIC.to_vec();
            magic.extend_from_slice(&bytes);
            let _ = decode_value(Some(&c), "k", &magic);
        }
    }
}
