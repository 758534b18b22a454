//! What the post service consumes: engagement events, which move a post's
//! `likes_count` and `comments_count`. Each update is applied at most once per event
//! (see `social_events::idempotency`); increments commute, so order does not matter.

use std::sync::Arc;

use bson::oid::ObjectId;
use futures::FutureExt;
use social_events::{Envelope, Payload, consumer::Handler, topology::QueueSpec};

use crate::store::Store;

/// The post service's queue and its bindings.
pub fn subscription() -> QueueSpec {
    social_events::topology::POST
}

/// Applies one event.
pub fn handler(store: Store) -> Handler {
    Arc::new(move |envelope: Envelope| {
        let store = store.clone();
        async move {
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
