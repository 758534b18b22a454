//! Argon2id password hashing with OWASP's recommended parameters (19 MiB, 2 passes, 1
//! lane), off the async runtime, and bounded: at most as many hashes at once as the
//! memory budget (`PASSWORD_HASH_MEMORY_MIB`) and the cores allow. A hash that would
//! wait longer than `PASSWORD_HASH_WAIT_MS` for its turn is refused at once with
//! `UNAVAILABLE` and a retry delay, so that a login storm (unknown usernames hash too)
//! neither exceeds the pod's memory nor queues without end, and the service's other
//! RPCs keep their latency.

use std::{sync::Arc, time::Duration};

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier},
};
use social_kit::{Error, Result};
use tokio::sync::Semaphore;

/// Memory one hash takes (m = 19 MiB).
pub const HASH_MIB: u64 = 19;

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    argon: Arc<Argon2<'static>>,
    /// A hash of a random password, verified against when the user does not exist so
    /// that a failed login takes as long either way.
    dummy: Arc<str>,
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl Hasher {
    /// OWASP Password Storage Cheat Sheet: Argon2id, m=19456 KiB, t=2, p=1; at most
    /// `memory_mib` of hashing at once (and no more hashes than cores), each waiting at
    /// most `wait` for its turn.
    pub fn new(memory_mib: u64, wait: Duration) -> anyhow::Result<Self> {
        let params = Params::new(19 * 1024, 2, 1, None)
            .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy = argon
            .hash_password(bson::oid::ObjectId::new().to_hex().as_bytes())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let by_memory = usize::try_from(memory_mib / HASH_MIB).unwrap_or(usize::MAX);
        anyhow::ensure!(
            by_memory >= 1,
            "PASSWORD_HASH_MEMORY_MIB={memory_mib} is less than one hash ({HASH_MIB} MiB)"
        );
        let parallel = by_memory.min(cores).max(1);
        tracing::info!(parallel, memory_mib, ?wait, "password hashing bounded");
        Ok(Self {
            argon: Arc::new(argon),
            dummy: dummy.into(),
            permits: Arc::new(Semaphore::new(parallel)),
            wait,
        })
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String> {
        let argon = self.argon.clone();
        self.blocking(move || {
            argon
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| Error::internal(anyhow::anyhow!("argon2 hash: {e}")))
        })
        .await
    }

    /// Whether `password` matches `hash`; with no hash, verifies against the dummy and
    /// answers `false`.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool> {
        let argon = self.argon.clone();
        let (hash, real) = match hash {
            Some(h) => (h, true),
            None => (self.dummy.to_string(), false),
        };
        self.blocking(move || {
            Ok(argon
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
                && real)
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await;
        let Ok(Ok(_permit)) = permit else {
            return Err(Error::Overloaded {
                message: "too many password checks at once; retry shortly".into(),
                retry_after: Duration::from_secs(1),
            });
        };
        tokio::task::spawn_blocking(f)
            .await
            .map_err(Error::internal)?
    }
}
