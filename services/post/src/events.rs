//! What the post service consumes: engagement events, which move a post's
//! `likes_count` and `comments_count` (each applied at most once per event, see
//! `social_events::idempotency`; increments commute, so order does not matter), a
//! deleted account, whose posts go, and blocks, kept for reads.

use bson::oid::ObjectId;
use social_events::{
    Envelope, Payload, consumer::Budget, new_envelope, outbox::RelayWaker, pb::PostDeleted,
    removed_users,
};

use crate::store::Store;

/// Applies one event.
pub async fn apply((store, relay): (Store, RelayWaker), envelope: Envelope) -> anyhow::Result<()> {
    if let Some(Payload::UserDeleted(e)) = &envelope.payload {
        let user = removed_users::deleted_user(e)?;
        return remove_author(&store, &relay, user).await;
    }
    if store.blocks.apply(&envelope).await?.is_some() {
        return Ok(());
    }
    let (post, field, delta) = match &envelope.payload {
        Some(Payload::PostLiked(e)) => (&e.post_id, "likes_count", 1),
        Some(Payload::PostUnliked(e)) => (&e.post_id, "likes_count", -1),
        Some(Payload::CommentCreated(e)) => (&e.post_id, "comments_count", 1),
        Some(Payload::CommentDeleted(e)) => (&e.post_id, "comments_count", -1),
        _ => return Ok(()),
    };
    let post = ObjectId::parse_str(post)?;
    let added = store.counters.add(post, field, delta, &envelope).await;
    // Applied now, by an earlier try of this event, or perhaps behind an error: the
    // cached post goes either way (a redelivery forgets it again, should this stop).
    store.forget(post).await;
    added?;
    Ok(())
}

/// Deletes every post of a deleted account, each with its `post.post.deleted` event
/// (which takes its likes, comments and notifications with it), in batches; idempotent
/// and resumable (a retry goes on with the posts still there).
async fn remove_author(store: &Store, relay: &RelayWaker, user: ObjectId) -> anyhow::Result<()> {
    let posts = || async { Ok(store.ids_by_author(user, 100).await?) };
    let delete = |post: ObjectId| async move {
        let event = new_envelope(
            user,
            Payload::PostDeleted(PostDeleted { post_id: post.to_hex(), author_id: user.to_hex() }),
        );
        Ok(store.delete(post, user, &event).await.map(drop)?)
    };
    let remove = async { Budget::start().drain("account posts", relay, posts, delete).await };
    store.removed_users.remove(user, relay, remove).await
}
