//! The `blocks` collection: who blocks whom, the authority every other service's copy
//! follows (`social_events::blocks`).
//!
//! One document per block, unique per (blocker, blocked) while it holds, as follows are
//! (`crate::relation`): an unblock marks it `ended` in the update that appends its
//! `graph.user.unblocked` event, and frees the unique key by setting `active_key` to the
//! event id; blocking again inserts a new block with a new id. Ended blocks are purged
//! after 30 days, long after their event went out (the copies keep their own record of
//! it, by block id).

use bson::{DateTime, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_events::{
    Payload, new_envelope, outbox,
    pb::{UserBlocked, UserUnblocked},
};
use social_kit::{
    Result, mongo,
    paging::{self, PageRequest},
};

/// The collection this store owns.
pub const COLLECTION: &str = "blocks";

use crate::{
    relation::{self, relation},
    store::ACTIVE,
};

/// `blocker_id` blocks `blocked_id` since `created_at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub blocker_id: ObjectId,
    pub blocked_id: ObjectId,
    pub created_at: DateTime,
    /// Orders ListBlocks (see `social_kit::paging`).
    pub sort_key: i64,
    /// `active` or `ended`.
    pub state: String,
    /// `active` while the block holds; the unblock's event id once ended.
    pub active_key: String,
    #[serde(default)]
    pub outbox: Vec<String>,
    #[serde(default)]
    pub outbox_pending: i32,
}

relation!(BlockDoc, "blocker_id", "blocked_id");

/// Access to `blocks`. Cheap to clone.
#[derive(Clone)]
pub struct Blocks {
    db: mongo::Db,
    blocks: Collection<BlockDoc>,
}

impl Blocks {
    pub fn new(db: &mongo::Db) -> Self {
        Self { db: db.clone(), blocks: db.collection(COLLECTION) }
    }

    /// Creates the indexes (idempotent).
    pub async fn init(&self) -> anyhow::Result<()> {
        self.db
            .ensure_indexes(
                &self.blocks,
                // Every check between users (CheckBlocks: `$in` on either side);
                // ListBlocks; a deleted account's blocks, both sides.
                [relation::indexes::<BlockDoc>(), vec![mongo::sort_key_index(None)]].concat(),
            )
            .await?;
        Ok(())
    }

    /// Records that `blocker` blocks `blocked`, with its `graph.user.blocked` event; or
    /// returns the block that already holds (and no event). Whether this call made it.
    pub async fn block(&self, blocker: ObjectId, blocked: ObjectId) -> Result<(BlockDoc, bool)> {
        let now = DateTime::now();
        let id = ObjectId::new();
        let event = new_envelope(
            blocker,
            Payload::UserBlocked(UserBlocked {
                block_id: id.to_hex(),
                blocker_id: blocker.to_hex(),
                blocked_id: blocked.to_hex(),
            }),
        );
        let doc = BlockDoc {
            id,
            blocker_id: blocker,
            blocked_id: blocked,
            created_at: now,
            sort_key: paging::sort_key(now),
            state: ACTIVE.into(),
            active_key: ACTIVE.into(),
            outbox: vec![outbox::entry(&event)],
            outbox_pending: 1,
        };
        relation::make(&self.blocks, doc, (blocker, blocked), None).await
    }

    /// Ends the block of `blocker` on `blocked`, with its `graph.user.unblocked` event;
    /// whether there was one.
    pub async fn unblock(&self, blocker: ObjectId, blocked: ObjectId) -> Result<bool> {
        let Some(block) = self.get(blocker, blocked).await? else {
            return Ok(false);
        };
        let event = new_envelope(
            blocker,
            Payload::UserUnblocked(UserUnblocked {
                block_id: block.id.to_hex(),
                blocker_id: blocker.to_hex(),
                blocked_id: blocked.to_hex(),
            }),
        );
        let holding = doc! { "_id": block.id, "active_key": ACTIVE };
        relation::end_with_event(&self.blocks, holding, &event, doc! {}).await
    }

    /// Whether block `id` holds.
    pub async fn holds(&self, id: ObjectId) -> Result<bool> {
        Ok(self
            .blocks
            .find_one(doc! { "_id": id, "active_key": ACTIVE })
            .projection(doc! { "_id": 1 })
            .await?
            .is_some())
    }

    /// The block of `blocker` on `blocked` that holds, if any.
    pub async fn get(&self, blocker: ObjectId, blocked: ObjectId) -> Result<Option<BlockDoc>> {
        relation::holding(&self.blocks, blocker, blocked).await
    }

    /// Of `others`: those `user` blocks, and those who block `user`.
    pub async fn between(
        &self,
        user: ObjectId,
        others: &[ObjectId],
    ) -> Result<(Vec<ObjectId>, Vec<ObjectId>)> {
        Ok(tokio::try_join!(
            self.among(("blocker_id", "blocked_id"), user, others),
            self.among(("blocked_id", "blocker_id"), user, others)
        )?)
    }

    /// Of `others`: those who block `user`.
    pub async fn blockers_among(
        &self,
        user: ObjectId,
        others: &[ObjectId],
    ) -> Result<Vec<ObjectId>> {
        Ok(self.among(("blocked_id", "blocker_id"), user, others).await?)
    }

    /// Of `others`, those on the side `theirs` of a block that holds with `user` on the
    /// side `mine` (`$in` on one side of the unique index).
    async fn among(
        &self,
        (mine, theirs): (&'static str, &'static str),
        user: ObjectId,
        others: &[ObjectId],
    ) -> mongodb::error::Result<Vec<ObjectId>> {
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<bson::Document> = self
            .blocks
            .clone_with_type::<bson::Document>()
            .find(doc! {
                mine: mongo::equals_id(user),
                theirs: { "$in": others },
                "active_key": ACTIVE,
            })
            .projection(doc! { theirs: 1, "_id": 0 })
            .await?
            .try_collect()
            .await?;
        Ok(found.iter().filter_map(|d| d.get_object_id(theirs).ok()).collect())
    }

    /// A page of the blocks `blocker` holds, newest first.
    pub async fn list(&self, blocker: ObjectId, page: &PageRequest) -> Result<Vec<BlockDoc>> {
        relation::page(&self.blocks, "blocker_id", blocker, page).await
    }

    /// Up to `limit` blocks that hold with `side` (`blocker_id` or `blocked_id`) =
    /// `user`, as (blocker, blocked): a deleted account's, to end.
    pub async fn active_of(
        &self,
        side: &str,
        user: ObjectId,
        limit: i64,
    ) -> Result<Vec<(ObjectId, ObjectId)>> {
        relation::pairs_of(&self.blocks, side, user, limit).await
    }
}
