//! The `users` collection: its document, indexes and queries. No proto types here.
//!
//! Usernames are unique case-insensitively through `username_lower`, a plain unique
//! index on a normalised copy (a collation index would do on MongoDB, but the stand-in
//! neither enforces nor queries collations). Emails are stored lowercase, also unique.

use std::time::Duration;

use bson::{DateTime, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Collection, options::ReturnDocument};
use serde::{Deserialize, Serialize};
use social_events::{Envelope, blocks::Blocks, idempotency, outbox};
use social_kit::{Error, Result, error::is_duplicate_key, mongo};

/// The collection this store owns.
pub const COLLECTION: &str = "users";
/// Set on a deleted account (see [`Store::delete`]).
const DELETED: &str = "deleted_ms";
/// See [`UserDoc::credential_version`].
const CREDENTIAL_VERSION: &str = "credential_version";
/// The services that remove a deleted account's data and report it cleared.
pub const CLEARING_SERVICES: &[&str] = &["post", "social-graph", "engagement", "notification"];

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
    #[serde(deserialize_with = "social_kit::mongo::lenient::date")]
    pub updated_at: DateTime,
    /// When the account was deleted (ms); absent while it lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_ms: Option<i64>,
    /// The services that removed everything of the deleted account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleared_by: Vec<String>,
    /// When every service had (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_finished_ms: Option<i64>,
    /// The idempotency key of the request that registered it (`idempotency-key`
    /// metadata), if it sent one: a retry of that registration (same key, same password)
    /// gets a session instead of "taken".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
    /// Bumped by every change that must end the account's sessions (a new password, the
    /// account's deletion): a session started under an older version no longer works.
    #[serde(default)]
    pub credential_version: i64,
    /// Bookkeeping of the counters kept by events (`social_events::idempotency`): events
    /// up to this time (ms) are counted already, and a version bumped by each change.
    #[serde(default)]
    pub recount_ms: i64,
    #[serde(default)]
    pub counter_version: i64,
    /// `user` (absent), `moderator` or `admin`: set by an operator
    /// (`social-user set-role`); moderators and admins resolve reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
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
    db: mongo::Db,
    users: Collection<UserDoc>,
    /// Its counters moved by events, once per event (`social_events::idempotency`).
    pub counters: idempotency::Counters,
    /// Who blocks whom (see `social_events::blocks`): to a blocked reader, the blocker's
    /// profile is absent.
    pub blocks: Blocks,
    /// Reports to the moderators.
    pub reports: crate::reports::Reports,
}

impl Store {
    pub fn new(db: &mongo::Db) -> Self {
        Self {
            db: db.clone(),
            users: db.collection(COLLECTION),
            counters: idempotency::Counters::new(db, COLLECTION),
            blocks: Blocks::new(db, "user"),
            reports: crate::reports::Reports::new(db),
        }
    }

    /// Pings and creates the indexes (idempotent); run before serving.
    pub async fn init(&self) -> anyhow::Result<()> {
        mongo::ping(&self.db).await?;
        self.db
            .ensure_indexes(
                &self.users,
                vec![
                    // Register / GetUserByUsername / Login by username.
                    mongo::index("username_lower_unique", doc! { "username_lower": 1 }, true),
                    // Register / Login by email.
                    mongo::index("email_unique", doc! { "email": 1 }, true),
                    outbox::index(),
                    // A deleted account goes when its quarantine is over and its event is out.
                    outbox::purge_index("purge_ttl", "purge_at", Duration::ZERO),
                ],
            )
            .await?;
        self.counters.init().await?;
        self.blocks.init().await?;
        self.reports.init().await?;
        Ok(())
    }

    /// Gives account `id` `role` (`user` clears it); whether the account exists.
    pub async fn set_role(&self, id: ObjectId, role: &str) -> Result<bool> {
        let update = if role == "user" {
            doc! { "$unset": { "role": "" } }
        } else {
            doc! { "$set": { "role": role } }
        };
        let r = self
            .users
            .update_one(
                doc! { "_id": id, "deleted_ms": { "$exists": false } },
                update,
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    /// Inserts a new account, or says which unique field is taken.
    pub async fn insert(&self, user: &UserDoc) -> Result<Result<(), Taken>> {
        match self.users.insert_one(user).await {
            Ok(_) => Ok(Ok(())),
            Err(e) if is_duplicate_key(&e) => {
                // The driver's message names the index, but not in a portable format:
                // ask which value is the taken one.
                let taken = match self.taken(&user.username_lower, &user.email).await? {
                    Some(t) => t,
                    None => Taken::Email,
                };
                Ok(Err(taken))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Which of the two unique values is already taken, if any; a deleted account's
    /// username stays taken until its quarantine ends.
    pub async fn taken(&self, username_lower: &str, email: &str) -> Result<Option<Taken>> {
        if self
            .one(doc! { "username_lower": username_lower })
            .await?
            .is_some()
        {
            return Ok(Some(Taken::Username));
        }
        if self.one(doc! { "email": email }).await?.is_some() {
            return Ok(Some(Taken::Email));
        }
        Ok(None)
    }

    /// The account matching `filter`, deleted or not.
    async fn one(&self, filter: Document) -> Result<Option<UserDoc>> {
        Ok(self
            .users
            .find_one(filter)
            .projection(outbox::without_bookkeeping())
            .await?)
    }

    /// The accounts matching `filter` that are not deleted.
    async fn live(&self, mut filter: Document) -> Result<Vec<UserDoc>> {
        filter.insert(DELETED, doc! { "$exists": false });
        Ok(self
            .users
            .find(filter)
            .projection(outbox::without_bookkeeping())
            .await?
            .try_collect()
            .await?)
    }

    async fn live_one(&self, filter: Document) -> Result<Option<UserDoc>> {
        Ok(self.live(filter).await?.into_iter().next())
    }

    pub async fn by_id(&self, id: ObjectId) -> Result<Option<UserDoc>> {
        self.live_one(doc! { "_id": id }).await
    }

    /// Account `id`, deleted or not.
    pub async fn any_by_id(&self, id: ObjectId) -> Result<Option<UserDoc>> {
        self.one(doc! { "_id": id }).await
    }

    pub async fn by_username(&self, username_lower: &str) -> Result<Option<UserDoc>> {
        self.live_one(doc! { "username_lower": username_lower })
            .await
    }

    pub async fn by_email(&self, email: &str) -> Result<Option<UserDoc>> {
        self.live_one(doc! { "email": email }).await
    }

    pub async fn by_ids(&self, ids: &[ObjectId]) -> Result<Vec<UserDoc>> {
        self.live(doc! { "_id": { "$in": ids } }).await
    }

    pub async fn by_usernames(&self, lowers: &[String]) -> Result<Vec<UserDoc>> {
        self.live(doc! { "username_lower": { "$in": lowers } })
            .await
    }

    /// Sets profile fields and `updated_at`; returns the new document.
    pub async fn update_profile(&self, id: ObjectId, mut set: Document) -> Result<Option<UserDoc>> {
        set.insert("updated_at", DateTime::now());
        Ok(self
            .users
            .find_one_and_update(
                doc! { "_id": id, DELETED: { "$exists": false } },
                doc! { "$set": set },
            )
            .projection(outbox::without_bookkeeping())
            .return_document(ReturnDocument::After)
            .await?)
    }

    /// Replaces the password hash if it is still `old_hash` (a concurrent change wins
    /// once, not twice) and bumps the credential version; the new version, `None` if it
    /// did not.
    pub async fn set_password(
        &self,
        id: ObjectId,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<Option<i64>> {
        let changed = self
            .users
            .clone_with_type::<Document>()
            .find_one_and_update(
                doc! { "_id": id, "password_hash": old_hash, DELETED: { "$exists": false } },
                doc! {
                    "$set": { "password_hash": new_hash, "updated_at": DateTime::now() },
                    "$inc": { CREDENTIAL_VERSION: 1_i64 },
                },
            )
            .projection(doc! { CREDENTIAL_VERSION: 1 })
            .return_document(ReturnDocument::After)
            .await
            .map_err(Error::from)?;
        Ok(changed.map(|d| match d.get(CREDENTIAL_VERSION) {
            Some(bson::Bson::Int32(v)) => i64::from(*v),
            Some(bson::Bson::Int64(v)) => *v,
            _ => 0,
        }))
    }

    /// Deletes account `id` with its `user.user.deleted` event: its personal data goes
    /// at once, its username stays reserved until `quarantine` is over (the document is
    /// purged then, once its event is out). Whether it was not deleted already.
    pub async fn delete(
        &self,
        id: ObjectId,
        quarantine: Duration,
        event: &Envelope,
    ) -> Result<bool> {
        let now = DateTime::now();
        let purge_at = DateTime::from_millis(
            now.timestamp_millis()
                .saturating_add(i64::try_from(quarantine.as_millis()).unwrap_or(i64::MAX)),
        );
        let mut update = doc! {
            "$set": {
                DELETED: now.timestamp_millis(), "purge_at": purge_at,
                "email": format!("deleted:{id}"), "password_hash": "",
                "full_name": "", "bio": "", "profile_picture_url": "", "updated_at": now,
            },
            "$inc": { CREDENTIAL_VERSION: 1_i64 },
        };
        outbox::push(&mut update, event);
        let r = self
            .users
            .update_one(doc! { "_id": id, DELETED: { "$exists": false } }, update)
            .await?;
        Ok(r.modified_count == 1)
    }

    /// Records that `service` removed everything of deleted account `id`; the services
    /// still to report, and whether this report finished the deletion.
    pub async fn record_cleared(
        &self,
        id: ObjectId,
        service: &str,
    ) -> Result<(Vec<&'static str>, bool)> {
        self.users
            .update_one(
                doc! { "_id": id, "cleared_by": { "$nin": [service] } },
                doc! { "$push": { "cleared_by": service } },
            )
            .await?;
        let Some(user) = self.one(doc! { "_id": id }).await? else {
            return Ok((Vec::new(), false));
        };
        let missing: Vec<&'static str> = CLEARING_SERVICES
            .iter()
            .copied()
            .filter(|s| !user.cleared_by.iter().any(|c| c == s))
            .collect();
        if !missing.is_empty() {
            return Ok((missing, false));
        }
        let finished = self
            .users
            .update_one(
                doc! { "_id": id, "deletion_finished_ms": { "$exists": false } },
                doc! { "$set": { "deletion_finished_ms": DateTime::now().timestamp_millis() } },
            )
            .await?;
        Ok((missing, finished.modified_count == 1))
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
