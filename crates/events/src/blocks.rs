//! Blocks between users, as each service that filters by them keeps a copy
//! (`<service>_blocks`), fed by `graph.user.blocked` and `graph.user.unblocked`. The
//! social-graph service is the authority (its `CheckBlocks` is what writes between two
//! users ask); a copy serves reads (a profile, a post, a list) without a call per item,
//! and is right within the time an event takes to arrive.
//!
//! A block has its own id, and the copy keeps one document per block: `active` when its
//! `blocked` event came, `ended` once its `unblocked` did, whichever came first (an
//! unblock applied before its block stores the block ended, and the late block does not
//! bring it back). So the copy converges whatever order the events arrive in and however
//! often. Ended blocks are kept: a late `blocked` event (a dead-lettered one replayed
//! next month) may come at any time, and one small document per unblock is cheap.

use bson::{doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_kit::mongo::{self, Db};

use crate::{Envelope, Payload};

const ACTIVE: &str = "active";
const ENDED: &str = "ended";

#[derive(Debug, Serialize, Deserialize)]
struct BlockCopy {
    /// The block's id (the social-graph service's).
    #[serde(rename = "_id")]
    id: ObjectId,
    blocker_id: ObjectId,
    blocked_id: ObjectId,
    /// `active` or `ended`.
    state: String,
}

/// One service's copy of the blocks. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Blocks {
    db: Db,
    copies: Collection<BlockCopy>,
}

impl Blocks {
    /// The copy of `service` (in `<service>_blocks`).
    pub fn new(db: &Db, service: &str) -> Self {
        Self {
            db: db.clone(),
            copies: db.collection(&format!("{}_blocks", service.replace('-', "_"))),
        }
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
        };
        let pair = (copy.blocker_id, copy.blocked_id);
        if mongo::insert_once(&self.copies, &copy).await? {
            return Ok(Some((pair.0, pair.1, active)));
        }
        if !active {
            self.copies
                .update_one(doc! { "_id": copy.id }, doc! { "$set": { "state": ENDED } })
                .await?;
            return Ok(Some((pair.0, pair.1, false)));
        }
        // Seen before: it holds only if its unblock has not come since.
        let holds = self
            .copies
            .find_one(doc! { "_id": copy.id, "state": ACTIVE })
            .projection(doc! { "_id": 1 })
            .await?
            .is_some();
        Ok(Some((pair.0, pair.1, holds)))
    }

    /// Whether `blocker` blocks `blocked`.
    pub async fn blocks(
        &self,
        blocker: ObjectId,
        blocked: ObjectId,
    ) -> mongodb::error::Result<bool> {
        Ok(self
            .copies
            .find_one(doc! {
                "blocker_id": mongo::equals_id(blocker),
                "blocked_id": mongo::equals_id(blocked),
                "state": ACTIVE,
            })
            .projection(doc! { "_id": 1 })
            .await?
            .is_some())
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
            found.extend(page.into_iter().map(|p| {
                if p.blocker_id == user {
                    p.blocked_id
                } else {
                    p.blocker_id
                }
            }));
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
        Ok(self.blocking(viewer, &authors).await?)
    }

    /// Those of `authors` who block `viewer`: to `viewer`, what they made is absent.
    pub async fn blocking(
        &self,
        viewer: ObjectId,
        authors: &[ObjectId],
    ) -> mongodb::error::Result<Vec<ObjectId>> {
        if authors.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(Deserialize)]
        struct Blocker {
            blocker_id: ObjectId,
        }
        let found: Vec<Blocker> = self
            .copies
            .clone_with_type::<Blocker>()
            .find(doc! {
                "blocked_id": mongo::equals_id(viewer),
                "blocker_id": { "$in": authors },
                "state": ACTIVE,
            })
            .projection(doc! { "blocker_id": 1, "_id": 0 })
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(|b| b.blocker_id).collect())
    }
}
