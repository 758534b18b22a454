//! Sessions: the `sessions` collection and the refresh tokens that keep them going.
//!
//! A session starts at Register or Login and holds the SHA-256 of its current refresh
//! token (256 random bits, handed out once; a hash needs no salt or slowness at that
//! entropy). RefreshSession rotates it: one conditional update replaces the hash and
//! keeps the previous one (`previous_hash`), so a token is exchanged at most once. A
//! token that no session holds any more but one *held* (the previous one, or one of the
//! older ones in `retired_refresh_tokens`) was reused: its session ends, whoever has the
//! newer token (RFC 9700, refresh token rotation with reuse detection).
//!
//! Except within the grace (`REFRESH_REUSE_GRACE_SECS`, seconds): the token just
//! exchanged, presented again that soon (two tabs refreshing at once, a retry after a
//! lost answer), gets the same successor instead of ending the session. A successor is
//! not drawn at random but derived from its predecessor with a key only this service
//! holds (HMAC-SHA256), so the same one can be handed out again without being stored.
//!
//! Times the queries compare are integers (ms): the stand-in stores dates written by
//! `$set` as text. Ended sessions and retired hashes are purged by TTL indexes.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bson::{DateTime, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Collection, options::ReturnDocument};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use social_kit::time::{ms, now_ms};
use social_kit::{
    Error, Result, mongo,
    paging::{self, Order, PageRequest},
};

/// The collections this module owns.
pub const SESSIONS: &str = "sessions";
const RETIRED: &str = "retired_refresh_tokens";
const ACTIVE: &str = "active";
const ENDED: &str = "ended";
/// How long an ended session's document is kept (for support and audits).
const KEEP_ENDED: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long sessions last, and how many an account keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `SESSION_IDLE_DAYS`: a session ends this long after its last refresh.
    pub idle: Duration,
    /// `SESSION_MAX_DAYS`: and at the latest this long after it started.
    pub max: Duration,
    /// `SESSIONS_PER_ACCOUNT`: the most live sessions an account keeps; a login past
    /// them ends the least recently used. What an account holds, and what ending all of
    /// its sessions at once (a password change, a deletion) reads and writes, stays
    /// bounded.
    pub per_account: u64,
}

/// A stored session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub user_id: ObjectId,
    /// The client's label for it.
    pub device: String,
    /// SHA-256 (hex) of the current refresh token.
    pub token_hash: String,
    /// SHA-256 (hex) of the refresh token before it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<String>,
    pub created_at: DateTime,
    /// Orders lists (see `social_kit::paging`).
    pub sort_key: i64,
    pub last_used_ms: i64,
    /// Ends then unless refreshed before (sliding).
    pub idle_until_ms: i64,
    /// Ends then at the latest.
    pub max_until_ms: i64,
    /// When its refresh token was last exchanged (ms; the grace counts from it).
    #[serde(default)]
    pub rotated_ms: i64,
    /// The account's credential version when the session started (or last took a
    /// new password): an account whose version moved on no longer honours it.
    #[serde(default)]
    pub credential_version: i64,
    /// `active` or `ended`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_reason: Option<String>,
    /// When the document goes (TTL).
    pub purge_at: DateTime,
}

impl SessionDoc {
    /// When it ends unless refreshed (ms).
    pub fn expires_ms(&self) -> i64 {
        self.idle_until_ms.min(self.max_until_ms)
    }
}

/// A refresh token that was exchanged, and its session.
#[derive(Debug, Serialize, Deserialize)]
struct Retired {
    /// SHA-256 (hex) of the token.
    #[serde(rename = "_id")]
    hash: String,
    session_id: ObjectId,
    purge_at: DateTime,
}

/// What [`Sessions::keep_within_limit`] reads of a session.
#[derive(Deserialize)]
struct Used {
    #[serde(rename = "_id")]
    id: ObjectId,
    sort_key: i64,
    last_used_ms: i64,
}

/// What a refresh came to.
pub enum Refreshed {
    /// The session, and its new refresh token.
    Rotated(Box<SessionDoc>, String),
    /// The token was exchanged before: its session has ended.
    Reused,
    /// Unknown, expired or ended.
    Invalid,
}

/// Access to the sessions. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    db: mongo::Db,
    sessions: Collection<SessionDoc>,
    retired: Collection<Retired>,
    limits: Limits,
    /// Derives a refresh token's successor.
    successors: hmac::Hmac<Sha256>,
    /// How long access tokens live (what an ended session's tokens may still do).
    token_ttl: Duration,
    /// Tells every service that sessions ended.
    broadcaster: social_events::live::Broadcaster,
}

/// What a call that needs an active session gets without one.
pub const NOT_ACTIVE: Error = Error::Unauthenticated(
    "this call needs the access token of a session that is still active; log in again",
);

/// The most ended sessions [`Sessions::ended_since`] reads at once.
pub const ENDED_PAGE: i64 = 10_000;

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh refresh token (a session's first): 256 random bits, URL-safe base64.
fn new_token() -> Result<String> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::internal(anyhow::anyhow!("no randomness: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

impl Sessions {
    /// `secret`: the key successors are derived with (see the module docs);
    /// `token_ttl`: how long access tokens live; `broadcaster`: how endings are told.
    pub fn new(
        db: &mongo::Db,
        limits: Limits,
        secret: &[u8],
        token_ttl: Duration,
        broadcaster: social_events::live::Broadcaster,
    ) -> Self {
        use hmac::Mac;
        Self {
            db: db.clone(),
            sessions: db.collection(SESSIONS),
            retired: db.collection(RETIRED),
            limits,
            successors: hmac::Hmac::<Sha256>::new_from_slice(secret)
                .unwrap_or_else(|_| hmac::Hmac::<Sha256>::new(&Default::default())),
            token_ttl,
            broadcaster,
        }
    }

    /// The refresh token that follows `token`.
    fn successor(&self, token: &str) -> String {
        use hmac::Mac;
        let mut mac = self.successors.clone();
        mac.update(token.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Creates the indexes (idempotent).
    pub async fn init(&self) -> mongodb::error::Result<()> {
        self.db
            .ensure_indexes(
                &self.sessions,
                vec![
                    // RefreshSession.
                    mongo::index("token_hash_unique", doc! { "token_hash": 1 }, true),
                    // Reuse of the token just exchanged.
                    mongo::index("previous_hash", doc! { "previous_hash": 1 }, false),
                    // The sessions that ended lately, in the order they are paged, for
                    // every service to refuse their tokens. Not sparse: with `_id` among
                    // its keys, a sparse index would hold every session all the same.
                    mongo::index("ended_order", doc! { "ended_ms": 1, "_id": 1 }, false),
                    // ListSessions (expired ones told by the key), RevokeOtherSessions and
                    // the other ends of a user's sessions (ended ones out of the range).
                    mongo::index(
                        "user_sorted",
                        doc! {
                            "user_id": 1, "state": 1, "sort_key": -1,
                            "idle_until_ms": 1, "max_until_ms": 1,
                        },
                        false,
                    ),
                    mongo::sort_key_index(None),
                    mongo::ttl_index("purge_ttl", "purge_at", Duration::ZERO),
                ],
            )
            .await?;
        // Paged by time alone (a page could end inside a group ended together).
        mongo::retire_indexes(&self.sessions, &["ended"]).await?;
        self.db.ensure_expiry(&self.retired, "purge_ttl", "purge_at", Duration::ZERO).await
    }

    /// Starts a session of `user` on `device` under the account's `credential_version`;
    /// returns it and its refresh token.
    pub async fn start(
        &self,
        user: ObjectId,
        device: String,
        credential_version: i64,
    ) -> Result<(SessionDoc, String)> {
        let token = new_token()?;
        let (now, at) = (DateTime::now(), now_ms());
        let max_until_ms = at.saturating_add(ms(self.limits.max));
        let mut session = SessionDoc {
            id: ObjectId::new(),
            user_id: user,
            device,
            token_hash: hash(&token),
            previous_hash: None,
            created_at: now,
            sort_key: paging::sort_key(now),
            last_used_ms: at,
            idle_until_ms: at.saturating_add(ms(self.limits.idle)),
            max_until_ms,
            rotated_ms: 0,
            credential_version,
            state: ACTIVE.into(),
            ended_reason: None,
            purge_at: DateTime::from_millis(max_until_ms.saturating_add(ms(KEEP_ENDED))),
        };
        mongo::insert_new(&self.sessions, &mut session, None, |s| &mut s.sort_key).await?;
        Ok((session, token))
    }

    /// Past [`Limits::per_account`] live sessions of `user`, ends the least recently
    /// used (refreshed) ones, never `new` (the login's own). Reads the newest
    /// `2 × per_account` sessions at most; live ones older than those end too. Nothing is
    /// read but one key when the account is under its limit.
    pub async fn keep_within_limit(&self, user: ObjectId, new: ObjectId) -> Result<()> {
        let at = now_ms();
        let limit = self.limits.per_account;
        let live = doc! {
            "user_id": mongo::equals_id(user), "state": ACTIVE,
            "idle_until_ms": { "$gt": at }, "max_until_ms": { "$gt": at },
        };
        let newest_first = doc! { "sort_key": -1 };
        let documents = self.sessions.clone_with_type::<bson::Document>();
        let over = documents
            .find_one(live.clone())
            .sort(newest_first.clone())
            .skip(limit)
            .projection(doc! { "_id": 1 })
            .await?;
        if over.is_none() {
            return Ok(());
        }
        let read = limit.saturating_mul(2);
        let mut rows: Vec<Used> = self
            .sessions
            .clone_with_type::<Used>()
            .find(live)
            .sort(newest_first)
            .limit(i64::try_from(read).unwrap_or(i64::MAX))
            .projection(doc! { "_id": 1, "sort_key": 1, "last_used_ms": 1 })
            .await?
            .try_collect()
            .await?;
        let oldest_read = rows.last().map(|r| r.sort_key);
        let past_what_was_read = rows.len() as u64 == read;
        // The login's own first, then the most recently used.
        rows.sort_by_key(|r| (r.id != new, std::cmp::Reverse(r.last_used_ms)));
        let least_used: Vec<ObjectId> =
            rows.iter().skip(usize::try_from(limit).unwrap_or(usize::MAX)).map(|r| r.id).collect();
        let why = "more sessions than an account keeps";
        let mut ended =
            self.finish(doc! { "_id": { "$in": least_used }, "state": ACTIVE }, why).await?.len();
        if let (true, Some(oldest)) = (past_what_was_read, oldest_read) {
            let older = doc! {
                "user_id": mongo::equals_id(user), "state": ACTIVE,
                "sort_key": { "$lt": oldest },
            };
            ended += self.finish(older, why).await?.len();
        }
        if ended > 0 {
            tracing::info!(user = %user, ended, "a login ended the account's least recently used sessions");
        }
        Ok(())
    }

    /// Exchanges `token` for a new one (see the module docs); `grace`: how long after
    /// an exchange the token exchanged gets the same successor again.
    pub async fn refresh(&self, token: &str, grace: Duration) -> Result<Refreshed> {
        let old = hash(token);
        let next = self.successor(token);
        let at = now_ms();
        let rotated = self
            .sessions
            .find_one_and_update(
                doc! {
                    "token_hash": &old, "state": ACTIVE,
                    "idle_until_ms": { "$gt": at }, "max_until_ms": { "$gt": at },
                },
                doc! { "$set": {
                    "token_hash": hash(&next), "previous_hash": &old, "last_used_ms": at,
                    "rotated_ms": at,
                    "idle_until_ms": at.saturating_add(ms(self.limits.idle)),
                } },
            )
            .return_document(ReturnDocument::After)
            .await?;
        if let Some(session) = rotated {
            let retired = Retired { hash: old, session_id: session.id, purge_at: session.purge_at };
            mongo::insert_once(&self.retired, &retired).await?;
            return Ok(Refreshed::Rotated(Box::new(session), next));
        }
        // Not current anywhere: was it ever?
        let owner = match self.sessions.find_one(doc! { "previous_hash": &old }).await? {
            // Just exchanged, and presented again within the grace: the same successor
            // (the session holds it: its hash is the current one).
            Some(session)
                if session.state == ACTIVE
                    && at.saturating_sub(session.rotated_ms) <= ms(grace)
                    && session.token_hash == hash(&next)
                    && session.expires_ms() > at =>
            {
                return Ok(Refreshed::Rotated(Box::new(session), next));
            }
            Some(session) => Some(session.id),
            None => self.retired.find_one(doc! { "_id": &old }).await?.map(|r| r.session_id),
        };
        let Some(session) = owner else {
            return Ok(Refreshed::Invalid);
        };
        let ended =
            self.finish(doc! { "_id": session, "state": ACTIVE }, "refresh token reused").await?;
        if !ended.is_empty() {
            tracing::warn!(session = %session, "a refresh token was used twice; its session ended");
        }
        Ok(Refreshed::Reused)
    }

    /// Ends the active sessions `filter` matches, for `reason`: they are marked ended
    /// (with the time, for [`Self::ended_since`]) and every service is told at once
    /// (`social_events::sessions`); the ones it ended.
    async fn finish(&self, filter: bson::Document, reason: &str) -> Result<Vec<ObjectId>> {
        let ids = mongo::ids(&self.sessions, filter, None).await?;
        if ids.is_empty() {
            return Ok(ids);
        }
        let at = now_ms();
        self.sessions
            .update_many(
                doc! { "_id": { "$in": &ids }, "state": ACTIVE },
                doc! { "$set": { "state": ENDED, "ended_reason": reason, "ended_ms": at } },
            )
            .await?;
        social_events::sessions::announce(
            &self.broadcaster,
            &ids,
            at.saturating_add(ms(self.token_ttl)),
        );
        Ok(ids)
    }

    /// The sessions that ended after `since` (ms, and after its session among those
    /// that ended at that time; or within an access token's lifetime when `None`, or
    /// when `since` is older), oldest first, [`ENDED_PAGE`] at most, and whether there
    /// may be more: what every service refuses the tokens of.
    pub async fn ended_since(
        &self,
        since: Option<social_events::sessions::Cursor>,
    ) -> Result<(Vec<social_events::sessions::Ended>, bool)> {
        #[derive(Deserialize)]
        struct Row {
            #[serde(rename = "_id")]
            id: ObjectId,
            ended_ms: i64,
        }
        let at = now_ms();
        // Tokens of sessions that ended before this have all expired.
        let horizon = at.saturating_sub(ms(self.token_ttl) + 60_000);
        let filter = match since {
            Some(c) if c.ended_ms >= horizon => match c.after {
                Some(id) => doc! { "$or": [
                    { "ended_ms": { "$gt": c.ended_ms } },
                    { "ended_ms": c.ended_ms, "_id": { "$gt": id } },
                ] },
                None => doc! { "ended_ms": { "$gt": c.ended_ms } },
            },
            _ => doc! { "ended_ms": { "$gt": horizon } },
        };
        let rows: Vec<Row> = self
            .sessions
            .clone_with_type::<Row>()
            .find(filter)
            .projection(doc! { "_id": 1, "ended_ms": 1 })
            .sort(doc! { "ended_ms": 1, "_id": 1 })
            .limit(ENDED_PAGE)
            .await?
            .try_collect()
            .await?;
        let more = rows.len() as i64 == ENDED_PAGE;
        let ended = rows
            .into_iter()
            .map(|r| social_events::sessions::Ended {
                session: r.id,
                ended_ms: r.ended_ms,
                tokens_expire: std::time::SystemTime::UNIX_EPOCH
                    + Duration::from_millis(
                        u64::try_from(r.ended_ms.saturating_add(ms(self.token_ttl))).unwrap_or(0),
                    ),
            })
            .collect();
        Ok((ended, more))
    }

    /// `caller`'s session, if it is still active: what the account's own RPCs require
    /// (a point lookup), so that a session ended a moment ago cannot act for the account
    /// for the rest of its access token's life.
    pub async fn active(&self, caller: &social_kit::auth::Caller) -> Result<SessionDoc> {
        let Some(id) = caller.session else {
            return Err(NOT_ACTIVE);
        };
        let at = now_ms();
        self.sessions
            .find_one(doc! {
                "_id": id, "user_id": mongo::equals_id(caller.user), "state": ACTIVE,
                "idle_until_ms": { "$gt": at }, "max_until_ms": { "$gt": at },
            })
            .await?
            .ok_or(NOT_ACTIVE)
    }

    /// Ends `user`'s session `id`; whether it was active.
    pub async fn end(&self, user: ObjectId, id: ObjectId, reason: &str) -> Result<bool> {
        let filter = doc! { "_id": id, "user_id": mongo::equals_id(user), "state": ACTIVE };
        Ok(!self.finish(filter, reason).await?.is_empty())
    }

    /// Moves `user`'s active session `id` to `credential_version` (the session that
    /// changed the password goes on under the new one); whether it was active.
    pub async fn carry_over(
        &self,
        user: ObjectId,
        id: ObjectId,
        credential_version: i64,
    ) -> Result<bool> {
        let r = self
            .sessions
            .update_one(
                doc! { "_id": id, "user_id": mongo::equals_id(user), "state": ACTIVE },
                doc! { "$max": { "credential_version": credential_version } },
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    /// Ends every active session of `user` but `keep`; how many ended.
    pub async fn end_all_but(
        &self,
        user: ObjectId,
        keep: Option<ObjectId>,
        reason: &str,
    ) -> Result<u64> {
        // Tests make this fail, as an unreachable database would.
        social_kit::fault!("user::end_sessions", |_| Err(social_kit::Error::Unavailable(
            "the database is unavailable (injected)".into()
        )));
        let mut filter = doc! { "user_id": mongo::equals_id(user), "state": ACTIVE };
        if let Some(keep) = keep {
            filter.insert("_id", doc! { "$nin": [keep] });
        }
        Ok(self.finish(filter, reason).await?.len() as u64)
    }

    /// A page of `user`'s sessions that have not ended, newest first.
    pub async fn list(&self, user: ObjectId, page: &PageRequest) -> Result<Vec<SessionDoc>> {
        let at = now_ms();
        let order = Order::NewestFirst;
        let filter = doc! {
            "user_id": mongo::equals_id(user), "state": ACTIVE,
            "idle_until_ms": { "$gt": at }, "max_until_ms": { "$gt": at },
        };
        Ok(mongo::page(&self.sessions, order, filter, page, doc! {}).await?)
    }
}
