//! What the social-graph service consumes: a deleted account, whose follows (from it
//! and to it) end, each with its `graph.user.unfollowed` event so that the other users'
//! `followers_count` and `following_count` go down exactly once.

use std::sync::Arc;

use bson::oid::ObjectId;
use futures::FutureExt;
use social_events::{
    Envelope, Payload,
    consumer::{Budget, Handler},
    new_envelope,
    outbox::Waker,
    pb::UserUnfollowed,
    removed_users,
    topology::QueueSpec,
};

use crate::store::Store;

/// The social-graph service's queue and its bindings.
pub fn subscription() -> QueueSpec {
    social_events::topology::GRAPH
}

/// Applies one event.
pub fn handler(store: Store, relay: Waker) -> Handler {
    Arc::new(move |envelope: Envelope| {
        let (store, relay) = (store.clone(), relay.clone());
        async move {
            if let Some(Payload::UserDeleted(e)) = &envelope.payload {
                let user = removed_users::deleted_user(e)?;
                remove_user(&store, &relay, user).await?;
            }
            Ok(())
        }
        .boxed()
    })
}

/// Ends every follow from and to a deleted account, in batches; idempotent and
/// resumable (a retry goes on with the follows still active).
async fn remove_user(store: &Store, relay: &Waker, user: ObjectId) -> anyhow::Result<()> {
    store.removed_users.mark(user).await?;
    let mut budget = Budget::start();
    for side in ["follower_id", "followee_id"] {
        loop {
            budget.check()?;
            let follows = store.active_of(side, user, 100).await?;
            if follows.is_empty() {
                break;
            }
            let batch = follows.len();
            for (follower, followee) in follows {
                unfollow(store, follower, followee).await?;
            }
            relay.wake();
            budget.done(side, batch);
        }
    }
    if store.removed_users.cleared(user).await? {
        relay.wake();
    }
    Ok(())
}

/// Ends the follow with its event (nothing if it already ended).
pub async fn unfollow(
    store: &Store,
    follower: ObjectId,
    followee: ObjectId,
) -> social_kit::Result<bool> {
    let event = new_envelope(
        follower,
        Payload::UserUnfollowed(UserUnfollowed {
            follower_id: follower.to_hex(),
            followee_id: followee.to_hex(),
        }),
    );
    store.unfollow(follower, followee, &event).await
}
