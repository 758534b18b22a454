//! Blocks and mutes between users, as each service that filters by them keeps a copy
//! (`<service>_blocks`, `<service>_mutes`), fed by `graph.user.blocked` /
//! `graph.user.unblocked` and `graph.user.muted` / `graph.user.unmuted`. The
//! social-graph service is the authority (its `CheckBlocks` is what writes between two
//! users ask); a copy serves reads (a profile, a post, a list) without a call per item,
//! and is right within the time an event takes to arrive.
//!
//! A block (a mute) has its own id, and the copy keeps one document per block: `active` when its
//! `blocked` event came, `ended` once its `unblocked` did, whichever came first (an
//! unblock applied before its block stores the block ended, and the late block does not
//! bring it back). So the copy converges whatever order the events arrive in and however
//! often. An ended block is kept [`ENDED_KEPT`] (60 days): a `blocked` event is applied
//! only up to 29 days old (older ones are dead-lettered, `crate::consumer`), so the end
//! it must not undo is always still there; an `unblocked` (`unmuted`) event is applied
//! however late (ending is always safe).
//!
//! A service with a cache (`social_kit::cache`) also keeps there, per reader, who blocks
//! that reader ([`Blocks::with_cache`]): the check every signed-in read makes (a post,
//! a profile) then sends nothing to MongoDB once warm. Applying a block or unblock
//! forgets the blocked account's entry (the event is retried until Redis answers), and
//! the cache's leases keep a reader that read the copy before the change from storing
//! what it read after it; so the cache is as fresh as the copy (but for a Redis failover
//! to a replica that missed the forget: then for at most the entry's lifetime).

use bson::{doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_kit::{
    cache::Cache,
    mongo::{self, Db},
};

use crate::{Envelope, Payload};

const ACTIVE: &str = "active";
const ENDED: &str = "ended";
/// How long a copy keeps an ended block or mute: past the oldest `blocked` or `muted`
/// event the consumers apply (29 days).
pub const ENDED_KEPT: std::time::Duration = std::time::Duration::from_secs(60 * 24 * 3600);

/// When a copy made ended was ended (a TTL index purges it [`ENDED_KEPT`] later).
fn ended_at(active: bool) -> Option<bson::DateTime> {
    (!active).then(bson::DateTime::now)
}

#[derive(Debug, Serialize, Deserialize)]
struct BlockCopy {
    /// The block's id (the social-graph service's).
    #[serde(rename = "_id")]
    id: ObjectId,
    blocker_id: ObjectId,
    blocked_id: ObjectId,
    /// `active` or `ended`.
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended_at: Option<bson::DateTime>,
}

/// How many of the accounts that block one reader the cache holds: a reader blocked by
/// more is checked in MongoDB on every read (one indexed query), as without a cache.
pub const BLOCKERS_CACHED: usize = 1_000;

/// Who blocks one reader, as the cache holds it.
#[derive(Debug, Serialize, Deserialize)]
struct Blockers {
    reader: ObjectId,
    /// All of them, sorted, or none when there are more than [`BLOCKERS_CACHED`] (`all`
    /// false).
    ids: Vec<ObjectId>,
    all: bool,
}

impl Blockers {
    /// The entry for `reader` from the blockers found (up to one more than are kept).
    fn new(reader: ObjectId, mut ids: Vec<ObjectId>) -> Self {
        let all = ids.len() <= BLOCKERS_CACHED;
        if !all {
            ids.clear();
        }
        ids.sort();
        Self { reader, ids, all }
    }

    /// Those of `authors` among them (`None` if the entry does not hold them all).
    fn among(&self, authors: &[ObjectId]) -> Option<Vec<ObjectId>> {
        let blocking = authors.iter().filter(|a| self.ids.binary_search(a).is_ok());
        self.all.then(|| blocking.copied().collect())
    }
}

/// One service's copy of the blocks. Cheap to clone.
#[derive(Clone)]
pub struct Blocks {
    db: Db,
    copies: Collection<BlockCopy>,
    /// Who blocks each reader, if the service has a cache.
    blockers: Option<Cache>,
}

impl Blocks {
    /// The copy of `service` (in `<service>_blocks`).
    pub fn new(db: &Db, service: &str) -> Self {
        Self {
            db: db.clone(),
            copies: db.collection(&format!("{}_blocks", service.replace('-', "_"))),
            blockers: None,
        }
    }

    /// The same copy, keeping who blocks each reader in `cache` (see the module docs).
    pub fn with_cache(mut self, cache: Option<Cache>) -> Self {
        self.blockers = cache;
        self
    }

    /// Creates the indexes (idempotent).
    pub async fn init(&self) -> mongodb::error::Result<()> {
        self.db
            .ensure_indexes(
                &self.copies,
                vec![
                    // Every check: whether the author (one, or `$in` for a page of
                    // authors) blocks the viewer, and either way between two users.
                    mongo::index(
                        "blocker_blocked_state",
                        doc! { "blocker_id": 1, "blocked_id": 1, "state": 1 },
                        false,
                    ),
                    // Who blocks a reader, for the services that cache it.
                    mongo::index(
                        "blocked_state_blocker",
                        doc! { "blocked_id": 1, "state": 1, "blocker_id": 1 },
                        false,
                    ),
                    mongo::ttl_index("ended_ttl", "ended_at", ENDED_KEPT),
                ],
            )
            .await
    }

    /// Applies a `graph.user.blocked` or `graph.user.unblocked` event (anything else is
    /// ignored): idempotent, in any order. The pair it was about, as (blocker, blocked),
    /// and whether that block holds now: `false` for an unblock, and for a block whose
    /// unblock came first (a late or redelivered `blocked` changes nothing).
    pub async fn apply(
        &self,
        envelope: &Envelope,
    ) -> anyhow::Result<Option<(ObjectId, ObjectId, bool)>> {
        let (id, blocker, blocked, active) = match &envelope.payload {
            Some(Payload::UserBlocked(e)) => (&e.block_id, &e.blocker_id, &e.blocked_id, true),
            Some(Payload::UserUnblocked(e)) => (&e.block_id, &e.blocker_id, &e.blocked_id, false),
            _ => return Ok(None),
        };
        let copy = BlockCopy {
            id: ObjectId::parse_str(id)?,
            blocker_id: ObjectId::parse_str(blocker)?,
            blocked_id: ObjectId::parse_str(blocked)?,
            state: if active { ACTIVE } else { ENDED }.into(),
            ended_at: ended_at(active),
        };
        let holds = apply_copy(&self.copies, copy.id, &copy, active).await?;
        social_kit::cache::forget_surely(self.blockers.as_ref(), copy.blocked_id).await?;
        Ok(Some((copy.blocker_id, copy.blocked_id, holds)))
    }

    /// Those of `others` with a block between them and `user`, either way.
    pub async fn among(
        &self,
        user: ObjectId,
        others: &[ObjectId],
    ) -> mongodb::error::Result<Vec<ObjectId>> {
        if others.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(Deserialize)]
        struct Pair {
            blocker_id: ObjectId,
            blocked_id: ObjectId,
        }
        let pairs = self.copies.clone_with_type::<Pair>();
        let projection = doc! { "blocker_id": 1, "blocked_id": 1, "_id": 0 };
        let mut found = Vec::new();
        for (mine, theirs) in [("blocker_id", "blocked_id"), ("blocked_id", "blocker_id")] {
            let page: Vec<Pair> = pairs
                .find(doc! {
                    mine: mongo::equals_id(user),
                    theirs: { "$in": others },
                    "state": ACTIVE,
                })
                .projection(projection.clone())
                .await?
                .try_collect()
                .await?;
            found.extend(
                page.into_iter()
                    .map(|p| if p.blocker_id == user { p.blocked_id } else { p.blocker_id }),
            );
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// Those of `authors` who block `viewer` (none for an anonymous reader, or a service
    /// calling on its own behalf): to `viewer`, what they made is absent.
    pub async fn hidden_from(
        &self,
        viewer: Option<ObjectId>,
        authors: &[ObjectId],
    ) -> social_kit::Result<Vec<ObjectId>> {
        let Some(viewer) = viewer else {
            return Ok(Vec::new());
        };
        let mut authors: Vec<ObjectId> = authors.iter().copied().filter(|a| *a != viewer).collect();
        authors.sort();
        authors.dedup();
        self.blocking(viewer, &authors).await
    }

    /// Those of `authors` who block `viewer`: to `viewer`, what they made is absent.
    /// Through the cache of who blocks `viewer` when there is one and it holds them all.
    pub async fn blocking(
        &self,
        viewer: ObjectId,
        authors: &[ObjectId],
    ) -> social_kit::Result<Vec<ObjectId>> {
        if authors.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(cache) = &self.blockers {
            let load = |_| self.blockers_of(viewer);
            let reader = |b: &Blockers| b.reader;
            let mut cached = Cache::read_through(Some(cache), &[viewer], reader, load).await?;
            if let Some(blocking) = cached.pop().and_then(|b| b.among(authors)) {
                return Ok(blocking);
            }
        }
        let filter = doc! {
            "blocked_id": mongo::equals_id(viewer),
            "blocker_id": { "$in": authors },
            "state": ACTIVE,
        };
        Ok(self.blocker_ids(filter, 0).await?)
    }

    /// Who blocks `reader`, as the cache keeps it.
    async fn blockers_of(&self, reader: ObjectId) -> social_kit::Result<Vec<Blockers>> {
        let filter = doc! { "blocked_id": mongo::equals_id(reader), "state": ACTIVE };
        let limit = i64::try_from(BLOCKERS_CACHED + 1).unwrap_or(i64::MAX);
        let ids = self.blocker_ids(filter, limit).await?;
        Ok(vec![Blockers::new(reader, ids)])
    }

    /// The blockers of the blocks `filter` finds, up to `limit` (0: all).
    async fn blocker_ids(
        &self,
        filter: bson::Document,
        limit: i64,
    ) -> mongodb::error::Result<Vec<ObjectId>> {
        #[derive(Deserialize)]
        struct Blocker {
            blocker_id: ObjectId,
        }
        let found: Vec<Blocker> = self
            .copies
            .clone_with_type::<Blocker>()
            .find(filter)
            .projection(doc! { "blocker_id": 1, "_id": 0 })
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(|b| b.blocker_id).collect())
    }
}

/// Stores the copy `doc` of the block or mute `id` as the event that carries it says
/// (`active`: made; else ended), in any order and however often: one made after its end
/// was stored stays ended. Whether it holds now.
async fn apply_copy<T: Serialize + Send + Sync>(
    copies: &Collection<T>,
    id: ObjectId,
    doc: &T,
    active: bool,
) -> mongodb::error::Result<bool> {
    if mongo::insert_once(copies, doc).await? {
        return Ok(active);
    }
    if !active {
        let now = bson::DateTime::now();
        copies
            .update_one(
                doc! { "_id": id, "state": ACTIVE },
                doc! { "$set": { "state": ENDED, "ended_at": now } },
            )
            .await?;
        return Ok(false);
    }
    // Seen before: it holds only if its end has not come since.
    Ok(copies
        .clone_with_type::<bson::Document>()
        .find_one(doc! { "_id": id, "state": ACTIVE })
        .projection(doc! { "_id": 1 })
        .await?
        .is_some())
}

#[derive(Debug, Serialize, Deserialize)]
struct MuteCopy {
    /// The mute's id (the social-graph service's).
    #[serde(rename = "_id")]
    id: ObjectId,
    muter_id: ObjectId,
    muted_id: ObjectId,
    /// Whether what the muted account does no longer notifies the muter.
    notifications: bool,
    /// When it ends by itself (ms since the Unix epoch); 0: never.
    expires_at_ms: i64,
    /// The same as a date, for the TTL index that purges the copy once it expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<bson::DateTime>,
    /// `active` or `ended`.
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended_at: Option<bson::DateTime>,
}

/// One service's copy of the mutes (as [`Blocks`]; a mute that expired counts as none).
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Mutes {
    db: Db,
    copies: Collection<MuteCopy>,
}

impl Mutes {
    /// The copy of `service` (in `<service>_mutes`).
    pub fn new(db: &Db, service: &str) -> Self {
        Self {
            db: db.clone(),
            copies: db.collection(&format!("{}_mutes", service.replace('-', "_"))),
        }
    }

    /// Creates the indexes (idempotent).
    pub async fn init(&self) -> mongodb::error::Result<()> {
        self.db
            .ensure_indexes(
                &self.copies,
                vec![
                    // Which of a notification's recipients mute its actor.
                    mongo::index(
                        "muted_muter_state",
                        doc! { "muted_id": 1, "muter_id": 1, "state": 1 },
                        false,
                    ),
                    mongo::ttl_index("ended_ttl", "ended_at", ENDED_KEPT),
                    // A mute that expired counts as none already; its copy goes a day
                    // later (a late `muted` event of it stores it again, expired).
                    mongo::ttl_index(
                        "expired_ttl",
                        "expires_at",
                        std::time::Duration::from_secs(24 * 3600),
                    ),
                ],
            )
            .await
    }

    /// Applies a `graph.user.muted` or `graph.user.unmuted` event (anything else is
    /// ignored), as [`Blocks::apply`]; whether it was one.
    pub async fn apply(&self, envelope: &Envelope) -> anyhow::Result<bool> {
        let copy = match &envelope.payload {
            Some(Payload::UserMuted(e)) => MuteCopy {
                id: ObjectId::parse_str(&e.mute_id)?,
                muter_id: ObjectId::parse_str(&e.muter_id)?,
                muted_id: ObjectId::parse_str(&e.muted_id)?,
                notifications: e.notifications,
                expires_at_ms: e.expires_at_ms,
                expires_at: (e.expires_at_ms > 0)
                    .then(|| bson::DateTime::from_millis(e.expires_at_ms)),
                state: ACTIVE.into(),
                ended_at: None,
            },
            Some(Payload::UserUnmuted(e)) => MuteCopy {
                id: ObjectId::parse_str(&e.mute_id)?,
                muter_id: ObjectId::parse_str(&e.muter_id)?,
                muted_id: ObjectId::parse_str(&e.muted_id)?,
                notifications: false,
                expires_at_ms: 0,
                expires_at: None,
                state: ENDED.into(),
                ended_at: ended_at(false),
            },
            _ => return Ok(false),
        };
        let active = copy.state == ACTIVE;
        apply_copy(&self.copies, copy.id, &copy, active).await?;
        Ok(true)
    }

    /// Those of `recipients` who mute `actor`'s notifications now.
    pub async fn silencing(
        &self,
        actor: ObjectId,
        recipients: &[ObjectId],
    ) -> mongodb::error::Result<Vec<ObjectId>> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let now = bson::DateTime::now().timestamp_millis();
        let found: Vec<MuteCopy> = self
            .copies
            .find(doc! {
                "muted_id": mongo::equals_id(actor),
                "muter_id": { "$in": recipients },
                "state": ACTIVE,
            })
            .await?
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .filter(|m| m.notifications && (m.expires_at_ms == 0 || m.expires_at_ms > now))
            .map(|m| m.muter_id)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readers_blockers_are_found_in_any_order_and_past_the_limit_not_at_all() {
        let ids: Vec<ObjectId> = (0..9).map(|_| ObjectId::new()).collect();
        // As MongoDB may return them: in no particular order.
        let found = vec![ids[6], ids[1], ids[8], ids[3], ids[0], ids[7]];
        let blockers = Blockers::new(ObjectId::new(), found.clone());
        let asked = [ids[0], ids[2], ids[3], ids[4], ids[6], ids[7], ids[8], ids[1]];
        let mut blocking = blockers.among(&asked).unwrap();
        blocking.sort();
        let mut expected = found;
        expected.sort();
        assert_eq!(blocking, expected);
        let many = (0..=BLOCKERS_CACHED).map(|_| ObjectId::new()).collect();
        let past = Blockers::new(ObjectId::new(), many);
        assert!(past.among(&asked).is_none(), "past the limit: ask MongoDB");
        let just = (0..BLOCKERS_CACHED).map(|_| ObjectId::new()).collect();
        assert_eq!(Blockers::new(ObjectId::new(), just).among(&asked), Some(vec![]));
    }
}
