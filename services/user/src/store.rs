//! The `users` collection: its document, indexes and queries. No proto types here.
//!
//! Usernames are unique case-insensitively through `username_lower`, a normalised copy
//! (a collation would do on MongoDB, but the stand-in neither enforces nor queries
//! collations); emails are stored lowercase. Each is held by one account through a
//! reservation keyed by the value ([`crate::names`]), not a unique index on `users`, so
//! that `users` can be sharded by `_id`; lookups by either go through the reservation.

use std::time::Duration;

use bson::{DateTime, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Collection, options::ReturnDocument};
use serde::{Deserialize, Serialize};
use social_events::{Envelope, blocks::Blocks, idempotency, outbox};
use social_kit::{
    Error, Result,
    cache::{Cache, write_then_forget},
    error::is_duplicate_key,
    mongo,
};

use crate::names::{Claim, Holder, Kind, Names};

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

/// A value a registration wanted that somebody else holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Which value.
    pub kind: Kind,
    /// Who holds it.
    pub holder: Holder,
}

/// Tests: the answer to a stored account's insert lost (`user::insert_answer_lost`).
fn lost_answer() -> mongodb::error::Result<()> {
    social_kit::fault!("user::insert_answer_lost", |_| Err(mongodb::error::Error::custom(
        "injected: the insert's answer was lost"
    )));
    Ok(())
}

/// What anyone may read of an account: all that GetUser shows to someone other than
/// its owner, and all the cache of accounts holds (no email, no password hash, nothing
/// of its sessions).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub username: String,
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
}

impl From<UserDoc> for Profile {
    fn from(u: UserDoc) -> Self {
        Self {
            id: u.id,
            username: u.username,
            full_name: u.full_name,
            bio: u.bio,
            profile_picture_url: u.profile_picture_url,
            followers_count: u.followers_count,
            following_count: u.following_count,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
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
    /// Who holds each username and email.
    pub names: Names,
    /// What [`Store::profiles`] reads through, if any (`social_kit::cache`): every write
    /// of an account's profile or counters here forgets it there.
    cache: Option<Cache>,
}

impl Store {
    pub fn new(db: &mongo::Db) -> Self {
        Self {
            db: db.clone(),
            users: db.collection(COLLECTION),
            counters: idempotency::Counters::new(db, COLLECTION),
            blocks: Blocks::new(db, "user"),
            reports: crate::reports::Reports::new(db),
            names: Names::new(db, COLLECTION),
            cache: None,
        }
    }

    /// The same store, reading profiles, and who blocks each reader, through the caches
    /// `settings` give (none when their lifetime is zero).
    pub fn with_caches(mut self, settings: &social_kit::cache::Settings) -> anyhow::Result<Self> {
        self.cache = settings.cache("user")?;
        self.blocks = self.blocks.with_cache(settings.cache("user-blockers")?);
        Ok(self)
    }

    /// Forgets account `id`'s profile in the cache: after every write of it.
    pub async fn forget(&self, id: ObjectId) {
        social_kit::cache::forget(self.cache.as_ref(), id).await;
    }

    /// [`Self::forget`], failing if Redis did not answer: a deleted account's profile
    /// must go, so its event is retried until it has.
    pub async fn forget_surely(&self, id: ObjectId) -> Result<()> {
        social_kit::cache::forget_surely(self.cache.as_ref(), id).await
    }

    /// Moves `user`'s counter `field` by `delta` for `event`, then forgets its profile,
    /// in a task a handler's timeout cannot stop half-way (`write_then_forget`).
    pub async fn count(
        &self,
        user: ObjectId,
        field: &'static str,
        delta: i64,
        event: &Envelope,
    ) -> anyhow::Result<()> {
        let counters = self.counters.clone();
        let event = event.clone();
        write_then_forget(self.cache.as_ref(), user, async move {
            Ok(counters.add(user, field, delta, &event).await.map(drop)?)
        })
        .await?;
        Ok(())
    }

    /// The profiles of the live accounts `ids`, through the cache; in no order.
    pub async fn profiles(&self, ids: &[ObjectId]) -> Result<Vec<Profile>> {
        let users = self.users.clone_with_type::<Profile>();
        let load = |ids: Vec<ObjectId>| async move {
            let fields = doc! {
                "username": 1, "full_name": 1, "bio": 1, "profile_picture_url": 1,
                "followers_count": 1, "following_count": 1, "created_at": 1, "updated_at": 1,
            };
            Ok(users
                .find(doc! { "_id": { "$in": ids }, DELETED: { "$exists": false } })
                .projection(fields)
                .await?
                .try_collect()
                .await?)
        };
        Cache::read_through(self.cache.as_ref(), ids, |p: &Profile| p.id, load).await
    }

    /// Pings and creates the indexes (idempotent); run before serving.
    pub async fn init(&self) -> anyhow::Result<()> {
        mongo::ping(&self.db).await?;
        self.db
            .ensure_indexes(
                &self.users,
                vec![
                    // Usernames and emails are looked up through their reservations
                    // (`crate::names`), accounts by `_id`.
                    outbox::index(),
                    // A deleted account goes when its quarantine is over and its event is out.
                    outbox::purge_index("purge_ttl", "purge_at", Duration::ZERO),
                ],
            )
            .await?;
        self.names.init().await?;
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
            .update_one(doc! { "_id": id, "deleted_ms": { "$exists": false } }, update)
            .await?;
        Ok(r.matched_count == 1)
    }

    /// Stores a new account once its username and email are reserved for it (see
    /// [`crate::names`]), or says which value somebody else holds; whatever it reserved
    /// is given up again when it does not store the account.
    pub async fn insert(&self, user: &UserDoc) -> Result<Result<(), Taken>> {
        let values =
            [(Kind::Username, user.username_lower.as_str()), (Kind::Email, user.email.as_str())];
        let mut reserved = Vec::new();
        for (kind, value) in values {
            let claim = self.names.reserve(kind, value, user.id, user.request_key.as_deref()).await;
            match claim {
                Ok(Claim::Ours) => reserved.push((kind, value)),
                Ok(Claim::Held(holder)) => {
                    self.release(&reserved, user.id).await;
                    return Ok(Err(Taken { kind, holder }));
                }
                Err(e) => {
                    self.release(&reserved, user.id).await;
                    return Err(e);
                }
            }
        }
        social_kit::pause!("user::before_account_insert");
        let inserted = self.users.insert_one(user).await.map(drop);
        if let Err(e) = inserted.and_then(|()| lost_answer()) {
            if !is_duplicate_key(&e) {
                // Perhaps stored all the same (an answer lost after the write): the
                // reservations stay, held by the account if it is there, free within
                // `names::IN_FLIGHT` if not.
                return Err(e.into());
            }
            self.release(&reserved, user.id).await;
            // Only a pre-reservation unique index refuses it (see `crate::names`).
            let taken = self.taken(&user.username_lower, &user.email).await?;
            return Ok(Err(
                taken.unwrap_or(Taken { kind: Kind::Email, holder: Holder::InFlight(None) })
            ));
        }
        for (kind, value) in values {
            if !self.names.confirm(kind, value, user.id).await? {
                // Taken over before the account was stored (this registration paused
                // past `names::IN_FLIGHT`): the account goes, the new holder keeps it.
                self.undo(user.id, &reserved).await?;
                let holder = self.names.holder(kind, value).await?;
                return Ok(Err(Taken { kind, holder: holder.unwrap_or(Holder::InFlight(None)) }));
            }
        }
        Ok(Ok(()))
    }

    /// Deletes account `id` whose reservation was taken over, then gives up the rest of
    /// `reserved`: in a task of its own, so that a caller that goes away does not leave
    /// the account behind, retried a few times.
    async fn undo(&self, id: ObjectId, reserved: &[(Kind, &str)]) -> Result<()> {
        let this = self.clone();
        let reserved: Vec<(Kind, String)> =
            reserved.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let undo = tokio::spawn(async move {
            let mut tries = 0;
            loop {
                match this.users.delete_one(doc! { "_id": id }).await {
                    Ok(_) => {
                        // A reader may have cached it meanwhile.
                        this.forget(id).await;
                        break;
                    }
                    Err(e) if tries < 5 => {
                        tries += 1;
                        tracing::warn!(error = %e, user_id = %id, "undoing a registration; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                    }
                    Err(e) => return Err(Error::from(e)),
                }
            }
            for (kind, value) in &reserved {
                if let Err(e) = this.names.release(*kind, value, id).await {
                    tracing::warn!(error = %e, ?kind, "a reservation left to be taken over");
                }
            }
            Ok(())
        });
        undo.await.map_err(Error::internal)?
    }

    /// Gives up `reserved` (a registration that did not store its account); a failure
    /// leaves them for the next claimant to take over (see [`crate::names`]).
    async fn release(&self, reserved: &[(Kind, &str)], user: ObjectId) {
        for (kind, value) in reserved {
            if let Err(e) = self.names.release(*kind, value, user).await {
                tracing::warn!(error = %e, ?kind, "a reservation left to be taken over");
            }
        }
    }

    /// Which of the two values somebody holds already, if any; a deleted account's
    /// username stays held until its quarantine ends.
    pub async fn taken(&self, username_lower: &str, email: &str) -> Result<Option<Taken>> {
        for (kind, value) in [(Kind::Username, username_lower), (Kind::Email, email)] {
            if let Some(holder) = self.names.holder(kind, value).await? {
                return Ok(Some(Taken { kind, holder }));
            }
        }
        Ok(None)
    }

    /// The account matching `filter`, deleted or not.
    async fn one(&self, filter: Document) -> Result<Option<UserDoc>> {
        Ok(self.users.find_one(filter).projection(outbox::without_bookkeeping()).await?)
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
        let found = self.holding(Kind::Username, &[username_lower.to_owned()]).await?;
        Ok(found.into_iter().next())
    }

    pub async fn by_email(&self, email: &str) -> Result<Option<UserDoc>> {
        Ok(self.holding(Kind::Email, &[email.to_owned()]).await?.into_iter().next())
    }

    /// The live accounts holding `values`, found through their reservations (and, for
    /// values no account holds so, through the legacy indexes while they exist).
    async fn holding(&self, kind: Kind, values: &[String]) -> Result<Vec<UserDoc>> {
        let value = |u: &UserDoc| match kind {
            Kind::Username => u.username_lower.clone(),
            Kind::Email => u.email.clone(),
        };
        let mut found = self.accounts_of(kind, self.names.owners(kind, values).await?).await?;
        let missing: Vec<String> =
            values.iter().filter(|v| !found.iter().any(|u| value(u) == **v)).cloned().collect();
        if !missing.is_empty() {
            let legacy = self.names.legacy_holders(kind, &missing).await?;
            found.extend(self.accounts_of(kind, legacy).await?);
        }
        Ok(found)
    }

    /// The live accounts of `owners` (value, account) that hold their value.
    async fn accounts_of(
        &self,
        kind: Kind,
        owners: Vec<(String, ObjectId)>,
    ) -> Result<Vec<UserDoc>> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<ObjectId> = owners.iter().map(|(_, id)| *id).collect();
        let mut found = self.by_ids(&ids).await?;
        found.retain(|u| {
            let value = match kind {
                Kind::Username => &u.username_lower,
                Kind::Email => &u.email,
            };
            owners.iter().any(|(v, id)| v == value && *id == u.id)
        });
        Ok(found)
    }

    pub async fn by_ids(&self, ids: &[ObjectId]) -> Result<Vec<UserDoc>> {
        self.live(doc! { "_id": { "$in": ids } }).await
    }

    pub async fn by_usernames(&self, lowers: &[String]) -> Result<Vec<UserDoc>> {
        self.holding(Kind::Username, lowers).await
    }

    /// Sets profile fields and `updated_at`; returns the new document.
    pub async fn update_profile(&self, id: ObjectId, mut set: Document) -> Result<Option<UserDoc>> {
        set.insert("updated_at", DateTime::now());
        let users = self.users.clone();
        write_then_forget(self.cache.as_ref(), id, async move {
            Ok(users
                .find_one_and_update(
                    doc! { "_id": id, DELETED: { "$exists": false } },
                    doc! { "$set": set },
                )
                .projection(outbox::without_bookkeeping())
                .return_document(ReturnDocument::After)
                .await?)
        })
        .await
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
        let users = self.users.clone_with_type::<Document>();
        let filter = doc! { "_id": id, "password_hash": old_hash, DELETED: { "$exists": false } };
        let update = doc! {
            "$set": { "password_hash": new_hash, "updated_at": DateTime::now() },
            "$inc": { CREDENTIAL_VERSION: 1_i64 },
        };
        // Its `updated_at` moves.
        let changed = write_then_forget(self.cache.as_ref(), id, async move {
            Ok(users
                .find_one_and_update(filter, update)
                .projection(doc! { CREDENTIAL_VERSION: 1 })
                .return_document(ReturnDocument::After)
                .await?)
        })
        .await?;
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
        let users = self.users.clone();
        let r = write_then_forget(self.cache.as_ref(), id, async move {
            Ok(users.update_one(doc! { "_id": id, DELETED: { "$exists": false } }, update).await?)
        })
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
}

/// The accounts' follow counters, counted by the social-graph service.
impl social_kit::recount::Recounted for Store {
    async fn ids_after(
        &self,
        after: Option<ObjectId>,
        limit: i64,
    ) -> anyhow::Result<Vec<ObjectId>> {
        Ok(mongo::ids_after(&self.users, doc! {}, after, limit).await?)
    }

    async fn recount(
        &self,
        user: ObjectId,
        as_of_ms: i64,
        followers: i64,
        following: i64,
    ) -> anyhow::Result<bool> {
        let counts = [("followers_count", followers), ("following_count", following)];
        let found = self.counters.recount(user, as_of_ms, &counts).await;
        self.forget(user).await;
        found
    }
}
