//! What the engagement service consumes: a deleted post takes its comments and likes
//! with it; comment likes move the comment's `likes_count` (once per event, see
//! `social_events::idempotency`).

use std::sync::Arc;

use bson::oid::ObjectId;
use futures::FutureExt;
use social_events::{Envelope, Payload, consumer::Handler, topology::QueueSpec};

use crate::store::Store;

/// The engagement service's queue and its bindings.
pub fn subscription() -> QueueSpec {
    social_events::topology::ENGAGEMENT
}

/// Applies one event.
pub fn handler(store: Store) -> Handler {
    Arc::new(move |envelope: Envelope| {
        let store = store.clone();
        async move {
            match &envelope.payload {
                Some(Payload::PostDeleted(e)) => {
                    store.remove_post(ObjectId::parse_str(&e.post_id)?).await?
                }
                Some(Payload::CommentLiked(e)) => {
                    store
                        .add_to_comment_likes(ObjectId::parse_str(&e.comment_id)?, 1, &envelope)
                        .await?;
                }
                Some(Payload::CommentUnliked(e)) => {
                    store
                        .add_to_comment_likes(ObjectId::parse_str(&e.comment_id)?, -1, &envelope)
                        .await?;
                }
                _ => {}
            }
            Ok(())
        }
        .boxed()
    })
}
