//! Password guessing: each check of a password (Login, and the current password of
//! ChangePassword and DeleteAccount) is counted against the identifier it was made for
//! and the client's network, so that an attacker is locked out and the account's owner
//! is not (OWASP's authentication cheat sheet). Stored in MongoDB (`login_attempts`,
//! purged by a TTL index) so that every replica sees the same counts.
//!
//! - **Per (identifier, network)**: after `free` failures, attempts on that username or
//!   email (or that account, for the checks of ChangePassword and DeleteAccount) from
//!   that network are refused for a delay that doubles with each further failure, up to
//!   `max_block`. Failures are forgotten `window` after the last one, a window longer
//!   than the longest block, so a block never ends with the count wiped. An attempt is
//!   counted *before* its password is checked (reserved, then released on success), in
//!   one conditional write: a burst of concurrent guesses at a block's end gets one
//!   check, and a block only ever lengthens.
//! - **Per identifier** (all networks): failures are counted too; past
//!   `account_failures` of them within the window, every network the account did not
//!   sign in from (a login, a registration or a refresh) within [`KNOWN_FOR`] is counted
//!   as one network, with its `free` failures and doubling blocks up to `max_block`: a
//!   delay, never a lock, and an attacker who moves from network to network (an IPv6 /48
//!   holds 65,536 /64s) gets about one guess per `max_block` once past it, not `free`
//!   per network. The networks the account signed in from keep their own counts: the
//!   owner, at home or on their phone, is not held up by the storm. A refusal costs no
//!   password hash.
//!
//! The username and the email of an account are counted apart, each with its own
//! limits (twice the guesses, at most): a shared count would answer "blocked" for an
//! email exactly when it is the blocked username's, telling a stranger whose email it
//! is. An identifier with no account is counted alike, so that the answers never tell
//! which accounts exist. The network is an IPv4 address, or an IPv6 /64, as the gateway
//! reports the client (`kit::auth::ClientAddress`).
//!
//! Every count is one document of `login_attempts`, keyed by its kind and whom it counts,
//! so that no text a client types names another count (a username `alice|<network>`
//! once named alice's count from that network): an identifier's count is `login:<typed>`
//! or `account:<id>`; an identifier's from one network `pair:<network>|<identifier>`
//! (a network holds no `|`); the networks unknown to an account under a storm
//! `elsewhere:<identifier>`; a network an account signed in from
//! `known:<account>|<network>`. Only [`Subject`] makes them.

use std::{net::IpAddr, time::Duration};

use bson::{DateTime, doc, oid::ObjectId};
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_kit::time::{ms, now_ms};
use social_kit::{Result, mongo};

const COLLECTION: &str = "login_attempts";
/// A network the account signed in from is known this long after the last time: it
/// stays open when the account is past `account_failures`.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 86_400);
/// Tries of the conditional reservation when concurrent attempts keep changing it.
const TRIES: usize = 20;

/// How failed password checks are counted.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `LOGIN_FREE_FAILURES`: failures per (identifier, network) before attempts from
    /// that network are refused.
    pub free: i32,
    /// `LOGIN_FAILURE_WINDOW_SECS`: failures are forgotten this long after the last one
    /// (longer than `max_block`).
    pub window: Duration,
    /// `LOGIN_BLOCK_SECS`: the first refusal's delay; it doubles with each failure.
    pub first_block: Duration,
    /// `LOGIN_MAX_BLOCK_SECS`: the longest delay.
    pub max_block: Duration,
    /// `LOGIN_ACCOUNT_FAILURES`: failures of one identifier from all networks within the
    /// window after which the networks its account did not sign in from are counted as
    /// one.
    pub account_failures: i32,
}

impl Policy {
    /// How long attempts are refused after `failures` failures.
    fn block(&self, failures: i32) -> Duration {
        let over = failures - self.free;
        if over < 0 {
            return Duration::ZERO;
        }
        let doublings = u32::try_from(over).unwrap_or(0).min(20);
        self.first_block.saturating_mul(1 << doublings).min(self.max_block)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Attempts {
    #[serde(rename = "_id")]
    key: String,
    #[serde(default)]
    failures: i32,
    #[serde(default)]
    last_failure_ms: i64,
    /// Attempts are refused until then.
    #[serde(default)]
    blocked_until_ms: i64,
    /// Written by `$set`: the stand-in stores it as text.
    #[serde(deserialize_with = "social_kit::mongo::lenient::date")]
    forget_at: DateTime,
}

/// Who is guessing: the identifier typed (what is counted), its account (what knows
/// networks; the identifier when no account has it) and the client's network.
#[derive(Debug, Clone)]
pub struct Subject {
    identifier: String,
    account: String,
    network: String,
}

impl Subject {
    /// A login that named an account by `who` (a username or an email, normalised; any
    /// text a client typed): counted per `who` (a username's block tells nothing of its
    /// account's email), with the networks known to `account`, the account `who` names
    /// (an identifier no account has alike); `client` the caller's address, if known.
    pub fn login(who: &str, account: Option<ObjectId>, client: Option<IpAddr>) -> Self {
        Self {
            identifier: format!("login:{who}"),
            account: account.map_or_else(|| format!("unknown:{who}"), account_key),
            network: client.map_or_else(|| "unknown".to_owned(), network),
        }
    }

    /// A check of `account`'s current password (ChangePassword, DeleteAccount), from
    /// `client`.
    pub fn password_of(account: ObjectId, client: Option<IpAddr>) -> Self {
        Self { identifier: account_key(account), ..Self::login("", Some(account), client) }
    }

    /// The key of the identifier's failures from the network.
    fn pair(&self) -> String {
        format!("pair:{}|{}", self.network, self.identifier)
    }

    /// The key of the failures, once the account is past `account_failures`, of every
    /// network it did not sign in from, counted as one network.
    fn elsewhere(&self) -> String {
        format!("elsewhere:{}", self.identifier)
    }

    /// The key marking the network as one the account signed in from.
    fn known(&self) -> String {
        format!("known:{}|{}", self.account, self.network)
    }
}

fn account_key(account: ObjectId) -> String {
    format!("account:{account}")
}

/// The network an address is counted under: an IPv4 address, or an IPv6 /64.
pub fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// A reserved attempt: counted as a failure unless [`Throttle::succeeded`] releases it.
#[must_use]
pub struct Reserved {
    subject: Subject,
    /// Counted with every network unknown to the account (it is under a storm).
    elsewhere: bool,
}

/// Failed password checks. Cheap to clone.
#[derive(Clone)]
pub struct Throttle {
    db: mongo::Db,
    attempts: Collection<Attempts>,
    policy: Policy,
}

impl Throttle {
    pub fn new(db: &mongo::Db, policy: Policy) -> Self {
        Self { db: db.clone(), attempts: db.collection(COLLECTION), policy }
    }

    /// Creates the TTL index (idempotent).
    pub async fn init(&self) -> mongodb::error::Result<()> {
        self.db.ensure_expiry(&self.attempts, "forget_ttl", "forget_at", Duration::ZERO).await
    }

    /// Counts an attempt of `subject` before its password is checked: `Err(wait)` when
    /// its network is refused for now (its own failures, or, when the account is past
    /// `account_failures` and the network unknown to it, the failures of every network
    /// unknown to it, counted as one), else the reservation.
    pub async fn reserve(
        &self,
        subject: Subject,
    ) -> Result<std::result::Result<Reserved, Duration>> {
        let elsewhere = self.strained(&subject).await?;
        if elsewhere {
            // The network's own block still holds.
            let at = now_ms();
            if let Some(a) = self.attempts.find_one(doc! { "_id": subject.pair() }).await?
                && a.blocked_until_ms > at
            {
                return Ok(Err(Duration::from_millis((a.blocked_until_ms - at).unsigned_abs())));
            }
        }
        let key = if elsewhere { subject.elsewhere() } else { subject.pair() };
        for _ in 0..TRIES {
            let at = now_ms();
            let current = self.attempts.find_one(doc! { "_id": &key }).await?;
            let (failures, blocked_until, last) = current
                .as_ref()
                .map_or((0, 0, 0), |a| (a.failures, a.blocked_until_ms, a.last_failure_ms));
            if blocked_until > at {
                return Ok(Err(Duration::from_millis((blocked_until - at).unsigned_abs())));
            }
            // Forgotten once the window has passed since the last failure.
            let counted = if last < at - ms(self.policy.window) { 0 } else { failures };
            let next = Attempts {
                key: key.clone(),
                failures: counted + 1,
                last_failure_ms: at,
                blocked_until_ms: at.saturating_add(ms(self.policy.block(counted + 1))),
                forget_at: self.forget_at(at),
            };
            // Only if nobody reserved meanwhile: of concurrent attempts, one counts at a
            // time, and a block is only ever set once the last one is over (it lengthens).
            let reserved = match current {
                None => mongo::insert_once(&self.attempts, &next).await?,
                Some(_) => {
                    self.attempts
                        .update_one(
                            doc! {
                                "_id": &key, "failures": failures,
                                "blocked_until_ms": blocked_until, "last_failure_ms": last,
                            },
                            doc! { "$set": {
                                "failures": next.failures,
                                "last_failure_ms": next.last_failure_ms,
                                "blocked_until_ms": next.blocked_until_ms,
                                "forget_at": next.forget_at,
                            } },
                        )
                        .await?
                        .matched_count
                        == 1
                }
            };
            if reserved {
                return Ok(Ok(Reserved { subject, elsewhere }));
            }
        }
        Err(social_kit::Error::Unavailable(
            "too many attempts at once for this account; retry shortly".into(),
        ))
    }

    /// The password was wrong: the identifier's count across networks grows too (from
    /// one again once the window has passed since its last failure).
    pub async fn failed(&self, reserved: Reserved) -> Result<()> {
        let at = now_ms();
        let key = &reserved.subject.identifier;
        let set = doc! { "last_failure_ms": at, "forget_at": self.forget_at(at) };
        let lapsed = self
            .attempts
            .update_one(
                doc! { "_id": key, "last_failure_ms": { "$lt": at - ms(self.policy.window) } },
                doc! { "$set": { "failures": 1, "last_failure_ms": at, "forget_at": self.forget_at(at) } },
            )
            .await?
            .matched_count
            == 1;
        if !lapsed {
            self.attempts
                .update_one(doc! { "_id": key }, doc! { "$inc": { "failures": 1 }, "$set": set })
                .upsert(true)
                .await?;
        }
        Ok(())
    }

    /// `client`'s network is one `account` signed in from (a registration, a refresh):
    /// it keeps its own counts when the account is under a storm, for [`KNOWN_FOR`].
    pub async fn known(&self, account: ObjectId, client: Option<IpAddr>) -> Result<()> {
        self.mark_known(&Subject::password_of(account, client)).await
    }

    async fn mark_known(&self, subject: &Subject) -> Result<()> {
        let known_until = DateTime::from_millis(now_ms().saturating_add(ms(KNOWN_FOR)));
        self.attempts
            .update_one(
                doc! { "_id": subject.known() },
                doc! { "$set": { "forget_at": known_until } },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// The password was right: the attempt is released, the network's failures are
    /// forgotten (the account's count across networks stays, and so does the count of
    /// the networks unknown to it, which an attacker shares) and the network is known to
    /// the account for [`KNOWN_FOR`].
    pub async fn succeeded(&self, reserved: Reserved) -> Result<()> {
        let subject = reserved.subject;
        if !reserved.elsewhere {
            self.attempts.delete_one(doc! { "_id": subject.pair() }).await?;
        }
        self.mark_known(&subject).await
    }

    /// Whether `subject`'s identifier is past `account_failures` within the window and
    /// its network is not one the account signed in from.
    async fn strained(&self, subject: &Subject) -> Result<bool> {
        let at = now_ms();
        let Some(a) = self.attempts.find_one(doc! { "_id": &subject.identifier }).await? else {
            return Ok(false);
        };
        if a.last_failure_ms.saturating_add(ms(self.policy.window)) <= at
            || a.failures < self.policy.account_failures
        {
            return Ok(false);
        }
        let known = self
            .attempts
            .find_one(doc! { "_id": subject.known() })
            .await?
            .is_some_and(|k| k.forget_at.timestamp_millis() > at);
        Ok(!known)
    }

    fn forget_at(&self, at: i64) -> DateTime {
        DateTime::from_millis(at.saturating_add(ms(self.policy.window.max(self.policy.max_block))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_addresses_or_ipv6_slash_64s() {
        let n = |s: &str| network(s.parse().unwrap());
        assert_eq!(n("203.0.113.7"), "203.0.113.7");
        assert_eq!(n("2001:db8:1:2:aaaa::1"), n("2001:db8:1:2:ffff::9"));
        assert_ne!(n("2001:db8:1:2::1"), n("2001:db8:1:3::1"));
        assert_eq!(n("::ffff:203.0.113.7"), "203.0.113.7");
    }

    #[test]
    fn blocks_double_from_the_free_failures_to_the_longest() {
        let policy = Policy {
            free: 5,
            window: Duration::from_secs(86_400),
            first_block: Duration::from_secs(30),
            max_block: Duration::from_secs(900),
            account_failures: 100,
        };
        assert_eq!(policy.block(4), Duration::ZERO);
        assert_eq!(policy.block(5), Duration::from_secs(30));
        assert_eq!(policy.block(6), Duration::from_secs(60));
        assert_eq!(policy.block(50), Duration::from_secs(900));
    }
}
