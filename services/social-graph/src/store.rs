//! The `followers` collection: one document per follow, unique per (follower, followee)
//! while active, so that concurrent follows of one pair make one document.
//!
//! An unfollow does not delete the document: it marks it `ended` in the same update
//! that appends the `graph.user.unfollowed` event to its outbox (see
//! `social_events::outbox`), and moves it out of the unique key's way by setting
//! `active_key` to the event id. A follow inserts a new document whose outbox holds
//! `graph.user.followed`. Ended follows are purged by a TTL index after 30 days.

use bson::{DateTime, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_events::{Envelope, idempotency, outbox, removed_users::RemovedUsers, unchecked};

use crate::{
    blocks::Blocks,
    mutes::Mutes,
    relation::{self, Relation, relation},
};
use social_kit::{
    Result, mongo,
    paging::{self, PageRequest},
};

/// The collection this store owns.
pub const COLLECTION: &str = "followers";

/// `state` of a follow (block, mute) that holds.
pub(crate) const ACTIVE: &str = "active";
/// `state` of a follow that was undone.
pub(crate) const ENDED: &str = "ended";

/// `follower_id` follows `followee_id` since `created_at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FollowDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub follower_id: ObjectId,
    pub followee_id: ObjectId,
    pub created_at: DateTime,
    /// Orders lists (see `social_kit::paging`).
    pub sort_key: i64,
    /// `active` or `ended`.
    pub state: String,
    /// `active` while active; the unfollow's event id once ended (keeps the unique key
    /// free for a new follow).
    pub active_key: String,
    /// When the followed and unfollowed events happened (ms; see `mongo::count_as_of`).
    #[serde(default)]
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    #[serde(default)]
    pub outbox: Vec<String>,
    #[serde(default)]
    pub outbox_pending: i32,
    /// When the follow was stored (ms), until its checks against a deleted account and a
    /// block have passed (or undone it): a follow whose checks failed is checked again
    /// by its retry or by [`crate::checks::run`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchecked_since: Option<i64>,
}

relation!(FollowDoc, "follower_id", "followee_id");

/// Access to `followers`. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: mongo::Db,
    follows: Collection<FollowDoc>,
    /// Deleted accounts (see `social_events::removed_users`).
    pub removed_users: RemovedUsers,
    /// Who blocks whom.
    pub blocks: Blocks,
    /// Who mutes whom.
    pub mutes: Mutes,
}

impl Store {
    pub fn new(db: &mongo::Db) -> Self {
        Self {
            db: db.clone(),
            follows: db.collection(COLLECTION),
            removed_users: RemovedUsers::new(db, "social-graph"),
            blocks: Blocks::new(db),
            mutes: Mutes::new(db),
        }
    }

    /// Pings and creates the indexes (idempotent); run before serving.
    pub async fn init(&self) -> anyhow::Result<()> {
        mongo::ping(&self.db).await?;
        self.db
            .ensure_indexes(
                &self.follows,
                // Follow, Unfollow, GetRelationship; ListFollowing and ListFollowingIds,
                // ListFollowers; a user's follows for an export or a deletion.
                [
                    relation::indexes::<FollowDoc>(),
                    vec![
                        // Sharded by follower (docs/adr/0002-scaling-out.md).
                        mongo::sort_key_index(Some("follower_id")),
                        // Follows whose checks did not finish (a handful at most).
                        unchecked::index(),
                        // CountFollows: one count over index keys per side (see `count`).
                        mongo::index("followee_alive", mongo::alive_keys("followee_id"), false),
                        mongo::index("follower_alive", mongo::alive_keys("follower_id"), false),
                    ],
                ]
                .concat(),
            )
            .await?;
        mongo::retire_indexes(
            &self.follows,
            &[
                "followee_started",
                "followee_ended",
                "follower_started",
                "follower_ended",
                // By start then end: a fetch for each alive follow.
                "followee_lifetime",
                "follower_lifetime",
                // Replaced by the per-follower one above.
                mongo::UNOWNED_SORT_KEY_INDEX,
            ],
        )
        .await?;
        self.removed_users.init().await?;
        self.blocks.init().await?;
        self.mutes.init().await?;
        Ok(())
    }

    /// Up to `limit` active follows with `side` (`follower_id` or `followee_id`) =
    /// `user`, as (follower, followee).
    pub async fn active_of(
        &self,
        side: &str,
        user: ObjectId,
        limit: i64,
    ) -> Result<Vec<(ObjectId, ObjectId)>> {
        relation::pairs_of(&self.follows, side, user, limit).await
    }

    /// Records the follow with its `followed` event, or returns the active one that
    /// already exists (and no event).
    pub async fn follow(
        &self,
        follower: ObjectId,
        followee: ObjectId,
        event: &Envelope,
    ) -> Result<(FollowDoc, bool)> {
        let now = DateTime::now();
        let doc = FollowDoc {
            id: ObjectId::new(),
            follower_id: follower,
            followee_id: followee,
            created_at: now,
            sort_key: paging::sort_key(now),
            state: ACTIVE.into(),
            active_key: ACTIVE.into(),
            started_ms: idempotency::event_time_ms(event),
            ended_ms: None,
            outbox: vec![outbox::entry(event)],
            outbox_pending: 1,
            unchecked_since: Some(now.timestamp_millis()),
        };
        let owner = Some(("follower_id", doc.follower_id));
        relation::make(&self.follows, doc, (follower, followee), owner).await
    }

    /// Marks follow `id` checked.
    pub async fn follow_checked(&self, id: ObjectId) -> Result<()> {
        unchecked::checked(&self.follows, id).await
    }

    /// Up to `limit` follows stored before `before_ms` whose checks did not finish.
    pub async fn unchecked(&self, before_ms: i64, limit: i64) -> Result<Vec<FollowDoc>> {
        unchecked::older_than(&self.follows, before_ms, limit).await
    }

    /// Ends the active follow with its `unfollowed` event, timed after the follow's own
    /// (`idempotency::ending`); whether there was one.
    pub async fn unfollow(
        &self,
        follower: ObjectId,
        followee: ObjectId,
        event: &Envelope,
    ) -> Result<bool> {
        let Some(follow) = self.get(follower, followee).await? else {
            return Ok(false);
        };
        let event = idempotency::ending(event.clone(), follow.started_ms);
        let ended_ms = doc! { mongo::ENDED_MS: idempotency::event_time_ms(&event) };
        // That follow alone (not one made since), on the shard of its follower.
        let mut filter = relation::pair(FollowDoc::SIDES, follower, followee);
        filter.insert("_id", follow.id);
        relation::end_with_event(&self.follows, filter, &event, ended_ms).await
    }

    /// A page of the active follows with `side` = `user`, in sort-key order after `after`.
    pub async fn page_of(
        &self,
        side: &str,
        user: ObjectId,
        after: Option<i64>,
    ) -> Result<Vec<FollowDoc>> {
        Ok(mongo::page_by_key(
            &self.follows,
            doc! { side: mongo::equals_id(user), "state": ACTIVE },
            outbox::without_bookkeeping(),
            after,
            100,
        )
        .await?)
    }

    /// The active follow of the pair, if any.
    pub async fn get(&self, follower: ObjectId, followee: ObjectId) -> Result<Option<FollowDoc>> {
        relation::holding(&self.follows, follower, followee).await
    }

    /// A page of follows whose `side` (`follower_id` or `followee_id`) is `user`.
    pub async fn list(
        &self,
        side: &str,
        user: ObjectId,
        page: &PageRequest,
    ) -> Result<Vec<FollowDoc>> {
        relation::page(&self.follows, side, user, page).await
    }

    /// Up to `limit` + 1 ids `user` follows, newest follow first.
    pub async fn following_ids(&self, user: ObjectId, limit: usize) -> Result<Vec<ObjectId>> {
        self.ids_across("follower_id", "followee_id", user, limit).await
    }

    /// Those of `among` that `user` follows (the pair index).
    pub async fn following_among(
        &self,
        user: ObjectId,
        among: &[ObjectId],
    ) -> Result<Vec<ObjectId>> {
        let rows: Vec<Document> = self
            .follows
            .clone_with_type::<Document>()
            .find(doc! {
                "follower_id": mongo::equals_id(user), "followee_id": { "$in": among },
                "active_key": ACTIVE,
            })
            .projection(doc! { "followee_id": 1, "_id": 0 })
            .await?
            .try_collect()
            .await?;
        Ok(rows.iter().filter_map(|row| row.get_object_id("followee_id").ok()).collect())
    }

    /// Up to `limit` + 1 ids of the accounts that follow `user`, newest follow first.
    pub async fn follower_ids(&self, user: ObjectId, limit: usize) -> Result<Vec<ObjectId>> {
        self.ids_across("followee_id", "follower_id", user, limit).await
    }

    /// The `other` side of up to `limit` + 1 follows that hold with `side` = `user`,
    /// newest first (the `<side>_sorted` index).
    async fn ids_across(
        &self,
        side: &str,
        other: &str,
        user: ObjectId,
        limit: usize,
    ) -> Result<Vec<ObjectId>> {
        let rows: Vec<Document> = self
            .follows
            .clone_with_type::<Document>()
            .find(doc! { side: mongo::equals_id(user), "state": ACTIVE })
            .projection(doc! { other: 1, "_id": 0 })
            .sort(doc! { "sort_key": -1 })
            .limit(limit as i64 + 1)
            .await?
            .try_collect()
            .await?;
        Ok(rows.iter().filter_map(|row| row.get_object_id(other).ok()).collect())
    }

    /// How many follows with `side` (`follower_id` or `followee_id`) = `user` were alive
    /// at `as_of_ms` (see `mongo::count_as_of`).
    pub async fn count(&self, side: &str, user: ObjectId, as_of_ms: i64) -> Result<i64> {
        Ok(mongo::count_as_of(
            &self.db,
            &self.follows,
            doc! { side: mongo::equals_id(user) },
            as_of_ms,
        )
        .await?)
    }
}

impl social_kit::serve::Startup for Store {
    async fn startup(&self) -> anyhow::Result<()> {
        self.init().await
    }
}
