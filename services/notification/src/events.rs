//! From events to notifications: who is told what (API.md's table), stored once per
//! (event, recipient), then broadcast to every replica's live streams.

use bson::{DateTime, doc, oid::ObjectId};
use prost::Message;
use social_content::mentions;
use social_events::{
    Envelope, Payload,
    consumer::{self, Budget, Handler},
    live::Broadcaster,
    outbox::RelayWaker,
    removed_users,
};
use social_kit::client::Peer;
use social_proto::{
    notification::v1::{LiveBatch, Notification, NotificationGroup, NotificationType},
    user::v1::{BatchGetUsersByUsernameRequest, user_service_client::UserServiceClient},
};

use crate::store::{LAST_WORD, NotificationDoc, Store, removal_version, removed_key};

/// The routing key of "a notification was stored", heard by every replica.
pub const STORED: &str = "notification.notification.stored";
/// Most mentions of one post or comment that notify.
const MAX_MENTIONS: usize = 10;
/// A notification is pushed within this long of its `created_at` (else it gets a new
/// one when it is pushed); the resume rule pages back twice as far.
const PUSH_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);
/// Notifications removed (and their removals pushed) per step.
const REMOVE_BATCH: i64 = 500;

/// Notifications pushed per step of a sweep of strays (see [`Fanout::sweep`]).
const SWEEP_BATCH: i64 = 100;

/// A delay tests inject at `point` into the handling of notifications about one post
/// (`return(<post id>:<ms>)`): `notification::delay_broadcast` between storing and
/// counting, `notification::delay_publish` between counting and pushing.
async fn injected_delay(point: &'static str, posts: Vec<String>) {
    let ms = (|| {
        let _ = (&posts, point);
        fail::fail_point!(point, |arg: Option<String>| {
            let (post, ms) = arg.as_deref()?.split_once(':')?;
            let about = posts.iter().any(|p| p == post);
            let ms = about.then(|| ms.parse::<u64>().ok()).flatten();
            if ms.is_some() {
                social_kit::faults::record(point);
            }
            ms
        });
        None
    })();
    if let Some(ms) = ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// What the handler needs.
#[derive(Clone)]
pub struct Fanout {
    pub store: Store,
    pub users: Peer,
    pub broadcaster: Broadcaster,
    /// Wakes the relay of the deleted accounts' tombstones (`AccountCleared`).
    pub relay: RelayWaker,
    /// `NOTIFICATION_GROUP_WINDOW_SECS`, in ms: the window likes and follows group in.
    pub group_window_ms: i64,
}

/// One notification to store, before it has an id.
struct Draft {
    recipient: ObjectId,
    kind: &'static str,
    post: Option<ObjectId>,
    comment: Option<ObjectId>,
    key: String,
}

/// Notifications of one event, stored.
struct Stored {
    stored: Vec<NotificationDoc>,
    /// Their recipients and dedupe keys.
    keys: Vec<(ObjectId, String)>,
    /// The tombstone keys of the posts and comments they are about.
    about: Vec<String>,
}

/// The recipient and dedupe key of the notification that `envelope` takes back (an
/// unfollow, an unlike), if it is one.
fn taken_back(envelope: &Envelope) -> Option<(&str, String)> {
    Some(match &envelope.payload {
        Some(Payload::UserUnfollowed(e)) => {
            (e.followee_id.as_str(), format!("follow:{}:{}", e.follower_id, e.followee_id))
        }
        Some(Payload::PostUnliked(e)) => {
            (e.post_author_id.as_str(), format!("post_like:{}:{}", e.user_id, e.post_id))
        }
        Some(Payload::CommentUnliked(e)) => {
            (e.comment_author_id.as_str(), format!("comment_like:{}:{}", e.user_id, e.comment_id))
        }
        _ => return None,
    })
}

fn oid(s: &str) -> anyhow::Result<ObjectId> {
    Ok(ObjectId::parse_str(s)?)
}

impl Fanout {
    /// The consumer's handler.
    pub fn handler(self) -> Handler {
        consumer::handler(self, |this, envelope| async move { this.handle(envelope).await })
    }

    /// One event: a like or follow taken back, a deletion, or something that notifies
    /// (drafted, stored once per recipient, kept only if nothing it is about was
    /// deleted, grouped and pushed).
    async fn handle(&self, envelope: Envelope) -> anyhow::Result<()> {
        let actor = oid(&envelope.actor_id)?;
        let event_ms = social_events::idempotency::event_time_ms(&envelope);
        if let Some((recipient, dedupe_key)) = taken_back(&envelope) {
            return self.undo(oid(recipient)?, dedupe_key, event_ms).await;
        }
        if self.remove_for(&envelope).await? {
            return Ok(());
        }
        let drafts = self.drafts(&envelope).await?;
        if drafts.is_empty() {
            return Ok(());
        }
        let Some(batch) = self.store_once(&envelope, actor, event_ms, drafts).await? else {
            return Ok(());
        };
        // Tests: a try that fails after storing (`return`: the broker is away, a
        // transient failure; `return(for good)`: one that dead-letters the event), or a
        // push that comes late.
        social_kit::fault!("notification::before_broadcast", |arg: Option<String>| Err(
            if arg.as_deref() == Some("for good") {
                anyhow::anyhow!("the handler failed for good (injected)")
            } else {
                anyhow::Error::new(social_kit::Error::Unavailable(
                    "the broker is unavailable (injected)".into(),
                ))
            }
        ));
        let posts = batch.stored.iter().filter_map(|n| n.post_id);
        injected_delay("notification::delay_broadcast", posts.map(|p| p.to_hex()).collect()).await;
        self.group_and_push(batch).await
    }

    /// What a deletion event removes (a post's or comment's notifications and groups, or
    /// everything of a deleted account); whether the event was one.
    async fn remove_for(&self, envelope: &Envelope) -> anyhow::Result<bool> {
        match &envelope.payload {
            Some(Payload::PostDeleted(e)) => {
                let post = oid(&e.post_id)?;
                self.store.mark_removed(removed_key("post", post)).await?;
                let mut budget = Budget::start();
                self.remove_about("post_id", post, &mut budget).await?;
                self.store.groups.delete_where("post_id", post, &mut budget).await?;
            }
            Some(Payload::CommentDeleted(e)) => {
                let comment = oid(&e.comment_id)?;
                self.store.mark_removed(removed_key("comment", comment)).await?;
                let mut budget = Budget::start();
                self.remove_about("comment_id", comment, &mut budget).await?;
                self.store.groups.delete_where("comment_id", comment, &mut budget).await?;
            }
            Some(Payload::UserDeleted(e)) => {
                self.remove_user(removed_users::deleted_user(e)?).await?;
            }
            Some(Payload::UserMuted(_) | Payload::UserUnmuted(_)) => {
                self.store.mutes.apply(envelope).await?;
            }
            Some(Payload::UserBlocked(_) | Payload::UserUnblocked(_)) => {
                // The block is recorded before anything goes: a notification between
                // the two stored meanwhile is checked after it is stored (see
                // `still_wanted`), so one of the two sees the other. What the blocked
                // caused the blocker goes; the blocked keeps what it was told before.
                if let Some((blocker, blocked, true)) = self.store.blocks.apply(envelope).await? {
                    self.remove_between(blocker, blocked, &mut Budget::start()).await?;
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Who is told what of `envelope` (API.md's table), before anything is stored.
    async fn drafts(&self, envelope: &Envelope) -> anyhow::Result<Vec<Draft>> {
        let mut drafts = Vec::new();
        match &envelope.payload {
            Some(Payload::UserFollowed(e)) => drafts.push(Draft {
                recipient: oid(&e.followee_id)?,
                kind: "FOLLOW",
                post: None,
                comment: None,
                key: format!("follow:{}:{}", e.follower_id, e.followee_id),
            }),
            Some(Payload::PostLiked(e)) => drafts.push(Draft {
                recipient: oid(&e.post_author_id)?,
                kind: "POST_LIKE",
                post: Some(oid(&e.post_id)?),
                comment: None,
                key: format!("post_like:{}:{}", e.user_id, e.post_id),
            }),
            Some(Payload::CommentLiked(e)) => drafts.push(Draft {
                recipient: oid(&e.comment_author_id)?,
                kind: "COMMENT_LIKE",
                post: Some(oid(&e.post_id)?),
                comment: Some(oid(&e.comment_id)?),
                key: format!("comment_like:{}:{}", e.user_id, e.comment_id),
            }),
            Some(Payload::CommentCreated(e)) => {
                let (post, comment) = (oid(&e.post_id)?, oid(&e.comment_id)?);
                drafts.push(Draft {
                    recipient: oid(&e.post_author_id)?,
                    kind: "POST_COMMENT",
                    post: Some(post),
                    comment: Some(comment),
                    key: format!("post_comment:{}", e.comment_id),
                });
                for user in self.mentioned(&e.content).await? {
                    drafts.push(Draft {
                        recipient: user,
                        kind: "MENTION",
                        post: Some(post),
                        comment: Some(comment),
                        key: format!("mention:{}:{user}", e.comment_id),
                    });
                }
            }
            Some(Payload::PostCreated(e)) => {
                let post = oid(&e.post_id)?;
                for user in self.mentioned(&e.content).await? {
                    drafts.push(Draft {
                        recipient: user,
                        kind: "MENTION",
                        post: Some(post),
                        comment: None,
                        key: format!("mention:{}:{user}", e.post_id),
                    });
                }
            }
            _ => {}
        }
        Ok(drafts)
    }

    /// Stores each draft once per (event, recipient), as the dedupe key's owner; then
    /// keeps only what nothing deleted meanwhile is about (`None`: nothing is left).
    async fn store_once(
        &self,
        envelope: &Envelope,
        actor: ObjectId,
        event_ms: i64,
        drafts: Vec<Draft>,
    ) -> anyhow::Result<Option<Stored>> {
        // Tests: a block (or a deletion) handled while this event is in flight.
        social_kit::pause!("notification::before_store");
        let mut stored: Vec<NotificationDoc> = Vec::new();
        let mut keys = Vec::new();
        let mut about = Vec::new();
        for draft in drafts {
            // Nobody is notified of their own action; nor of a like or follow taken back
            // since (this event came late, or again).
            if draft.recipient == actor || self.store.undone_after(&draft.key, event_ms).await? {
                continue;
            }
            keys.push((draft.recipient, draft.key.clone()));
            about.extend(tombstones(draft.post, draft.comment));
            let now = DateTime::now();
            let group_key = crate::groups::group_key(
                draft.kind,
                draft.post,
                draft.comment,
                &draft.key,
                now.timestamp_millis(),
                self.group_window_ms,
            );
            let mut doc = NotificationDoc {
                id: ObjectId::new(),
                user_id: draft.recipient,
                kind: draft.kind.into(),
                source_user_id: actor,
                post_id: draft.post,
                comment_id: draft.comment,
                is_read: false,
                created_at: now,
                sort_key: social_kit::paging::sort_key(now),
                dedupe_key: draft.key,
                event_id: envelope.event_id.clone(),
                event_ms,
                group_key,
                count_key: 0,
                group_stage: Some(0),
                unpushed: true,
            };
            doc.count_key = doc.sort_key;
            for _ in 0..5 {
                if self.store.insert(&mut doc).await? {
                    stored.push(doc);
                    break;
                }
                let earlier = self.store.by_dedupe_key(doc.user_id, &doc.dedupe_key);
                let Some(earlier) = earlier.await? else {
                    continue; // removed meanwhile (an unlike): store ours
                };
                if earlier.event_id == envelope.event_id {
                    // Stored by an earlier try of this event, which may have failed before
                    // pushing it: counted (once) and pushed if it never was.
                    stored.push(earlier);
                    break;
                }
                // Stored by an earlier like or follow of the same thing (handled out of
                // order with the unlike between them): this one owns it now, so that the
                // unlike does not take it away; unless it is gone meanwhile. Counted
                // (again: once) and pushed if it never was, in case the one that stored
                // it failed before it counted or pushed it.
                if earlier.event_ms >= event_ms
                    || self.store.take_over(&earlier, &envelope.event_id, event_ms).await?
                {
                    stored.push(earlier);
                    break;
                }
            }
        }
        self.still_wanted(actor, stored, keys, about).await
    }

    /// Of notifications just stored by `actor`'s event (their dedupe keys `keys`, the
    /// tombstone keys of what they are about `about`), those that nothing deleted
    /// meanwhile is about; the others are deleted (`None`: nothing is left).
    async fn still_wanted(
        &self,
        actor: ObjectId,
        mut stored: Vec<NotificationDoc>,
        keys: Vec<(ObjectId, String)>,
        about: Vec<String>,
    ) -> anyhow::Result<Option<Stored>> {
        // The post or comment may have been deleted before (a late or redelivered
        // event) or while (a concurrent handler) these were stored. Deletion writes its
        // tombstone before removing, so checking after storing catches every order; it
        // runs on redeliveries too, in case an earlier try stopped between the two.
        if self.store.any_removed(&about).await? {
            self.store.delete_by_keys(&keys).await?;
            return Ok(None);
        }
        // Likewise for a deleted account, acting or notified.
        let mut people: Vec<ObjectId> = stored.iter().map(|n| n.user_id).collect();
        people.push(actor);
        let gone = self.store.removed_users.which(&people).await?;
        if !gone.is_empty() {
            let (dropped, kept): (Vec<_>, Vec<_>) = stored
                .into_iter()
                .partition(|n| gone.contains(&actor) || gone.contains(&n.user_id));
            self.drop_stored(dropped).await?;
            stored = kept;
        }
        // Likewise for a block between the actor and a recipient (a like, comment or
        // mention that raced the block; or a late event), or a recipient who mutes the
        // actor's notifications: nobody is told.
        let recipients: Vec<ObjectId> = stored.iter().map(|n| n.user_id).collect();
        let mut blocked = self.store.blocks.among(actor, &recipients).await?;
        blocked.extend(self.store.mutes.silencing(actor, &recipients).await?);
        if !blocked.is_empty() {
            let (dropped, kept): (Vec<_>, Vec<_>) =
                stored.into_iter().partition(|n| blocked.contains(&n.user_id));
            self.drop_stored(dropped).await?;
            stored = kept;
        }
        Ok(Some(Stored { stored, keys, about }))
    }

    /// Removes notifications of an event that nobody is to be told of after all. Those
    /// this try stored go silently; but they may be an earlier try's of the same event,
    /// counted into their groups and pushed before a mute, a block or a deletion came
    /// (this try is a copy): those leave as any removal does, out of their groups'
    /// counts (once) and off the streams, never deleted behind their groups' backs.
    async fn drop_stored(&self, dropped: Vec<NotificationDoc>) -> anyhow::Result<()> {
        let mut told = Vec::new();
        for n in dropped {
            // Never pushed nor counted (this try stored it; the usual case, a muted
            // actor's like): nobody was told of it, so it goes silently, unless its
            // counting began meanwhile (then the delete misses it, and it goes below).
            let untold = n.unpushed && n.group_stage == Some(crate::groups::Stage::NEW);
            if !(untold && self.store.delete_uncounted(n.id, n.user_id).await?) {
                told.push(n);
                continue;
            }
            // Another notification counted into its group meanwhile may have made the
            // group's head of it (its head reads the newest stored, counted or not):
            // made again without it, and pushed as a group alone (no removal: nobody
            // is told to reload).
            let Some(group) = self.store.groups.find(n.user_id, &n.group_key).await? else {
                continue;
            };
            if group.latest_id == Some(n.id) || group.actors.contains(&n.source_user_id) {
                let group = self.store.groups.refresh_head(group.id).await?;
                self.push_groups(group.into_iter().map(Into::into).collect()).await?;
            }
        }
        if told.is_empty() {
            return Ok(());
        }
        self.remove_batch("source_user_id", told).await
    }

    /// Counts what was stored into its groups and pushes it, with the groups, to every
    /// replica's streams.
    async fn group_and_push(&self, batch: Stored) -> anyhow::Result<()> {
        let Stored { stored, keys, about } = batch;
        let mut pushed = Vec::with_capacity(stored.len());
        let mut groups = Vec::new();
        let recipients: Vec<ObjectId> = stored.iter().map(|n| n.user_id).collect();
        for doc in stored {
            // Pushed already (this is a redelivery, or a later like or follow of the
            // same thing): counted, never pushed or moved again.
            let doc = if doc.unpushed { self.fresh(doc).await? } else { doc };
            // Taken back by an unlike that looked for it before it was stored (the undo
            // is recorded before it looks, so one of the two sees the other).
            if self.store.undone_after(&doc.dedupe_key, doc.event_ms).await? {
                self.store.delete_if_older(doc.id, doc.event_ms + 1).await?;
            }
            let (group, exists) = self.store.groups.added(&doc).await?;
            groups.extend(group);
            if exists && doc.unpushed {
                pushed.push(Notification::from(doc));
            }
        }
        // A recipient whose account was deleted meanwhile has no groups (their deletion
        // removed them, perhaps before these were made again).
        for user in self.store.removed_users.which(&recipients).await? {
            self.store.groups.delete_where("user_id", user, &mut Budget::start()).await?;
        }
        // A deletion that began meanwhile may have removed the groups before these were
        // counted into them: take them away again (the tombstone is written first).
        if self.store.any_removed(&about).await? {
            for n in &pushed {
                for (field, id) in [("post_id", &n.post_id), ("comment_id", &n.comment_id)] {
                    if let Some(id) = id.as_deref().and_then(|i| ObjectId::parse_str(i).ok()) {
                        self.store.groups.delete_where(field, id, &mut Budget::start()).await?;
                    }
                }
            }
            return Ok(self.store.delete_by_keys(&keys).await?);
        }
        let ids: Vec<ObjectId> =
            pushed.iter().filter_map(|n| ObjectId::parse_str(&n.id).ok()).collect();
        let posts = pushed.iter().filter_map(|n| n.post_id.clone()).collect();
        injected_delay("notification::delay_publish", posts).await;
        self.push_batch(&LiveBatch {
            notifications: pushed,
            ended_users: Vec::new(),
            groups: groups.into_iter().map(Into::into).collect(),
        })
        .await?;
        // A failure between the push and this mark pushes them again on the retry
        // (streams merge by id and version).
        Ok(self.store.mark_pushed(&ids).await?)
    }

    /// Counts into their groups and pushes the notifications whose push never went out
    /// although they were stored more than `stray_after` ago: their event failed after
    /// storing them and was dead-lettered (or is failing still: then both push, and
    /// streams merge by id). Each is checked as its event would have checked it (taken
    /// back, its post or comment deleted, an account deleted). How many it pushed.
    pub async fn sweep(&self, stray_after: std::time::Duration) -> anyhow::Result<usize> {
        let before = DateTime::from_millis(
            DateTime::now()
                .timestamp_millis()
                .saturating_sub(i64::try_from(stray_after.as_millis()).unwrap_or(i64::MAX)),
        );
        let strays = self.store.strays(before, SWEEP_BATCH).await?;
        let mut pushed = 0;
        for doc in strays {
            let id = doc.id;
            // One that fails is tried again by the next sweep; the others go on.
            match self.sweep_one(doc).await {
                Ok(()) => pushed += 1,
                Err(e) => {
                    tracing::warn!(notification = %id, error = %format!("{e:#}"), "could not push a stray notification")
                }
            }
        }
        Ok(pushed)
    }

    /// Pushes one stray notification (see [`Self::sweep`]).
    async fn sweep_one(&self, doc: NotificationDoc) -> anyhow::Result<()> {
        let about = tombstones(doc.post_id, doc.comment_id).collect();
        let (actor, keys) = (doc.source_user_id, vec![(doc.user_id, doc.dedupe_key.clone())]);
        match self.still_wanted(actor, vec![doc], keys, about).await? {
            Some(batch) => self.group_and_push(batch).await,
            None => Ok(()),
        }
    }

    /// A like or follow taken back at `t`: its notification goes (if an earlier one
    /// stored it), out of its group's counts, and the streams are told.
    async fn undo(&self, recipient: ObjectId, dedupe_key: String, t: i64) -> anyhow::Result<()> {
        let Some(n) = self.store.undo(recipient, &dedupe_key, t).await? else {
            return Ok(());
        };
        // Marked before it leaves the list: a client that resumes once it is gone is
        // told to reload (see `push_batch`). Marked even when a later like or follow
        // has taken it over (it stays, below): a resume then reloads once, for nothing.
        self.store.note_removals(&[n.user_id]).await?;
        // Deleted first, then counted out: the count never misses a notification that
        // stays. Gone already: deleted by an earlier try of this undo (or by another
        // removal, which counts it out with the same keys).
        if !self.store.delete_if_older(n.id, t).await? && self.store.exists(n.id).await? {
            return Ok(()); // a later like or follow took it over: it stays, and counts
        }
        let group = self.store.groups.removing(&n).await?;
        let group = match group {
            Some(id) => self.store.groups.refresh_head(id).await?,
            None => None,
        };
        let removed = removal(&n, removal_version(t));
        // Its removal was recorded above.
        self.publish(&LiveBatch {
            notifications: vec![removed],
            ended_users: Vec::new(),
            groups: group.into_iter().map(Into::into).collect(),
        })
        .await
    }

    /// `doc`, with a new sort key and `created_at` if its push comes later than
    /// [`PUSH_WITHIN`] after them (a retried event): the resume rule of
    /// docs/events.md relies on every notification being pushed within that bound.
    async fn fresh(&self, doc: NotificationDoc) -> anyhow::Result<NotificationDoc> {
        let minted = social_kit::paging::key_time_ms(doc.sort_key);
        let late = DateTime::now().timestamp_millis() - minted > PUSH_WITHIN.as_millis() as i64;
        if !late {
            return Ok(doc);
        }
        Ok(self.store.refresh_key(&doc).await?.unwrap_or(doc))
    }

    /// Sends `notifications` to every replica's streams. A failure is the broker's
    /// (transient): the event is retried, and the retry pushes them again.
    async fn broadcast(&self, notifications: Vec<Notification>) -> anyhow::Result<()> {
        if notifications.is_empty() {
            return Ok(());
        }
        self.push_batch(&LiveBatch { notifications, ended_users: Vec::new(), groups: Vec::new() })
            .await
    }

    /// Sends `groups` alone to every replica's streams (a grouped view's change), as
    /// [`Fanout::broadcast`] sends notifications.
    async fn push_groups(&self, groups: Vec<NotificationGroup>) -> anyhow::Result<()> {
        self.push_batch(&LiveBatch { notifications: Vec::new(), ended_users: Vec::new(), groups })
            .await
    }

    /// Sends `batch` to every replica's streams. Its removals are recorded first, per
    /// recipient: a client whose stream misses the push (away, reconnecting) is told to
    /// reload when it resumes (`ListNotificationsResponse.last_removal_at`).
    async fn push_batch(&self, batch: &LiveBatch) -> anyhow::Result<()> {
        let mut losing: Vec<ObjectId> = batch
            .notifications
            .iter()
            .filter(|n| n.removed)
            .filter_map(|n| ObjectId::parse_str(&n.user_id).ok())
            .collect();
        losing.sort_unstable();
        losing.dedup();
        self.store.note_removals(&losing).await?;
        self.publish(batch).await
    }

    /// Sends `batch` to every replica's streams, its removals recorded already.
    async fn publish(&self, batch: &LiveBatch) -> anyhow::Result<()> {
        self.broadcaster.publish(STORED, &batch.encode_to_vec()).await.map_err(|e| {
            anyhow::Error::new(social_kit::Error::Unavailable(format!(
                "could not push notifications to the live streams: {e:#}"
            )))
        })
    }

    /// Removes everything of a deleted account: its open streams end, and the
    /// notifications it received or caused go (their removal pushed to the others'
    /// streams); then the service reports the account cleared.
    async fn remove_user(&self, user: ObjectId) -> anyhow::Result<()> {
        let remove = async {
            let batch = LiveBatch {
                notifications: Vec::new(),
                ended_users: vec![user.to_hex()],
                groups: Vec::new(),
            };
            self.push_batch(&batch).await?;
            let mut budget = Budget::start();
            self.remove_about("source_user_id", user, &mut budget).await?;
            self.remove_about("user_id", user, &mut budget).await?;
            self.store.groups.delete_where("user_id", user, &mut budget).await
        };
        let removed_users = &self.store.removed_users;
        removed_users.remove(user, &self.relay, remove).await
    }

    /// Removes what `actor` caused `recipient` to be told (a block between them): out of
    /// the groups, which stay, and out of the list, the removals pushed.
    async fn remove_between(
        &self,
        recipient: ObjectId,
        actor: ObjectId,
        budget: &mut Budget,
    ) -> anyhow::Result<()> {
        let filter = doc! {
            "source_user_id": social_kit::mongo::equals_id(actor),
            "user_id": social_kit::mongo::equals_id(recipient),
        };
        self.remove_matching("source_user_id", filter, budget).await
    }

    /// Removes the notifications whose `field` is `id`: about a post (and its comments)
    /// or a comment, caused by an actor or received by a user.
    async fn remove_about(
        &self,
        field: &str,
        id: ObjectId,
        budget: &mut Budget,
    ) -> anyhow::Result<()> {
        let filter = doc! { field: social_kit::mongo::equals_id(id) };
        self.remove_matching(field, filter, budget).await
    }

    /// Removes the notifications matching `filter`, in batches: each batch's removal is
    /// pushed to its recipients' streams, then deleted (a failure in between pushes it
    /// again on the retry). `field` says what they are selected by: those selected by
    /// `source_user_id` leave groups that stay, one by one; those about a deleted post
    /// or comment take their groups with them.
    async fn remove_matching(
        &self,
        field: &str,
        filter: bson::Document,
        budget: &mut Budget,
    ) -> anyhow::Result<()> {
        // A viral post's thousands of notifications go in steps (see `Budget`): one
        // budget for the whole of the event's step, shared by its removals.
        let batch = || async {
            let batch = self.store.matching(filter.clone(), REMOVE_BATCH).await?;
            let items = batch.len();
            if items > 0 {
                self.remove_batch(field, batch).await?;
            }
            Ok(items)
        };
        budget.repeat(field, batch).await
    }

    /// Removes `batch` (see [`Fanout::remove_matching`]): pushed to its recipients'
    /// streams as removals, then deleted; counted out of groups that stay (`field` is
    /// `source_user_id`: idempotent, and right whether or not a notification was counted
    /// in yet) or followed by its groups' end (`post_id`, `comment_id`).
    async fn remove_batch(&self, field: &str, batch: Vec<NotificationDoc>) -> anyhow::Result<()> {
        // What an actor caused leaves groups that stay: out of their counts first
        // (once per notification, however often this is retried). Groups about a
        // deleted post or comment, or of a deleted recipient, go whole afterwards.
        let mut touched = Vec::new();
        if field == "source_user_id" {
            for n in &batch {
                touched.extend(self.store.groups.removing(&n.into()).await?);
            }
        }
        let removed = batch.iter().map(|n| removal(&n.into(), LAST_WORD)).collect();
        self.broadcast(removed).await?;
        if field == "post_id" || field == "comment_id" {
            // Their groups go whole (below): a grouped view drops them now.
            self.push_groups(gone_groups(&batch)).await?;
        }
        let ids: Vec<ObjectId> = batch.into_iter().map(|n| n.id).collect();
        self.store.delete_ids(&ids).await?;
        touched.sort_unstable();
        touched.dedup();
        let mut groups = Vec::new();
        for group in touched {
            groups.extend(self.store.groups.refresh_head(group).await?);
        }
        if !groups.is_empty() {
            self.push_groups(groups.into_iter().map(Into::into).collect()).await?;
        }
        Ok(())
    }

    /// The ids of the users @mentioned in `text` (at most ten, unknown ones skipped), in
    /// one call to the user service.
    async fn mentioned(&self, text: &str) -> anyhow::Result<Vec<ObjectId>> {
        let names = mentions(text, MAX_MENTIONS);
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let request = BatchGetUsersByUsernameRequest { usernames: names };
        let found =
            social_kit::call!(self.users, UserServiceClient.batch_get_users_by_username(request))
                .map_err(|s| self.users.error(s))?;
        found.users.iter().map(|u| oid(&u.id)).collect()
    }
}

/// The tombstone keys of the post and comment a notification is about, if any.
fn tombstones(post: Option<ObjectId>, comment: Option<ObjectId>) -> impl Iterator<Item = String> {
    let post = post.map(|p| removed_key("post", p));
    post.into_iter().chain(comment.map(|c| removed_key("comment", c)))
}

/// What a stream is told when notification `m` is removed, with the removal's
/// `version` (see `store::removal_version`).
fn removal(m: &crate::groups::Member, version: i64) -> Notification {
    Notification {
        id: m.id.to_hex(),
        user_id: m.user_id.to_hex(),
        group_key: m.group_key.clone(),
        removed: true,
        version,
        ..Default::default()
    }
}

/// The group updates saying that the groups of `batch` are gone (a count of zero), one
/// per group.
fn gone_groups(batch: &[NotificationDoc]) -> Vec<NotificationGroup> {
    let mut seen = std::collections::HashSet::new();
    batch
        .iter()
        .filter(|n| !n.group_key.is_empty() && seen.insert((n.user_id, n.group_key.as_str())))
        .map(|n| NotificationGroup {
            group_key: n.group_key.clone(),
            r#type: NotificationType::from_str_name(&n.kind)
                .unwrap_or(NotificationType::Unspecified) as i32,
            user_id: n.user_id.to_hex(),
            post_id: n.post_id.map(|p| p.to_hex()),
            comment_id: n.comment_id.map(|c| c.to_hex()),
            version: LAST_WORD,
            ..Default::default()
        })
        .collect()
}
