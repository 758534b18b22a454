//! Events: one [`Envelope`] per message, its routing key named after the payload.

use bson::oid::ObjectId;
pub use social_proto::events::v1::{Envelope, envelope::Payload};

/// A new event with a fresh id, now, by `actor`.
pub fn new_envelope(actor: ObjectId, payload: Payload) -> Envelope {
    let now = social_kit::time::to_timestamp(bson::DateTime::now());
    Envelope {
        event_id: ObjectId::new().to_hex(),
        occurred_at: Some(now),
        actor_id: actor.to_hex(),
        payload: Some(payload),
    }
}

/// `<area>.<entity>.<verb>` of a payload.
pub fn routing_key(payload: &Payload) -> &'static str {
    match payload {
        Payload::UserFollowed(_) => "graph.user.followed",
        Payload::UserUnfollowed(_) => "graph.user.unfollowed",
        Payload::UserBlocked(_) => "graph.user.blocked",
        Payload::UserUnblocked(_) => "graph.user.unblocked",
        Payload::UserMuted(_) => "graph.user.muted",
        Payload::UserUnmuted(_) => "graph.user.unmuted",
        Payload::PostCreated(_) => "post.post.created",
        Payload::PostDeleted(_) => "post.post.deleted",
        Payload::PostLiked(_) => "engagement.post.liked",
        Payload::PostUnliked(_) => "engagement.post.unliked",
        Payload::CommentCreated(_) => "engagement.comment.created",
        Payload::CommentDeleted(_) => "engagement.comment.deleted",
        Payload::CommentLiked(_) => "engagement.comment.liked",
        Payload::CommentUnliked(_) => "engagement.comment.unliked",
        Payload::UserDeleted(_) => "user.user.deleted",
        Payload::AccountCleared(_) => "deletion.account.cleared",
    }
}

/// Every routing key a payload is published with.
pub const ALL_ROUTING_KEYS: &[&str] = &[
    "graph.user.followed",
    "graph.user.unfollowed",
    "graph.user.blocked",
    "graph.user.unblocked",
    "graph.user.muted",
    "graph.user.unmuted",
    "post.post.created",
    "post.post.deleted",
    "engagement.post.liked",
    "engagement.post.unliked",
    "engagement.comment.created",
    "engagement.comment.deleted",
    "engagement.comment.liked",
    "engagement.comment.unliked",
    "user.user.deleted",
    "deletion.account.cleared",
];
