//! What the user service consumes: follow events, which move `followers_count` and
//! `following_count`, each service's report that a deleted account is cleared, and
//! blocks (to a blocked reader, the blocker's profile is absent). Each
//! update is applied at most once per event (see
//! `social_events::idempotency`), so redeliveries change nothing twice, and increments
//! commute, so order does not matter.

use bson::oid::ObjectId;
use social_events::{Envelope, Payload};

use crate::store::Store;

/// Applies one event.
pub async fn apply(store: Store, envelope: Envelope) -> anyhow::Result<()> {
    let (follower, followee, delta) = match &envelope.payload {
        Some(Payload::UserFollowed(e)) => (&e.follower_id, &e.followee_id, 1),
        Some(Payload::UserUnfollowed(e)) => (&e.follower_id, &e.followee_id, -1),
        Some(Payload::AccountCleared(e)) => {
            let user = ObjectId::parse_str(&e.user_id)?;
            let (missing, finished) = store.record_cleared(user, &e.service).await?;
            tracing::info!(%user, service = %e.service, waiting_for = ?missing, "a service cleared a deleted account");
            if finished {
                tracing::info!(%user, "account deletion finished: every service cleared it");
            }
            return Ok(());
        }
        Some(Payload::UserDeleted(e)) => {
            // What the account wrote in its reports goes with it.
            let user = social_events::removed_users::deleted_user(e)?;
            store.reports.forget_reporter(user).await?;
            // The deletion forgot its profile; this makes sure, should Redis have
            // missed that (retried until it answers).
            store.forget_surely(user).await?;
            return Ok(());
        }
        Some(Payload::UserBlocked(_) | Payload::UserUnblocked(_)) => {
            store.blocks.apply(&envelope).await?;
            return Ok(());
        }
        _ => return Ok(()), // not ours; bindings should not let it in
    };
    let follower = ObjectId::parse_str(follower)?;
    let followee = ObjectId::parse_str(followee)?;
    // Each cached profile goes after its counter moved (or perhaps moved, behind an
    // error: a redelivery forgets it again).
    store.count(follower, "following_count", delta, &envelope).await?;
    store.count(followee, "followers_count", delta, &envelope).await?;
    Ok(())
}
