//! The `mutes` collection: who mutes whom, for how long, and whether notifications too.
//!
//! Shaped like blocks (`crate::blocks`): one document per mute, unique per (muter, muted)
//! while it holds; an unmute ends it with its `graph.user.unmuted` event. Muting again
//! ends the mute that holds and makes a new one, so that a mute's settings never change
//! and the notification service's copy (by mute id) converges in any order. A mute that
//! expired counts as none wherever it is read; a TTL index purges it soon after (and an
//! ended one 30 days after its event went out).

use std::time::Duration;

use bson::{DateTime, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_events::{
    Payload, new_envelope, outbox,
    pb::{UserMuted, UserUnmuted},
};
use social_kit::{
    Result, mongo,
    paging::{self, PageRequest},
};

/// The collection this store owns.
pub const COLLECTION: &str = "mutes";
/// Most mutes one account holds: the home feed reads them all on every page.
pub const MAX_MUTES: i64 = 10_000;

use crate::{
    relation::{self, relation},
    store::ACTIVE,
};

/// `muter_id` mutes `muted_id` since `created_at`, until `expires_at` (if any).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MuteDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub muter_id: ObjectId,
    pub muted_id: ObjectId,
    /// What the muted account does no longer notifies the muter.
    pub notifications: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime>,
    pub created_at: DateTime,
    /// Orders ListMutes (see `social_kit::paging`).
    pub sort_key: i64,
    /// `active` or `ended`.
    pub state: String,
    /// `active` while the mute holds; the unmute's event id once ended.
    pub active_key: String,
    #[serde(default)]
    pub outbox: Vec<String>,
    #[serde(default)]
    pub outbox_pending: i32,
}

relation!(MuteDoc, "muter_id", "muted_id");

impl MuteDoc {
    /// Whether it holds at `now`: not ended, not expired (a TTL index purges expired
    /// mutes, but only within a minute or so of their end).
    pub fn holds(&self, now: DateTime) -> bool {
        self.state == ACTIVE && unexpired(self.expires_at, now)
    }
}

/// Whether a mute that ends at `expires_at` (never: `None`) still holds at `now`.
fn unexpired(expires_at: Option<DateTime>, now: DateTime) -> bool {
    expires_at.is_none_or(|at| at > now)
}

/// Access to `mutes`. Cheap to clone.
#[derive(Clone)]
pub struct Mutes {
    db: mongo::Db,
    mutes: Collection<MuteDoc>,
}

impl Mutes {
    pub fn new(db: &mongo::Db) -> Self {
        Self { db: db.clone(), mutes: db.collection(COLLECTION) }
    }

    /// Creates the indexes (idempotent).
    pub async fn init(&self) -> anyhow::Result<()> {
        self.db
            .ensure_indexes(
                &self.mutes,
                // MuteUser, UnmuteUser, GetRelationship; ListMutes; the home feed's
                // mutes; a deleted account's.
                [
                    relation::indexes::<MuteDoc>(),
                    vec![
                        // The home feed's mutes, from the index alone (a covered query: no
                        // document is read).
                        mongo::index(
                            "muter_muted_covered",
                            doc! { "muter_id": 1, "state": 1, "muted_id": 1, "expires_at": 1 },
                            false,
                        ),
                        mongo::sort_key_index(None),
                        // Expired mutes go (they count as none already), once their events
                        // are out.
                        outbox::purge_index("expired_pending_ttl", "expires_at", Duration::ZERO),
                    ],
                ]
                .concat(),
            )
            .await?;
        mongo::retire_indexes(&self.mutes, &["expired_ttl"]).await?;
        Ok(())
    }

    /// The mute of `muter` on `muted` that is stored as holding (it may have expired).
    pub async fn get(&self, muter: ObjectId, muted: ObjectId) -> Result<Option<MuteDoc>> {
        relation::holding(&self.mutes, muter, muted).await
    }

    /// Whether `muter` mutes `muted` now.
    pub async fn mutes(&self, muter: ObjectId, muted: ObjectId) -> Result<bool> {
        let now = DateTime::now();
        Ok(self.get(muter, muted).await?.is_some_and(|m| m.holds(now)))
    }

    /// How many mutes `muter` holds (expired ones not yet purged included).
    pub async fn count(&self, muter: ObjectId) -> Result<i64> {
        Ok(self
            .db
            .count(&self.mutes, doc! { "muter_id": mongo::equals_id(muter), "state": ACTIVE })
            .await?)
    }

    /// Records that `muter` mutes `muted` with these settings, with its
    /// `graph.user.muted` event; whether a new mute was stored (`false`: another call
    /// stored one at the same moment, which is returned).
    pub async fn mute(
        &self,
        muter: ObjectId,
        muted: ObjectId,
        notifications: bool,
        expires_at: Option<DateTime>,
    ) -> Result<(MuteDoc, bool)> {
        let now = DateTime::now();
        let id = ObjectId::new();
        let event = new_envelope(
            muter,
            Payload::UserMuted(UserMuted {
                mute_id: id.to_hex(),
                muter_id: muter.to_hex(),
                muted_id: muted.to_hex(),
                notifications,
                expires_at_ms: expires_at.map_or(0, |at| at.timestamp_millis()),
            }),
        );
        let doc = MuteDoc {
            id,
            muter_id: muter,
            muted_id: muted,
            notifications,
            expires_at,
            created_at: now,
            sort_key: paging::sort_key(now),
            state: ACTIVE.into(),
            active_key: ACTIVE.into(),
            outbox: vec![outbox::entry(&event)],
            outbox_pending: 1,
        };
        relation::make(&self.mutes, doc, (muter, muted), None).await
    }

    /// Ends `mute` with its `graph.user.unmuted` event; whether this call ended it.
    pub async fn end(&self, mute: &MuteDoc) -> Result<bool> {
        let event = new_envelope(
            mute.muter_id,
            Payload::UserUnmuted(UserUnmuted {
                mute_id: mute.id.to_hex(),
                muter_id: mute.muter_id.to_hex(),
                muted_id: mute.muted_id.to_hex(),
            }),
        );
        let holding = doc! { "_id": mute.id, "active_key": ACTIVE };
        relation::end_with_event(&self.mutes, holding, &event, doc! {}).await
    }

    /// A page of the mutes `muter` holds, newest first (expired ones left out: the page
    /// may come short).
    pub async fn list(&self, muter: ObjectId, page: &PageRequest) -> Result<Vec<MuteDoc>> {
        relation::page(&self.mutes, "muter_id", muter, page).await
    }

    /// The accounts `muter` mutes now (at most [`MAX_MUTES`] and a few), each with when
    /// its mute ends (`None`: when unmuted), read from the `muter_muted_covered` index
    /// alone on MongoDB.
    /// Only those of `among`, if given.
    pub async fn held_by(
        &self,
        muter: ObjectId,
        among: Option<&[ObjectId]>,
    ) -> Result<Vec<(ObjectId, Option<DateTime>)>> {
        #[derive(Deserialize)]
        struct Row {
            muted_id: ObjectId,
            #[serde(default)]
            expires_at: Option<DateTime>,
        }
        let now = DateTime::now();
        let rows: Vec<Row> = self
            .mutes
            .clone_with_type::<Row>()
            .find(match among {
                None => doc! { "muter_id": mongo::equals_id(muter), "state": ACTIVE },
                Some(ids) => doc! {
                    "muter_id": mongo::equals_id(muter), "state": ACTIVE, "muted_id": { "$in": ids },
                },
            })
            .projection(doc! { "muted_id": 1, "expires_at": 1, "_id": 0 })
            .limit(MAX_MUTES + 100)
            .await?
            .try_collect()
            .await?;
        Ok(rows
            .into_iter()
            .filter(|r| unexpired(r.expires_at, now))
            .map(|r| (r.muted_id, r.expires_at))
            .collect())
    }

    /// Up to `limit` mutes that hold with `side` (`muter_id` or `muted_id`) = `user`: a
    /// deleted account's, to end.
    pub async fn active_of(&self, side: &str, user: ObjectId, limit: i64) -> Result<Vec<MuteDoc>> {
        Ok(self
            .mutes
            .find(doc! { side: mongo::equals_id(user), "state": ACTIVE })
            .projection(outbox::without_bookkeeping())
            .sort(doc! { "sort_key": -1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ENDED;

    fn mute(state: &str, expires_at: Option<DateTime>) -> MuteDoc {
        let now = DateTime::now();
        MuteDoc {
            id: ObjectId::new(),
            muter_id: ObjectId::new(),
            muted_id: ObjectId::new(),
            notifications: true,
            expires_at,
            created_at: now,
            sort_key: 0,
            state: state.into(),
            active_key: state.into(),
            outbox: Vec::new(),
            outbox_pending: 0,
        }
    }

    #[test]
    fn a_mute_holds_until_it_ends_or_expires_even_before_its_purge() {
        let now = DateTime::now();
        let later = DateTime::from_millis(now.timestamp_millis() + 1);
        let earlier = DateTime::from_millis(now.timestamp_millis() - 1);
        assert!(mute(ACTIVE, None).holds(now));
        assert!(mute(ACTIVE, Some(later)).holds(now));
        // Expired, still stored (the TTL monitor has not run yet): none.
        assert!(!mute(ACTIVE, Some(earlier)).holds(now));
        assert!(!mute(ACTIVE, Some(now)).holds(now));
        assert!(!mute(ENDED, None).holds(now));
    }
}
