//! Notification groups (`notification_groups`): "alice and 12 others liked your post".
//!
//! Every notification belongs to one group of its recipient, named by its `group_key`
//! (set when it is stored, never changed): likes of one post, likes of one comment, and
//! follows share a group within a window of time (`<type>:<target>:<window number>`);
//! comments and mentions are groups of one (`single:<dedupe key>`). A group document
//! holds what a page of groups shows, so that reading a page costs one query whatever
//! the groups' sizes:
//! - `count` and `unread`, kept by [`Counters`] (each change applied once, keyed by the
//!   notification: `add:<id>`, `rm:<id>`, `u+:<id>`, `u-:<id>`), so that redelivered
//!   events and replicas writing one group at once count each notification once. The
//!   notification records how far its counting has gone ([`Stage`], only ever raised):
//!   a step it has passed is never applied again, so a notification unliked or read a
//!   year after it was counted does not lean on the counters' memory of that change
//!   (kept 30 days); only a step still under way (a retry, two handlers at once) does;
//! - the head: the latest notification, its time and sort key (the group's place in the
//!   list), and up to [`SAMPLE`] recent distinct actors, recomputed from the newest few
//!   notifications of the group after every change and written only if no other writer
//!   wrote it since (`head_version`), so that the last write has seen every notification;
//! - `read_key`: MarkGroupRead marks read every notification of the group whose sort key
//!   is up to it, and sets `unread` to 0 in one write conditional on `counter_version`.
//!   A notification with a sort key up to `read_key` never counts as unread: its `u+` and
//!   `u-` are conditional on `read_key` being below its key, and one stored after the
//!   mark is marked read when its `u+` finds it covered.
//!
//! MongoDB's upserts would create a group in one write; the stand-in nx-27017 ignores
//! `$setOnInsert` in them, so a group is created by an insert that a unique index on
//! (recipient, key) makes happen once, then found.

use bson::{DateTime, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_events::idempotency::{self, Counters};
use social_kit::{
    Result, mongo,
    paging::{Order, PageRequest},
};

use crate::store::NotificationDoc;
use social_kit::time::now_ms;

pub const COLLECTION: &str = "notification_groups";
/// Most actors a group shows.
pub const SAMPLE: usize = 5;
/// Notifications read to find a group's head (enough for [`SAMPLE`] distinct actors in
/// any but a group of repeat actors, where fewer are shown).
const HEAD_SCAN: i64 = 25;
/// Tries of a conditional write before giving up (the event is retried).
const TRIES: usize = 20;

/// A group's summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub user_id: ObjectId,
    pub group_key: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_id: Option<ObjectId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<ObjectId>,
    #[serde(default)]
    pub count: i64,
    #[serde(default)]
    pub unread: i64,
    /// Recent distinct actors, newest first.
    #[serde(default)]
    pub actors: Vec<ObjectId>,
    #[serde(default)]
    pub latest_id: Option<ObjectId>,
    #[serde(deserialize_with = "social_kit::mongo::lenient::date")]
    pub latest_at: DateTime,
    /// The latest notification's sort key: the group's place in the list.
    pub sort_key: i64,
    /// Notifications of the group with a sort key up to this are read.
    #[serde(default)]
    pub read_key: i64,
    #[serde(default)]
    pub head_version: i64,
    /// Bumped by every count change ([`Counters`]).
    #[serde(default)]
    pub counter_version: i64,
    /// The greatest `count_key` counted unread so far: a read mark reaches past it.
    #[serde(default)]
    pub counted_key: i64,
}

/// How far a notification's counting in its group has gone (`group_stage` on the
/// notification, raised with `$max` once a step is applied, never lowered).
pub struct Stage;

impl Stage {
    /// Not counted yet.
    pub const NEW: i64 = 0;
    /// In `count` (and in `unread`, unless its group was read past it).
    pub const COUNTED: i64 = 1;
    /// Out of `unread` (read, or about to go).
    pub const READ: i64 = 2;
    /// Out of `count` (about to go).
    pub const GONE: i64 = 3;
}

/// What a group needs to know of one of its notifications to count it in or out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub id: ObjectId,
    pub user_id: ObjectId,
    pub group_key: String,
    /// Its `count_key` (it never changes).
    pub sort_key: i64,
    /// Its [`Stage`] when read (it may have moved on since, never back).
    pub stage: i64,
}

/// The list place of a group with no notifications left (see [`Groups::refresh_head`]).
pub const EMPTIED_SORT_KEY: i64 = 0;

/// How long the counters remember a change (`idempotency::WINDOW`).
const MEMORY_MS: i64 = 30 * 24 * 3_600_000;

impl From<&NotificationDoc> for Member {
    fn from(n: &NotificationDoc) -> Self {
        Self {
            id: n.id,
            user_id: n.user_id,
            group_key: n.group_key.clone(),
            // Stored before count keys existed: its sort key was never refreshed since
            // it was counted (groups came with count keys), so it is the same.
            sort_key: if n.count_key != 0 { n.count_key } else { n.sort_key },
            stage: n.group_stage.unwrap_or_else(|| {
                // Stored before stages: counted in by its storer within moments, and,
                // if read, counted out of `unread` by its reader. Past the counters'
                // memory, that must be said here; within it, the memory says it.
                let old = n.event_ms < now_ms() - MEMORY_MS && !n.group_key.is_empty();
                match (old, n.is_read) {
                    (false, _) => Stage::NEW,
                    (true, false) => Stage::COUNTED,
                    (true, true) => Stage::READ,
                }
            }),
        }
    }
}

/// The group of a notification of `kind` about `post` / `comment`, created at
/// `created_ms`, in windows of `window_ms`.
pub fn group_key(
    kind: &str,
    post: Option<ObjectId>,
    comment: Option<ObjectId>,
    dedupe_key: &str,
    created_ms: i64,
    window_ms: i64,
) -> String {
    let window = created_ms.div_euclid(window_ms.max(1));
    match (kind, post, comment) {
        ("POST_LIKE", Some(post), _) => format!("POST_LIKE:{post}:{window}"),
        ("COMMENT_LIKE", _, Some(comment)) => format!("COMMENT_LIKE:{comment}:{window}"),
        ("FOLLOW", _, _) => format!("FOLLOW:{window}"),
        _ => format!("single:{dedupe_key}"),
    }
}

/// Access to `notification_groups`. Cheap to clone.
#[derive(Clone)]
pub struct Groups {
    db: mongo::Db,
    groups: Collection<GroupDoc>,
    notifications: Collection<NotificationDoc>,
    counters: Counters,
}

impl Groups {
    pub fn new(db: &mongo::Db) -> Self {
        Self {
            db: db.clone(),
            groups: db.collection(COLLECTION),
            notifications: db.collection(crate::store::COLLECTION),
            counters: Counters::new(db, COLLECTION),
        }
    }

    /// Creates the indexes (idempotent).
    pub async fn init(&self) -> anyhow::Result<()> {
        self.db
            .ensure_indexes(
                &self.groups,
                vec![
                    mongo::index("recipient_key", doc! { "user_id": 1, "group_key": 1 }, true),
                    // ListNotificationGroups, most recent activity first (emptied groups,
                    // and read ones for an unread-only list, skipped by the key).
                    mongo::index(
                        "recipient_sorted",
                        doc! { "user_id": 1, "sort_key": -1, "count": 1, "unread": 1 },
                        false,
                    ),
                    // GetUnreadGroupCount.
                    mongo::index(
                        "recipient_unread",
                        doc! { "user_id": 1, "unread": 1, "count": 1 },
                        false,
                    ),
                    // MarkAllNotificationsRead: the user's groups in `_id` order, the unread
                    // ones told by the key.
                    mongo::index(
                        "recipient_id_unread",
                        doc! { "user_id": 1, "_id": 1, "unread": 1 },
                        false,
                    ),
                    // Removing a deleted post's or comment's groups.
                    mongo::index("post", doc! { "post_id": 1 }, false),
                    mongo::index("comment", doc! { "comment_id": 1 }, false),
                ],
            )
            .await?;
        self.counters.init().await?;
        Ok(())
    }

    pub async fn find(&self, user: ObjectId, key: &str) -> Result<Option<GroupDoc>> {
        Ok(self
            .groups
            .find_one(doc! { "user_id": mongo::equals_id(user), "group_key": key })
            .projection(idempotency::without_counter_bookkeeping())
            .await?)
    }

    async fn by_id(&self, id: ObjectId) -> Result<Option<GroupDoc>> {
        Ok(self
            .groups
            .find_one(doc! { "_id": id })
            .projection(idempotency::without_counter_bookkeeping())
            .await?)
    }

    /// The group of `n`, created empty if it does not exist yet.
    async fn ensure(&self, n: &NotificationDoc) -> Result<GroupDoc> {
        if let Some(g) = self.find(n.user_id, &n.group_key).await? {
            return Ok(g);
        }
        let group = GroupDoc {
            id: ObjectId::new(),
            user_id: n.user_id,
            group_key: n.group_key.clone(),
            kind: n.kind.clone(),
            post_id: n.post_id,
            comment_id: n.comment_id,
            count: 0,
            unread: 0,
            actors: Vec::new(),
            latest_id: None,
            latest_at: n.created_at,
            sort_key: n.sort_key,
            read_key: 0,
            head_version: 0,
            counter_version: 0,
            counted_key: 0,
        };
        let mut document = bson::serialize_to_document(&group)
            .map_err(|e| social_kit::Error::internal(anyhow::Error::new(e)))?;
        document.extend(idempotency::initial_fields());
        mongo::insert_once(&self.groups.clone_with_type::<Document>(), &document).await?;
        // Ours, or the one another writer inserted first.
        // Gone already: a deletion removed it meanwhile; the retry sees the tombstone.
        self.find(n.user_id, &n.group_key).await?.ok_or_else(|| {
            social_kit::Error::Unavailable("a notification group was removed meanwhile".into())
        })
    }

    /// Counts stored notification `n` into its group (once, however often it is called),
    /// and brings the group's head up to date; the group as it is then, and whether `n`
    /// still exists.
    ///
    /// Each notification is counted in (`add`, `u+`) and out (`rm`, `u-`) at most once,
    /// and the two commute, so the order in which a like, its unlike, a read and a
    /// deletion are handled does not matter: whoever sees the notification gone (or read)
    /// after counting it in counts it out, with the same change keys as the remover (or
    /// the reader), so that it happens once whoever gets there first.
    pub async fn added(&self, n: &NotificationDoc) -> Result<(Option<GroupDoc>, bool)> {
        if n.group_key.is_empty() {
            return Ok((None, true));
        }
        let group = self.ensure(n).await?;
        let t = now_ms();
        let mut member = Member::from(n);
        let counted = self.count_in(group.id, &mut member, t).await?;
        let Some(now) = self
            .notifications
            .clone_with_type::<Document>()
            .find_one(doc! { "_id": n.id })
            .projection(doc! { "is_read": 1 })
            .await?
        else {
            // Taken back (an unlike), or its actor deleted, meanwhile.
            self.take_out(group.id, &mut member, t).await?;
            return Ok((self.refresh_head(group.id).await?, false));
        };
        if now.get("is_read").and_then(mongo::lenient::is_true) == Some(true) {
            // Read meanwhile, perhaps before its group existed.
            self.unread_gone(group.id, &mut member, t).await?;
        } else if !counted
            && let Some(g) = self.by_id(group.id).await?
            && g.read_key >= member.sort_key
        {
            // The group was marked read past it (perhaps before it was stored).
            self.notifications
                .update_one(doc! { "_id": n.id }, doc! { "$set": { "is_read": true } })
                .await?;
        }
        Ok((self.refresh_head(group.id).await?, true))
    }

    /// Takes notification `m`, deleted or about to be, out of its group's counts (once);
    /// the group's id, to refresh its head once `m` is gone. A group that does not exist
    /// yet is left alone: whoever counts `m` in finds it gone and counts it out.
    pub async fn removing(&self, m: &Member) -> Result<Option<ObjectId>> {
        if m.group_key.is_empty() {
            return Ok(None);
        }
        let Some(group) = self.find(m.user_id, &m.group_key).await? else {
            return Ok(None);
        };
        self.take_out(group.id, &mut m.clone(), now_ms()).await?;
        Ok(Some(group.id))
    }

    /// Records that `m` passed `stage` (on the notification, if it still exists).
    async fn passed(&self, m: &mut Member, stage: i64) -> Result<()> {
        self.notifications
            .update_one(doc! { "_id": m.id }, doc! { "$max": { "group_stage": stage } })
            .await?;
        m.stage = m.stage.max(stage);
        Ok(())
    }

    /// Moves `field` of `group` by `delta` once for `m` (the change named
    /// `<prefix>:<m's id>`), at `t`, if the group matches `condition`, with `also` in the
    /// same write; whether it moved.
    async fn bump(
        &self,
        group: ObjectId,
        m: &Member,
        t: i64,
        (field, delta, prefix): (&str, i64, &str),
        condition: Document,
        also: Document,
    ) -> Result<bool> {
        let key = format!("{prefix}:{}", m.id);
        Ok(self.counters.apply(group, field, delta, &key, t, condition, also).await?)
    }

    /// Counts `m` in (once): in `count`, and in `unread` unless its group was read past
    /// it; whether it counted as unread (`false` also when it was counted in before).
    async fn count_in(&self, group: ObjectId, m: &mut Member, t: i64) -> Result<bool> {
        if m.stage >= Stage::COUNTED {
            return Ok(false);
        }
        self.bump(group, m, t, ("count", 1, "add"), Document::new(), Document::new()).await?;
        let (unread_before, counted) = (
            doc! { "read_key": { "$lt": m.sort_key } },
            doc! { "$max": { "counted_key": m.sort_key } },
        );
        let unread = self.bump(group, m, t, ("unread", 1, "u+"), unread_before, counted).await?;
        self.passed(m, Stage::COUNTED).await?;
        Ok(unread)
    }

    /// Counts `m` out (once). It is counted in first (once, with the same keys as its
    /// storer), so that the two cancel whichever comes first, and whether or not its
    /// storer ever gets to count it (a like that failed, then was taken back).
    async fn take_out(&self, group: ObjectId, m: &mut Member, t: i64) -> Result<()> {
        self.count_in(group, m, t).await?;
        // Whether it was read or not: a read one was counted out by its reader (its
        // stage says so), or covered by its group's read mark.
        self.unread_gone(group, m, t).await?;
        if m.stage >= Stage::GONE {
            return Ok(());
        }
        self.bump(group, m, t, ("count", -1, "rm"), Document::new(), Document::new()).await?;
        self.passed(m, Stage::GONE).await
    }

    /// `n`, unread and counted, is about to be marked read: its group counts one unread
    /// less (once).
    pub async fn reading(&self, n: &NotificationDoc) -> Result<()> {
        if n.group_key.is_empty() {
            return Ok(());
        }
        if let Some(group) = self.find(n.user_id, &n.group_key).await? {
            // Counted in first, like a removal (see `take_out`).
            let (mut m, t) = (Member::from(n), now_ms());
            self.count_in(group.id, &mut m, t).await?;
            self.unread_gone(group.id, &mut m, t).await?;
        }
        Ok(())
    }

    /// Counts `m` out of `unread` (once), unless its group was read past it.
    async fn unread_gone(&self, group: ObjectId, m: &mut Member, t: i64) -> Result<()> {
        if m.stage >= Stage::READ {
            return Ok(());
        }
        self.bump(
            group,
            m,
            t,
            ("unread", -1, "u-"),
            doc! { "read_key": { "$lt": m.sort_key } },
            Document::new(),
        )
        .await?;
        self.passed(m, Stage::READ).await
    }

    /// Recomputes group `id`'s latest notification and recent actors from its newest
    /// notifications; the group as written.
    pub async fn refresh_head(&self, id: ObjectId) -> Result<Option<GroupDoc>> {
        for _ in 0..TRIES {
            let Some(group) = self.by_id(id).await? else {
                return Ok(None);
            };
            let newest: Vec<NotificationDoc> = self
                .notifications
                .find(doc! { "user_id": mongo::equals_id(group.user_id), "group_key": &group.group_key })
                .sort(Order::NewestFirst.sort())
                .limit(HEAD_SCAN)
                .await?
                .try_collect()
                .await?;
            let mut actors: Vec<ObjectId> = Vec::new();
            for n in &newest {
                if actors.len() < SAMPLE && !actors.contains(&n.source_user_id) {
                    actors.push(n.source_user_id);
                }
            }
            let mut set = doc! { "actors": &actors };
            match newest.first() {
                Some(latest) => {
                    set.insert("latest_id", latest.id);
                    set.insert("latest_at", latest.created_at);
                    set.insert("sort_key", latest.sort_key);
                }
                // Emptied: it points at nothing, and is not listed: at the bottom of the
                // recipient's range, out of the way of the list's pages, which would
                // otherwise walk the keys of every emptied group newer than they (a like
                // taken back leaves one behind; one a day per post, for ever). A
                // notification counted in again brings it back to its place.
                None => {
                    set.insert("latest_id", bson::Bson::Null);
                    // Counted out too (a group counting a notification that is gone
                    // stays listed, at its place).
                    if group.count <= 0 {
                        set.insert("sort_key", EMPTIED_SORT_KEY);
                    }
                }
            }
            let written = self
                .groups
                .update_one(
                    doc! { "_id": id, "head_version": group.head_version },
                    doc! { "$set": set, "$inc": { "head_version": 1_i64 } },
                )
                .await?
                .modified_count
                == 1;
            if written {
                return self.by_id(id).await;
            }
        }
        Err(social_kit::Error::Unavailable("a notification group kept changing; retry".into()))
    }

    /// Marks group `key` of `user` read: `unread` is 0 and every notification stored in
    /// it so far is read; how many notifications changed, `None` if there is no such
    /// group.
    pub async fn mark_read(&self, user: ObjectId, key: &str) -> Result<Option<i64>> {
        let Some(group) = self.find(user, key).await? else {
            return Ok(None);
        };
        self.read_group(&group).await.map(Some)
    }

    async fn read_group(&self, group: &GroupDoc) -> Result<i64> {
        let up_to = self.reset_unread(group.id).await?;
        let changed = self
            .notifications
            .update_many(
                doc! {
                    "user_id": mongo::equals_id(group.user_id), "group_key": &group.group_key,
                    "is_read": false, "count_key": { "$lte": up_to },
                },
                doc! { "$set": { "is_read": true } },
            )
            .await?
            .modified_count;
        Ok(i64::try_from(changed).unwrap_or(i64::MAX))
    }

    /// Marks every group of `user` with unread notifications read, after the caller
    /// marked the notifications up to then read: a notification counted in after the
    /// groups were listed finds itself read and counts itself out ([`Self::added`]).
    /// The work is a few queries per unread group, so no more than the notifications
    /// it marks.
    pub async fn mark_all_read(&self, user: ObjectId) -> Result<i64> {
        let mut changed = 0_i64;
        let mut after: Option<ObjectId> = None;
        loop {
            // In `_id` order (the groups unread at the start are each read once, however
            // many new notifications arrive meanwhile), over the keys of the user's
            // groups: only the unread ones are fetched.
            let mut filter = doc! { "user_id": mongo::equals_id(user), "unread": { "$gt": 0_i64 } };
            if let Some(last) = after {
                filter.insert("_id", doc! { "$gt": last });
            }
            let unread: Vec<GroupDoc> = self
                .groups
                .find(filter)
                .sort(doc! { "_id": 1 })
                .limit(100)
                .projection(idempotency::without_counter_bookkeeping())
                .await?
                .try_collect()
                .await?;
            let Some(last) = unread.last() else {
                return Ok(changed);
            };
            after = Some(last.id);
            for group in &unread {
                changed = changed.saturating_add(self.read_group(group).await?);
            }
        }
    }

    /// `unread` to 0 and `read_key` past every notification of the group counted so far,
    /// in one write that no count change may slip past (it is conditional on
    /// `counter_version`); the read key written.
    async fn reset_unread(&self, id: ObjectId) -> Result<i64> {
        for _ in 0..TRIES {
            let Some(group) = self.by_id(id).await? else {
                return Ok(0);
            };
            // Past every notification counted unread (`counted_key`, kept in the same
            // writes as the counts, which this write is conditional on), even one from a
            // replica whose clock is ahead of ours, or one deleted since.
            let up_to =
                social_kit::paging::fresh_sort_key().max(group.counted_key).max(group.read_key);
            let written = self
                .groups
                .update_one(
                    doc! { "_id": id, "counter_version": group.counter_version },
                    doc! {
                        "$set": { "unread": 0_i64, "read_key": up_to },
                        "$inc": { "counter_version": 1_i64 },
                    },
                )
                .await?
                .modified_count
                == 1;
            if written {
                return Ok(up_to);
            }
        }
        Err(social_kit::Error::Unavailable("a notification group kept changing; retry".into()))
    }

    /// A page of `user`'s groups, most recent activity first (emptied groups are left
    /// out).
    pub async fn list(
        &self,
        user: ObjectId,
        unread_only: bool,
        page: &PageRequest,
    ) -> Result<Vec<GroupDoc>> {
        let mut query = doc! { "user_id": mongo::equals_id(user), "count": { "$gt": 0_i64 } };
        if unread_only {
            query.insert("unread", doc! { "$gt": 0_i64 });
        }
        Ok(mongo::page(
            &self.groups,
            Order::NewestFirst,
            query,
            page,
            idempotency::without_counter_bookkeeping(),
        )
        .await?)
    }

    /// How many of `user`'s groups have unread notifications.
    pub async fn unread_groups(&self, user: ObjectId) -> Result<i64> {
        let filter = doc! {
            "user_id": mongo::equals_id(user), "unread": { "$gt": 0_i64 }, "count": { "$gt": 0_i64 },
        };
        let most = Some(crate::store::MAX_UNREAD_COUNTED);
        Ok(self.db.count_up_to(&self.groups, filter, most).await?)
    }

    /// Deletes the groups about a deleted post or comment (`field` is `post_id` or
    /// `comment_id`), or every group of a deleted recipient (`user_id`): in batches of
    /// one statement each, within the event's step's `budget` (`MoreToDo` past it, and
    /// the event's next try goes on), so that a post with a hundred thousand comments (a
    /// group each) is no one statement.
    pub async fn delete_where(
        &self,
        field: &str,
        id: ObjectId,
        budget: &mut social_events::consumer::Budget,
    ) -> anyhow::Result<()> {
        let batch = || async {
            let ids =
                mongo::ids(&self.groups, doc! { field: mongo::equals_id(id) }, Some(200)).await?;
            if !ids.is_empty() {
                self.groups.delete_many(doc! { "_id": { "$in": &ids } }).await?;
            }
            Ok(ids.len())
        };
        budget.repeat("groups", batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn likes_of_one_post_in_one_window_share_a_group_and_the_next_window_starts_another() {
        let post = ObjectId::new();
        let key = |ms| group_key("POST_LIKE", Some(post), None, "like:x", ms, DAY);
        assert_eq!(key(0), key(DAY - 1));
        assert_ne!(key(DAY - 1), key(DAY));
        assert_eq!(key(DAY), format!("POST_LIKE:{post}:1"));
        // Before 1970 the windows still have the same width (no window 0 twice as long).
        assert_ne!(key(-1), key(0));
        assert_eq!(key(-1), key(-DAY));
    }

    #[test]
    fn what_is_not_grouped_has_a_group_of_its_own() {
        let post = ObjectId::new();
        let comment = ObjectId::new();
        let one = |kind, dedupe| group_key(kind, Some(post), Some(comment), dedupe, 5, DAY);
        assert_eq!(one("COMMENT", "comment:a"), "single:comment:a");
        assert_ne!(one("MENTION", "mention:a"), one("MENTION", "mention:b"));
        assert_eq!(one("COMMENT_LIKE", "x"), format!("COMMENT_LIKE:{comment}:0"));
        assert_eq!(one("FOLLOW", "follow:a"), one("FOLLOW", "follow:b"));
        // A like event without its post (malformed) is not merged with anything.
        assert_eq!(group_key("POST_LIKE", None, None, "like:z", 5, DAY), "single:like:z");
        // A zero window (misconfigured) does not divide by zero.
        assert_eq!(group_key("FOLLOW", None, None, "f", 5, 0), "FOLLOW:5");
    }
}
