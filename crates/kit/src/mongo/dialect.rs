//! What the database server is, and every place where the answer matters.
//!
//! The code is written for MongoDB. The test machines run `nx-27017` 0.8.1, a
//! wire-protocol stand-in on SQLite, which differs from MongoDB in the ways below. Each is
//! handled or avoided, and listed here so that nobody rediscovers them; no code outside
//! this module names the stand-in.
//!
//! Handled here, through [`Db`] (a database handle that learns once what it talks to):
//! - a compound index containing `_id` makes every insert fail (code 8):
//!   [`Db::ensure_indexes`] drops `_id` from compound keys on the stand-in (the queries
//!   stay the same; the stand-in scans tables anyway);
//! - `count_documents` and aggregations whose filter holds an ObjectId answer 0 (the
//!   `count` command errors): [`Db::count`] counts the ids a `find` returns there;
//! - equality (plain or `$eq`) on an ObjectId field other than `_id` never matches,
//!   though `$in` does: [`equals_id`] writes such a filter as a one-element `$in`, which
//!   MongoDB plans as the same equality;
//! - a date written by `$set` is stored as text, a bool written by `$set` as an integer:
//!   the readers in [`lenient`] take both forms.
//!
//! Avoided by how the code is written:
//! - collation indexes are neither enforced nor used by queries: usernames are unique
//!   through a lowercase copy (`username_lower`);
//! - index names are its own (`idx_<collection>_<fields>`, whatever name was asked for),
//!   so dropping an index by name finds nothing and hints are ignored: code that must
//!   find or drop an index knows it by its keys (`dropIndexes` takes a key pattern);
//! - an `Int64` small enough comes back as an `Int32`: readers take either (serde's
//!   `i64` does);
//! - `$setOnInsert` is ignored in upserts: not used; a document made once (a
//!   notification group) is an insert that a unique index makes happen once, then a find;
//! - an upsert whose filter is `{_id: <ObjectId>}` stores the new document's `_id` as
//!   text: a document made once by id is an insert (a duplicate key: made already), as
//!   the post service's `pulled_authors`;
//! - partialFilterExpression is ignored (the index applies to every document), and a
//!   unique index does not treat missing fields as equal: unique keys are only on fields
//!   every document has;
//! - multi-document transactions are not isolated: correctness never depends on one;
//! - `$push` of a sub-document stores it as a JSON string: outbox entries are strings;
//! - `$ne` on an array ignores its elements and does not match a missing field; `$not`
//!   is not implemented: "not already applied" is written `{$nin: [id]}`;
//! - ranges on dates or `_id` and `$or` are evaluated outside SQL (0.3 s to seconds over
//!   20,000 documents): lists page on an integer `sort_key` (`kit::paging`);
//! - every query is a table scan and a missing index costs nothing: the query-shape
//!   checker (`testkit::queries`, docs/QUERIES.md) holds every query to an index;
//!   compare speeds only as ratios against the same server;
//! - its default mode shares one SQLite file between databases: the scripts start it
//!   with `--data-dir` (memory for tests), its own log and pid files.

use std::{ops::Deref, sync::Arc};

use bson::{Document, doc};
use mongodb::{Collection, Database, IndexModel};

/// What a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// MongoDB itself (a replica set or a sharded cluster).
    MongoDb,
    /// The `nx-27017` stand-in (see the module docs).
    StandIn,
}

/// A database and what it talks to. Cheap to clone; the clones share what was learned.
/// It dereferences to the driver's [`Database`] for everything the dialects agree on.
#[derive(Clone, Debug)]
pub struct Db {
    database: Database,
    dialect: Arc<tokio::sync::OnceCell<Dialect>>,
}

impl Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.database
    }
}

impl Db {
    /// `database`, whose dialect is learned on first need.
    pub fn new(database: Database) -> Self {
        Self { database, dialect: Arc::default() }
    }

    /// What the server is: asked once (`buildInfo`), remembered by every clone. A failed
    /// question is not remembered: the next need asks again.
    pub async fn dialect(&self) -> mongodb::error::Result<Dialect> {
        self.dialect
            .get_or_try_init(|| async {
                let info = self.database.run_command(doc! { "buildInfo": 1 }).await?;
                let stand_in = info.get_str("process").is_ok_and(|p| p.starts_with("nx_27017"));
                Ok(if stand_in { Dialect::StandIn } else { Dialect::MongoDb })
            })
            .await
            .copied()
    }

    /// Creates `indexes` on `collection` if missing; idempotent (see
    /// [`super::ensure_indexes`]). On the stand-in, compound keys lose `_id`.
    pub async fn ensure_indexes<T: Send + Sync>(
        &self,
        collection: &Collection<T>,
        indexes: Vec<IndexModel>,
    ) -> mongodb::error::Result<()> {
        super::declare(&collection.namespace(), &indexes);
        let stand_in = self.dialect().await? == Dialect::StandIn;
        let indexes = indexes
            .into_iter()
            .map(|mut model| {
                if stand_in && model.keys.len() > 1 {
                    model.keys.remove("_id");
                }
                model
            })
            .collect();
        super::create_indexes(collection, indexes).await
    }

    /// Counts the documents of `collection` matching `filter`: `count_documents` on
    /// MongoDB (served by the index over the filter's fields), the ids a `find` returns on
    /// the stand-in.
    pub async fn count<T: Send + Sync>(
        &self,
        collection: &Collection<T>,
        filter: Document,
    ) -> mongodb::error::Result<i64> {
        self.count_up_to(collection, filter, None).await
    }

    /// [`Db::count`], stopping at `limit` (`None`: none): the work of a count a caller
    /// asks for bounded, whatever others can make the matching documents number.
    pub async fn count_up_to<T: Send + Sync>(
        &self,
        collection: &Collection<T>,
        filter: Document,
        limit: Option<u64>,
    ) -> mongodb::error::Result<i64> {
        use futures::TryStreamExt;
        let n = match self.dialect().await? {
            Dialect::MongoDb => match limit {
                Some(l) => collection.count_documents(filter).limit(l).await?,
                None => collection.count_documents(filter).await?,
            },
            Dialect::StandIn => {
                let ids = collection.clone_with_type::<Document>();
                let mut find = ids.find(filter).projection(doc! { "_id": 1 });
                if let Some(l) = limit {
                    find = find.limit(i64::try_from(l).unwrap_or(i64::MAX));
                }
                let mut ids = find.await?;
                let mut n = 0_u64;
                while ids.try_next().await?.is_some() {
                    n += 1;
                }
                n
            }
        };
        Ok(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// Equality on a field holding an ObjectId other than `_id`, written as a one-element
/// `$in`: MongoDB plans it exactly as an equality (same index bounds), and the stand-in
/// matches it. Every such filter goes through here.
pub fn equals_id(id: bson::oid::ObjectId) -> bson::Bson {
    bson::Bson::Document(doc! { "$in": [id] })
}

/// Readers of stored values that `$set` may have written in the stand-in's forms.
pub mod lenient {
    use serde::{Deserialize, Deserializer, de::Error};

    /// A stored time: a BSON date, or the stand-in's text (`2026-11-24 20:19:15.305000`,
    /// UTC) for a date written by `update_one` / `find_one_and_update`. Fields that
    /// updates write are read through this; queries never filter on such fields.
    pub fn date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bson::DateTime, D::Error> {
        match bson::Bson::deserialize(deserializer)? {
            bson::Bson::DateTime(t) => Ok(t),
            bson::Bson::String(s) => {
                let rfc3339 = if s.contains('T') {
                    s.clone()
                } else {
                    format!("{}Z", s.replacen(' ', "T", 1))
                };
                bson::DateTime::parse_rfc3339_str(&rfc3339)
                    .map_err(|e| D::Error::custom(format!("unreadable stored time {s:?}: {e}")))
            }
            other => Err(D::Error::custom(format!("expected a date, found {other:?}"))),
        }
    }

    /// An optional stored time ([`date`]'s forms), absent or null for none.
    pub fn optional_date<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<bson::DateTime>, D::Error> {
        #[derive(Deserialize)]
        struct Stored(#[serde(deserialize_with = "date")] bson::DateTime);
        Ok(Option::<Stored>::deserialize(deserializer)?.map(|s| s.0))
    }

    /// A stored boolean: a BSON boolean, or the stand-in's integer for one written by
    /// `$set`.
    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        let value = bson::Bson::deserialize(d)?;
        is_true(&value)
            .ok_or_else(|| D::Error::custom(format!("expected a boolean, found {value:?}")))
    }

    /// A stored boolean read from a raw document field ([`boolean`]'s rule); `None` when
    /// the value is not one.
    pub fn is_true(value: &bson::Bson) -> Option<bool> {
        match value {
            bson::Bson::Boolean(b) => Some(*b),
            bson::Bson::Int32(n) => Some(*n != 0),
            bson::Bson::Int64(n) => Some(*n != 0),
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use serde::Deserialize;

        #[derive(Deserialize)]
        struct Doc {
            #[serde(deserialize_with = "super::date")]
            t: bson::DateTime,
        }

        #[test]
        fn reads_dates_and_the_stand_ins_text() {
            let now = bson::DateTime::from_millis(1_795_000_000_123);
            let d: Doc = bson::deserialize_from_document(bson::doc! { "t": now }).unwrap();
            assert_eq!(d.t, now);
            let d: Doc =
                bson::deserialize_from_document(bson::doc! { "t": "2026-11-24 20:19:15.305000" })
                    .unwrap();
            assert_eq!(d.t.try_to_rfc3339_string().unwrap(), "2026-11-24T20:19:15.305Z");
        }
    }
}
