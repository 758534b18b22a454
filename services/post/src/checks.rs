//! Posts against the deletion of their author's account racing them (docs/events.md,
//! "Deletions win races"): CreatePost checks for the account's tombstone after its
//! insert and deletes the post, with its event, if it is there.
//!
//! A post is stored marked unchecked (`unchecked_since`), and the mark goes once the
//! check has passed (or deleted it). When the check cannot be made (the database went
//! away), the call fails and the mark stays: a retry with the same idempotency key finds
//! the post and checks again, and [`run`] checks every mark left for `left_for`, so that
//! a post whose client never retried (a deleted account's tokens are refused soon after)
//! does not outlive the account's deletion, which may have finished before it was stored.

use std::time::Duration;

use social_events::{Payload, new_envelope, outbox::RelayWaker, pb::PostDeleted};
use social_kit::Result;
use tokio_util::sync::CancellationToken;

use crate::store::{PostDoc, Store};

/// Checks `post` (stored, unchecked) and deletes it, with its event, if its author's
/// account was deleted; whether it stands.
pub async fn post(store: &Store, relay: &RelayWaker, post: &PostDoc) -> Result<bool> {
    // Tests make the check fail, as an unreachable database would.
    social_kit::fault!("post::account_removed", |_| Err(social_kit::Error::Unavailable(
        "the database is unavailable (injected)".into()
    )));
    let author = post.user_id;
    let stands = !store.removed_users.any(&[author]).await?;
    if !stands {
        let undo = new_envelope(
            author,
            Payload::PostDeleted(PostDeleted {
                post_id: post.id.to_hex(),
                author_id: author.to_hex(),
            }),
        );
        if store.delete(post.id, author, &undo).await? {
            relay.wake();
        }
    }
    store.post_checked(post.id, author).await?;
    Ok(stands)
}

/// Until `stop`: checks the posts whose check did not finish `left_for` ago, 100 a round
/// (see `social_events::unchecked::settle_every`); one that fails is logged and the
/// others go on.
pub async fn run((store, relay): (Store, RelayWaker), left_for: Duration, stop: CancellationToken) {
    let settle = |before| {
        let (store, relay) = (&store, &relay);
        async move {
            for p in &store.unchecked(before, 100).await? {
                if let Err(e) = post(store, relay, p).await {
                    tracing::warn!(post = %p.id, error = %e, "could not check a post; will retry");
                }
            }
            Ok(())
        }
    };
    social_events::unchecked::settle_every("posts", left_for, stop, settle).await
}
