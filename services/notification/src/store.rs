//! The `notifications` collection: one document per (event, recipient), unique by
//! `dedupe_key`, so that a redelivered event, or like-unlike-like, stores one
//! notification. No proto types here.

use bson::{DateTime, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_events::{
    blocks::{Blocks, Mutes},
    removed_users::RemovedUsers,
};
use social_kit::{
    Result, mongo,
    paging::{Order, PageRequest},
};

pub const COLLECTION: &str = "notifications";
/// Tombstones of deleted posts and comments (see [`Store::mark_removed`]).
pub const REMOVED: &str = "removed_targets";
/// Likes and follows taken back (see [`Store::undo`]).
pub const UNDONE: &str = "undone_actions";
/// When each recipient's notifications were last removed (see [`Store::note_removals`]).
pub const REMOVALS: &str = "removal_marks";

/// The most unread notifications (or groups with unread ones) a count reads: more reads
/// as this many ("999+"), so that a count costs the same whatever others made unread
/// (a comment that @mentions somebody notifies them twice).
pub const MAX_UNREAD_COUNTED: u64 = 1_000;
/// How long a removal is remembered: past the longest resume (a day), a client resyncs
/// whatever happened.
const REMOVALS_KEPT: std::time::Duration = std::time::Duration::from_secs(2 * 24 * 3600);

/// The last time a recipient's notifications were removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RemovalMark {
    #[serde(rename = "_id")]
    user_id: ObjectId,
    at: DateTime,
}

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
    #[serde(deserialize_with = "social_kit::mongo::lenient::boolean")]
    pub is_read: bool,
    /// Rewritten by [`Store::refresh_key`] (an update: the stand-in stores it as text).
    #[serde(deserialize_with = "social_kit::mongo::lenient::date")]
    pub created_at: DateTime,
    /// Orders lists (see `social_kit::paging`).
    pub sort_key: i64,
    /// What makes it unique: e.g. `post_like:<liker>:<post>`.
    pub dedupe_key: String,
    /// The event that stored it (a retry of that event pushes it again; another event
    /// with the same key, like-unlike-like, does not).
    #[serde(default)]
    pub event_id: String,
    /// When that event happened (ms): an unlike or unfollow removes it only if it came
    /// after.
    #[serde(default)]
    pub event_ms: i64,
    /// Its group (see `groups`); empty for notifications stored before groups existed.
    #[serde(default)]
    pub group_key: String,
    /// Its sort key when it was stored: what its group's counts go by (its `sort_key`
    /// moves when a late push refreshes it; this does not).
    #[serde(default)]
    pub count_key: i64,
    /// How far its group's counts have taken it (see `groups::Stage`); absent on
    /// notifications stored before stages existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_stage: Option<i64>,
    /// Present (true) from its storing until its push went out: a redelivered event
    /// pushes (and moves) only what was never pushed, and what an event left unpushed
    /// (it dead-lettered after storing) is found by [`Store::strays`]. Absent on
    /// notifications stored before this mark existed: they were pushed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpushed: bool,
}

impl NotificationDoc {
    /// What streams and lists carry as its `version`: odd, from the time of the event
    /// that owns it, so that it sorts between the removals an undo at that time or
    /// later sends (`2 × t`, see [`removal_version`]): an unlike at `t` removes it only
    /// when its event came before `t`, and then its version is below the removal's.
    pub fn version(&self) -> i64 {
        self.event_ms.saturating_mul(2).saturating_add(1)
    }
}

/// The version of a removal by an unlike or unfollow at `t` (ms): above every
/// notification it removes (their events came before `t`), below one a like at `t` or
/// later stores. A removal by a deletion (post, comment, account) has the last word:
/// [`LAST_WORD`].
pub fn removal_version(t: i64) -> i64 {
    t.saturating_mul(2)
}

/// The version of what nothing comes after: a removal by a deletion, a group gone whole.
pub const LAST_WORD: i64 = i64::MAX;

/// A like or follow taken back at `t` (ms): the notification of an earlier one goes, and
/// an earlier one that arrives late is not stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Undone {
    /// `<dedupe key>@<t>`: one per undo, however often its event comes.
    #[serde(rename = "_id")]
    id: String,
    dedupe_key: String,
    t: i64,
    at: DateTime,
    /// The notification it takes back, once found (so that a retry after its deletion
    /// still counts it out of its group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    victim_id: Option<ObjectId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    victim_user: Option<ObjectId>,
    #[serde(default)]
    victim_group: String,
    #[serde(default)]
    victim_sort_key: i64,
    /// Its group stage when found (see `groups::Stage`).
    #[serde(default)]
    victim_stage: i64,
}

/// Which notifications to mark read.
pub enum Which<'a> {
    Ids(&'a [ObjectId]),
    /// All of them with a sort key up to this one.
    UpTo(i64),
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
    db: mongo::Db,
    notifications: Collection<NotificationDoc>,
    removed: Collection<Removed>,
    undone: Collection<Undone>,
    removals: Collection<RemovalMark>,
    /// The groups notifications are shown in.
    pub groups: crate::groups::Groups,
    /// Deleted accounts (see `social_events::removed_users`).
    pub removed_users: RemovedUsers,
    /// Who blocks whom (see `social_events::blocks`).
    pub blocks: Blocks,
    /// Who mutes whom.
    pub mutes: Mutes,
}

impl Store {
    pub fn new(db: &mongo::Db) -> Self {
        Self {
            db: db.clone(),
            notifications: db.collection(COLLECTION),
            removed: db.collection(REMOVED),
            undone: db.collection(UNDONE),
            removals: db.collection(REMOVALS),
            groups: crate::groups::Groups::new(db),
            removed_users: RemovedUsers::new(db, "notification"),
            blocks: Blocks::new(db, "notification"),
            mutes: Mutes::new(db, "notification"),
        }
    }

    /// Pings and creates the indexes (idempotent); run before serving.
    pub async fn init(&self) -> anyhow::Result<()> {
        mongo::ping(&self.db).await?;
        self.db
            .ensure_indexes(
                &self.notifications,
                vec![
                    // Exactly one per (event, recipient): the key names the thing done
                    // and so the recipient; the recipient first, as the shard key
                    // (docs/adr/0002-scaling-out.md).
                    mongo::index(
                        "recipient_dedupe_unique",
                        doc! { "user_id": 1, "dedupe_key": 1 },
                        true,
                    ),
                    // ListNotifications, newest first.
                    mongo::index("recipient_sorted", doc! { "user_id": 1, "sort_key": -1 }, false),
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
                    // Removing what a deleted account caused, or what a blocked one
                    // caused to its blocker.
                    mongo::index(
                        "source_recipient",
                        doc! { "source_user_id": 1, "user_id": 1 },
                        false,
                    ),
                    // A group's newest notifications.
                    mongo::index(
                        "recipient_group_sorted",
                        doc! { "user_id": 1, "group_key": 1, "sort_key": -1 },
                        false,
                    ),
                    // Marking a group read: its unread ones up to a count key, and no others.
                    mongo::index(
                        "recipient_group_unread",
                        doc! { "user_id": 1, "group_key": 1, "is_read": 1, "count_key": 1 },
                        false,
                    ),
                    // ListNotifications of some types, newest first.
                    mongo::index(
                        "recipient_type_sorted",
                        doc! { "user_id": 1, "type": 1, "sort_key": -1 },
                        false,
                    ),
                    // ...and unread only.
                    mongo::index(
                        "recipient_unread_type_sorted",
                        doc! { "user_id": 1, "is_read": 1, "type": 1, "sort_key": -1 },
                        false,
                    ),
                    mongo::sort_key_index(Some("user_id")),
                    // Those whose push has not gone out (a handful: in flight, or left
                    // by an event that failed).
                    mongo::partial_index(
                        "unpushed_sorted",
                        doc! { "unpushed": 1, "sort_key": 1 },
                        doc! { "unpushed": true },
                    ),
                ],
            )
            .await?;
        self.db.ensure_expiry(&self.removals, "removals_ttl", "at", REMOVALS_KEPT).await?;
        self.db
            .ensure_expiry(
                &self.removed,
                "removed_ttl",
                "removed_at",
                std::time::Duration::from_secs(30 * 24 * 3600),
            )
            .await?;
        self.db
            .ensure_indexes(
                &self.undone,
                vec![
                    mongo::index("key_time", doc! { "dedupe_key": 1, "t": -1 }, false),
                    mongo::ttl_index(
                        "undone_ttl",
                        "at",
                        std::time::Duration::from_secs(30 * 24 * 3600),
                    ),
                ],
            )
            .await?;
        mongo::retire_indexes(
            &self.notifications,
            &[
                "source",
                // Replaced by the per-recipient ones above.
                "dedupe_unique",
                mongo::UNOWNED_SORT_KEY_INDEX,
            ],
        )
        .await?;
        self.groups.init().await?;
        self.removed_users.init().await?;
        self.blocks.init().await?;
        self.mutes.init().await?;
        Ok(())
    }

    /// Records that a post or comment was deleted (idempotent). Written before its
    /// notifications are removed, so that a notification about it stored meanwhile
    /// is found by [`Self::any_removed`] and taken back.
    pub async fn mark_removed(&self, key: String) -> Result<()> {
        let tombstone = Removed { key, removed_at: DateTime::now() };
        mongo::insert_once(&self.removed, &tombstone).await?;
        Ok(())
    }

    /// Records that notifications of `users` are being removed, before their removal
    /// is pushed: a client whose stream missed the push resumes after this.
    pub async fn note_removals(&self, users: &[ObjectId]) -> Result<()> {
        let now = DateTime::now();
        for user in users {
            self.removals
                .update_one(doc! { "_id": user }, doc! { "$max": { "at": now } })
                .upsert(true)
                .await?;
        }
        Ok(())
    }

    /// When notifications of `user` were last removed, if within [`REMOVALS_KEPT`].
    pub async fn last_removal(&self, user: ObjectId) -> Result<Option<DateTime>> {
        Ok(self.removals.find_one(doc! { "_id": user }).await?.map(|m| m.at))
    }

    /// Whether any of `keys` was deleted.
    pub async fn any_removed(&self, keys: &[String]) -> Result<bool> {
        if keys.is_empty() {
            return Ok(false);
        }
        Ok(self.removed.find_one(doc! { "_id": { "$in": keys } }).await?.is_some())
    }

    /// Deletes notification `id` of `user` if its counting into its group has not begun
    /// (`group_stage` still new); whether it did.
    pub async fn delete_uncounted(&self, id: ObjectId, user: ObjectId) -> Result<bool> {
        let filter = doc! {
            "_id": id, "user_id": mongo::equals_id(user), "group_stage": crate::groups::Stage::NEW,
        };
        Ok(self.notifications.delete_one(filter).await?.deleted_count == 1)
    }

    /// Deletes the notifications of `keys` (recipient, dedupe key).
    pub async fn delete_by_keys(&self, keys: &[(ObjectId, String)]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        // Each key names one recipient: the two lists select exactly these.
        let mut users: Vec<ObjectId> = keys.iter().map(|(u, _)| *u).collect();
        users.sort();
        users.dedup();
        let dedupe: Vec<&String> = keys.iter().map(|(_, k)| k).collect();
        self.notifications
            .delete_many(doc! { "user_id": { "$in": users }, "dedupe_key": { "$in": dedupe } })
            .await?;
        Ok(())
    }

    /// Stores `n` unless its `dedupe_key` is taken; whether it was stored.
    pub async fn insert(&self, n: &mut NotificationDoc) -> Result<bool> {
        let recipient = Some(("user_id", n.user_id));
        mongo::insert_keyed(&self.notifications, n, recipient, |n| &mut n.sort_key).await
    }

    /// A page of `user`'s notifications, newest first.
    pub async fn list(
        &self,
        user: ObjectId,
        filter: &ListFilter,
        page: &PageRequest,
    ) -> Result<Vec<NotificationDoc>> {
        let mut query = doc! { "user_id": mongo::equals_id(user) };
        if filter.unread_only {
            query.insert("is_read", false);
        }
        if !filter.types.is_empty() {
            query.insert("type", doc! { "$in": &filter.types });
        }
        Ok(mongo::page(&self.notifications, Order::NewestFirst, query, page, doc! {}).await?)
    }

    /// Puts the notifications without a `group_key` (stored before groups existed) into
    /// their groups, in batches; how many. Each is counted first (idempotent: the same
    /// key every time, from its type, target and time), then given its key, so that a
    /// stop in between is redone by the next run.
    pub async fn group_existing(&self, window_ms: i64) -> Result<u64> {
        let mut grouped = 0;
        loop {
            let batch: Vec<NotificationDoc> = self
                .notifications
                .find(doc! { "group_key": { "$exists": false } })
                .limit(500)
                .await?
                .try_collect()
                .await?;
            if batch.is_empty() {
                return Ok(grouped);
            }
            for mut n in batch {
                n.group_key = crate::groups::group_key(
                    &n.kind,
                    n.post_id,
                    n.comment_id,
                    &n.dedupe_key,
                    n.created_at.timestamp_millis(),
                    window_ms,
                );
                n.count_key = n.sort_key;
                // Never in a group, so never counted.
                n.group_stage = Some(crate::groups::Stage::NEW);
                let (group, _) = self.groups.added(&n).await?;
                self.notifications
                    .update_one(
                        doc! { "_id": n.id, "group_key": { "$exists": false } },
                        doc! { "$set": { "group_key": &n.group_key, "count_key": n.count_key } },
                    )
                    .await?;
                if let Some(group) = group {
                    self.groups.refresh_head(group.id).await?;
                }
                grouped += 1;
            }
        }
    }

    /// Records that the like or follow of `dedupe_key` was taken back at `t` (ms), and
    /// returns its notification if that was stored by an earlier one (to remove it): the
    /// one an earlier try of this undo found, if any (it may be deleted by now).
    pub async fn undo(
        &self,
        recipient: ObjectId,
        dedupe_key: &str,
        t: i64,
    ) -> Result<Option<crate::groups::Member>> {
        let id = format!("{dedupe_key}@{t}");
        let record = Undone {
            id: id.clone(),
            dedupe_key: dedupe_key.to_owned(),
            t,
            at: DateTime::now(),
            victim_id: None,
            victim_user: None,
            victim_group: String::new(),
            victim_sort_key: 0,
            victim_stage: 0,
        };
        mongo::insert_once(&self.undone, &record).await?;
        if let Some(earlier) = self.undone.find_one(doc! { "_id": &id }).await?
            && let (Some(id), Some(user_id)) = (earlier.victim_id, earlier.victim_user)
        {
            return Ok(Some(crate::groups::Member {
                id,
                user_id,
                group_key: earlier.victim_group,
                sort_key: earlier.victim_sort_key,
                stage: earlier.victim_stage,
            }));
        }
        let Some(n) = self.by_dedupe_key(recipient, dedupe_key).await?.filter(|n| n.event_ms < t)
        else {
            return Ok(None);
        };
        let victim = crate::groups::Member::from(&n);
        self.undone
            .update_one(
                doc! { "_id": &id },
                doc! { "$set": {
                    "victim_id": victim.id,
                    "victim_user": victim.user_id,
                    "victim_group": &victim.group_key,
                    "victim_sort_key": victim.sort_key,
                    "victim_stage": victim.stage,
                } },
            )
            .await?;
        Ok(Some(victim))
    }

    /// Whether notification `id` exists.
    pub async fn exists(&self, id: ObjectId) -> Result<bool> {
        Ok(self
            .notifications
            .clone_with_type::<bson::Document>()
            .find_one(doc! { "_id": id })
            .projection(doc! { "_id": 1 })
            .await?
            .is_some())
    }

    /// Makes notification `n` the one of the event `event_id` at `t` (ms), if that is
    /// later than the event it is from.
    /// Whether it did, or a later event owns it already (`false`: it is gone).
    pub async fn take_over(&self, n: &NotificationDoc, event_id: &str, t: i64) -> Result<bool> {
        let r = self
            .notifications
            .update_one(
                doc! { "_id": n.id, "event_ms": { "$lt": t } },
                doc! { "$set": { "event_ms": t, "event_id": event_id } },
            )
            .await?;
        if r.matched_count == 1 {
            return Ok(true);
        }
        Ok(self.notifications.find_one(doc! { "_id": n.id }).await?.is_some())
    }

    /// Deletes notification `id` if it is still from an event before `t` (ms); whether it
    /// did.
    pub async fn delete_if_older(&self, id: ObjectId, t: i64) -> Result<bool> {
        let r = self.notifications.delete_one(doc! { "_id": id, "event_ms": { "$lt": t } }).await?;
        Ok(r.deleted_count == 1)
    }

    /// Whether the like or follow of `dedupe_key` done at `t` (ms) was taken back later.
    pub async fn undone_after(&self, dedupe_key: &str, t: i64) -> Result<bool> {
        Ok(self
            .undone
            .find_one(doc! { "dedupe_key": dedupe_key, "t": { "$gt": t } })
            .await?
            .is_some())
    }

    /// The unread ones among `user`'s notifications `ids`.
    pub async fn unread_among(
        &self,
        user: ObjectId,
        ids: &[ObjectId],
    ) -> Result<Vec<NotificationDoc>> {
        Ok(self
            .notifications
            .find(
                doc! { "_id": { "$in": ids }, "user_id": mongo::equals_id(user), "is_read": false },
            )
            .await?
            .try_collect()
            .await?)
    }

    /// How many of `user`'s groups have unread notifications.
    pub async fn unread_groups(&self, user: ObjectId) -> Result<i64> {
        self.groups.unread_groups(user).await
    }

    pub async fn unread_count(&self, user: ObjectId) -> Result<i64> {
        let filter = doc! { "user_id": mongo::equals_id(user), "is_read": false };
        Ok(self.db.count_up_to(&self.notifications, filter, Some(MAX_UNREAD_COUNTED)).await?)
    }

    /// Marks `user`'s notifications among `ids` read, or all of them up to sort key
    /// `up_to`; how many changed.
    pub async fn mark_read(&self, user: ObjectId, which: Which<'_>) -> Result<i64> {
        let mut filter = doc! { "user_id": mongo::equals_id(user), "is_read": false };
        match which {
            Which::Ids(ids) => {
                filter.insert("_id", doc! { "$in": ids });
            }
            Which::UpTo(key) => {
                filter.insert("sort_key", doc! { "$lte": key });
            }
        }
        let r =
            self.notifications.update_many(filter, doc! { "$set": { "is_read": true } }).await?;
        Ok(i64::try_from(r.modified_count).unwrap_or(i64::MAX))
    }

    /// The notification of `recipient` stored under `dedupe_key`, if any.
    pub async fn by_dedupe_key(
        &self,
        recipient: ObjectId,
        dedupe_key: &str,
    ) -> Result<Option<NotificationDoc>> {
        Ok(self
            .notifications
            .find_one(doc! { "user_id": mongo::equals_id(recipient), "dedupe_key": dedupe_key })
            .await?)
    }

    /// Gives notification `n` a fresh sort key and `created_at` (it moves to the top of
    /// its recipient's list) unless another writer already did; returns it as stored.
    pub async fn refresh_key(&self, n: &NotificationDoc) -> Result<Option<NotificationDoc>> {
        for _ in 0..5 {
            let now = DateTime::now();
            let fresh = social_kit::paging::sort_key(now);
            if social_kit::paging::storable(fresh) != social_kit::paging::Storable::Yes {
                return Err(social_kit::Error::Unavailable(
                    "this replica holds no sort-key slot; retry".into(),
                ));
            }
            let updated = self
                .notifications
                .find_one_and_update(
                    doc! { "_id": n.id, "sort_key": n.sort_key },
                    doc! { "$set": { "sort_key": fresh, "created_at": now } },
                )
                .return_document(mongodb::options::ReturnDocument::After)
                .await;
            match updated {
                Ok(found) => return Ok(found),
                // Another document holds that key: draw another.
                Err(e) if social_kit::error::is_duplicate_key(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(social_kit::Error::internal(anyhow::anyhow!("no free sort key for a notification")))
    }

    /// Up to `limit` of the notifications matching `filter` (about a post and its
    /// comments, a comment, by an actor, to a recipient, or by an actor to a recipient),
    /// to remove them.
    pub async fn matching(&self, filter: Document, limit: i64) -> Result<Vec<NotificationDoc>> {
        Ok(self.notifications.find(filter).limit(limit).await?.try_collect().await?)
    }

    /// Records that the push of notifications `ids` went out.
    pub async fn mark_pushed(&self, ids: &[ObjectId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.notifications
            .update_many(
                doc! { "_id": { "$in": ids }, "unpushed": true },
                doc! { "$unset": { "unpushed": "" } },
            )
            .await?;
        Ok(())
    }

    /// Up to `limit` notifications stored before `before` whose push never went out
    /// (the event that stored them failed for good, or is still failing).
    pub async fn strays(&self, before: DateTime, limit: i64) -> Result<Vec<NotificationDoc>> {
        let floor = social_kit::paging::sort_key_floor(before);
        Ok(self
            .notifications
            .find(doc! { "unpushed": true, "sort_key": { "$lt": floor } })
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    /// Deletes the notifications `ids`.
    pub async fn delete_ids(&self, ids: &[ObjectId]) -> Result<()> {
        self.notifications.delete_many(doc! { "_id": { "$in": ids } }).await?;
        Ok(())
    }
}

impl social_kit::serve::Startup for Store {
    async fn startup(&self) -> anyhow::Result<()> {
        self.init().await
    }
}

#[cfg(test)]
mod tests {
    use bson::{doc, oid::ObjectId};

    use super::NotificationDoc;

    /// A `created_at` rewritten by `refresh_key` (a push that came late) reads back
    /// from either server: the stand-in stores a `$set` date as text, and a document
    /// that cannot be read fails every event that reads it, for ever.
    #[test]
    fn a_refreshed_created_at_reads_back_from_either_server() {
        let stored = |created_at: bson::Bson| {
            doc! {
                "_id": ObjectId::new(), "user_id": ObjectId::new(), "type": "FOLLOW",
                "source_user_id": ObjectId::new(), "is_read": 0, "created_at": created_at,
                "sort_key": 1_i64, "dedupe_key": "follow:a:b",
            }
        };
        let real = bson::DateTime::from_millis(1_795_000_000_305);
        let n: NotificationDoc = bson::deserialize_from_document(stored(real.into())).unwrap();
        assert_eq!(n.created_at, real);
        let as_text = "2026-11-18 11:06:40.305000";
        let n: NotificationDoc = bson::deserialize_from_document(stored(as_text.into())).unwrap();
        assert_eq!(n.created_at, real);
    }
}
