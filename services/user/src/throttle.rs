//! Login throttling: after `LOGIN_FREE_FAILURES` failed logins for one identifier within a
//! window, further attempts for it are refused for a delay that doubles with each
//! further failure (up to a cap); a success resets it. Counted per normalised
//! identifier (the lowercased username or email as typed), whether or not such an
//! account exists, so that the answers never tell which accounts exist. Stored in
//! MongoDB (`login_attempts`, purged by a TTL index) so that every replica sees the same
//! count.

use std::time::Duration;

use bson::{DateTime, doc};
use mongodb::{Collection, Database, options::ReturnDocument};
use serde::{Deserialize, Serialize};
use social_kit::{Result, mongo};

const COLLECTION: &str = "login_attempts";

/// How failed logins are counted.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `LOGIN_FREE_FAILURES`: failures within `window` after which attempts are refused.
    pub free: i32,
    /// `LOGIN_FAILURE_WINDOW_SECS`: failures older than this are forgotten.
    pub window: Duration,
    /// `LOGIN_BLOCK_SECS`: the first refusal's delay; it doubles with each failure.
    pub first_block: Duration,
    /// `LOGIN_MAX_BLOCK_SECS`: the longest delay.
    pub max_block: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
struct Attempts {
    /// The normalised identifier.
    #[serde(rename = "_id")]
    key: String,
    #[serde(default)]
    failures: i32,
    #[serde(default)]
    last_failure_ms: i64,
    #[serde(default)]
    blocked_until_ms: i64,
}

/// Failed logins per identifier. Cheap to clone.
#[derive(Clone)]
pub struct Throttle {
    attempts: Collection<Attempts>,
    policy: Policy,
}

fn now_ms() -> i64 {
    DateTime::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Throttle {
    pub fn new(db: &Database, policy: Policy) -> Self {
        Self {
            attempts: db.collection(COLLECTION),
            policy,
        }
    }

    /// Creates the TTL index (idempotent).
    pub async fn init(&self, stand_in: bool) -> mongodb::error::Result<()> {
        mongo::ensure_indexes(
            &self.attempts,
            vec![mongo::ttl_index("forget_ttl", "forget_at", Duration::ZERO)],
            stand_in,
        )
        .await
    }

    /// How long attempts for `key` are still refused, if they are.
    pub async fn refused_for(&self, key: &str) -> Result<Option<Duration>> {
        let Some(attempts) = self.attempts.find_one(doc! { "_id": key }).await? else {
            return Ok(None);
        };
        let left = attempts.blocked_until_ms - now_ms();
        Ok((left > 0).then(|| Duration::from_millis(left.unsigned_abs())))
    }

    /// Records a failed login for `key`; how long further attempts are refused, if now
    /// they are.
    pub async fn failed(&self, key: &str) -> Result<Option<Duration>> {
        let at = now_ms();
        // Failures older than the window are forgotten.
        self.attempts
            .update_one(
                doc! { "_id": key, "last_failure_ms": { "$lt": at - ms(self.policy.window) } },
                doc! { "$set": { "failures": 0 } },
            )
            .await?;
        let forget_at = DateTime::from_millis(
            at.saturating_add(ms(self.policy.window).max(ms(self.policy.max_block))),
        );
        let attempts = self
            .attempts
            .find_one_and_update(
                doc! { "_id": key },
                doc! {
                    "$inc": { "failures": 1 },
                    "$set": { "last_failure_ms": at, "forget_at": forget_at },
                },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await?;
        let failures = attempts.map_or(1, |a| a.failures);
        // The `free`-th failure starts the first refusal; each further one doubles it.
        let over = failures - self.policy.free;
        if over < 0 {
            return Ok(None);
        }
        let doublings = u32::try_from(over).unwrap_or(0).min(20);
        let block = self
            .policy
            .first_block
            .saturating_mul(1 << doublings)
            .min(self.policy.max_block);
        self.attempts
            .update_one(
                doc! { "_id": key },
                doc! { "$set": { "blocked_until_ms": at.saturating_add(ms(block)) } },
            )
            .await?;
        Ok(Some(block))
    }

    /// Forgets the failures of `key` (a successful login).
    pub async fn succeeded(&self, key: &str) -> Result<()> {
        self.attempts.delete_one(doc! { "_id": key }).await?;
        Ok(())
    }
}
