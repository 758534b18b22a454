//! Writes checked after their insert (a follow, like or comment against a deletion or a
//! block racing it): the document carries `unchecked_since` (ms) until its checks have
//! passed, and a background task settles the ones whose checks failed and nobody
//! retried. The same field, index and queries for every collection that does this.

use bson::{doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Collection, IndexModel};
use serde::de::DeserializeOwned;

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
