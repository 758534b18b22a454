//! The `likes` and `comments` collections: documents, indexes and queries.
//!
//! A like is one document per (user, target) while active: a unique index on
//! `(user_id, target_id, active_key)` makes concurrent likes one. Unliking does not
//! delete: it marks the like `ended` and moves `active_key` to the event id, in the same
//! update that appends the event to the document's outbox (see
//! `social_events::outbox`). Comments are deleted the same way. Ended likes and deleted
//! comments go later through TTL indexes.
//!
//! When a post is deleted its comments and likes go (`post.post.deleted`). A like or
//! comment written while that happens must not survive it: the cascade first records a
//! tombstone in `removed_posts`, then removes; a writer checks for the tombstone after
//! its insert and takes the insert back if it finds one. Whatever the interleaving,
//! either the cascade sees the new document or the writer sees the tombstone.

use bson::{DateTime, doc, oid::ObjectId};
use futures::TryStreamExt;
use std::time::Duration;

use mongodb::{Collection, options::ReturnDocument};
use serde::{Deserialize, Serialize};
use social_content::{BodyUpdate, MediaDoc};
use social_events::{
    Envelope, Payload, idempotency, new_envelope, outbox,
    pb::{CommentDeleted, CommentUnliked, PostUnliked},
    removed_users::RemovedUsers,
    unchecked,
};
use social_kit::{
    Result, mongo,
    paging::{self, Order, PageRequest},
};

/// Seconds in a day.
const DAY: u64 = 24 * 3600;

pub const LIKES: &str = "likes";
pub const COMMENTS: &str = "comments";
/// Tombstones of deleted posts (see [`Store::remove_post`]).
pub const REMOVED_POSTS: &str = "removed_posts";
pub const ACTIVE: &str = "active";
const ENDED: &str = "ended";

/// What was liked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Post,
    Comment,
}

/// A stored like.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LikeDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub user_id: ObjectId,
    pub target_type: Target,
    /// The post or the comment liked.
    pub target_id: ObjectId,
    /// The post (of the comment, for a comment like).
    pub post_id: ObjectId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<ObjectId>,
    /// Who wrote what was liked (for the events).
    pub target_author_id: ObjectId,
    pub created_at: DateTime,
    /// Orders lists (see `social_kit::paging`).
    pub sort_key: i64,
    pub state: String,
    pub active_key: String,
    /// When the liked and unliked events happened (ms; see `mongo::count_as_of`).
    #[serde(default)]
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// Set when stored (ms), removed once checked against the deletions that may have
    /// raced it (see `crate::checks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchecked_since: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<String>,
    #[serde(default)]
    pub outbox_pending: i32,
}

impl LikeDoc {
    /// A new active like.
    pub fn new(
        user: ObjectId,
        target: Target,
        target_id: ObjectId,
        post_id: ObjectId,
        author: ObjectId,
    ) -> Self {
        let now = DateTime::now();
        Self {
            id: ObjectId::new(),
            user_id: user,
            target_type: target,
            target_id,
            post_id,
            comment_id: (target == Target::Comment).then_some(target_id),
            target_author_id: author,
            created_at: now,
            sort_key: paging::sort_key(now),
            state: ACTIVE.into(),
            active_key: ACTIVE.into(),
            started_ms: 0,
            ended_ms: None,
            unchecked_since: None,
            outbox: Vec::new(),
            outbox_pending: 0,
        }
    }
}

/// A stored comment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommentDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub post_id: ObjectId,
    /// The comment's author.
    pub user_id: ObjectId,
    /// The post's author (may delete the comment).
    pub post_author_id: ObjectId,
    pub content: String,
    #[serde(default)]
    pub media: Vec<MediaDoc>,
    #[serde(default)]
    pub likes_count: i64,
    pub created_at: DateTime,
    /// Orders lists (see `social_kit::paging`).
    pub sort_key: i64,
    #[serde(deserialize_with = "social_kit::mongo::lenient::date")]
    pub updated_at: DateTime,
    pub state: String,
    /// When the created and deleted events happened (ms; see `mongo::count_as_of`).
    #[serde(default)]
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// Bookkeeping of `likes_count` (`social_events::idempotency`): events up to this
    /// time (ms) are counted already, and a version bumped by each change.
    #[serde(default)]
    pub recount_ms: i64,
    #[serde(default)]
    pub counter_version: i64,
    /// See [`LikeDoc::unchecked_since`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchecked_since: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<String>,
    #[serde(default)]
    pub outbox_pending: i32,
    /// `<author>:<idempotency key>` when the request that created it sent a key: one
    /// comment per author and key (see `insert_comment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
}

impl CommentDoc {
    /// A new comment.
    pub fn new(
        post: ObjectId,
        post_author: ObjectId,
        author: ObjectId,
        content: String,
        media: Vec<MediaDoc>,
    ) -> Self {
        let now = DateTime::now();
        Self {
            id: ObjectId::new(),
            post_id: post,
            user_id: author,
            post_author_id: post_author,
            content,
            media,
            likes_count: 0,
            created_at: now,
            sort_key: paging::sort_key(now),
            updated_at: now,
            state: ACTIVE.into(),
            started_ms: 0,
            ended_ms: None,
            recount_ms: 0,
            counter_version: 0,
            unchecked_since: None,
            outbox: Vec::new(),
            outbox_pending: 0,
            request_key: None,
        }
    }
}

/// A deleted post, remembered long enough to outlive any write racing its deletion.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RemovedPost {
    #[serde(rename = "_id")]
    id: ObjectId,
    removed_at: DateTime,
}

/// Access to `likes` and `comments`. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: mongo::Db,
    likes: Collection<LikeDoc>,
    comments: Collection<CommentDoc>,
    removed_posts: Collection<RemovedPost>,
    /// Which events moved which comment's `likes_count`.
    counters: idempotency::Counters,
    /// Deleted accounts (see `social_events::removed_users`).
    pub removed_users: RemovedUsers,
    /// Who blocks whom (see `social_events::blocks`): to a blocked reader, the blocker's
    /// comments, and the comments under the blocker's posts, are absent.
    pub blocks: social_events::blocks::Blocks,
}

impl Store {
    pub fn new(db: &mongo::Db) -> Self {
        Self {
            db: db.clone(),
            likes: db.collection(LIKES),
            comments: db.collection(COMMENTS),
            removed_posts: db.collection(REMOVED_POSTS),
            counters: idempotency::Counters::new(db, COMMENTS),
            removed_users: RemovedUsers::new(db, "engagement"),
            blocks: social_events::blocks::Blocks::new(db, "engagement"),
        }
    }

    /// Pings and creates the indexes (idempotent); run before serving.
    pub async fn init(&self) -> anyhow::Result<()> {
        mongo::ping(&self.db).await?;
        self.db
            .ensure_indexes(
                &self.likes,
                vec![
                    // One active like per user and target; LikePost/UnlikePost/...
                    mongo::index(
                        "user_target_active_unique",
                        doc! { "user_id": 1, "target_id": 1, "active_key": 1 },
                        true,
                    ),
                    // ListPostLikes newest first (ended likes out of the range).
                    mongo::index(
                        "target_sorted",
                        doc! { "target_id": 1, "target_type": 1, "state": 1, "sort_key": -1 },
                        false,
                    ),
                    // A user's active likes: an export, a deleted account's cascade.
                    mongo::index(
                        "liker_sorted",
                        doc! { "user_id": 1, "state": 1, "sort_key": -1 },
                        false,
                    ),
                    // Counting a target's likes as of a moment (one count over index keys).
                    mongo::index("target_alive", mongo::alive_keys("target_id"), false),
                    // Cascade when a post is deleted.
                    mongo::index("post", doc! { "post_id": 1 }, false),
                    // Likes whose checks against deletions did not finish (crate::checks).
                    unchecked::index(),
                    // Sharded by liker (docs/adr/0002-scaling-out.md).
                    mongo::sort_key_index(Some("user_id")),
                    outbox::index(),
                    outbox::purge_index("ended_ttl", "ended_at", Duration::from_secs(30 * DAY)),
                ],
            )
            .await?;
        self.db
            .ensure_indexes(
                &self.comments,
                vec![
                    // ListComments oldest first, and the cascade (deleted comments out of
                    // the range).
                    mongo::index(
                        "post_sorted",
                        doc! { "post_id": 1, "state": 1, "sort_key": 1 },
                        false,
                    ),
                    // A user's comments: an export, a deleted account's cascade.
                    mongo::index("author", doc! { "user_id": 1, "state": 1, "sort_key": 1 }, false),
                    // Comments whose checks against deletions did not finish.
                    unchecked::index(),
                    // Counting a post's comments as of a moment (one count over index keys).
                    mongo::index("post_alive", mongo::alive_keys("post_id"), false),
                    // Sharded by post (docs/adr/0002-scaling-out.md).
                    mongo::sort_key_index(Some("post_id")),
                    // One comment per post and idempotency key (which holds the author:
                    // `author:key`); comments without one are not in it.
                    mongo::request_key_index("post_id"),
                    outbox::index(),
                    outbox::purge_index("deleted_ttl", "deleted_at", Duration::from_secs(7 * DAY)),
                ],
            )
            .await?;
        // Counts as of a moment by start then end (a fetch for each alive one).
        mongo::retire_indexes(&self.likes, &["target_started", "target_ended", "target_lifetime"])
            .await?;
        mongo::retire_indexes(&self.comments, &["post_started", "post_ended", "post_lifetime"])
            .await?;
        // Replaced by the per-owner ones above.
        mongo::retire_indexes(&self.likes, &[mongo::UNOWNED_SORT_KEY_INDEX]).await?;
        mongo::retire_indexes(
            &self.comments,
            &[mongo::UNOWNED_SORT_KEY_INDEX, mongo::UNOWNED_REQUEST_KEY_INDEX],
        )
        .await?;
        self.db
            .ensure_expiry(
                &self.removed_posts,
                "removed_ttl",
                "removed_at",
                Duration::from_secs(30 * DAY),
            )
            .await?;
        self.counters.init().await?;
        self.removed_users.init().await?;
        self.blocks.init().await?;
        Ok(())
    }

    /// Ends `like` with its `unliked` event (as `actor`); whether it was active.
    pub async fn undo_like(&self, like: &LikeDoc, actor: ObjectId) -> Result<bool> {
        let undo = new_envelope(
            actor,
            match like.target_type {
                Target::Post => Payload::PostUnliked(PostUnliked {
                    post_id: like.post_id.to_hex(),
                    post_author_id: like.target_author_id.to_hex(),
                    user_id: like.user_id.to_hex(),
                }),
                Target::Comment => Payload::CommentUnliked(CommentUnliked {
                    comment_id: like.target_id.to_hex(),
                    post_id: like.post_id.to_hex(),
                    comment_author_id: like.target_author_id.to_hex(),
                    user_id: like.user_id.to_hex(),
                }),
            },
        );
        self.unlike(like.id, &idempotency::ending(undo, like.started_ms)).await
    }

    /// Deletes `comment` with its `deleted` event (as `actor`); whether it was there.
    pub async fn undo_comment(&self, comment: &CommentDoc, actor: ObjectId) -> Result<bool> {
        let event = new_envelope(
            actor,
            Payload::CommentDeleted(CommentDeleted {
                comment_id: comment.id.to_hex(),
                post_id: comment.post_id.to_hex(),
                post_author_id: comment.post_author_id.to_hex(),
                author_id: comment.user_id.to_hex(),
            }),
        );
        self.delete_comment(comment.id, &event).await
    }

    /// A page of `user`'s active likes, in sort-key order after `after`.
    pub async fn page_of_likes(&self, user: ObjectId, after: Option<i64>) -> Result<Vec<LikeDoc>> {
        Ok(mongo::page_by_key(
            &self.likes,
            doc! { "user_id": mongo::equals_id(user), "state": ACTIVE },
            outbox::without_bookkeeping(),
            after,
            100,
        )
        .await?)
    }

    /// A page of `user`'s comments that are not deleted, in sort-key order after `after`.
    pub async fn page_of_comments(
        &self,
        user: ObjectId,
        after: Option<i64>,
    ) -> Result<Vec<CommentDoc>> {
        Ok(mongo::page_by_key(
            &self.comments,
            doc! { "user_id": mongo::equals_id(user), "state": ACTIVE },
            outbox::without_bookkeeping(),
            after,
            100,
        )
        .await?)
    }

    /// Up to `limit` of `user`'s active likes.
    pub async fn likes_by(&self, user: ObjectId, limit: i64) -> Result<Vec<LikeDoc>> {
        Ok(self
            .likes
            .find(doc! { "user_id": mongo::equals_id(user), "state": ACTIVE })
            .projection(outbox::without_bookkeeping())
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    /// Up to `limit` of `user`'s comments that are not deleted.
    pub async fn comments_by(&self, user: ObjectId, limit: i64) -> Result<Vec<CommentDoc>> {
        Ok(self
            .comments
            .find(doc! { "user_id": mongo::equals_id(user), "state": ACTIVE })
            .projection(outbox::without_bookkeeping())
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    /// Whether post `id` was deleted (its cascade has begun).
    pub async fn post_removed(&self, post: ObjectId) -> Result<bool> {
        // Tests make this check fail, as an unreachable database would.
        social_kit::fault!("engagement::post_removed", |_| Err(social_kit::Error::Unavailable(
            "the database is unavailable (injected)".into()
        )));
        Ok(self.removed_posts.find_one(doc! { "_id": post }).await?.is_some())
    }

    /// Marks like `id` checked against deletions.
    pub async fn like_checked(&self, id: ObjectId) -> Result<()> {
        unchecked::checked(&self.likes, id).await
    }

    /// Marks comment `id` checked against deletions.
    pub async fn comment_checked(&self, id: ObjectId) -> Result<()> {
        unchecked::checked(&self.comments, id).await
    }

    /// Up to `limit` likes stored before `before_ms` whose checks did not finish.
    pub async fn unchecked_likes(&self, before_ms: i64, limit: i64) -> Result<Vec<LikeDoc>> {
        unchecked::older_than(&self.likes, before_ms, limit).await
    }

    /// Up to `limit` comments stored before `before_ms` whose checks did not finish.
    pub async fn unchecked_comments(&self, before_ms: i64, limit: i64) -> Result<Vec<CommentDoc>> {
        unchecked::older_than(&self.comments, before_ms, limit).await
    }

    /// Takes back a like inserted while its post was being deleted.
    pub async fn take_back_like(&self, id: ObjectId) -> Result<()> {
        self.likes.delete_one(doc! { "_id": id }).await?;
        Ok(())
    }

    /// Takes back a comment inserted while its post was being deleted.
    pub async fn take_back_comment(&self, id: ObjectId) -> Result<()> {
        self.comments.delete_one(doc! { "_id": id }).await?;
        Ok(())
    }

    /// Inserts `like` with its event; `false` if the user already likes the target.
    pub async fn like(&self, like: &mut LikeDoc, event: &Envelope) -> Result<bool> {
        like.outbox = vec![outbox::entry(event)];
        like.outbox_pending = 1;
        like.started_ms = idempotency::event_time_ms(event);
        like.unchecked_since = Some(DateTime::now().timestamp_millis());
        let liker = Some(("user_id", like.user_id));
        mongo::insert_keyed(&self.likes, like, liker, |l| &mut l.sort_key).await
    }

    /// The user's active like of `target`, a post or a comment as `kind` says: a like of
    /// one kind is never found (nor ended) through the other's RPCs.
    pub async fn active_like(
        &self,
        user: ObjectId,
        kind: Target,
        target: ObjectId,
    ) -> Result<Option<LikeDoc>> {
        let kind = bson::serialize_to_bson(&kind).map_err(social_kit::Error::internal)?;
        // `active_key` is "active" exactly while the like is: a point lookup in the
        // unique index.
        Ok(self
            .likes
            .find_one(doc! {
                "user_id": mongo::equals_id(user), "target_id": mongo::equals_id(target),
                "active_key": ACTIVE, "target_type": kind,
            })
            .projection(outbox::without_bookkeeping())
            .await?)
    }

    /// Up to `limit` active likes of `target`.
    pub async fn active_likes_of(
        &self,
        kind: Target,
        target: ObjectId,
        limit: i64,
    ) -> Result<Vec<LikeDoc>> {
        let kind = bson::serialize_to_bson(&kind).map_err(social_kit::Error::internal)?;
        Ok(self
            .likes
            .find(doc! { "target_id": mongo::equals_id(target), "target_type": kind, "state": ACTIVE })
            .projection(outbox::without_bookkeeping())
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    /// Ends the active like `id` with its event; `false` if it was already ended.
    pub async fn unlike(&self, id: ObjectId, event: &Envelope) -> Result<bool> {
        let mut update = doc! { "$set": {
            "state": ENDED, "active_key": event.event_id.as_str(), "ended_at": DateTime::now(),
            mongo::ENDED_MS: idempotency::event_time_ms(event),
        } };
        outbox::push(&mut update, event);
        let r = self.likes.update_one(doc! { "_id": id, "state": ACTIVE }, update).await?;
        Ok(r.modified_count == 1)
    }

    /// A page of the active likes of a post, newest first.
    pub async fn post_likes(&self, post: ObjectId, page: &PageRequest) -> Result<Vec<LikeDoc>> {
        let order = Order::NewestFirst;
        let filter =
            doc! { "target_id": mongo::equals_id(post), "target_type": "post", "state": ACTIVE };
        Ok(mongo::page(&self.likes, order, filter, page, outbox::without_bookkeeping()).await?)
    }

    /// How many likes `target` had at `as_of_ms` (see `mongo::count_as_of`).
    pub async fn count_likes(&self, target: ObjectId, as_of_ms: i64) -> Result<i64> {
        Ok(mongo::count_as_of(
            &self.db,
            &self.likes,
            doc! { "target_id": mongo::equals_id(target) },
            as_of_ms,
        )
        .await?)
    }

    /// Inserts `comment` with its event.
    /// Stores `comment` with its event, unless its request key is taken: then nothing
    /// is stored, and the comment stored under that key is returned (a retry's answer).
    pub async fn insert_comment(
        &self,
        comment: &CommentDoc,
        event: &Envelope,
    ) -> Result<Option<CommentDoc>> {
        let mut comment = comment.clone();
        comment.outbox = vec![outbox::entry(event)];
        comment.outbox_pending = 1;
        comment.started_ms = idempotency::event_time_ms(event);
        comment.unchecked_since = Some(DateTime::now().timestamp_millis());
        let key = comment.request_key.clone();
        let projection = outbox::without_bookkeeping();
        let comments = &self.comments;
        let key = key.as_deref();
        let post = ("post_id", comment.post_id);
        mongo::insert_per_request(
            comments,
            &mut comment,
            post,
            |c| &mut c.sort_key,
            key,
            projection,
        )
        .await
    }

    /// A comment that is not deleted.
    pub async fn comment(&self, id: ObjectId) -> Result<Option<CommentDoc>> {
        Ok(self
            .comments
            .find_one(doc! { "_id": id, "state": ACTIVE })
            .projection(outbox::without_bookkeeping())
            .await?)
    }

    /// Applies `update` (and `updated_at`) to comment `id` if its guard holds; returns
    /// the new document, `None` if no such comment matches.
    pub async fn update_comment(
        &self,
        id: ObjectId,
        update: BodyUpdate,
    ) -> Result<Option<CommentDoc>> {
        let mut set = update.set;
        set.insert("updated_at", DateTime::now());
        let mut filter = doc! { "_id": id, "state": ACTIVE };
        filter.extend(update.guard);
        Ok(self
            .comments
            .find_one_and_update(filter, doc! { "$set": set })
            .projection(outbox::without_bookkeeping())
            .return_document(ReturnDocument::After)
            .await?)
    }

    /// Marks comment `id` deleted with its event; `false` if it already was.
    pub async fn delete_comment(&self, id: ObjectId, event: &Envelope) -> Result<bool> {
        // Its words and media go at once; the document keeps what its events need.
        let mut update = doc! { "$set": {
            "state": "deleted", "deleted_at": DateTime::now(),
            mongo::ENDED_MS: idempotency::event_time_ms(event),
            "content": "", "media": [],
        } };
        outbox::push(&mut update, event);
        let r = self.comments.update_one(doc! { "_id": id, "state": ACTIVE }, update).await?;
        Ok(r.modified_count == 1)
    }

    /// A page of the comments of a post, oldest first.
    pub async fn comments_of(&self, post: ObjectId, page: &PageRequest) -> Result<Vec<CommentDoc>> {
        let order = Order::OldestFirst;
        let filter = doc! { "post_id": mongo::equals_id(post), "state": ACTIVE };
        Ok(mongo::page(&self.comments, order, filter, page, outbox::without_bookkeeping()).await?)
    }

    /// How many comments `post` had at `as_of_ms` (see `mongo::count_as_of`).
    pub async fn count_comments(&self, post: ObjectId, as_of_ms: i64) -> Result<i64> {
        Ok(mongo::count_as_of(
            &self.db,
            &self.comments,
            doc! { "post_id": mongo::equals_id(post) },
            as_of_ms,
        )
        .await?)
    }

    /// Adds `delta` to a comment's `likes_count` for `event`, once.
    pub async fn add_to_comment_likes(
        &self,
        id: ObjectId,
        delta: i64,
        event: &Envelope,
    ) -> Result<()> {
        self.counters.add(id, "likes_count", delta, event).await?;
        Ok(())
    }

    /// Sets a comment's `likes_count` from its likes as of `as_of_ms` (see
    /// `social_events::idempotency`); `false` if there is no such comment.
    pub async fn recount_comment_likes(
        &self,
        id: ObjectId,
        as_of_ms: i64,
        likes: i64,
    ) -> anyhow::Result<bool> {
        self.counters.recount(id, as_of_ms, &[("likes_count", likes)]).await
    }

    /// Ids after `after` in id order, at most `limit` (for recomputing counters).
    pub async fn comment_ids_after(
        &self,
        after: Option<ObjectId>,
        limit: i64,
    ) -> Result<Vec<ObjectId>> {
        // Deleted comments too, whose counters no longer matter: the walk is the `_id`
        // index.
        Ok(mongo::ids_after(&self.comments, doc! {}, after, limit).await?)
    }

    /// Marks `post` deleted (its tombstone), before anything of it is removed: a like or
    /// comment racing the removal sees it (module docs). Idempotent.
    pub async fn mark_post_removed(&self, post: ObjectId) -> Result<()> {
        let tombstone = RemovedPost { id: post, removed_at: DateTime::now() };
        mongo::insert_once(&self.removed_posts, &tombstone).await?;
        Ok(())
    }

    /// Deletes up to `limit` of the comments of a deleted post (no events: the post's
    /// deletion tells everyone); how many.
    pub async fn remove_comments_of(&self, post: ObjectId, limit: i64) -> Result<usize> {
        let filter = doc! { "post_id": mongo::equals_id(post), "state": ACTIVE };
        let ids = mongo::ids(&self.comments, filter, Some(limit)).await?;
        if !ids.is_empty() {
            let gone = doc! { "$set": {
                "state": "deleted", "deleted_at": DateTime::now(), "content": "", "media": [],
            } };
            self.comments
                .update_many(doc! { "_id": { "$in": &ids }, "state": ACTIVE }, gone)
                .await?;
        }
        Ok(ids.len())
    }

    /// Deletes up to `limit` of the likes under a deleted post (of it and of its
    /// comments, ended ones too; no events: a like's unsent event about a deleted post is
    /// moot); how many.
    pub async fn remove_likes_under(&self, post: ObjectId, limit: i64) -> Result<usize> {
        let ids = mongo::ids(&self.likes, doc! { "post_id": mongo::equals_id(post) }, Some(limit))
            .await?;
        if !ids.is_empty() {
            self.likes.delete_many(doc! { "_id": { "$in": &ids } }).await?;
        }
        Ok(ids.len())
    }
}

impl social_kit::serve::Startup for Store {
    async fn startup(&self) -> anyhow::Result<()> {
        self.init().await
    }
}
