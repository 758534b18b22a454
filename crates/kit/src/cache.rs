//! A read-through cache of documents by id in Redis (`REDIS_URL`), for the reads that
//! would otherwise wait on the database every time (posts, profiles, who blocks a
//! reader), and the [`Redis`] handle it reads through, which the post service's home
//! timelines share.
//!
//! Everything in it can be lost: a miss reads the database. It never serves an older
//! document over a newer one:
//! - every write of a cached document is followed by [`Cache::forget`] (the entry and
//!   any lease on it go), so a read after a write that returned sees the write;
//! - a reader that misses takes a lease (`SET lease NX`) before it reads the database,
//!   and stores what it read only if its lease is still there (one `EVAL`): a write
//!   between the reader's read and its fill took the lease with the entry, so a slow
//!   reader cannot put back what the write replaced (the leases of Facebook's "Scaling
//!   Memcache at Facebook", 2013). A reader without the lease (another is filling) reads
//!   the database and stores nothing;
//! - a `forget` Redis did not answer is tried again in the background until it answers
//!   or `ttl` has passed; entries also expire (`ttl`), which bounds how long a write
//!   whose `forget` never got through (Redis unreachable all along) can leave an older
//!   entry.
//!
//! Redis down or slow degrades to the database, never to an error: each command waits at
//! most [`ANSWER_WITHIN`], and after a failure the cache is passed over for
//! [`BACK_OFF`] so that requests do not each pay the wait.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::time::{ms as millis, now_ms};
use bson::oid::ObjectId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Serialize, de::DeserializeOwned};

/// The longest wait for one Redis command (connecting included).
pub const ANSWER_WITHIN: Duration = Duration::from_millis(100);
/// How long the cache is passed over after a failure.
pub const BACK_OFF: Duration = Duration::from_secs(1);
/// How long a reader's lease lasts: a read of the database takes far less, and a lease
/// left by a reader that went away keeps others from filling only this long.
const LEASE: Duration = Duration::from_secs(2);

/// Stores `ARGV[2]` at `KEYS[1]` for `ARGV[3]` ms if `KEYS[2]` (the lease) still holds
/// `ARGV[1]`, and ends the lease.
const FILL: &str = "if redis.call('GET', KEYS[2]) == ARGV[1] then \
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]); redis.call('DEL', KEYS[2]); \
    return 1 end return 0";

/// Where a service's cache is, and how long it keeps an entry.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `REDIS_URL` (`redis://127.0.0.1:6379`).
    pub url: String,
    /// `REDIS_KEY_PREFIX` (`social:`): the start of every key.
    pub prefix: String,
    /// How long an entry lives; zero: no cache.
    pub ttl: Duration,
}

impl Settings {
    /// `REDIS_URL`, `REDIS_KEY_PREFIX`, and the entries' lifetime from `ttl_var`
    /// (seconds, `default_ttl` when unset; 0 turns the cache off).
    pub fn from_env(ttl_var: &str, default_ttl: u64) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            url: crate::config::optional("REDIS_URL")
                .unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            prefix: crate::config::optional("REDIS_KEY_PREFIX").unwrap_or_else(|| "social:".into()),
            ttl: crate::config::seconds_or(ttl_var, default_ttl)?,
        })
    }

    /// The local Redis (or `REDIS_URL`'s), entries kept a minute.
    pub fn for_tests() -> Self {
        Self {
            url: crate::config::optional("REDIS_URL")
                .unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            prefix: "social-test:".into(),
            ttl: Duration::from_secs(60),
        }
    }

    /// The cache of documents of `kind`, unless the lifetime is zero.
    pub fn cache(&self, kind: &str) -> anyhow::Result<Option<Cache>> {
        if self.ttl.is_zero() {
            return Ok(None);
        }
        Ok(Some(Cache {
            redis: self.redis()?,
            prefix: format!("{}{kind}:", self.prefix),
            ttl: self.ttl,
            unforgotten: Arc::default(),
        }))
    }

    /// A connection to this Redis (connected on first use).
    pub fn redis(&self) -> anyhow::Result<Redis> {
        Redis::new(&self.url)
    }
}

/// A connection to Redis that degrades rather than fails (see the module docs). Cheap
/// to clone.
#[derive(Clone)]
pub struct Redis {
    manager: ConnectionManager,
    /// Until when (ms) reads pass Redis over.
    passed_over_until: Arc<AtomicI64>,
}

impl Redis {
    /// The Redis at `url`, connected on first use.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(ANSWER_WITHIN))
            .set_response_timeout(Some(ANSWER_WITHIN))
            .set_number_of_retries(0)
            .set_max_delay(BACK_OFF);
        Ok(Self {
            manager: ConnectionManager::new_lazy_with_config(client, config)?,
            passed_over_until: Arc::default(),
        })
    }

    fn passed_over(&self) -> bool {
        now_ms() < self.passed_over_until.load(Ordering::Relaxed)
    }

    /// Runs `command` for a read; `None` if Redis failed (and reads pass it over for
    /// [`BACK_OFF`]) or is passed over.
    pub async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Option<T> {
        if self.passed_over() {
            return None;
        }
        self.run_always(command).await
    }

    /// [`Self::run`], even while reads pass Redis over (an invalidation).
    pub async fn run_always<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Option<T> {
        self.answered(self.must(command).await)
    }

    /// Runs `commands` in one round trip for a read, as [`Self::run`].
    pub async fn run_all<T: redis::FromRedisValue>(&self, commands: &redis::Pipeline) -> Option<T> {
        if self.passed_over() {
            return None;
        }
        self.answered(self.must_all(commands).await)
    }

    /// Runs `script` for a read, as [`Self::run`] (`EVALSHA`, loading it if Redis has
    /// not got it).
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        if self.passed_over() {
            return None;
        }
        self.answered(self.must_invoke(script).await)
    }

    /// Runs `command`, whose failure is the caller's (a consumer retries its event):
    /// `UNAVAILABLE` if Redis failed.
    pub async fn must<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> crate::Result<T> {
        let mut redis = self.manager.clone();
        command.query_async(&mut redis).await.map_err(unavailable)
    }

    /// Runs `commands` in one round trip, as [`Self::must`].
    pub async fn must_all<T: redis::FromRedisValue>(
        &self,
        commands: &redis::Pipeline,
    ) -> crate::Result<T> {
        let mut redis = self.manager.clone();
        commands.query_async(&mut redis).await.map_err(unavailable)
    }

    /// Runs `script`, as [`Self::must`].
    pub async fn must_invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> crate::Result<T> {
        let mut redis = self.manager.clone();
        script.invoke_async(&mut redis).await.map_err(unavailable)
    }

    /// Loads `script` (for `EVALSHA` in a pipeline) and answers its hash.
    pub async fn load(&self, script: &redis::Script) -> crate::Result<String> {
        let mut redis = self.manager.clone();
        script.prepare_invoke().load_async(&mut redis).await.map_err(unavailable)
    }

    fn answered<T>(&self, answer: crate::Result<T>) -> Option<T> {
        match answer {
            Ok(answer) => Some(answer),
            Err(e) => {
                tracing::warn!(error = %e, "redis is passed over for a moment");
                let until = now_ms().saturating_add(millis(BACK_OFF));
                self.passed_over_until.store(until, Ordering::Relaxed);
                None
            }
        }
    }
}

/// A failure of Redis itself (unreachable, slow, restarting, failing over, a script it
/// lost) is
/// `UNAVAILABLE`, which a consumer retries for as long as it lasts; a command Redis
/// refuses for good (a wrong type, a broken script) is an internal error, which a
/// consumer counts and dead-letters.
fn unavailable(e: redis::RedisError) -> crate::Error {
    let passing = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        || !matches!(e.retry_method(), redis::RetryMethod::NoRetry);
    match passing {
        true => crate::Error::Unavailable(format!("redis: {e}")),
        false => crate::Error::internal(e),
    }
}

/// A cache of one kind of document. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    redis: Redis,
    /// `<REDIS_KEY_PREFIX><kind>:`.
    prefix: String,
    ttl: Duration,
    /// The forgets Redis did not answer, tried again by one task (see [`Cache::forget`]).
    unforgotten: Arc<Mutex<Unforgotten>>,
}

/// At most this many forgets wait to be tried again per kind of document (about 6 MiB);
/// past it a write's entry is left to expire by itself.
const UNFORGOTTEN_MAX: usize = 100_000;

/// How many of them one command sends.
const UNFORGOTTEN_BATCH: usize = 500;

/// Forgets waiting for Redis: each id with the moment past which its entry, if any, has
/// expired anyway; and whether a task is trying them.
#[derive(Default)]
struct Unforgotten {
    ids: HashMap<ObjectId, Instant>,
    trying: bool,
}

impl Cache {
    fn key(&self, id: ObjectId) -> String {
        format!("{}{}", self.prefix, id.to_hex())
    }

    fn lease_key(&self, id: ObjectId) -> String {
        format!("{}lease:{}", self.prefix, id.to_hex())
    }

    /// The documents `ids`, from `cache` where it has them and from `load` (the
    /// database, given the ids it missed) for the rest, which it then stores for the
    /// next reader (see the module docs); all from `load` without a cache. In no
    /// particular order; missing ones absent.
    pub async fn read_through<T, Load, Fut>(
        cache: Option<&Self>,
        ids: &[ObjectId],
        id_of: impl Fn(&T) -> ObjectId,
        load: Load,
    ) -> crate::Result<Vec<T>>
    where
        T: Serialize + DeserializeOwned,
        Load: FnOnce(Vec<ObjectId>) -> Fut,
        Fut: std::future::Future<Output = crate::Result<Vec<T>>>,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let Some(cache) = cache else {
            return load(ids.to_vec()).await;
        };
        let mut get = redis::cmd("MGET");
        for id in ids {
            get.arg(cache.key(*id));
        }
        let cached: Vec<Option<Vec<u8>>> = cache.redis.run(&get).await.unwrap_or_default();
        let mut found = Vec::with_capacity(ids.len());
        let mut missed = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let hit = cached.get(i).and_then(|b| b.as_deref());
            match hit.and_then(|bytes| bson::deserialize_from_slice::<T>(bytes).ok()) {
                Some(doc) => found.push(doc),
                None => missed.push(*id),
            }
        }
        if missed.is_empty() {
            return Ok(found);
        }
        // Leases first (one round trip), then the database: a write after this read
        // forgets the lease.
        let token = ObjectId::new().to_hex();
        let mut leases = redis::pipe();
        for id in &missed {
            leases
                .cmd("SET")
                .arg(cache.lease_key(*id))
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(millis(LEASE));
        }
        let taken: Vec<Option<String>> = cache.redis.run_all(&leases).await.unwrap_or_default();
        let leased: Vec<ObjectId> =
            missed.iter().zip(&taken).filter(|(_, t)| t.is_some()).map(|(id, _)| *id).collect();
        let loaded = load(missed).await?;
        if let Some(ms) = injected_fill_pause_ms() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut fills = redis::pipe();
        for doc in &loaded {
            let id = id_of(doc);
            if !leased.contains(&id) {
                continue;
            }
            let Ok(bytes) = bson::serialize_to_vec(doc) else {
                continue;
            };
            fills
                .cmd("EVAL")
                .arg(FILL)
                .arg(2)
                .arg(cache.key(id))
                .arg(cache.lease_key(id))
                .arg(&token)
                .arg(bytes)
                .arg(millis(cache.ttl))
                .ignore();
        }
        if !fills.is_empty() {
            let _: Option<()> = cache.redis.run_all(&fills).await;
        }
        found.extend(loaded);
        Ok(found)
    }

    /// [`Self::forget`], failing if Redis did not answer (an event handler that must
    /// see the entry gone retries).
    pub async fn forget_surely(&self, id: ObjectId) -> crate::Result<()> {
        self.redis.must::<i64>(&self.forgetting(&[id])).await.map(drop)
    }

    /// The command that forgets `ids`: their entries and any reader's lease on them.
    fn forgetting(&self, ids: &[ObjectId]) -> redis::Cmd {
        let mut forget = redis::cmd("DEL");
        for id in ids {
            forget.arg(self.key(*id)).arg(self.lease_key(*id));
        }
        forget
    }

    /// Forgets document `id` (after each write of it) and any reader's lease on it.
    /// Tried even while reads pass the cache over. If Redis does not answer, an entry
    /// it holds (a deleted post's text) would be served until it expires: the forget
    /// waits with the others Redis missed (at most [`UNFORGOTTEN_MAX`]), which one task
    /// tries again, in batches, until Redis answers or `ttl` has passed, by when any
    /// such entry has expired anyway.
    pub async fn forget(&self, id: ObjectId) {
        if !self.try_forget(&[id]).await {
            self.forget_later(id);
        }
    }

    fn forget_later(&self, id: ObjectId) {
        let Ok(mut waiting) = self.unforgotten.lock() else {
            return;
        };
        if waiting.ids.len() >= UNFORGOTTEN_MAX && !waiting.ids.contains_key(&id) {
            return;
        }
        waiting.ids.insert(id, Instant::now() + self.ttl);
        if std::mem::replace(&mut waiting.trying, true) {
            return;
        }
        drop(waiting);
        tracing::warn!(cache = %self.prefix, "Redis missed a forget: trying the forgets again until it answers");
        let cache = self.clone();
        tokio::spawn(async move { cache.try_again().await });
    }

    /// Tries the waiting forgets until none is left: every one done or expired.
    async fn try_again(self) {
        let mut wait = Duration::from_millis(100);
        loop {
            tokio::time::sleep(wait).await;
            let batch: Vec<(ObjectId, Instant)> = {
                let Ok(mut waiting) = self.unforgotten.lock() else {
                    return;
                };
                let now = Instant::now();
                waiting.ids.retain(|_, until| *until > now);
                if waiting.ids.is_empty() {
                    waiting.trying = false;
                    tracing::info!(cache = %self.prefix, "the forgets Redis missed are done");
                    return;
                }
                let batch = waiting.ids.iter().take(UNFORGOTTEN_BATCH);
                batch.map(|(id, until)| (*id, *until)).collect()
            };
            let ids: Vec<ObjectId> = batch.iter().map(|(id, _)| *id).collect();
            if !self.try_forget(&ids).await {
                wait = (wait * 2).min(Duration::from_secs(2));
                continue;
            }
            wait = Duration::from_millis(100);
            if let Ok(mut waiting) = self.unforgotten.lock() {
                // One forgotten again since this batch was taken waits for its own try.
                for (id, until) in batch {
                    if waiting.ids.get(&id) == Some(&until) {
                        waiting.ids.remove(&id);
                    }
                }
            }
        }
    }

    /// One try of forgetting `ids` (one command): whether Redis answered.
    async fn try_forget(&self, ids: &[ObjectId]) -> bool {
        let refused = || {
            fail::fail_point!("kit::cache_forget", |_| {
                crate::faults::record("kit::cache_forget");
                true
            });
            false
        };
        if refused() {
            return false;
        }
        let answered: Option<i64> = self.redis.run_always(&self.forgetting(ids)).await;
        answered.is_some()
    }
}

/// Forgets document `id` in `cache`, if there is one ([`Cache::forget`]).
pub async fn forget(cache: Option<&Cache>, id: ObjectId) {
    if let Some(cache) = cache {
        cache.forget(id).await;
    }
}

/// [`Cache::forget_surely`] in `cache`, if there is one.
pub async fn forget_surely(cache: Option<&Cache>, id: ObjectId) -> crate::Result<()> {
    match cache {
        Some(cache) => cache.forget_surely(id).await,
        None => Ok(()),
    }
}

/// Runs `write` of document `id`, then forgets the document in `cache` (if any)
/// whatever came of the write (an error can hide a write that happened; a retry after
/// an earlier try changes nothing), in a task of its own: a caller that goes away
/// half-way does not leave the cached document behind.
pub async fn write_then_forget<T: Send + 'static>(
    cache: Option<&Cache>,
    id: ObjectId,
    write: impl std::future::Future<Output = crate::Result<T>> + Send + 'static,
) -> crate::Result<T> {
    let cache = cache.cloned();
    let task = tokio::spawn(async move {
        let written = write.await;
        if let Some(cache) = cache {
            cache.forget(id).await;
        }
        written
    });
    task.await.map_err(crate::Error::internal)?
}

/// How long tests hold a read between its load and its fill (`kit::before_cache_fill`,
/// `return(<ms>)`).
fn injected_fill_pause_ms() -> Option<u64> {
    fail::fail_point!("kit::before_cache_fill", |ms: Option<String>| {
        crate::faults::record("kit::before_cache_fill");
        ms.and_then(|ms| ms.parse().ok())
    });
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_failing_is_unavailable_and_a_command_it_refuses_is_not() {
        let kind = |k| redis::ErrorKind::Server(k);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for passing in [
            redis::RedisError::from(refused),
            redis::RedisError::from((kind(redis::ServerErrorKind::BusyLoading), "loading")),
            redis::RedisError::from((kind(redis::ServerErrorKind::ReadOnly), "replica")),
            redis::RedisError::from((kind(redis::ServerErrorKind::NoScript), "no script")),
        ] {
            assert!(matches!(unavailable(passing), crate::Error::Unavailable(_)));
        }
        let wrong =
            redis::RedisError::from((kind(redis::ServerErrorKind::ResponseError), "WRONGTYPE"));
        assert!(matches!(unavailable(wrong), crate::Error::Internal(_)));
    }

    #[tokio::test]
    async fn forgets_redis_missed_wait_together_for_one_task_and_go_once_their_entries_expired() {
        let unreachable = Settings {
            url: "redis://127.0.0.1:1".into(),
            prefix: "social-test:".into(),
            ttl: Duration::from_millis(1500),
        };
        let cache = unreachable.cache("posts").unwrap().unwrap();
        let ids: Vec<ObjectId> = (0..20).map(|_| ObjectId::new()).collect();
        for id in &ids {
            cache.forget(*id).await;
        }
        cache.forget(ids[0]).await;
        let waiting = |c: &Cache| {
            let w = c.unforgotten.lock().unwrap();
            (w.ids.len(), w.trying)
        };
        assert_eq!(waiting(&cache), (20, true), "one set, one task");
        // Past their entries' lifetime nothing is left to forget, and the task ends.
        tokio::time::sleep(Duration::from_millis(6000)).await;
        assert_eq!(waiting(&cache), (0, false));
    }
}
