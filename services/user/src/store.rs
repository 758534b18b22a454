//! The `users` collection: its document, indexes and queries. No proto types here.
//!
//! Usernames are unique case-insensitively through `username_lower`, a plain unique
//! index on a normalised copy (a collation index would do on MongoDB, but the stand-in
//! neither enforces nor queries collations). Emails are stored lowercase, also unique.

use bson::{DateTime, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Collection, Database, options::ReturnDocument};
use serde::{Deserialize, Serialize};
use social_events::{Envelope, idempotency, outbox};
use social_kit::{Error, Result, error::is_duplicate_key, mongo};

/// The collection this store owns.
pub const COLLECTION: &str = "users";

/// A stored account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// As registered.
    pub username: String,
    /// Lowercase copy, the unique key.
    pub username_lower: String,
    /// Lowercase.
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub bio: String,
    #[serde(default)]
    pub profile_picture_url: String,
    #[serde(default)]
    pub followers_count: i64,
    #[serde(default)]
    pub following_count: i64,
    pub created_at: DateTime,
    #[serde(deserialize_with = "social_kit::time::lenient")]
    pub updated_at: DateTime,
    /// Bookkeeping of the counters kept by events (`social_events::idempotency`): events
    /// up to this time (ms) are counted already, and a version bumped by each change.
    #[serde(default)]
    pub recount_ms: i64,
    #[serde(default)]
    pub counter_version: i64,
}

/// Which unique field an insert collided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Username,
    Email,
}

/// Access to `users`. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Database,
    users: Collection<UserDoc>,
    counters: idempotency::Counters,
}

impl Store {
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            users: db.collection(COLLECTION),
            counters: idempotency::Counters::new(db, COLLECTION),
        }
    }

    /// Pings and creates the indexes (idempotent); run before serving. Whether the
    /// server is the MongoDB stand-in.
    pub async fn init(&self) -> anyhow::Result<bool> {
        mongo::ping(&self.db).await?;
        let stand_in = mongo::is_stand_in(&self.db).await;
        mongo::ensure_indexes(
            &self.users,
            vec![
                // Register / GetUserByUsername / Login by username.
                mongo::index("username_lower_unique", doc! { "username_lower": 1 }, true),
                // Register / Login by email.
                mongo::index("email_unique", doc! { "email": 1 }, true),
            ],
            stand_in,
        )
        .await?;
        self.counters.init(stand_in).await?;
        Ok(stand_in)
    }

    /// Inserts a new account, or says which unique field is taken.
    pub async fn insert(&self, user: &UserDoc) -> Result<Result<(), Taken>> {
        match self.users.insert_one(user).await {
            Ok(_) => Ok(Ok(())),
            Err(e) if is_duplicate_key(&e) => {
                // The driver's message names the index, but not in a portable format:
                // ask which value is the taken one.
                let taken = if self.by_username(&user.username_lower).await?.is_some() {
                    Taken::Username
                } else {
                    Taken::Email
                };
                Ok(Err(taken))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Which of the two unique values is already taken, if any.
    pub async fn taken(&self, username_lower: &str, email: &str) -> Result<Option<Taken>> {
        if self.by_username(username_lower).await?.is_some() {
            return Ok(Some(Taken::Username));
        }
        if self.by_email(email).await?.is_some() {
            return Ok(Some(Taken::Email));
        }
        Ok(None)
    }

    pub async fn by_id(&self, id: ObjectId) -> Result<Option<UserDoc>> {
        Ok(self
            .users
            .find_one(doc! { "_id": id })
            .projection(outbox::without_bookkeeping())
            .await?)
    }

    pub async fn by_username(&self, username_lower: &str) -> Result<Option<UserDoc>> {
        Ok(self
            .users
            .find_one(doc! { "username_lower": username_lower })
            .projection(outbox::without_bookkeeping())
            .await?)
    }

    pub async fn by_email(&self, email: &str) -> Result<Option<UserDoc>> {
        Ok(self
            .users
            .find_one(doc! { "email": email })
            .projection(outbox::without_bookkeeping())
            .await?)
    }

    pub async fn by_ids(&self, ids: &[ObjectId]) -> Result<Vec<UserDoc>> {
        Ok(self
            .users
            .find(doc! { "_id": { "$in": ids } })
            .projection(outbox::without_bookkeeping())
            .await?
            .try_collect()
            .await?)
    }

    pub async fn by_usernames(&self, lowers: &[String]) -> Result<Vec<UserDoc>> {
        Ok(self
            .users
            .find(doc! { "username_lower": { "$in": lowers } })
            .projection(outbox::without_bookkeeping())
            .await?
            .try_collect()
            .await?)
    }

    /// Sets profile fields and `updated_at`; returns the new document.
    pub async fn update_profile(&self, id: ObjectId, mut set: Document) -> Result<Option<UserDoc>> {
        set.insert("updated_at", DateTime::now());
        Ok(self
            .users
            .find_one_and_update(doc! { "_id": id }, doc! { "$set": set })
            .projection(outbox::without_bookkeeping())
            .return_document(ReturnDocument::After)
            .await?)
    }

    /// Replaces the password hash if it is still `old_hash` (a concurrent change wins
    /// once, not twice); returns whether it did.
    pub async fn set_password(&self, id: ObjectId, old_hash: &str, new_hash: &str) -> Result<bool> {
        let r = self
            .users
            .update_one(
                doc! { "_id": id, "password_hash": old_hash },
                doc! { "$set": { "password_hash": new_hash, "updated_at": DateTime::now() } },
            )
            .await
            .map_err(Error::from)?;
        Ok(r.modified_count == 1)
    }

    /// Adds `delta` to a counter of `user` for `event`, once. A user that does not exist
    /// is left alone.
    pub async fn add_to_count(
        &self,
        user: ObjectId,
        field: &str,
        delta: i64,
        event: &Envelope,
    ) -> Result<()> {
        self.counters.add(user, field, delta, event).await?;
        Ok(())
    }

    /// Sets both counters of `user` from the follows as of `as_of_ms` (see
    /// `social_events::idempotency`); `false` if there is no such user.
    pub async fn recount(
        &self,
        user: ObjectId,
        as_of_ms: i64,
        followers: i64,
        following: i64,
    ) -> anyhow::Result<bool> {
        self.counters
            .recount(
                user,
                as_of_ms,
                &[
                    ("followers_count", followers),
                    ("following_count", following),
                ],
            )
            .await
    }

    /// Ids after `after` in id order, at most `limit` (for recomputing counters).
    pub async fn ids_after(&self, after: Option<ObjectId>, limit: i64) -> Result<Vec<ObjectId>> {
        Ok(mongo::ids_after(&self.users, doc! {}, after, limit).await?)
    }
}
