//! Writes checked after their insert (a follow, like or comment against a deletion or a
//! block racing it): the document carries `unchecked_since` (ms) until its checks have
//! passed, and a background task settles the ones whose checks failed and nobody
//! retried. The same field, index and queries for every collection that does this.

use std::{future::Future, time::Duration};

use bson::{doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Collection, IndexModel};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// The field: when the document was stored unchecked (ms); absent once checked.
pub const FIELD: &str = "unchecked_since";

/// The index of the documents still unchecked (a handful at most: sparse).
pub fn index() -> IndexModel {
    social_kit::mongo::sparse_index("unchecked", doc! { FIELD: 1 })
}

/// Marks document `id` of `collection` checked.
pub async fn checked<T: Send + Sync>(
    collection: &Collection<T>,
    id: ObjectId,
) -> social_kit::Result<()> {
    collection.update_one(doc! { "_id": id }, doc! { "$unset": { FIELD: "" } }).await?;
    Ok(())
}

/// Up to `limit` documents of `collection` stored unchecked before `before_ms` (their
/// checks failed, or are still running), without their outbox bookkeeping.
pub async fn older_than<T>(
    collection: &Collection<T>,
    before_ms: i64,
    limit: i64,
) -> social_kit::Result<Vec<T>>
where
    T: DeserializeOwned + Send + Sync,
{
    Ok(collection
        .find(doc! { FIELD: { "$lt": before_ms } })
        .projection(crate::outbox::without_bookkeeping())
        .limit(limit)
        .await?
        .try_collect()
        .await?)
}

/// Until `stop`: every half of `left_for`, `settle(before_ms)` checks the `what` stored
/// unchecked before `left_for` ago (a failed call its client did not retry; a call in
/// flight clears its own mark well within it). A round that fails is logged, and the
/// next one tries again.
pub async fn settle_every<F, Fut>(
    what: &'static str,
    left_for: Duration,
    stop: CancellationToken,
    mut settle: F,
) where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = social_kit::Result<()>>,
{
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(left_for / 2) => {}
        }
        let left_for_ms = i64::try_from(left_for.as_millis()).unwrap_or(i64::MAX);
        let before = bson::DateTime::now().timestamp_millis().saturating_sub(left_for_ms);
        if let Err(e) = settle(before).await {
            tracing::warn!(what, error = %e, "could not check the writes left unchecked; will retry");
        }
    }
}
