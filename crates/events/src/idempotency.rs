//! Applying an event to a document at most once, however late it is redelivered.
//!
//! Two memories, because MongoDB offers no atomic write across two documents here:
//!
//! - **In the document**: the update is conditional on the event id not being among the
//!   document's last [`REMEMBERED`] applied ids (`applied_events`) and records it there,
//!   in the same atomic update ([`once`]). This covers the moments right after an event
//!   is applied, including two copies of one event handled at once.
//! - **In a ledger** ([`Ledger`]): one entry per (document, event) in a collection of
//!   the owning service, kept for [`WINDOW`]. It is read before the update and written
//!   after it, so an event redelivered after hundreds of newer events on the same
//!   document (a celebrity's counter; a copy re-queued behind a backlog) is recognised
//!   even though the document has forgotten it. If the process dies between the update
//!   and the ledger write, the redelivery (seconds later) still finds the id in the
//!   document.
//!
//! The guarantee therefore holds for [`WINDOW`] (30 days) after an event was first
//! applied. A message is held in place at most `EVENTS_HOLD_LIMIT_SECS` (5 min) per
//! delivery and re-queued copies go to the back of their queue, so it would have to
//! wait behind a month of backlog to be applied twice.
//!
//! `$nin` rather than `$ne`: both mean "no element equals" on MongoDB, and the stand-in
//! nx-27017 only implements the former for arrays.

use std::time::Duration;

use bson::{DateTime, Document, doc, oid::ObjectId};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

/// The field that remembers recently applied event ids.
pub const FIELD: &str = "applied_events";
/// How many recent event ids a document remembers.
pub const REMEMBERED: i32 = 500;
/// How long the ledger remembers that an event was applied to a document.
pub const WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// `(filter, update)` that apply `update` to the document matching `filter` unless
/// `event_id` is among its recently applied ids.
pub fn once(mut filter: Document, mut update: Document, event_id: &str) -> (Document, Document) {
    filter.insert(FIELD, doc! { "$nin": [event_id] });
    let remember = doc! { "$each": [event_id], "$slice": -REMEMBERED };
    match update.get_document_mut("$push") {
        Ok(push) => {
            push.insert(FIELD, remember);
        }
        Err(_) => {
            update.insert("$push", doc! { FIELD: remember });
        }
    }
    (filter, update)
}

/// A projection that leaves the remembered ids out of reads.
pub fn hide() -> Document {
    doc! { FIELD: 0 }
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// `<document id>:<event id>`.
    #[serde(rename = "_id")]
    key: String,
    applied_at: DateTime,
}

/// Which events were applied to which documents of one collection, for [`WINDOW`].
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ledger {
    entries: Collection<Entry>,
}

impl Ledger {
    /// The ledger of `collection` (stored in `<collection>_applied`).
    pub fn new(db: &Database, collection: &str) -> Self {
        Self {
            entries: db.collection(&format!("{collection}_applied")),
        }
    }

    /// Creates its TTL index (idempotent).
    pub async fn init(&self, stand_in: bool) -> mongodb::error::Result<()> {
        social_kit::mongo::ensure_indexes(
            &self.entries,
            vec![social_kit::mongo::ttl_index(
                "applied_ttl",
                "applied_at",
                WINDOW,
            )],
            stand_in,
        )
        .await
    }

    /// Applies `update` to document `id` of `target` unless `event_id` was applied to it
    /// already; whether it changed the document (`false` also when there is none).
    pub async fn apply<T: Send + Sync>(
        &self,
        target: &Collection<T>,
        id: ObjectId,
        update: Document,
        event_id: &str,
    ) -> mongodb::error::Result<bool> {
        let key = format!("{id}:{event_id}");
        if self.entries.find_one(doc! { "_id": &key }).await?.is_some() {
            return Ok(false);
        }
        let (filter, update) = once(doc! { "_id": id }, update, event_id);
        let changed = target.update_one(filter, update).await?.modified_count == 1;
        let entry = Entry {
            key,
            applied_at: DateTime::now(),
        };
        social_kit::mongo::insert_once(&self.entries, &entry).await?;
        Ok(changed)
    }
}
