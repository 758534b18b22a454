//! The `posts` collection: the document, its indexes and queries. No proto types here.

use bson::{DateTime, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Collection, Database, options::ReturnDocument};
use serde::{Deserialize, Serialize};
use social_kit::{
    Result,
    content::MediaDoc,
    mongo,
    paging::{Order, PageRequest},
};

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
    #[serde(deserialize_with = "social_kit::time::lenient")]
    pub updated_at: DateTime,
}

/// Access to `posts`. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Database,
    posts: Collection<PostDoc>,
}

impl Store {
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            posts: db.collection("posts"),
        }
    }

    /// Pings and creates the indexes (idempotent); run before serving.
    pub async fn init(&self) -> anyhow::Result<()> {
        mongo::ping(&self.db).await?;
        let stand_in = mongo::is_stand_in(&self.db).await;
        mongo::ensure_indexes(
            &self.posts,
            vec![
                // ListUserPosts; the home feed for readers following a few hundred
                // accounts (one merged range per author).
                mongo::index(
                    "author_recent",
                    doc! { "user_id": 1, "created_at": -1, "_id": -1 },
                    false,
                ),
                // The home feed for readers following thousands of accounts: walk the
                // newest posts and keep the followed authors' ones.
                mongo::index("recent", doc! { "created_at": -1, "_id": -1 }, false),
            ],
            stand_in,
        )
        .await?;
        Ok(())
    }

    pub async fn insert(&self, post: &PostDoc) -> Result<()> {
        self.posts.insert_one(post).await?;
        Ok(())
    }

    pub async fn get(&self, id: ObjectId) -> Result<Option<PostDoc>> {
        Ok(self.posts.find_one(doc! { "_id": id }).await?)
    }

    pub async fn by_ids(&self, ids: &[ObjectId]) -> Result<Vec<PostDoc>> {
        Ok(self
            .posts
            .find(doc! { "_id": { "$in": ids } })
            .await?
            .try_collect()
            .await?)
    }

    /// Sets fields and `updated_at` on `author`'s post `id`; returns the new document.
    pub async fn update(
        &self,
        id: ObjectId,
        author: ObjectId,
        mut set: Document,
    ) -> Result<Option<PostDoc>> {
        set.insert("updated_at", DateTime::now());
        Ok(self
            .posts
            .find_one_and_update(
                doc! { "_id": id, "user_id": mongo::is(author) },
                doc! { "$set": set },
            )
            .return_document(ReturnDocument::After)
            .await?)
    }

    /// Deletes `author`'s post `id`; returns it if it was there.
    pub async fn delete(&self, id: ObjectId, author: ObjectId) -> Result<Option<PostDoc>> {
        Ok(self
            .posts
            .find_one_and_delete(doc! { "_id": id, "user_id": mongo::is(author) })
            .await?)
    }

    /// A page of the posts of `authors`, newest first.
    pub async fn by_authors(
        &self,
        authors: &[ObjectId],
        page: &PageRequest,
    ) -> Result<Vec<PostDoc>> {
        let filter = match authors {
            [one] => doc! { "user_id": mongo::is(*one) },
            many => doc! { "user_id": { "$in": many } },
        };
        let order = Order::NewestFirst;
        Ok(self
            .posts
            .find(order.filter(filter, page, "created_at"))
            .sort(order.sort("created_at"))
            .limit(page.fetch_limit())
            .await?
            .try_collect()
            .await?)
    }
}
