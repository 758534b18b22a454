//! From events to notifications: who is told what (API.md's table), stored once per
//! (event, recipient), then broadcast to every replica's live streams.

use std::sync::Arc;

use bson::{DateTime, oid::ObjectId};
use futures::FutureExt;
use prost::Message;
use social_events::{Envelope, Payload, consumer::Handler, live::Broadcaster, topology::QueueSpec};
use social_kit::{client::Peer, content::mentions};
use social_proto::{
    notification::v1::Notification,
    user::v1::{BatchGetUsersByUsernameRequest, user_service_client::UserServiceClient},
};

use crate::store::{NotificationDoc, Store, removed_key};

/// The routing key of "a notification was stored", heard by every replica.
pub const STORED: &str = "notification.notification.stored";
/// Most mentions of one post or comment that notify.
const MAX_MENTIONS: usize = 10;

/// The notification service's queue and its bindings.
pub fn subscription() -> QueueSpec {
    social_events::topology::NOTIFICATION
}

/// What the handler needs.
#[derive(Clone)]
pub struct Fanout {
    pub store: Store,
    pub users: Peer,
    pub broadcaster: Broadcaster,
}

/// One notification to store, before it has an id.
struct Draft {
    recipient: ObjectId,
    kind: &'static str,
    post: Option<ObjectId>,
    comment: Option<ObjectId>,
    key: String,
}

fn oid(s: &str) -> anyhow::Result<ObjectId> {
    Ok(ObjectId::parse_str(s)?)
}

impl Fanout {
    /// The consumer's handler.
    pub fn handler(self) -> Handler {
        Arc::new(move |envelope: Envelope| {
            let this = self.clone();
            async move { this.handle(envelope).await }.boxed()
        })
    }

    async fn handle(&self, envelope: Envelope) -> anyhow::Result<()> {
        let actor = oid(&envelope.actor_id)?;
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
            Some(Payload::PostDeleted(e)) => {
                let post = oid(&e.post_id)?;
                self.store.mark_removed(removed_key("post", post)).await?;
                self.store.remove_about("post_id", post).await?;
            }
            Some(Payload::CommentDeleted(e)) => {
                let comment = oid(&e.comment_id)?;
                self.store
                    .mark_removed(removed_key("comment", comment))
                    .await?;
                self.store.remove_about("comment_id", comment).await?;
            }
            _ => {}
        }
        let mut stored = Vec::new();
        let mut keys = Vec::new();
        let mut about = Vec::new();
        for draft in drafts {
            // Nobody is notified of their own action.
            if draft.recipient == actor {
                continue;
            }
            keys.push(draft.key.clone());
            about.extend(draft.post.map(|p| removed_key("post", p)));
            about.extend(draft.comment.map(|c| removed_key("comment", c)));
            let now = DateTime::now();
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
            };
            if self.store.insert(&mut doc).await? {
                stored.push(doc);
            }
        }
        // The post or comment may have been deleted before (a late or redelivered
        // event) or while (a concurrent handler) these were stored. Deletion writes its
        // tombstone before removing, so checking after storing catches every order; it
        // runs on redeliveries too, in case an earlier try stopped between the two.
        if self.store.any_removed(&about).await? {
            return Ok(self.store.delete_by_keys(&keys).await?);
        }
        for doc in stored {
            let wire = Notification::from(doc);
            // Best effort: a stream that misses it resyncs from the store.
            if let Err(e) = self
                .broadcaster
                .publish(STORED, &wire.encode_to_vec())
                .await
            {
                tracing::warn!(error = %format!("{e:#}"), "could not broadcast a notification");
            }
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
        let mut client = UserServiceClient::new(self.users.channel());
        let request = self
            .users
            .request(BatchGetUsersByUsernameRequest { usernames: names });
        let found = self
            .users
            .call(client.batch_get_users_by_username(request))
            .await
            .map_err(|s| self.users.error(s))?;
        found.users.iter().map(|u| oid(&u.id)).collect()
    }
}
