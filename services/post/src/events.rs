//! What the post service consumes: engagement events, which move a post's
//! `likes_count` and `comments_count` (each applied at most once per event, see
//! `social_events::idempotency`; increments commute, so order does not matter), and a
//! deleted account, whose posts go.

use std::sync::Arc;

use bson::oid::ObjectId;
use futures::FutureExt;
use social_events::{
    Envelope, Payload,
    consumer::{Budget, Handler},
    new_envelope,
    outbox::Waker,
    pb::PostDeleted,
    removed_users,
    topology::QueueSpec,
};

use crate::store::Store;

/// The post service's queue and its bindings.
pub fn subscription() -> QueueSpec {
    social_events::topology::POST
}

/// Applies one event.
pub fn handler(store: Store, relay: Waker) -> Handler {
    Arc::new(move |envelope: Envelope| {
        let (store, relay) = (store.clone(), relay.clone());
        async move {
            if let Some(Payload::UserDeleted(e)) = &envelope.payload {
                let user = removed_users::deleted_user(e)?;
                return remove_author(&store, &relay, user).await;
            }
            let (post, field, delta) = match &envelope.payload {
                Some(Payload::PostLiked(e)) => (&e.post_id, "likes_count", 1),
                Some(Payload::PostUnliked(e)) => (&e.post_id, "likes_count", -1),
                Some(Payload::CommentCreated(e)) => (&e.post_id, "comments_count", 1),
                Some(Payload::CommentDeleted(e)) => (&e.post_id, "comments_count", -1),
                _ => return Ok(()),
            };
            let post = ObjectId::parse_str(post)?;
            store.add_to_count(post, field, delta, &envelope).await?;
            Ok(())
        }
        .boxed()
    })
}

/// Deletes every post of a deleted account, each with its `post.post.deleted` event
/// (which takes its likes, comments and notifications with it), in batches; idempotent
/// and resumable (a retry goes on with the posts still there).
async fn remove_author(store: &Store, relay: &Waker, user: ObjectId) -> anyhow::Result<()> {
    store.removed_users.mark(user).await?;
    let mut budget = Budget::start();
    loop {
        budget.check()?;
        let posts = store.ids_by_author(user, 100).await?;
        if posts.is_empty() {
            break;
        }
        let batch = posts.len();
        for post in posts {
            let event = new_envelope(
                user,
                Payload::PostDeleted(PostDeleted {
                    post_id: post.to_hex(),
                    author_id: user.to_hex(),
                }),
            );
            store.delete(post, user, &event).await?;
        }
        relay.wake();
        budget.done("account posts", batch);
    }
    if store.removed_users.cleared(user).await? {
        relay.wake();
    }
    Ok(())
}
