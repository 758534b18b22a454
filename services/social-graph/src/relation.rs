//! What follows, blocks and mutes have in common. Each is one document per pair, held
//! by one account (`from`: the follower, blocker or muter) about another (`to`), that
//! holds while its `active_key` is `active` (a unique index on (from, to, `active_key`)
//! keeps one per pair), carries its events in its outbox until they are out, and ends
//! in the update that appends its ending event ([`end_with_event`]), which also moves
//! `active_key` out of the unique key's way.

use bson::{DateTime, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::{Collection, IndexModel};
use serde::{Serialize, de::DeserializeOwned};
use social_events::{Envelope, outbox};
use social_kit::{
    Result,
    mongo::{self, KeyOwner},
    paging::{Order, PageRequest},
};

use crate::store::{ACTIVE, ENDED};

/// The fields that name a relation's two accounts.
#[derive(Clone, Copy)]
pub struct Sides {
    /// Who holds it: `follower_id`, `blocker_id`, `muter_id`.
    pub from: &'static str,
    /// Whom it is about: `followee_id`, `blocked_id`, `muted_id`.
    pub to: &'static str,
}

/// A relation's document.
pub trait Relation: Serialize + DeserializeOwned + Send + Sync + Unpin {
    const SIDES: Sides;
    /// Its sort key (minted again if the first is taken).
    fn sort_key(&mut self) -> &mut i64;
    /// Drops its outbox: what a caller is answered with once the event is on its way.
    fn without_outbox(&mut self);
}

/// Makes `$doc` (with the fields `sort_key`, `outbox` and `outbox_pending`) a
/// [`Relation`] held by its field `$from` about its field `$to`.
macro_rules! relation {
    ($doc:ty, $from:literal, $to:literal) => {
        impl $crate::relation::Relation for $doc {
            const SIDES: $crate::relation::Sides = $crate::relation::Sides { from: $from, to: $to };
            fn sort_key(&mut self) -> &mut i64 {
                &mut self.sort_key
            }
            fn without_outbox(&mut self) {
                self.outbox.clear();
                self.outbox_pending = 0;
            }
        }
    };
}
pub(crate) use relation;

/// The indexes every relation has, named after its sides (`follower_followee_active_unique`,
/// `follower_sorted`, `followee_sorted`): one holding relation per pair, unique on
/// (from, to, `active_key`), which serves every check between two accounts (a point
/// lookup, or `$in` on either side); each side's list, newest first, on (side, `state`,
/// `sort_key`), which also finds a deleted account's relations (ended ones out of the
/// range); the outbox's; and ended relations purged after 30 days (long after their
/// event is out).
pub fn indexes<T: Relation>() -> Vec<IndexModel> {
    let Sides { from, to } = T::SIDES;
    let name = |side: &str| side.trim_end_matches("_id").to_owned();
    let sorted = |side: &str| {
        let keys = doc! { side: 1, "state": 1, "sort_key": -1 };
        mongo::index(&format!("{}_sorted", name(side)), keys, false)
    };
    let pair = doc! { from: 1, to: 1, "active_key": 1 };
    let unique = format!("{}_{}_active_unique", name(from), name(to));
    let ended = std::time::Duration::from_secs(30 * 24 * 3600);
    vec![
        mongo::index(&unique, pair, true),
        sorted(from),
        sorted(to),
        outbox::index(),
        outbox::purge_index("ended_ttl", "ended_at", ended),
    ]
}

/// The filter of the relation of `from` to `to` that holds: a point lookup in the
/// unique index.
pub fn pair(sides: Sides, from: ObjectId, to: ObjectId) -> Document {
    doc! {
        sides.from: mongo::equals_id(from), sides.to: mongo::equals_id(to),
        "active_key": ACTIVE,
    }
}

/// The relation of `from` to `to` that holds, if any.
pub async fn holding<T: Relation>(
    collection: &Collection<T>,
    from: ObjectId,
    to: ObjectId,
) -> Result<Option<T>> {
    Ok(collection
        .find_one(pair(T::SIDES, from, to))
        .projection(outbox::without_bookkeeping())
        .await?)
}

/// Stores `made` (its event in its outbox, `owner` the shard key its sort key is minted
/// under), or finds the relation of `from` to `to` that holds already and then stores
/// no event: the relation, and whether this call made it. One that ended between the
/// insert and the read is `made`: the pair held, and ended.
pub async fn make<T: Relation>(
    collection: &Collection<T>,
    mut made: T,
    (from, to): (ObjectId, ObjectId),
    owner: KeyOwner,
) -> Result<(T, bool)> {
    if mongo::insert_keyed(collection, &mut made, owner, T::sort_key).await? {
        made.without_outbox();
        return Ok((made, true));
    }
    Ok((holding(collection, from, to).await?.unwrap_or(made), false))
}

/// A page of the relations that hold with `side` = `user`, newest first.
pub async fn page<T: Relation>(
    collection: &Collection<T>,
    side: &str,
    user: ObjectId,
    page: &PageRequest,
) -> Result<Vec<T>> {
    Ok(mongo::page(
        collection,
        Order::NewestFirst,
        doc! { side: mongo::equals_id(user), "state": ACTIVE },
        page,
        outbox::without_bookkeeping(),
    )
    .await?)
}

/// Up to `limit` relations that hold with `side` = `user`, newest first, as (from, to):
/// a deleted account's, to end.
pub async fn pairs_of<T: Relation>(
    collection: &Collection<T>,
    side: &str,
    user: ObjectId,
    limit: i64,
) -> Result<Vec<(ObjectId, ObjectId)>> {
    let Sides { from, to } = T::SIDES;
    let found: Vec<Document> = collection
        .clone_with_type::<Document>()
        .find(doc! { side: mongo::equals_id(user), "state": ACTIVE })
        .projection(doc! { from: 1, to: 1, "_id": 0 })
        .sort(doc! { "sort_key": -1 })
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    // A row without its two ids fails the cascade (retried, then dead-lettered) rather
    // than leaving it to stop early.
    let ids = |d: &Document| -> bson::error::Result<_> {
        Ok((d.get_object_id(from)?, d.get_object_id(to)?))
    };
    found.iter().map(|d| ids(d).map_err(social_kit::Error::internal)).collect()
}

/// Ends the relation `filter` finds if it still holds, with `event` in its outbox and the
/// fields of `set` set with it; whether this call ended it.
pub async fn end_with_event<T: Send + Sync>(
    collection: &Collection<T>,
    filter: Document,
    event: &Envelope,
    set: Document,
) -> Result<bool> {
    let mut fields = doc! {
        "state": ENDED, "active_key": event.event_id.as_str(), "ended_at": DateTime::now(),
    };
    fields.extend(set);
    let mut update = doc! { "$set": fields };
    outbox::push(&mut update, event);
    let r = collection.update_one(filter, update).await?;
    Ok(r.modified_count == 1)
}
