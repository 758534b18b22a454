//! The `posts` collection: the document, its indexes and queries. No proto types here.
//!
//! A post carries its pending events in its own outbox (see `social_events::outbox`):
//! creating it and recording `post.post.created` is one insert; deleting it marks it
//! `deleted` and records `post.post.deleted` in one update (the document goes later,
//! through a TTL index). Counters move only through `Store::counters`, once per
//! event.

use bson::{DateTime, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Collection, options::ReturnDocument};
use serde::{Deserialize, Serialize};
use social_content::{BodyUpdate, MediaDoc};
use social_events::{
    Envelope, blocks::Blocks, idempotency, outbox, removed_users::RemovedUsers, unchecked,
};
use social_kit::cache::Cache;
use social_kit::{
    Result, mongo,
    paging::{self, Order, PageRequest},
};

/// The collection this store owns.
pub const COLLECTION: &str = "posts";
pub const ACTIVE: &str = "active";

/// The most authors one query of a home feed names. MongoDB merges the newest posts of
/// the index range of each `$in` value for up to 200 values
/// (`internalQueryMaxScansToExplode`); past that it walks every active post in the
/// page's range, however few of them are the authors': a page far down the feed of a
/// reader following a few hundred quiet accounts would read most of the collection. A
/// longer list is asked in slices of this many, merged here.
pub const AUTHORS_PER_QUERY: usize = 200;

/// How many keys past a page a merged feed page reads (see `Store::merged_page`).
const SPARE_KEYS: i64 = 5;
const DELETED: &str = "deleted";

/// A post's place in a feed.
#[derive(Deserialize)]
struct Newest {
    #[serde(rename = "_id")]
    id: ObjectId,
    user_id: ObjectId,
    sort_key: i64,
}

/// A stored post.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// The author.
    pub user_id: ObjectId,
    pub content: String,
    #[serde(default)]
    pub media: Vec<MediaDoc>,
    #[serde(default)]
    pub likes_count: i64,
    #[serde(default)]
    pub comments_count: i64,
    pub created_at: DateTime,
    /// Orders lists (see `social_kit::paging`).
    pub sort_key: i64,
    #[serde(deserialize_with = "social_kit::mongo::lenient::date")]
    pub updated_at: DateTime,
    /// `active` or `deleted`.
    pub state: String,
    /// Bookkeeping of the counters kept by events (`social_events::idempotency`): events
    /// up to this time (ms) are counted already, and a version bumped by each change.
    #[serde(default)]
    pub recount_ms: i64,
    #[serde(default)]
    pub counter_version: i64,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<String>,
    #[serde(default)]
    pub outbox_pending: i32,
    /// `<author>:<idempotency key>` when the request that created it sent a key: one
    /// post per author and key (see `insert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
    /// When it was stored (ms), until the check for its author's deleted account passed
    /// (`crate::checks`); absent since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchecked_since: Option<i64>,
}

impl PostDoc {
    /// A new post by `author`, with its `created` event to publish.
    pub fn new(author: ObjectId, content: String, media: Vec<MediaDoc>) -> Self {
        let now = DateTime::now();
        Self {
            id: ObjectId::new(),
            user_id: author,
            content,
            media,
            likes_count: 0,
            comments_count: 0,
            created_at: now,
            sort_key: paging::sort_key(now),
            updated_at: now,
            state: ACTIVE.into(),
            recount_ms: 0,
            counter_version: 0,
            outbox: Vec::new(),
            outbox_pending: 0,
            request_key: None,
            unchecked_since: Some(now.timestamp_millis()),
        }
    }
}

/// Access to `posts`. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: mongo::Db,
    posts: Collection<PostDoc>,
    /// Deleted accounts (see `social_events::removed_users`).
    pub removed_users: RemovedUsers,
    /// Who blocks whom (see `social_events::blocks`): to a blocked reader, the blocker's
    /// posts are absent.
    pub blocks: Blocks,
    /// Its counters moved by events, once per event (`social_events::idempotency`).
    pub counters: idempotency::Counters,
    /// What `get` and `by_ids` read through, if any (`social_kit::cache`): every write
    /// of a post here forgets it there.
    cache: Option<Cache>,
}

impl Store {
    pub fn new(db: &mongo::Db) -> Self {
        Self {
            db: db.clone(),
            posts: db.collection(COLLECTION),
            removed_users: RemovedUsers::new(db, "post"),
            blocks: Blocks::new(db, "post"),
            counters: idempotency::Counters::new(db, COLLECTION),
            cache: None,
        }
    }

    /// The same store, reading posts by id, and who blocks each reader, through the
    /// caches `settings` give (none when their lifetime is zero).
    pub fn with_caches(mut self, settings: &social_kit::cache::Settings) -> anyhow::Result<Self> {
        self.cache = settings.cache("post")?;
        self.blocks = self.blocks.with_cache(settings.cache("post-blockers")?);
        Ok(self)
    }

    /// Forgets post `id` in the cache: after every write of it (here, and the counters'
    /// by events).
    pub async fn forget(&self, id: ObjectId) {
        social_kit::cache::forget(self.cache.as_ref(), id).await;
    }

    /// Pings and creates the indexes (idempotent); run before serving.
    pub async fn init(&self) -> anyhow::Result<()> {
        mongo::ping(&self.db).await?;
        self.db
            .ensure_indexes(
                &self.posts,
                vec![
                    // ListUserPosts, an author's posts for an export or a deletion (deleted
                    // ones out of the range); the home feed (one merged range per author,
                    // 200 authors a query: `AUTHORS_PER_QUERY`).
                    mongo::index(
                        "author_sorted",
                        doc! { "user_id": 1, "state": 1, "sort_key": -1 },
                        false,
                    ),
                    // Keys distinct by construction (see `mongo::insert_keyed`), per
                    // author: `posts` is sharded by author (docs/adr/0002-scaling-out.md).
                    mongo::sort_key_index(Some("user_id")),
                    // The posts whose check for a deleted account did not finish.
                    unchecked::index(),
                    // One post per author and idempotency key (posts without one are
                    // not in it).
                    mongo::request_key_index("user_id"),
                    outbox::index(),
                    // Deleted posts go a week after their event is out.
                    outbox::purge_index(
                        "deleted_ttl",
                        "deleted_at",
                        std::time::Duration::from_secs(7 * 24 * 3600),
                    ),
                ],
            )
            .await?;
        // Replaced by the per-author ones above; and the walk of the newest posts that
        // fed readers following more than 200 accounts, now asked 200 authors a query.
        mongo::retire_indexes(
            &self.posts,
            &[
                mongo::UNOWNED_SORT_KEY_INDEX,
                mongo::UNOWNED_REQUEST_KEY_INDEX,
                "active_sorted_author",
            ],
        )
        .await?;
        self.counters.init().await?;
        self.removed_users.init().await?;
        self.blocks.init().await?;
        Ok(())
    }

    /// Up to `limit` ids of `author`'s posts that are not deleted (a deletion deletes
    /// them, so the next call finds the next ones: each reads only what is left).
    pub async fn ids_by_author(&self, author: ObjectId, limit: i64) -> Result<Vec<ObjectId>> {
        let filter = doc! { "user_id": mongo::equals_id(author), "state": ACTIVE };
        Ok(mongo::ids(&self.posts, filter, Some(limit)).await?)
    }

    /// A page of `author`'s posts that are not deleted, in sort-key order after `after`.
    pub async fn page_of_author(
        &self,
        author: ObjectId,
        after: Option<i64>,
    ) -> Result<Vec<PostDoc>> {
        Ok(mongo::page_by_key(
            &self.posts,
            doc! { "user_id": mongo::equals_id(author), "state": ACTIVE },
            outbox::without_bookkeeping(),
            after,
            100,
        )
        .await?)
    }

    /// Inserts `post` with `event` in its outbox.
    /// Stores `post` with its event, unless its request key is taken: then nothing is
    /// stored, and the post stored under that key is returned (a retry's answer).
    pub async fn insert(&self, post: &PostDoc, event: &Envelope) -> Result<Option<PostDoc>> {
        let mut post = post.clone();
        post.outbox = vec![outbox::entry(event)];
        post.outbox_pending = 1;
        let key = post.request_key.clone();
        let projection = outbox::without_bookkeeping();
        let posts = &self.posts;
        let author = ("user_id", post.user_id);
        mongo::insert_per_request(
            posts,
            &mut post,
            author,
            |p| &mut p.sort_key,
            key.as_deref(),
            projection,
        )
        .await
    }

    /// A post that is not deleted.
    pub async fn get(&self, id: ObjectId) -> Result<Option<PostDoc>> {
        match &self.cache {
            Some(_) => Ok(self.by_ids(&[id]).await?.into_iter().next()),
            None => Ok(self
                .posts
                .find_one(doc! { "_id": id, "state": ACTIVE })
                .projection(outbox::without_bookkeeping())
                .await?),
        }
    }

    /// The posts `ids` that are not deleted, in no particular order.
    pub async fn by_ids(&self, ids: &[ObjectId]) -> Result<Vec<PostDoc>> {
        let load = |ids: Vec<ObjectId>| async move {
            Ok(self
                .posts
                .find(doc! { "_id": { "$in": ids }, "state": ACTIVE })
                .projection(outbox::without_bookkeeping())
                .await?
                .try_collect()
                .await?)
        };
        Cache::read_through(self.cache.as_ref(), ids, |p: &PostDoc| p.id, load).await
    }

    /// Applies `update` (and `updated_at`) to `author`'s post `id` if its guard holds;
    /// returns the new document, `None` if no such post matches.
    pub async fn update(
        &self,
        id: ObjectId,
        author: ObjectId,
        update: BodyUpdate,
    ) -> Result<Option<PostDoc>> {
        let mut set = update.set;
        set.insert("updated_at", DateTime::now());
        let mut filter = doc! { "_id": id, "user_id": mongo::equals_id(author), "state": ACTIVE };
        filter.extend(update.guard);
        let posts = self.posts.clone();
        self.then_forget(id, async move {
            Ok(posts
                .find_one_and_update(filter, doc! { "$set": set })
                .projection(outbox::without_bookkeeping())
                .return_document(ReturnDocument::After)
                .await?)
        })
        .await
    }

    /// Runs `write` of post `id`, then forgets the post in the cache (see
    /// `social_kit::cache::write_then_forget`).
    async fn then_forget<T: Send + 'static>(
        &self,
        id: ObjectId,
        write: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        social_kit::cache::write_then_forget(self.cache.as_ref(), id, write).await
    }

    /// Marks `author`'s post `id` deleted with its `deleted` event; whether it was there.
    pub async fn delete(&self, id: ObjectId, author: ObjectId, event: &Envelope) -> Result<bool> {
        // Its words and media go at once; the document keeps what its events need.
        let mut update = doc! { "$set": {
            "state": DELETED, "deleted_at": DateTime::now(), "content": "", "media": [],
        } };
        outbox::push(&mut update, event);
        let filter = doc! { "_id": id, "user_id": mongo::equals_id(author), "state": ACTIVE };
        let posts = self.posts.clone();
        let r = self
            .then_forget(id, async move { Ok(posts.update_one(filter, update).await?) })
            .await?;
        Ok(r.modified_count == 1)
    }

    /// Marks post `id` of `author` checked against the author's deletion (on the
    /// author's shard).
    pub async fn post_checked(&self, id: ObjectId, author: ObjectId) -> Result<()> {
        let filter = doc! { "_id": id, "user_id": mongo::equals_id(author) };
        self.posts.update_one(filter, doc! { "$unset": { unchecked::FIELD: "" } }).await?;
        Ok(())
    }

    /// Up to `limit` posts stored before `before_ms` whose check did not finish.
    pub async fn unchecked(&self, before_ms: i64, limit: i64) -> Result<Vec<PostDoc>> {
        unchecked::older_than(&self.posts, before_ms, limit).await
    }

    /// A page of the posts of `authors`, newest first. Past [`AUTHORS_PER_QUERY`]
    /// authors, the newest keys of each slice of them are merged first, then the page's
    /// posts read by id: at most a page per slice is read, however old the page.
    pub async fn by_authors(
        &self,
        authors: &[ObjectId],
        page: &PageRequest,
    ) -> Result<Vec<PostDoc>> {
        let order = Order::NewestFirst;
        if authors.len() > AUTHORS_PER_QUERY {
            return self.merged_page(authors, page).await;
        }
        let filter = match authors {
            [one] => doc! { "user_id": mongo::equals_id(*one), "state": ACTIVE },
            many => doc! { "user_id": { "$in": many }, "state": ACTIVE },
        };
        Ok(mongo::page(&self.posts, order, filter, page, outbox::without_bookkeeping()).await?)
    }

    /// [`Store::by_authors`] of more than [`AUTHORS_PER_QUERY`] authors.
    async fn merged_page(&self, authors: &[ObjectId], page: &PageRequest) -> Result<Vec<PostDoc>> {
        // A few keys past the page: the posts deleted between the two reads are made up
        // for from them (a page cut short would be the last: no next page token).
        let want = page.fetch_limit() + SPARE_KEYS;
        let mut posts = Vec::new();
        for _ in 0..3 {
            let range = |f| Order::NewestFirst.filter(f, page);
            let newest = self.newest(authors, range, want).await?;
            let ids: Vec<ObjectId> = newest.iter().map(|r| r.id).collect();
            posts = self
                .posts
                .find(doc! { "_id": { "$in": &ids }, "state": ACTIVE })
                .projection(outbox::without_bookkeeping())
                .await?
                .try_collect()
                .await?;
            posts.sort_unstable_by_key(|p: &PostDoc| std::cmp::Reverse(p.sort_key));
            // Enough for the page, or all there are; else more were deleted meanwhile
            // than the spare keys make up for: read again (they are gone from the keys).
            if posts.len() as i64 >= page.fetch_limit() || (newest.len() as i64) < want {
                break;
            }
        }
        posts.truncate(usize::try_from(page.fetch_limit()).unwrap_or(usize::MAX));
        Ok(posts)
    }

    /// The sort key, id and author of the newest `limit` posts of `authors` (a home
    /// timeline being built), by the feed's query.
    pub async fn newest_of(
        &self,
        authors: &[ObjectId],
        limit: usize,
    ) -> Result<Vec<(i64, ObjectId, ObjectId)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.newest(authors, |f| f, limit).await?;
        Ok(rows.into_iter().map(|r| (r.sort_key, r.id, r.user_id)).collect())
    }

    /// The newest `limit` active posts of `authors` that `range` keeps (it adds a sort
    /// key range to a filter), as keys: one query per [`AUTHORS_PER_QUERY`] authors,
    /// merged.
    async fn newest(
        &self,
        authors: &[ObjectId],
        range: impl Fn(bson::Document) -> bson::Document,
        limit: i64,
    ) -> Result<Vec<Newest>> {
        let rows = self.posts.clone_with_type::<Newest>();
        let mut merged: Vec<Newest> = Vec::new();
        // One after another (a reader following 10,000 accounts asks 51): a feed read
        // holds one connection at a time.
        for slice in authors.chunks(AUTHORS_PER_QUERY) {
            let filter = match slice {
                [one] => doc! { "user_id": mongo::equals_id(*one), "state": ACTIVE },
                many => doc! { "user_id": { "$in": many }, "state": ACTIVE },
            };
            let newest: Vec<Newest> = rows
                .find(range(filter))
                .projection(doc! { "_id": 1, "user_id": 1, "sort_key": 1 })
                .sort(Order::NewestFirst.sort())
                .limit(limit)
                .await?
                .try_collect()
                .await?;
            merged.extend(newest);
            merged.sort_unstable_by_key(|r| std::cmp::Reverse(r.sort_key));
            merged.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        Ok(merged)
    }
}

/// The posts' like and comment counters, counted by the engagement service.
impl social_kit::recount::Recounted for Store {
    async fn ids_after(
        &self,
        after: Option<ObjectId>,
        limit: i64,
    ) -> anyhow::Result<Vec<ObjectId>> {
        Ok(mongo::ids_after(&self.posts, doc! {}, after, limit).await?)
    }

    async fn recount(
        &self,
        id: ObjectId,
        as_of_ms: i64,
        likes: i64,
        comments: i64,
    ) -> anyhow::Result<bool> {
        let counts = [("likes_count", likes), ("comments_count", comments)];
        let found = self.counters.recount(id, as_of_ms, &counts).await;
        self.forget(id).await;
        found
    }
}

impl social_kit::serve::Startup for Store {
    async fn startup(&self) -> anyhow::Result<()> {
        self.init().await
    }
}
