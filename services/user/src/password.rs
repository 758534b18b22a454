//! Argon2id password hashing with OWASP's recommended parameters (19 MiB, 2 passes, 1
//! lane), off the async runtime and at most a few at a time, so that a burst of logins
//! neither blocks the runtime nor allocates 19 MiB per waiting request.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier},
};
use social_kit::{Error, Result};
use tokio::sync::Semaphore;

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    argon: Arc<Argon2<'static>>,
    /// A hash of a random password, verified against when the user does not exist so
    /// that a failed login takes as long either way.
    dummy: Arc<str>,
    permits: Arc<Semaphore>,
}

impl Hasher {
    /// OWASP Password Storage Cheat Sheet: Argon2id, m=19456 KiB, t=2, p=1.
    pub fn new() -> anyhow::Result<Self> {
        let params = Params::new(19 * 1024, 2, 1, None)
            .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy = argon
            .hash_password(bson::oid::ObjectId::new().to_hex().as_bytes())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
        Ok(Self {
            argon: Arc::new(argon),
            dummy: dummy.into(),
            permits: Arc::new(Semaphore::new(parallel)),
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
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(Error::internal)?
    }
}
