//! Deleted accounts, as each service that holds their data remembers them
//! (`<service>_removed_users`): the tombstone that makes a deletion win races with the
//! user's last actions, and the `AccountCleared` event that says the service is done.
//!
//! On `user.user.deleted` a service writes the tombstone first, then removes (in
//! bounded batches, each through the usual events, so that other users' counters move
//! exactly once); a writer that inserts something of a user checks for the tombstone
//! after its insert and undoes it the usual way if there is one (docs/events.md,
//! "Deletions win races"). When everything is gone, [`RemovedUsers::cleared`] puts
//! `AccountCleared` in the tombstone's outbox, once, for the user service to record.

use bson::{DateTime, Document, doc, oid::ObjectId};
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_kit::mongo::Db;

use crate::{
    outbox,
    pb::{AccountCleared, UserDeleted},
};

#[derive(Debug, Serialize, Deserialize)]
struct Tombstone {
    #[serde(rename = "_id")]
    user: ObjectId,
    removed_at: DateTime,
    /// Written by `$set`, which the stand-in stores as an integer.
    #[serde(deserialize_with = "social_kit::mongo::lenient::boolean")]
    cleared: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outbox: Vec<String>,
    #[serde(default)]
    outbox_pending: i32,
}

/// The deleted accounts one service remembers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RemovedUsers {
    db: Db,
    tombstones: Collection<Tombstone>,
    service: &'static str,
}

impl RemovedUsers {
    /// The tombstones of `service` (in `<service>_removed_users`).
    pub fn new(db: &Db, service: &'static str) -> Self {
        Self { db: db.clone(), tombstones: db.collection(&Self::collection(service)), service }
    }

    /// The collection of `service`'s tombstones (for its relay).
    pub fn collection(service: &str) -> String {
        format!("{}_removed_users", service.replace('-', "_"))
    }

    /// Creates the indexes (idempotent). Tombstones are kept for good: an access token,
    /// a late event or a session of the account may try to write under its id at any
    /// time, and one small document per deleted account is cheap (a release that purged
    /// them after 30 days had its TTL index retired here).
    pub async fn init(&self) -> mongodb::error::Result<()> {
        self.db.ensure_indexes(&self.tombstones, vec![outbox::index()]).await?;
        social_kit::mongo::retire_indexes(&self.tombstones, &["removed_ttl"]).await
    }

    /// Records that `user` was deleted (idempotent); before anything of theirs is
    /// removed.
    pub async fn mark(&self, user: ObjectId) -> mongodb::error::Result<()> {
        let tombstone = Tombstone {
            user,
            removed_at: DateTime::now(),
            cleared: false,
            outbox: Vec::new(),
            outbox_pending: 0,
        };
        social_kit::mongo::insert_once(&self.tombstones, &tombstone).await?;
        Ok(())
    }

    /// Whether any of `users` was deleted.
    pub async fn any(&self, users: &[ObjectId]) -> mongodb::error::Result<bool> {
        Ok(self.tombstones.find_one(doc! { "_id": { "$in": users } }).await?.is_some())
    }

    /// Those of `users` that were deleted.
    pub async fn which(&self, users: &[ObjectId]) -> mongodb::error::Result<Vec<ObjectId>> {
        use futures::TryStreamExt;
        let found: Vec<Tombstone> = self
            .tombstones
            .find(doc! { "_id": { "$in": users } })
            .projection(doc! { "_id": 1, "removed_at": 1, "cleared": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(|t| t.user).collect())
    }

    /// Removes everything of deleted account `user` this service holds: marks it first
    /// (a write racing the removal sees the mark and undoes itself), runs `remove`
    /// (idempotent and resumable: a retry goes on with what is left), then records that
    /// the service cleared it, its event woken out through `relay`.
    pub async fn remove(
        &self,
        user: ObjectId,
        relay: &crate::outbox::RelayWaker,
        remove: impl std::future::Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        self.mark(user).await?;
        remove.await?;
        if self.cleared(user).await? {
            relay.wake();
        }
        Ok(())
    }

    /// Records that everything of `user` is gone, with `AccountCleared` in the outbox
    /// (once); whether this call did it (the relay should be woken).
    pub async fn cleared(&self, user: ObjectId) -> mongodb::error::Result<bool> {
        let event = crate::new_envelope(
            user,
            crate::Payload::AccountCleared(AccountCleared {
                user_id: user.to_hex(),
                service: self.service.to_owned(),
            }),
        );
        let mut update: Document = doc! { "$set": { "cleared": true } };
        outbox::push(&mut update, &event);
        let r = self.tombstones.update_one(doc! { "_id": user, "cleared": false }, update).await?;
        if r.modified_count == 1 {
            tracing::info!(%user, service = self.service, "deleted account cleared");
        }
        Ok(r.modified_count == 1)
    }
}

/// The user of a `user.user.deleted` event.
pub fn deleted_user(event: &UserDeleted) -> anyhow::Result<ObjectId> {
    Ok(ObjectId::parse_str(&event.user_id)?)
}
