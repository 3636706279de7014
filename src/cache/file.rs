//! [`FileStore`]: a token store in a private directory (rule S2).

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::{BoxFuture, FutureExt};
use sha2::{Digest, Sha256};

use super::codec::{decode, encode, keep_until_ms, DecodeError, DEFAULT_RETENTION, MAX_ENTRY};
use super::store::{unix_ms, StoreLock, StoredToken, TokenStore};
use crate::Error;

const WHAT: &str = "token file store";

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// A [`TokenStore`] in a directory: one `0600` file per key, atomic replace, an advisory
/// cross-process lock, corrupt files ignored and rewritten, refresh tokens kept for a
/// retention period (rule S2).
///
/// A native app keeps its tokens — above all its refresh token — across restarts, and several
/// processes of one user share them. Cheap to clone; clones share held locks.
///
/// ```no_run
/// # #[cfg(feature = "reqwest")]
/// # async fn demo() -> Result<(), resilient_auth::Error> {
/// use std::time::Duration;
/// use resilient_auth::{FileStore, RefreshTokenCredential, TokenCache};
///
/// let store = FileStore::new("/home/me/.cache/my-app/tokens")
///     .with_retention(Duration::from_secs(14 * 24 * 3600));
/// let credential = RefreshTokenCredential::builder("contoso.onmicrosoft.com", "client-id")
///     .store(store.clone())
///     .build()?;
/// let tokens = TokenCache::builder(credential, ["https://graph.microsoft.com/.default"])
///     .store(store)
///     .build()?;
/// let token = tokens.token().await?;
/// # let _ = token; Ok(()) }
/// ```
///
/// # On disk
///
/// - The directory is created with mode `0700` if it is missing; each entry is a file named
///   after the hex SHA-256 of its key (keys never hold secrets, but they do name tenants and
///   clients), written with mode `0600`.
/// - Writes are atomic: a temporary file in the same directory, `fsync`, `rename` over the
///   entry, `fsync` of the directory. A crash at any point leaves the old entry or the new one,
///   never a mix; a stray temporary file is never read.
/// - A corrupt or truncated entry is a miss (logged with `tracing::warn!`) and is replaced by
///   the next save.
/// - An entry is kept until its access token expires or, if it carries a refresh token, for the
///   retention (default 90 days, Entra ID's refresh-token inactivity limit) after it was
///   written, whichever is later. The cache ignores an expired access token, so an entry that
///   is only a refresh token is a miss for the cache and a refresh token for
///   [`RefreshTokenCredential`](crate::RefreshTokenCredential).
/// - The store lock (rule S1) is an exclusive advisory lock (`flock`, through `fs4`) on a
///   `.lock` file per key, held by an open handle and released by the OS if the process dies.
///   The holder writes its owner id and the lock's expiry into the file; a holder still alive
///   past the expiry (hung) loses the lock to the next process that asks.
/// - All file I/O runs on Tokio's blocking pool (`spawn_blocking`).
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    retention: Duration,
    clock: Clock,
    held: Mutex<HashMap<String, File>>,
}

impl FileStore {
    /// A store in `dir` (created with mode `0700` on the first write if it is missing). Nothing
    /// is read or written until the store is used.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore {
            inner: Arc::new(Inner {
                dir: dir.into(),
                retention: DEFAULT_RETENTION,
                clock: Arc::new(SystemTime::now),
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// How long an entry that carries a refresh token is kept after it was written (default
    /// 90 days; the same knob as `RedisStoreBuilder::refresh_token_retention`). Keep it at 3
    /// days or more so that a native app can sign in silently after a long weekend.
    #[must_use]
    pub fn refresh_token_retention(self, retention: Duration) -> Self {
        self.rebuild(|i| i.retention = retention)
    }

    /// The old name of [`refresh_token_retention`](Self::refresh_token_retention).
    #[must_use]
    #[deprecated(note = "renamed to `refresh_token_retention`, as on `RedisStoreBuilder`")]
    pub fn with_retention(self, retention: Duration) -> Self {
        self.refresh_token_retention(retention)
    }

    /// The wall clock the store judges expiry, retention and lock expiry by (default
    /// [`SystemTime::now`]); tests inject one.
    #[must_use]
    pub fn with_clock(self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.rebuild(|i| i.clock = Arc::new(clock))
    }

    fn rebuild(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner {
            dir: self.inner.dir.clone(),
            retention: self.inner.retention,
            clock: self.inner.clock.clone(),
            held: Mutex::new(HashMap::new()),
        };
        f(&mut inner);
        FileStore {
            inner: Arc::new(inner),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The file that holds the entry for `key`: `{dir}/{hex sha-256 of key}.json`.
    pub fn entry_path(&self, key: &str) -> PathBuf {
        self.inner.entry_path(key)
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> io::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::unavailable(WHAT, e)),
            Err(join) => Err(Error::unavailable(WHAT, join)),
        }
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .field("retention", &self.inner.retention)
            .field("held_locks", &held(&self.inner.held).len())
            .finish_non_exhaustive()
    }
}

fn held(m: &Mutex<HashMap<String, File>>) -> std::sync::MutexGuard<'_, HashMap<String, File>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn file_stem(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Inner {
    fn now_ms(&self) -> u64 {
        unix_ms((self.clock)())
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}.json", file_stem(key)))
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}.lock", file_stem(key)))
    }

    fn ensure_dir(&self) -> io::Result<()> {
        if self.dir.is_dir() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = fs::metadata(&self.dir)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        mode = format_args!("{:o}", mode & 0o777),
                        "token store directory is readable by other users; entries are 0600"
                    );
                }
            }
            return Ok(());
        }
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&self.dir)
    }

    fn load(&self, key: &str) -> io::Result<Option<StoredToken>> {
        let path = self.entry_path(key);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(MAX_ENTRY as u64 + 1).read_to_end(&mut bytes)?;
        match read_entry(&bytes, self.now_ms(), self.retention) {
            Ok(Some(token)) => Ok(Some(token)),
            Ok(None) => {
                tracing::debug!(file = %path.display(), "token store entry expired");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(
                    file = %path.display(),
                    reason = e.as_str(),
                    "unreadable token store entry ignored; the next save rewrites it"
                );
                Ok(None)
            }
        }
    }

    fn save(&self, key: &str, token: &StoredToken) -> io::Result<()> {
        self.ensure_dir()?;
        let bytes = encode(token);
        let target = self.entry_path(key);
        let tmp = self.dir.join(format!(
            ".{}.{}.{:016x}.tmp",
            file_stem(key),
            std::process::id(),
            fastrand::u64(..)
        ));
        let written = (|| {
            let mut f = open_private(&tmp, OpenOptions::new().write(true).create_new(true))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &target)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        sync_dir(&self.dir)
    }

    fn remove(&self, key: &str) -> io::Result<()> {
        match fs::remove_file(self.entry_path(key)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn lock(&self, key: &str, ttl: Duration) -> io::Result<Option<StoreLock>> {
        self.ensure_dir()?;
        let file = open_private(
            &self.lock_path(key),
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )?;
        let now = self.now_ms();
        let until = now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let lock = StoreLock::new(key);
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {
                // A process that took over an expired lock holds it without the OS lock; its
                // record stands until it expires. Any other record is left by a holder that
                // is gone (the OS released its lock).
                if let Some(r) = read_record(&file) {
                    if r.taken_over && r.until > now && r.owner != lock.owner {
                        let _ = fs4::FileExt::unlock(&file);
                        return Ok(None);
                    }
                }
                write_record(&file, &lock.owner, until, false)?;
                held(&self.held).insert(lock.owner.clone(), file);
                Ok(Some(lock))
            }
            Err(fs4::TryLockError::WouldBlock) => match read_record(&file) {
                Some(r) if r.until <= now => {
                    tracing::warn!(key, "token store lock expired while held; taking it over");
                    write_record(&file, &lock.owner, until, true)?;
                    Ok(Some(lock))
                }
                // Held, or its holder is still writing its record.
                _ => Ok(None),
            },
            Err(fs4::TryLockError::Error(e)) => Err(e),
        }
    }

    fn unlock(&self, lock: &StoreLock) -> io::Result<()> {
        let handle = held(&self.held).remove(&lock.owner);
        match handle {
            Some(file) => {
                // Clear the record unless another process took the lock over after it expired.
                if read_record(&file).is_some_and(|r| r.owner == lock.owner) {
                    file.set_len(0)?;
                }
                fs4::FileExt::unlock(&file)
            }
            None => {
                let file = match OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(self.lock_path(&lock.key))
                {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                };
                if read_record(&file).is_some_and(|r| r.owner == lock.owner) {
                    file.set_len(0)?;
                }
                Ok(())
            }
        }
    }
}

/// What [`FileStore`] makes of an entry file's bytes at wall time `now_ms`: the token,
/// `Ok(None)` if it is no longer worth keeping, or why it cannot be read. Never panics (rule X4).
pub(crate) fn read_entry(
    bytes: &[u8],
    now_ms: u64,
    retention: Duration,
) -> Result<Option<StoredToken>, DecodeError> {
    let token = decode(bytes)?;
    if now_ms >= keep_until_ms(&token, retention) {
        return Ok(None);
    }
    Ok(Some(token))
}

/// The contents of a lock file: `{owner} {until_ms} {held|taken-over}`.
pub(crate) struct Record {
    pub(crate) owner: String,
    pub(crate) until: u64,
    pub(crate) taken_over: bool,
}

fn read_record(mut file: &File) -> Option<Record> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(256).read_to_string(&mut text).ok()?;
    parse_record(&text)
}

/// A lock file's text as a [`Record`]; `None` if it is not one. Never panics (rule X4).
pub(crate) fn parse_record(text: &str) -> Option<Record> {
    let mut parts = text.split_whitespace();
    let owner = parts.next()?.to_owned();
    let until = parts.next()?.parse().ok()?;
    let taken_over = parts.next()? == "taken-over";
    Some(Record {
        owner,
        until,
        taken_over,
    })
}

fn write_record(mut file: &File, owner: &str, until: u64, taken_over: bool) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    let how = if taken_over { "taken-over" } else { "held" };
    file.write_all(format!("{owner} {until} {how}\n").as_bytes())
}

fn open_private(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

impl TokenStore for FileStore {
    fn persistent_retention(&self) -> Option<Duration> {
        Some(self.inner.retention)
    }

    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<StoredToken>, Error>> {
        let key = key.to_owned();
        self.blocking(move |i| i.load(&key)).boxed()
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let key = key.to_owned();
        let token = token.clone();
        self.blocking(move |i| i.save(&key, &token)).boxed()
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        let key = key.to_owned();
        self.blocking(move |i| i.remove(&key)).boxed()
    }

    fn lock<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, Error>> {
        let key = key.to_owned();
        self.blocking(move |i| i.lock(&key, ttl)).boxed()
    }

    fn unlock<'a>(&'a self, lock: &'a StoreLock) -> BoxFuture<'a, Result<(), Error>> {
        let lock = lock.clone();
        self.blocking(move |i| i.unlock(&lock)).boxed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn s2_file_names_are_hex_sha256_of_the_key() {
        let s = FileStore::new("/tmp/x");
        let p = s.entry_path("resilient-auth:v1:k");
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 64 + ".json".len());
        assert!(name[..64].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            file_stem("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn s2_lock_records_parse() {
        let dir = std::env::temp_dir().join(format!("ra-rec-{:x}", fastrand::u64(..)));
        fs::create_dir_all(&dir).unwrap();
        let f = open_private(
            &dir.join("l"),
            OpenOptions::new().read(true).write(true).create(true),
        )
        .unwrap();
        assert!(read_record(&f).is_none());
        write_record(&f, "abc", 42, true).unwrap();
        let r = read_record(&f).unwrap();
        assert_eq!((r.owner.as_str(), r.until, r.taken_over), ("abc", 42, true));
        write_record(&f, "d", 7, false).unwrap();
        assert!(!read_record(&f).unwrap().taken_over);
        let _ = fs::remove_dir_all(&dir);
    }
}
