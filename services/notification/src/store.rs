//! The `notifications` collection: one document per (event, recipient), unique by
//! `dedupe_key`, so that a redelivered event, or like-unlike-like, stores one
//! notification. No proto types here.

use bson::{DateTime, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use social_kit::{
    Result, mongo,
    paging::{Order, PageRequest},
};

pub const COLLECTION: &str = "notifications";
/// Tombstones of deleted posts and comments (see [`Store::mark_removed`]).
pub const REMOVED: &str = "removed_targets";

/// A deleted post (`post:<id>`) or comment (`comment:<id>`), remembered long enough to
/// outlive any redelivery or late event about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Removed {
    #[serde(rename = "_id")]
    key: String,
    removed_at: DateTime,
}

/// The tombstone key of a post or comment: `post:<id>`, `comment:<id>`.
pub fn removed_key(kind: &str, id: ObjectId) -> String {
    format!("{kind}:{id}")
}

/// A stored notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// The recipient.
    pub user_id: ObjectId,
    /// `FOLLOW`, `POST_LIKE`, `COMMENT_LIKE`, `POST_COMMENT` or `MENTION`.
    #[serde(rename = "type")]
    pub kind: String,
    pub source_user_id: ObjectId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_id: Option<ObjectId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<ObjectId>,
    #[serde(deserialize_with = "social_kit::mongo::lenient_bool")]
    pub is_read: bool,
    pub created_at: DateTime,
    /// Orders lists (see `social_kit::paging`).
    pub sort_key: i64,
    /// What makes it unique: e.g. `post_like:<liker>:<post>`.
    pub dedupe_key: String,
}

/// Which notifications a list shows.
pub struct ListFilter {
    pub unread_only: bool,
    /// Empty: all types.
    pub types: Vec<&'static str>,
}

/// Access to `notifications`. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Database,
    stand_in: mongo::StandIn,
    notifications: Collection<NotificationDoc>,
    removed: Collection<Removed>,
}

impl Store {
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            stand_in: mongo::StandIn::default(),
            notifications: db.collection(COLLECTION),
            removed: db.collection(REMOVED),
        }
    }

    /// Pings and creates the indexes (idempotent); run before serving.
    pub async fn init(&self) -> anyhow::Result<()> {
        mongo::ping(&self.db).await?;
        let stand_in = self.stand_in.detect(&self.db).await;
        mongo::ensure_indexes(
            &self.notifications,
            vec![
                // Exactly one per (event, recipient).
                mongo::index("dedupe_unique", doc! { "dedupe_key": 1 }, true),
                // ListNotifications, newest first.
                mongo::index(
                    "recipient_sorted",
                    doc! { "user_id": 1, "sort_key": -1 },
                    false,
                ),
                // GetUnreadCount (a count over index keys only), unread-only lists,
                // marking read.
                mongo::index(
                    "recipient_unread_sorted",
                    doc! { "user_id": 1, "is_read": 1, "sort_key": -1 },
                    false,
                ),
                // Removing a deleted post's or comment's notifications.
                mongo::index("post", doc! { "post_id": 1 }, false),
                mongo::index("comment", doc! { "comment_id": 1 }, false),
                mongo::sort_key_index(),
            ],
            stand_in,
        )
        .await?;
        mongo::ensure_indexes(
            &self.removed,
            vec![mongo::ttl_index(
                "removed_ttl",
                "removed_at",
                std::time::Duration::from_secs(30 * 24 * 3600),
            )],
            stand_in,
        )
        .await?;
        Ok(())
    }

    /// Records that a post or comment was deleted (idempotent). Written before its
    /// notifications are removed, so that a notification about it stored meanwhile
    /// is found by [`Self::any_removed`] and taken back.
    pub async fn mark_removed(&self, key: String) -> Result<()> {
        let tombstone = Removed {
            key,
            removed_at: DateTime::now(),
        };
        mongo::insert_once(&self.removed, &tombstone).await?;
        Ok(())
    }

    /// Whether any of `keys` was deleted.
    pub async fn any_removed(&self, keys: &[String]) -> Result<bool> {
        if keys.is_empty() {
            return Ok(false);
        }
        Ok(self
            .removed
            .find_one(doc! { "_id": { "$in": keys } })
            .await?
            .is_some())
    }

    /// Deletes the notifications whose `dedupe_key` is among `keys`.
    pub async fn delete_by_keys(&self, keys: &[String]) -> Result<()> {
        self.notifications
            .delete_many(doc! { "dedupe_key": { "$in": keys } })
            .await?;
        Ok(())
    }

    /// Stores `n` unless its `dedupe_key` is taken; whether it was stored.
    pub async fn insert(&self, n: &mut NotificationDoc) -> Result<bool> {
        Ok(mongo::insert_keyed(&self.notifications, n, |n| &mut n.sort_key).await?)
    }

    /// A page of `user`'s notifications, newest first.
    pub async fn list(
        &self,
        user: ObjectId,
        filter: &ListFilter,
        page: &PageRequest,
    ) -> Result<Vec<NotificationDoc>> {
        let mut query = doc! { "user_id": mongo::is(user) };
        if filter.unread_only {
            query.insert("is_read", false);
        }
        if !filter.types.is_empty() {
            query.insert("type", doc! { "$in": &filter.types });
        }
        let order = Order::NewestFirst;
        Ok(self
            .notifications
            .find(order.filter(query, page))
            .sort(order.sort())
            .limit(page.fetch_limit())
            .await?
            .try_collect()
            .await?)
    }

    pub async fn unread_count(&self, user: ObjectId) -> Result<i64> {
        Ok(mongo::count(
            &self.notifications,
            doc! { "user_id": mongo::is(user), "is_read": false },
            &self.stand_in,
        )
        .await?)
    }

    /// Marks `user`'s notifications among `ids` (all when `None`) read; how many changed.
    pub async fn mark_read(&self, user: ObjectId, ids: Option<&[ObjectId]>) -> Result<i64> {
        let mut filter = doc! { "user_id": mongo::is(user), "is_read": false };
        if let Some(ids) = ids {
            filter.insert("_id", doc! { "$in": ids });
        }
        let r = self
            .notifications
            .update_many(filter, doc! { "$set": { "is_read": true } })
            .await?;
        Ok(i64::try_from(r.modified_count).unwrap_or(i64::MAX))
    }

    /// Removes the notifications about a post (and its comments) or a comment.
    pub async fn remove_about(&self, field: &str, id: ObjectId) -> Result<()> {
        self.notifications
            .delete_many(doc! { field: mongo::is(id) })
            .await?;
        Ok(())
    }
}

impl social_kit::serve::Startup for Store {
    async fn startup(&self) -> anyhow::Result<()> {
        self.init().await
    }
}
