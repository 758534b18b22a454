//! Applying an event to a document at most once, atomically: the update is conditional
//! on the event id not being in the document's `applied_events`, and records it there
//! (the last [`REMEMBERED`] ids). A redelivered event then matches nothing and changes
//! nothing. `$nin` rather than `$ne`: both mean "no element equals" on MongoDB, and the
//! stand-in nx-27017 only implements the former for arrays.

use bson::{Document, doc};

/// The field that remembers applied event ids.
pub const FIELD: &str = "applied_events";
/// How many recent event ids a document remembers. A redelivery arrives within seconds;
/// a document would need this many other events in between to forget one.
pub const REMEMBERED: i32 = 500;

/// `(filter, update)` that apply `update` to the document matching `filter` unless
/// `event_id` was already applied to it.
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
