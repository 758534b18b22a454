//! What the social-graph service consumes: a deleted account, whose follows (from it
//! and to it) end, each with its `graph.user.unfollowed` event so that the other users'
//! `followers_count` and `following_count` go down exactly once, and whose blocks and
//! mutes end with their `graph.user.unblocked` and `graph.user.unmuted` events; and its own `graph.user.blocked`, which
//! ends the follows between the two again (BlockUser ends them itself; its event makes
//! sure of it when the call stopped half-way).

use bson::oid::ObjectId;
use social_events::{
    Envelope, Payload, consumer::Budget, new_envelope, outbox::RelayWaker, pb::UserUnfollowed,
    removed_users,
};

use crate::store::Store;

/// Applies one event.
pub async fn apply((store, relay): (Store, RelayWaker), envelope: Envelope) -> anyhow::Result<()> {
    match &envelope.payload {
        Some(Payload::UserDeleted(e)) => {
            let user = removed_users::deleted_user(e)?;
            remove_user(&store, &relay, user).await?;
        }
        Some(Payload::UserBlocked(e)) => {
            let (blocker, blocked) =
                (ObjectId::parse_str(&e.blocker_id)?, ObjectId::parse_str(&e.blocked_id)?);
            // A late event of a block that ended since ends nothing: the follows made
            // after its unblock stand.
            let block = ObjectId::parse_str(&e.block_id)?;
            if store.blocks.holds(block).await?
                && end_follows_between(&store, blocker, blocked).await?
            {
                relay.wake();
            }
        }
        _ => {}
    }
    Ok(())
}

/// Ends every follow from and to a deleted account, in batches; idempotent and
/// resumable (a retry goes on with the follows still active).
async fn remove_user(store: &Store, relay: &RelayWaker, user: ObjectId) -> anyhow::Result<()> {
    let remove = async {
        let mut budget = Budget::start();
        for side in ["follower_id", "followee_id"] {
            let follows = || async { Ok(store.active_of(side, user, 100).await?) };
            let end = |(follower, followee)| async move {
                Ok(unfollow(store, follower, followee).await.map(drop)?)
            };
            budget.drain(side, relay, follows, end).await?;
        }
        for side in ["blocker_id", "blocked_id"] {
            let blocks = || async { Ok(store.blocks.active_of(side, user, 100).await?) };
            let end = |(blocker, blocked)| async move {
                Ok(store.blocks.unblock(blocker, blocked).await.map(drop)?)
            };
            budget.drain(side, relay, blocks, end).await?;
        }
        for side in ["muter_id", "muted_id"] {
            let mutes = || async { Ok(store.mutes.active_of(side, user, 100).await?) };
            let end = |mute| async move { Ok(store.mutes.end(&mute).await.map(drop)?) };
            budget.drain(side, relay, mutes, end).await?;
        }
        Ok(())
    };
    store.removed_users.remove(user, relay, remove).await
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

/// Ends the follows between `a` and `b`, both ways, each with its event; whether any
/// ended.
pub async fn end_follows_between(
    store: &Store,
    a: ObjectId,
    b: ObjectId,
) -> social_kit::Result<bool> {
    let one = unfollow(store, a, b).await?;
    let other = unfollow(store, b, a).await?;
    Ok(one || other)
}
