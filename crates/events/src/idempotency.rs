//! Counters kept by events (`followers_count`, `likes_count`, ...): each event applied at
//! most once, however late it is redelivered, and recounts that stay exact while events
//! are still on their way.
//!
//! **At most once.** Two memories, because MongoDB offers no atomic write across two
//! documents here:
//! - in the document: the update is conditional on the event id not being among the
//!   document's last [`REMEMBERED`] applied ids (`applied_events`) and records it there
//!   in the same atomic update. This covers the moments right after an event is applied,
//!   including two copies of one event handled at once;
//! - in a ledger: one entry per (document, event) in a collection of the owning
//!   service (`<collection>_applied`), kept for [`WINDOW`]. It is read before the update
//!   and written after it, so an event redelivered after hundreds of newer events on the
//!   same document (a celebrity's counter; a copy re-queued behind a backlog) is
//!   recognised though the document has forgotten it. If the process dies between the
//!   update and the ledger write, the redelivery (seconds later) still finds the id in
//!   the document.
//!
//! The guarantee holds for [`WINDOW`] (30 days) after an event was first applied. A
//! message is held in place at most `EVENTS_HOLD_LIMIT_SECS` (5 min) per delivery and
//! re-queued copies go to the back of their queue, so it would have to wait behind a
//! month of backlog to be applied twice.
//!
//! **Recounts under traffic.** Setting a counter to a fresh count races the events still
//! in an outbox or a queue: they are in the count already and would be applied again.
//! So a recount is *fenced*: the owner of the source documents counts them as of a time
//! `C` (by the times of the events that started and ended them), and the counter is set
//! to that count plus the deltas of the events applied so far whose time is after `C`
//! (from the ledger and the document's own log); `C` is stored in the document
//! (`recount_ms`), and any event whose time is not after it is skipped when it lands,
//! since the count has it. The set is conditional on the document's `counter_version`
//! (bumped by every applied event), so an event applied meanwhile makes the recount read
//! again. `C` lies a margin in the past (the caller's choice, minutes in production) so
//! that every event up to `C` has reached its source document, whatever the clocks.
//!
//! `$nin` rather than `$ne`: both mean "no element equals" on MongoDB, and the stand-in
//! nx-27017 only implements the former for arrays. The fence is a plain range on a field
//! every counted document has (`$or` with `$exists` costs the stand-in a table scan).

use std::{collections::HashMap, time::Duration};

use bson::{DateTime, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_kit::mongo::Db;

use crate::Envelope;

/// The field that remembers recently applied event ids.
pub const FIELD: &str = "applied_events";
/// Recently applied events with their time, counter and delta (`t|field|delta|id`).
const LOG: &str = "applied_log";
/// Events up to this time (ms) are in the counters already (see the module docs).
const RECOUNT: &str = "recount_ms";
/// Bumped by every applied event and every recount.
const VERSION: &str = "counter_version";
/// How many recent event ids a document remembers.
pub const REMEMBERED: i32 = 500;
/// How long the ledger remembers that an event was applied to a document.
pub const WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// The fields a counted document is created with.
pub fn initial_fields() -> Document {
    doc! { RECOUNT: 0_i64, VERSION: 0_i64 }
}

/// A projection that leaves the bookkeeping of counters out of reads.
pub fn without_counter_bookkeeping() -> Document {
    doc! { FIELD: 0, LOG: 0 }
}

/// When `event` happened, in milliseconds since the Unix epoch.
pub fn event_time_ms(event: &Envelope) -> i64 {
    event.occurred_at.as_ref().map_or(0, social_kit::time::millis)
}

/// `event` as the ending of what started at `started_ms` (an unlike of a like, an
/// unfollow of a follow): moved to just after the start when the clock of the replica
/// that stamped it is behind the one that stamped the start. Readers order the two by
/// these times (a recount by `ended_ms` against `started_ms`, an undo of a notification
/// by the times of both events), so an ending must never read as older than what it
/// ends, whatever the replicas' clocks. Left: a like or follow made again within the
/// clocks' difference of the one it follows can read as older than that one's ending,
/// and then notifies nobody (its counters are right); a start after the pair's last end
/// would need that end, which no index reads cheaply today.
pub fn ending(mut event: Envelope, started_ms: i64) -> Envelope {
    if event_time_ms(&event) <= started_ms {
        let after = DateTime::from_millis(started_ms.saturating_add(1));
        event.occurred_at = Some(social_kit::time::to_timestamp(after));
    }
    event
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// `<document id>:<event id>`.
    #[serde(rename = "_id")]
    key: String,
    doc: ObjectId,
    field: String,
    delta: i64,
    /// The event's time (ms).
    t: i64,
    applied_at: DateTime,
}

/// The counters of one collection's documents, kept by events. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Counters {
    db: Db,
    target: Collection<Document>,
    ledger: Collection<Entry>,
}

impl Counters {
    /// The counters of `collection`, with their ledger in `<collection>_applied`.
    pub fn new(db: &Db, collection: &str) -> Self {
        Self {
            db: db.clone(),
            target: db.collection(collection),
            ledger: db.collection(&format!("{collection}_applied")),
        }
    }

    /// Creates the ledger's indexes (idempotent). Documents written before recounts
    /// existed get their fields when an event first reaches them ([`Self::apply`]),
    /// not by a scan of the collection at every start.
    pub async fn init(&self) -> mongodb::error::Result<()> {
        self.db
            .ensure_indexes(
                &self.ledger,
                vec![
                    social_kit::mongo::ttl_index("applied_ttl", "applied_at", WINDOW),
                    // A recount's "applied after C" of one document.
                    social_kit::mongo::index("doc_time", doc! { "doc": 1, "t": 1 }, false),
                ],
            )
            .await
    }

    /// Adds `delta` to `field` of document `id` for `event`, unless that event was
    /// applied to it already or a recount already counted it; whether it changed the
    /// document (`false` also when there is none).
    pub async fn add(
        &self,
        id: ObjectId,
        field: &str,
        delta: i64,
        event: &Envelope,
    ) -> mongodb::error::Result<bool> {
        let (key, t) = (&event.event_id, event_time_ms(event));
        self.apply(id, field, delta, key, t, Document::new(), Document::new()).await
    }

    /// Adds `delta` to `field` of document `id` once for `change` (an event id, or any
    /// key naming one change, such as `add:<notification id>`), at time `t` (ms), if the
    /// document also matches `condition`, with more update operators applied in the same
    /// write (`also`, such as `{"$max": {...}}`; not `$inc` or `$push`); whether it
    /// changed the document. A change that did not apply because of `condition` is not
    /// remembered: it may apply later.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        id: ObjectId,
        field: &str,
        delta: i64,
        change: &str,
        t: i64,
        condition: Document,
        also: Document,
    ) -> mongodb::error::Result<bool> {
        let event_id = change;
        let key = format!("{id}:{event_id}");
        if self.ledger.find_one(doc! { "_id": &key }).await?.is_some() {
            return Ok(false);
        }
        let mut filter = doc! { "_id": id, FIELD: { "$nin": [event_id] }, RECOUNT: { "$lt": t } };
        filter.extend(condition.clone());
        let mut update = doc! {
            "$inc": { field: delta, VERSION: 1_i64 },
            "$push": {
                FIELD: { "$each": [event_id], "$slice": -REMEMBERED },
                LOG: { "$each": [format!("{t}|{field}|{delta}|{event_id}")], "$slice": -REMEMBERED },
            },
        };
        update.extend(also);
        let mut changed =
            self.target.update_one(filter.clone(), update.clone()).await?.modified_count == 1;
        if !changed {
            // A document written by a release before recounts lacks the fence: give it
            // one and try again (else it would never count again).
            let repaired = self
                .target
                .update_one(
                    doc! { "_id": id, RECOUNT: { "$exists": false } },
                    doc! { "$set": initial_fields() },
                )
                .await?
                .modified_count
                == 1;
            if repaired {
                changed = self.target.update_one(filter, update).await?.modified_count == 1;
            }
        }
        if !changed && !condition.is_empty() {
            // Not applied: because of `condition`, or because it was applied already (the
            // document remembers it). Only the latter goes in the ledger.
            let applied = self
                .target
                .find_one(doc! { "_id": id, FIELD: { "$in": [event_id] } })
                .await?
                .is_some();
            if !applied {
                return Ok(false);
            }
        }
        let entry =
            Entry { key, doc: id, field: field.to_owned(), delta, t, applied_at: DateTime::now() };
        social_kit::mongo::insert_once(&self.ledger, &entry).await?;
        Ok(changed)
    }

    /// Sets the counters of document `id` to `counted` (each field's count of its source
    /// documents as of `as_of_ms`) plus what the events applied so far with a later time
    /// added, and fences out the events up to `as_of_ms` (see the module docs). `false`
    /// if there is no such document; an error if events kept changing it.
    pub async fn recount(
        &self,
        id: ObjectId,
        as_of_ms: i64,
        counted: &[(&str, i64)],
    ) -> anyhow::Result<bool> {
        for _ in 0..20 {
            let Some(current) = self
                .target
                .find_one(doc! { "_id": id })
                .projection(doc! { VERSION: 1, LOG: 1 })
                .await?
            else {
                return Ok(false);
            };
            let version = match current.get(VERSION) {
                Some(v) => v.clone(),
                None => bson::Bson::Int64(0),
            };
            // What was applied after `as_of_ms`, by event: the ledger, and the document's
            // own log for an event whose ledger entry is not written yet.
            let mut after: HashMap<String, (String, i64)> = HashMap::new();
            let mut entries =
                self.ledger.find(doc! { "doc": id, "t": { "$gt": as_of_ms } }).await?;
            while let Some(e) = entries.try_next().await? {
                let event = e.key.rsplit(':').next().unwrap_or_default().to_owned();
                after.insert(event, (e.field, e.delta));
            }
            for line in current.get_array(LOG).map(|a| a.as_slice()).unwrap_or(&[]) {
                if let Some((t, field, delta, event)) = line.as_str().and_then(parse_log)
                    && t > as_of_ms
                {
                    after.entry(event.to_owned()).or_insert((field.to_owned(), delta));
                }
            }
            let mut set = Document::new();
            for (field, count) in counted {
                let later: i64 = after.values().filter(|(f, _)| f == field).map(|(_, d)| d).sum();
                set.insert(*field, count + later);
            }
            set.insert(RECOUNT, as_of_ms);
            let filter = if current.contains_key(VERSION) {
                doc! { "_id": id, VERSION: version }
            } else {
                doc! { "_id": id, VERSION: { "$exists": false } }
            };
            let done = self
                .target
                .update_one(filter, doc! { "$set": set, "$inc": { VERSION: 1_i64 } })
                .await?
                .matched_count
                == 1;
            if done {
                return Ok(true);
            }
        }
        anyhow::bail!("document {id} kept changing while it was recounted; try again")
    }
}

/// `t|field|delta|id` of a log line.
fn parse_log(line: &str) -> Option<(i64, &str, i64, &str)> {
    let mut parts = line.splitn(4, '|');
    let t = parts.next()?.parse().ok()?;
    let field = parts.next()?;
    let delta = parts.next()?.parse().ok()?;
    let id = parts.next()?;
    Some((t, field, delta, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_round_trip() {
        assert_eq!(
            parse_log("1700000000123|likes_count|-1|65f0c0ffee0123456789abcd"),
            Some((1_700_000_000_123, "likes_count", -1, "65f0c0ffee0123456789abcd"))
        );
        assert_eq!(parse_log("garbage"), None);
    }

    #[test]
    fn an_ending_is_later_than_its_start_whatever_the_clocks() {
        use crate::{Payload, new_envelope, pb::UserUnfollowed};
        let unfollow =
            || new_envelope(ObjectId::new(), Payload::UserUnfollowed(UserUnfollowed::default()));
        let now = event_time_ms(&unfollow());
        // Started by a replica whose clock is a minute ahead: the ending follows it.
        let ahead = now + 60_000;
        assert_eq!(event_time_ms(&ending(unfollow(), ahead)), ahead + 1);
        // Started earlier, as clocks that agree say: the ending keeps its own time.
        let ended = ending(unfollow(), now - 60_000);
        assert!(event_time_ms(&ended) >= now);
    }
}
