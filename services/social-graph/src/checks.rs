//! Follows against the deletions and blocks that may race them (docs/events.md,
//! "Deletions win races", "Blocks"): a follow is stored marked unchecked
//! (`unchecked_since`), then checked: the account on either side deleted, or a block
//! either way, undoes it with its `unfollowed` event. The mark goes once the checks have
//! passed or undone it. A follow whose checks could not be made (the database went away)
//! keeps its mark: its retry checks it again, and [`run`] checks every mark left for
//! `left_for`, so that a follow whose client never retried does not outlive a block or
//! a deletion either.

use std::time::Duration;

use bson::oid::ObjectId;
use social_events::outbox::RelayWaker;
use social_kit::{Error, Result, error::UNBLOCK_FIRST};
use tokio_util::sync::CancellationToken;

use crate::store::{FollowDoc, Store};

/// Checks `follow` (stored, unchecked) and undoes it if an account was deleted or a
/// block stands between the two; what the follower hears then (`None`: it stands).
pub async fn follow(
    store: &Store,
    relay: &RelayWaker,
    follow: &FollowDoc,
) -> Result<Option<Error>> {
    // Tests make the checks fail, as an unreachable database would.
    social_kit::fault!("graph::follow_checks", |_| Err(Error::Unavailable(
        "the database is unavailable (injected)".into()
    )));
    let (me, followee) = (follow.follower_id, follow.followee_id);
    let refusal = match removed(store, me, followee).await? {
        Some(gone) => Some(gone),
        None => blocked(store, me, followee).await?,
    };
    if refusal.is_some() && crate::events::unfollow(store, me, followee).await? {
        relay.wake();
    }
    store.follow_checked(follow.id).await?;
    Ok(refusal)
}

/// UNAUTHENTICATED when `me`'s account was deleted, NOT_FOUND when `other`'s was.
pub async fn removed(store: &Store, me: ObjectId, other: ObjectId) -> Result<Option<Error>> {
    let removed = &store.removed_users;
    if !removed.any(&[me, other]).await? {
        return Ok(None);
    }
    Ok(Some(if removed.any(&[me]).await? {
        Error::Unauthenticated("this account was deleted")
    } else {
        Error::NotFound("user")
    }))
}

/// NOT_FOUND when `followee` blocks `me` (as if absent), FAILED_PRECONDITION when `me`
/// blocks `followee`.
pub async fn blocked(store: &Store, me: ObjectId, followee: ObjectId) -> Result<Option<Error>> {
    let (blocking, blocked_by) = store.blocks.between(me, &[followee]).await?;
    Ok(if !blocked_by.is_empty() {
        Some(Error::NotFound("user"))
    } else if !blocking.is_empty() {
        Some(Error::FailedPrecondition(UNBLOCK_FIRST))
    } else {
        None
    })
}

/// Until `stop`: checks the follows whose checks did not finish `left_for` ago, 100 a
/// round (see `social_events::unchecked::settle_every`); one that fails is logged and the
/// others go on.
pub async fn run((store, relay): (Store, RelayWaker), left_for: Duration, stop: CancellationToken) {
    let settle = |before| {
        let (store, relay) = (&store, &relay);
        async move {
            for f in &store.unchecked(before, 100).await? {
                if let Err(e) = follow(store, relay, f).await {
                    tracing::warn!(follow = %f.id, error = %e, "could not check a follow; will retry");
                }
            }
            Ok(())
        }
    };
    social_events::unchecked::settle_every("follows", left_for, stop, settle).await
}
