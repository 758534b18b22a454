//! What the engagement service consumes: a deleted post takes its comments and likes
//! with it; a deleted comment ends its likes; comment likes move the comment's
//! `likes_count` (once per event, see `social_events::idempotency`); a deleted account's
//! likes end and its comments go; blocks are kept for reads.

use bson::oid::ObjectId;
use social_events::{Envelope, Payload, consumer::Budget, outbox::RelayWaker, removed_users};

use crate::store::{CommentDoc, LikeDoc, Store, Target};

/// Applies one event.
pub async fn apply((store, relay): (Store, RelayWaker), envelope: Envelope) -> anyhow::Result<()> {
    match &envelope.payload {
        Some(Payload::PostDeleted(e)) => {
            remove_post(&store, ObjectId::parse_str(&e.post_id)?).await?
        }
        Some(Payload::CommentLiked(e)) => {
            store.add_to_comment_likes(ObjectId::parse_str(&e.comment_id)?, 1, &envelope).await?;
        }
        Some(Payload::CommentUnliked(e)) => {
            store.add_to_comment_likes(ObjectId::parse_str(&e.comment_id)?, -1, &envelope).await?;
        }
        Some(Payload::CommentDeleted(e)) => {
            end_likes_of_comment(&store, &relay, ObjectId::parse_str(&e.comment_id)?).await?;
        }
        Some(Payload::UserDeleted(e)) => {
            remove_user(&store, &relay, removed_users::deleted_user(e)?).await?;
        }
        Some(Payload::UserBlocked(_) | Payload::UserUnblocked(_)) => {
            store.blocks.apply(&envelope).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Removes everything of a deleted post: its comments and every like under it (of the
/// post and of its comments), after its tombstone; in batches, so that a post with a
/// million likes takes steps (`Budget`), not one statement; idempotent and resumable.
async fn remove_post(store: &Store, post: ObjectId) -> anyhow::Result<()> {
    store.mark_post_removed(post).await?;
    let mut budget = Budget::start();
    let comments = || async { Ok(store.remove_comments_of(post, REMOVE_BATCH).await?) };
    budget.repeat("post comments", comments).await?;
    let likes = || async { Ok(store.remove_likes_under(post, REMOVE_BATCH).await?) };
    budget.repeat("post likes", likes).await
}

/// How many comments or likes of a deleted post one statement removes.
const REMOVE_BATCH: i64 = 200;

/// Ends the likes of a deleted comment, each with its `unliked` event (its likers'
/// exports no longer list it, their notifications go), in batches; idempotent and
/// resumable. A like racing the deletion finds the comment gone after its insert and is
/// taken back (`crate::checks`).
async fn end_likes_of_comment(
    store: &Store,
    relay: &RelayWaker,
    comment: ObjectId,
) -> anyhow::Result<()> {
    let mut budget = Budget::start();
    loop {
        budget.check()?;
        let likes = store.active_likes_of(Target::Comment, comment, 100).await?;
        if likes.is_empty() {
            return Ok(());
        }
        for like in &likes {
            store.undo_like(like, like.user_id).await?;
        }
        relay.wake();
        budget.done("comment likes", likes.len());
    }
}

/// Ends every like of a deleted account and deletes its comments, each with its event
/// (so that posts' and comments' counters go down exactly once, and notifications go),
/// in batches; idempotent and resumable.
async fn remove_user(store: &Store, relay: &RelayWaker, user: ObjectId) -> anyhow::Result<()> {
    let remove = async {
        let mut budget = Budget::start();
        let likes = || async { Ok(store.likes_by(user, 100).await?) };
        let unlike =
            |like: LikeDoc| async move { Ok(store.undo_like(&like, user).await.map(drop)?) };
        budget.drain("account likes", relay, likes, unlike).await?;
        let comments = || async { Ok(store.comments_by(user, 100).await?) };
        let delete = |comment: CommentDoc| async move {
            Ok(store.undo_comment(&comment, user).await.map(drop)?)
        };
        budget.drain("account comments", relay, comments, delete).await
    };
    store.removed_users.remove(user, relay, remove).await
}
