//! The `followers` collection: one document per (follower, followee) pair, unique by a
//! compound index so that concurrent follows of one pair make one document.

use bson::{DateTime, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use social_kit::{
    Result,
    error::is_duplicate_key,
    mongo,
    paging::{Order, PageRequest},
};

/// `follower_id` follows `followee_id` since `created_at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FollowDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub follower_id: ObjectId,
    pub followee_id: ObjectId,
    pub created_at: DateTime,
}

/// Access to `followers`. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Database,
    follows: Collection<FollowDoc>,
}

impl Store {
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            follows: db.collection("followers"),
        }
    }

    /// Pings and creates the indexes (idempotent); run before serving.
    pub async fn init(&self) -> anyhow::Result<()> {
        mongo::ping(&self.db).await?;
        let stand_in = mongo::is_stand_in(&self.db).await;
        mongo::ensure_indexes(
            &self.follows,
            vec![
                // One document per pair; serves Follow, Unfollow, GetRelationship.
                mongo::index(
                    "follower_followee_unique",
                    doc! { "follower_id": 1, "followee_id": 1 },
                    true,
                ),
                // ListFollowing and ListFollowingIds, newest first.
                mongo::index(
                    "follower_recent",
                    doc! { "follower_id": 1, "created_at": -1, "_id": -1 },
                    false,
                ),
                // ListFollowers, newest first.
                mongo::index(
                    "followee_recent",
                    doc! { "followee_id": 1, "created_at": -1, "_id": -1 },
                    false,
                ),
            ],
            stand_in,
        )
        .await?;
        Ok(())
    }

    /// Records the follow, or returns the one that already exists.
    pub async fn follow(
        &self,
        follower: ObjectId,
        followee: ObjectId,
    ) -> Result<(FollowDoc, bool)> {
        let doc = FollowDoc {
            id: ObjectId::new(),
            follower_id: follower,
            followee_id: followee,
            created_at: DateTime::now(),
        };
        match self.follows.insert_one(&doc).await {
            Ok(_) => Ok((doc, true)),
            Err(e) if is_duplicate_key(&e) => match self.get(follower, followee).await? {
                Some(existing) => Ok((existing, false)),
                // Unfollowed between our insert and read: the follow happened and ended.
                None => Ok((doc, false)),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the follow; returns it if there was one.
    pub async fn unfollow(
        &self,
        follower: ObjectId,
        followee: ObjectId,
    ) -> Result<Option<FollowDoc>> {
        Ok(self
            .follows
            .find_one_and_delete(
                doc! { "follower_id": mongo::is(follower), "followee_id": mongo::is(followee) },
            )
            .await?)
    }

    pub async fn get(&self, follower: ObjectId, followee: ObjectId) -> Result<Option<FollowDoc>> {
        Ok(self
            .follows
            .find_one(
                doc! { "follower_id": mongo::is(follower), "followee_id": mongo::is(followee) },
            )
            .await?)
    }

    /// A page of follows whose `side` (`follower_id` or `followee_id`) is `user`.
    pub async fn list(
        &self,
        side: &str,
        user: ObjectId,
        page: &PageRequest,
    ) -> Result<Vec<FollowDoc>> {
        let order = Order::NewestFirst;
        Ok(self
            .follows
            .find(order.filter(doc! { side: mongo::is(user) }, page, "created_at"))
            .sort(order.sort("created_at"))
            .limit(page.fetch_limit())
            .await?
            .try_collect()
            .await?)
    }

    /// Up to `limit` + 1 ids `user` follows, newest follow first.
    pub async fn following_ids(&self, user: ObjectId, limit: usize) -> Result<Vec<ObjectId>> {
        #[derive(Deserialize)]
        struct Row {
            followee_id: ObjectId,
        }
        let rows: Vec<Row> = self
            .follows
            .clone_with_type::<Row>()
            .find(doc! { "follower_id": mongo::is(user) })
            .projection(doc! { "followee_id": 1, "_id": 0 })
            .sort(doc! { "created_at": -1, "_id": -1 })
            .limit(limit as i64 + 1)
            .await?
            .try_collect()
            .await?;
        Ok(rows.into_iter().map(|r| r.followee_id).collect())
    }
}
