//! Argon2id password hashing with OWASP's recommended parameters (19 MiB, 2 passes, 1
//! lane), off the async runtime, and bounded: at most as many hashes at once as the
//! memory budget (`PASSWORD_HASH_MEMORY_MIB`) allows, and one fewer than the cores (at
//! least one), so that a core stays free for the other RPCs. A hash that would wait
//! longer than `PASSWORD_HASH_WAIT_MS` for its turn is refused at once with
//! `UNAVAILABLE` and a retry delay, so that a login storm (unknown usernames hash too)
//! neither exceeds the pod's memory nor queues without end.
//!
//! Each slot owns its 19 MiB of Argon2 memory for the life of the process, and every
//! hash runs in one of them: a fresh 19 MiB allocation per hash, freed on whichever
//! blocking thread ran it, would be kept by the allocator's per-thread arenas (hundreds
//! of MiB after a storm).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use social_kit::{Error, Result};
use tokio::sync::Semaphore;

/// Memory one hash takes (m = 19 MiB).
pub const HASH_MIB: u64 = 19;
/// Argon2's memory cost in KiB (its blocks are 1 KiB).
const M_COST: u32 = 19 * 1024;
/// Bytes of salt and of output.
const SALT_LEN: usize = 16;
const OUTPUT_LEN: usize = 32;

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    /// A hash of a random password, verified against when the user does not exist so
    /// that a failed login takes as long either way.
    dummy: Arc<str>,
    permits: Arc<Semaphore>,
    /// The slots' memory; a permit entitles its holder to one.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    wait: Duration,
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(anyhow::anyhow!("argon2 {what}: {e}"))
}

/// The PHC string of `password` hashed with a fresh salt in `memory`.
fn hash_in(params: &Params, password: &[u8], memory: &mut [Block]) -> Result<String> {
    let mut salt = [0_u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| failed("salt", e))?;
    let mut out = [0_u8; OUTPUT_LEN];
    argon(params)
        .hash_password_into_with_memory(password, &salt, &mut out, memory)
        .map_err(|e| failed("hash", e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| failed("params", e))?,
        salt: Some(Salt::new(&salt).map_err(|e| failed("salt", e))?),
        hash: Some(Output::new(&out).map_err(|e| failed("output", e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`, computed in `memory` when the
/// stored parameters are ours (any other is verified with an allocation of its own).
fn verify_in(password: &[u8], stored: &str, memory: &mut [Block]) -> bool {
    use argon2::password_hash::PasswordVerifier;
    let Ok(phc) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected), Ok(params)) = (&phc.salt, &phc.hash, Params::try_from(&phc))
    else {
        return false;
    };
    if params.m_cost() as usize != memory.len() || expected.len() != OUTPUT_LEN {
        return argon(&params).verify_password(password, &phc).is_ok();
    }
    let mut out = [0_u8; OUTPUT_LEN];
    if argon(&params).hash_password_into_with_memory(password, salt, &mut out, memory).is_err() {
        return false;
    }
    // `Output` compares in constant time.
    Output::new(&out).is_ok_and(|computed| computed == *expected)
}

impl Hasher {
    /// OWASP Password Storage Cheat Sheet: Argon2id, m=19456 KiB, t=2, p=1; at most
    /// `memory_mib` of hashing at once (and one fewer hash than cores), each waiting at
    /// most `wait` for its turn.
    pub fn new(memory_mib: u64, wait: Duration) -> anyhow::Result<Self> {
        let params = Params::new(M_COST, 2, 1, Some(OUTPUT_LEN))
            .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let by_memory = usize::try_from(memory_mib / HASH_MIB).unwrap_or(usize::MAX);
        anyhow::ensure!(
            by_memory >= 1,
            "PASSWORD_HASH_MEMORY_MIB={memory_mib} is less than one hash ({HASH_MIB} MiB)"
        );
        // One core is left to the other RPCs: a login storm must not starve them.
        let parallel = by_memory.min(cores.saturating_sub(1)).max(1);
        let mut memory: Vec<Vec<Block>> =
            (0..parallel).map(|_| vec![Block::default(); M_COST as usize]).collect();
        let dummy = hash_in(
            &params,
            bson::oid::ObjectId::new().to_hex().as_bytes(),
            memory.first_mut().map_or(&mut [][..], |m| m.as_mut_slice()),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(parallel, memory_mib, ?wait, "password hashing bounded");
        Ok(Self {
            params,
            dummy: dummy.into(),
            permits: Arc::new(Semaphore::new(parallel)),
            memory: Arc::new(Mutex::new(memory)),
            wait,
        })
    }

    /// A hashing slot, once one is free (within the wait bound); `UNAVAILABLE` with a
    /// retry delay otherwise. Taken before anything else is spent on a request.
    pub async fn reserve(&self) -> Result<Slot> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await;
        let Ok(Ok(permit)) = permit else {
            return Err(Error::Overloaded {
                message: "too many password checks at once; retry shortly".into(),
                retry_after: Duration::from_secs(1),
            });
        };
        Ok(Slot { hasher: self.clone(), _permit: permit })
    }
}

/// The right to hash, held for one request.
pub struct Slot {
    hasher: Hasher,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Slot {
    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String> {
        let params = self.hasher.params.clone();
        self.run(move |memory| hash_in(&params, password.as_bytes(), memory)).await
    }

    /// Whether `password` matches `hash`; with no hash, verifies against the dummy and
    /// answers `false`.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool> {
        let (hash, real) = match hash {
            Some(h) => (h, true),
            None => (self.hasher.dummy.to_string(), false),
        };
        self.run(move |memory| Ok(verify_in(password.as_bytes(), &hash, memory) && real)).await
    }

    /// Runs `f` on a blocking thread with this slot's memory.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut [Block]) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let slots = &self.hasher.memory;
        let taken = slots.lock().map_err(|_| failed("memory", "poisoned"))?.pop();
        // A permit guarantees a slot; if one was lost to a panic, make it again.
        let mut memory = taken.unwrap_or_else(|| vec![Block::default(); M_COST as usize]);
        let (result, memory) = tokio::task::spawn_blocking(move || {
            let result = f(&mut memory);
            (result, memory)
        })
        .await
        .map_err(Error::internal)?;
        if let Ok(mut slots) = slots.lock() {
            slots.push(memory);
        }
        result
    }
}

/// Why `password` is refused, if it is too easy to guess (NIST SP 800-63B: checked
/// against known-compromised and common values): zxcvbn's estimate, with its own lists
/// of common and leaked passwords, words and names, and the account's own `context`
/// (username, email), below 10^8 guesses (its score 2). Off the async runtime: a long
/// password takes milliseconds to estimate.
pub async fn too_guessable(password: String, context: Vec<String>) -> Result<Option<&'static str>> {
    let score = tokio::task::spawn_blocking(move || {
        let context: Vec<&str> = context.iter().map(String::as_str).collect();
        zxcvbn::zxcvbn(&password, &context).score()
    })
    .await
    .map_err(Error::internal)?;
    Ok((score < zxcvbn::Score::Two).then_some(
        "is too easy to guess: it is a common or leaked password, a word, a name or a \
         pattern (or close to your username or email); a few unrelated words make a good one",
    ))
}
