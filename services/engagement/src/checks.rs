//! Likes and comments against the deletions and blocks that may race them
//! (docs/events.md, "Deletions win races", "Blocks"): whoever writes checks for the
//! post's and the account's tombstones after its insert, and asks the social-graph
//! service whether a block stands between the writer and the authors, and undoes the
//! insert if any does.
//!
//! A like or comment is stored marked unchecked (`unchecked_since`), and the mark goes
//! once both checks have passed (or the insert was undone). When a check cannot be
//! made (the database went away), the call fails and the mark stays: a retry of the like
//! finds the mark and checks again, and [`run`] checks every mark left for a minute, so
//! that a write whose client never retried does not outlive a deletion either.

use std::time::Duration;

use bson::oid::ObjectId;
use social_events::outbox::RelayWaker;
use social_kit::{Error, Result, client::Peer};
use social_proto::graph::v1::{
    CheckBlocksRequest, social_graph_service_client::SocialGraphServiceClient,
};
use tokio_util::sync::CancellationToken;

use crate::store::{CommentDoc, LikeDoc, Store};

/// What the checks found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing was deleted: the write stands.
    Stands,
    /// The post is gone: the write was taken back.
    PostGone,
    /// The liked comment is gone: the like was taken back.
    CommentGone,
    /// The writer's account is gone: the write was undone, with its event.
    AccountGone,
    /// An author blocks the writer: the write was undone, with its event; to the
    /// writer, the thing (`post` or `comment`) is absent.
    BlockedBy(&'static str),
    /// The writer blocks an author: the write was undone, with its event.
    Blocking,
}

/// Whether a block stands between `writer` and any of `authors`, as the social-graph
/// service says now: `BlockedBy(what)` when an author blocks the writer (`what` is absent
/// to them), `Blocking` when the writer blocks an author.
pub async fn blocks(
    graph: &Peer,
    writer: ObjectId,
    authors: &[ObjectId],
    what: &'static str,
) -> Result<Option<Verdict>> {
    let others: Vec<String> =
        authors.iter().filter(|a| **a != writer).map(|a| a.to_hex()).collect();
    if others.is_empty() {
        return Ok(None);
    }
    let request = CheckBlocksRequest { user_id: writer.to_hex(), other_user_ids: others };
    let found = social_kit::call!(graph, SocialGraphServiceClient.check_blocks(request))
        .map_err(|s| graph.error(s))?;
    Ok(if !found.blocked_by.is_empty() {
        Some(Verdict::BlockedBy(what))
    } else if !found.blocking.is_empty() {
        Some(Verdict::Blocking)
    } else {
        None
    })
}

/// The answer to a write that `verdict` refused.
pub fn refusal(verdict: Verdict) -> Result<()> {
    match verdict {
        Verdict::Stands => Ok(()),
        Verdict::PostGone => Err(Error::NotFound("post")),
        Verdict::CommentGone => Err(Error::NotFound("comment")),
        Verdict::AccountGone => Err(Error::Unauthenticated(ACCOUNT_DELETED)),
        Verdict::BlockedBy(what) => Err(Error::NotFound(what)),
        Verdict::Blocking => Err(Error::FailedPrecondition(social_kit::error::UNBLOCK_FIRST)),
    }
}

/// What a deleted account's token gets for a write.
pub const ACCOUNT_DELETED: &str = "this account was deleted";

/// Whether `user`'s account was deleted.
async fn account_removed(store: &Store, user: bson::oid::ObjectId) -> Result<bool> {
    // Tests make this check fail, as an unreachable database would.
    social_kit::fault!("engagement::account_removed", |_| Err(social_kit::Error::Unavailable(
        "the database is unavailable (injected)".into()
    )));
    Ok(store.removed_users.any(&[user]).await?)
}

/// `Stands`; or, when `user`'s account was deleted, `AccountGone` once `undo` ended
/// the write (its event woken out through `relay`).
async fn unless_account_gone<Undo>(
    store: &Store,
    relay: &RelayWaker,
    user: bson::oid::ObjectId,
    undo: impl FnOnce() -> Undo,
) -> Result<Verdict>
where
    Undo: std::future::Future<Output = Result<bool>>,
{
    if !account_removed(store, user).await? {
        return Ok(Verdict::Stands);
    }
    if undo().await? {
        relay.wake();
    }
    Ok(Verdict::AccountGone)
}

/// Checks `like` (stored, unchecked) and undoes it if its post, its comment or its
/// author's account was deleted, or a block stands between its author and the authors
/// of what it likes: under a deleted post or comment it is taken back (its event, if
/// out, is about something deleted: moot); otherwise it is ended with its `unliked`
/// event (so that the count goes back).
pub async fn like(
    store: &Store,
    relay: &RelayWaker,
    graph: &Peer,
    like: &LikeDoc,
) -> Result<Verdict> {
    if store.post_removed(like.post_id).await? {
        store.take_back_like(like.id).await?;
        return Ok(Verdict::PostGone);
    }
    let mut authors = vec![like.target_author_id];
    // A comment is its own tombstone: deleted, or purged once deleted.
    if let Some(comment) = like.comment_id {
        let Some(comment) = store.comment(comment).await? else {
            store.take_back_like(like.id).await?;
            return Ok(Verdict::CommentGone);
        };
        authors.push(comment.post_author_id);
    }
    let undo = || store.undo_like(like, like.user_id);
    let mut verdict = unless_account_gone(store, relay, like.user_id, undo).await?;
    if verdict == Verdict::Stands {
        let what = if like.comment_id.is_some() { "comment" } else { "post" };
        if let Some(blocked) = blocks(graph, like.user_id, &authors, what).await? {
            if store.undo_like(like, like.user_id).await? {
                relay.wake();
            }
            verdict = blocked;
        }
    }
    store.like_checked(like.id).await?;
    Ok(verdict)
}

/// [`like`] for a comment: taken back under a deleted post, deleted with its event for a
/// deleted account or a block between its author and the post's.
pub async fn comment(
    store: &Store,
    relay: &RelayWaker,
    graph: &Peer,
    comment: &CommentDoc,
) -> Result<Verdict> {
    if store.post_removed(comment.post_id).await? {
        store.take_back_comment(comment.id).await?;
        return Ok(Verdict::PostGone);
    }
    let undo = || store.undo_comment(comment, comment.user_id);
    let mut verdict = unless_account_gone(store, relay, comment.user_id, undo).await?;
    if verdict == Verdict::Stands
        && let Some(blocked) =
            blocks(graph, comment.user_id, &[comment.post_author_id], "post").await?
    {
        if store.undo_comment(comment, comment.user_id).await? {
            relay.wake();
        }
        verdict = blocked;
    }
    store.comment_checked(comment.id).await?;
    Ok(verdict)
}

/// Until `stop`: checks the likes and comments whose checks did not finish `left_for`
/// ago, 100 of each a round (see `social_events::unchecked::settle_every`); one that
/// fails is logged and the others go on.
pub async fn run(
    (store, relay, graph): (Store, RelayWaker, Peer),
    left_for: Duration,
    stop: CancellationToken,
) {
    let settle = |before| {
        let (store, relay, graph) = (&store, &relay, &graph);
        async move {
            for l in &store.unchecked_likes(before, 100).await? {
                if let Err(e) = like(store, relay, graph, l).await {
                    tracing::warn!(like = %l.id, error = %e, "could not check a like; will retry");
                }
            }
            for c in &store.unchecked_comments(before, 100).await? {
                if let Err(e) = comment(store, relay, graph, c).await {
                    tracing::warn!(comment = %c.id, error = %e, "could not check a comment; will retry");
                }
            }
            Ok(())
        }
    };
    social_events::unchecked::settle_every("likes and comments", left_for, stop, settle).await
}
