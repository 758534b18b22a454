//! MongoDB: connecting with a short server-selection timeout, the start-up ping,
//! idempotent index creation, and the queries every store writes the same way (inserts
//! that happen once, keyed inserts, counts as of a moment, walks in pages).
//!
//! Where the test machines' stand-in differs from MongoDB, [`dialect`] handles it: the
//! [`Db`] handle every store holds knows what it talks to.

mod dialect;
pub mod slots;

pub use dialect::{Db, Dialect, equals_id, lenient};

use std::time::Duration;

use bson::{Document, doc};
use mongodb::{
    Client, Collection, Database, IndexModel, options::ClientOptions, options::IndexOptions,
};

use crate::config::CommonConfig;

/// Opens a client for `config` (no I/O until first use, except SRV lookups).
pub async fn connect(config: &CommonConfig) -> anyhow::Result<Db> {
    let mut options = ClientOptions::parse(&config.mongodb_uri)
        .await
        .map_err(|e| anyhow::anyhow!("MONGODB_URI is not a usable MongoDB URI: {e}"))?;
    options.server_selection_timeout = Some(config.mongodb_timeout);
    options.connect_timeout = Some(config.mongodb_timeout);
    options.app_name = Some(format!("social-{}", config.service));
    options.command_event_handler = COMMAND_MONITOR.get().cloned();
    let client = Client::with_options(options)?;
    Ok(Db::new(client.database(&config.mongodb_database)))
}

type CommandHandler = mongodb::event::EventHandler<mongodb::event::command::CommandEvent>;

/// Who sees every command the clients of this process send (set once, before they are
/// opened): the query-shape checker of the tests.
static COMMAND_MONITOR: std::sync::OnceLock<CommandHandler> = std::sync::OnceLock::new();

/// Has every client [`connect`] opens from now on report its commands to `handler`;
/// the first call wins.
pub fn monitor_commands(handler: CommandHandler) {
    let _ = COMMAND_MONITOR.set(handler);
}

/// An index as its collection declares it (through [`ensure_indexes`]): its name, keys in
/// order, and whether it is unique.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredIndex {
    pub name: String,
    pub keys: Document,
    pub unique: bool,
    /// A TTL index's delay.
    pub expire_after: Option<Duration>,
    /// The documents a partial index holds.
    pub partial: Option<Document>,
    /// Whether it holds only the documents that have its fields.
    pub sparse: bool,
}

type Declared = std::collections::HashMap<(String, String), Vec<DeclaredIndex>>;

/// The indexes declared in this process, by (database, collection), as declared for
/// MongoDB (before any stand-in adjustment).
static DECLARED: std::sync::Mutex<Option<Declared>> = std::sync::Mutex::new(None);

fn declare(collection: &mongodb::Namespace, indexes: &[IndexModel]) {
    let Ok(mut declared) = DECLARED.lock() else {
        return;
    };
    let known = declared
        .get_or_insert_with(Default::default)
        .entry((collection.db.clone(), collection.coll.clone()))
        .or_default();
    for model in indexes {
        let options = model.options.as_ref();
        let index = DeclaredIndex {
            name: options.and_then(|o| o.name.clone()).unwrap_or_default(),
            keys: model.keys.clone(),
            unique: options.and_then(|o| o.unique).unwrap_or(false),
            expire_after: options.and_then(|o| o.expire_after),
            partial: options.and_then(|o| o.partial_filter_expression.clone()),
            sparse: options.and_then(|o| o.sparse).unwrap_or(false),
        };
        if !known.contains(&index) {
            known.push(index);
        }
    }
}

/// Every index this process declared in `database`, with its collection.
pub fn declared_in(database: &str) -> Vec<(String, DeclaredIndex)> {
    DECLARED
        .lock()
        .ok()
        .and_then(|d| {
            let d = d.as_ref()?;
            Some(
                d.iter()
                    .filter(|((db, _), _)| db == database)
                    .flat_map(|((_, c), indexes)| {
                        indexes.iter().map(move |i| (c.clone(), i.clone()))
                    })
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// The indexes of `collection` in `database` that this process declared.
pub fn declared_indexes(database: &str, collection: &str) -> Vec<DeclaredIndex> {
    DECLARED
        .lock()
        .ok()
        .and_then(|d| d.as_ref()?.get(&(database.to_owned(), collection.to_owned())).cloned())
        .unwrap_or_default()
}

/// Whether the server answers a ping.
pub async fn ping(db: &Database) -> mongodb::error::Result<()> {
    db.run_command(doc! { "ping": 1 }).await.map(|_| ())
}

/// An index: its keys in order, whether unique, and a stable name.
pub fn index(name: &str, keys: Document, unique: bool) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().name(name.to_owned()).unique(unique).build())
        .build()
}

/// A sparse index: it holds only the documents that have the field (one a document
/// carries for a while, such as a mark of work left to do).
pub fn sparse_index(name: &str, keys: Document) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().name(name.to_owned()).sparse(true).build())
        .build()
}

/// A partial index: it holds only the documents that match `filter` (equalities), such
/// as the few that carry a mark of work left to do; a query uses it only when it names
/// `filter`'s fields with the same values. (The stand-in holds every document in it.)
pub fn partial_index(name: &str, keys: Document, filter: Document) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(
            IndexOptions::builder().name(name.to_owned()).partial_filter_expression(filter).build(),
        )
        .build()
}

/// A unique index over the documents that match `filter` alone (those that have the
/// field, `{field: {$type: ...}}`): a unique key only some documents carry. (The stand-in
/// holds every document in it, and does not count missing fields as equal.)
pub fn unique_partial_index(name: &str, keys: Document, filter: Document) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(
            IndexOptions::builder()
                .name(name.to_owned())
                .unique(true)
                .partial_filter_expression(filter)
                .build(),
        )
        .build()
}

/// Creates `indexes` on `collection` if missing; idempotent: an index whose options a
/// release changed is recreated ([`replace_index`]). Reached through
/// [`Db::ensure_indexes`], which declares them and fits them to the dialect.
async fn create_indexes<T: Send + Sync>(
    collection: &Collection<T>,
    indexes: Vec<IndexModel>,
) -> mongodb::error::Result<()> {
    if indexes.is_empty() {
        return Ok(());
    }
    match collection.create_indexes(indexes.clone()).await {
        Ok(_) => Ok(()),
        Err(e) if is_index_conflict(&e) => {
            // An index of that name exists with other options (a release changed them).
            for model in indexes {
                replace_index(collection, model).await?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Drops the indexes `names` of `collection` that an earlier release created and this
/// one no longer uses (each a cost on every write); idempotent.
pub async fn retire_indexes<T: Send + Sync>(
    collection: &Collection<T>,
    names: &[&str],
) -> mongodb::error::Result<()> {
    for name in names {
        match collection.drop_index(*name).await {
            Ok(()) => {
                tracing::info!(collection = collection.name(), index = name, "retired an index")
            }
            // IndexNotFound (27), or no such collection yet (26).
            Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 27 || c.code == 26) =>
                {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// IndexOptionsConflict (85) or IndexKeySpecsConflict (86).
fn is_index_conflict(err: &mongodb::error::Error) -> bool {
    matches!(err.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 85 || c.code == 86)
}

/// Creates `model`; if an index of its name exists with other options, drops and
/// recreates it. An existing unique index is never dropped (duplicates could slip in
/// meanwhile): its conflict is returned for an operator to resolve. A non-unique one may
/// become unique (creating it fails, naming the index, if the data has duplicates).
async fn replace_index<T: Send + Sync>(
    collection: &Collection<T>,
    model: IndexModel,
) -> mongodb::error::Result<()> {
    use futures::TryStreamExt;
    match collection.create_index(model.clone()).await {
        Ok(_) => Ok(()),
        Err(e) if is_index_conflict(&e) => {
            let Some(name) = model.options.as_ref().and_then(|o| o.name.clone()) else {
                return Err(e);
            };
            // The index in the way: the one of that name, or of the same keys.
            let existing: Vec<IndexModel> = collection.list_indexes().await?.try_collect().await?;
            let Some(clash) = existing.iter().find(|i| {
                i.options.as_ref().and_then(|o| o.name.as_deref()) == Some(name.as_str())
                    || i.keys == model.keys
            }) else {
                return Err(e);
            };
            let options = clash.options.as_ref();
            if options.and_then(|o| o.unique) == Some(true) {
                return Err(e);
            }
            let Some(old_name) = options.and_then(|o| o.name.clone()) else {
                return Err(e);
            };
            tracing::warn!(collection = collection.name(), index = %old_name, new = %name, "index options changed; recreating it");
            collection.drop_index(old_name).await?;
            collection.create_index(model).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// The unique index on `sort_key` that makes list keys distinct by construction (see
/// [`insert_keyed`]): among the documents of one owner (`owner`, the field a sharded
/// collection is sharded by, which a unique index must begin with:
/// docs/adr/0002-scaling-out.md), or in the whole collection for `None` (a collection
/// that stays unsharded).
pub fn sort_key_index(owner: Option<&str>) -> IndexModel {
    match owner {
        Some(owner) => index(
            &format!("{owner}_sort_key_unique"),
            doc! { owner: 1, crate::paging::SORT_KEY: -1 },
            true,
        ),
        None => index("sort_key_unique", doc! { crate::paging::SORT_KEY: -1 }, true),
    }
}

/// The name of the unique index on `sort_key` alone, which [`sort_key_index`] with an
/// owner replaces (to retire once the new one exists).
pub const UNOWNED_SORT_KEY_INDEX: &str = "sort_key_unique";

/// Whose list a document's sort key must be unique in (see [`sort_key_index`]): the
/// owner field and the document's value of it; `None` for the whole collection.
pub type KeyOwner = Option<(&'static str, bson::oid::ObjectId)>;

/// Inserts `document`, whose sort key (reached through `sort_key`) must be unique among
/// the documents of its `owner` (a unique index, [`sort_key_index`]): when another
/// document already holds it (two replicas minting the same key in the same
/// millisecond), a fresh key is drawn and the insert tried again, so that no two listed
/// items share a key and pages never skip one. `false` when another unique index (a
/// like, a follow, a notification already there) refused it.
pub async fn insert_keyed<T: serde::Serialize + Send + Sync>(
    collection: &Collection<T>,
    document: &mut T,
    owner: KeyOwner,
    sort_key: impl Fn(&mut T) -> &mut i64,
) -> crate::Result<bool> {
    let (mut tries, mut remints) = (0, 0);
    loop {
        match crate::paging::storable(*sort_key(document)) {
            crate::paging::Storable::Yes => {}
            // Minted under a slot this process no longer holds (a fresh key is under
            // the one it holds, unless the clock went back past the moment it got it).
            crate::paging::Storable::Remint if remints < 3 => {
                remints += 1;
                *sort_key(document) = crate::paging::fresh_sort_key();
                continue;
            }
            crate::paging::Storable::Remint | crate::paging::Storable::NoSlot => {
                return Err(crate::Error::Unavailable(
                    "this replica holds no sort-key slot yet; retry".into(),
                ));
            }
        }
        match collection.insert_one(&*document).await {
            Ok(_) => return Ok(true),
            Err(e) if crate::error::is_duplicate_key(&e) => {
                let mut holder = doc! { crate::paging::SORT_KEY: *sort_key(document) };
                if let Some((field, id)) = owner {
                    holder.insert(field, equals_id(id));
                }
                let taken = collection
                    .clone_with_type::<Document>()
                    .find_one(holder)
                    .projection(doc! { "_id": 1 })
                    .await?
                    .is_some();
                tries += 1;
                if !taken || tries > 5 {
                    return Ok(false);
                }
                *sort_key(document) = crate::paging::fresh_sort_key();
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// [`insert_keyed`] into a collection whose only unique key is the sort key.
pub async fn insert_new<T: serde::Serialize + Send + Sync>(
    collection: &Collection<T>,
    document: &mut T,
    owner: KeyOwner,
    sort_key: impl Fn(&mut T) -> &mut i64,
) -> crate::Result<()> {
    if insert_keyed(collection, document, owner, sort_key).await? {
        Ok(())
    } else {
        Err(crate::Error::internal(anyhow::anyhow!(
            "no free sort key in {} after several tries",
            collection.name()
        )))
    }
}

/// [`insert_new`], once per request: when `request_key` (the value of the field
/// `request_key`, unique among the owner's documents: [`request_key_index`]) is given and
/// a document of the owner holds it already, nothing is stored and that document is
/// returned (with `projection`), the answer to a retry of the request that stored it.
pub async fn insert_per_request<T>(
    collection: &Collection<T>,
    document: &mut T,
    owner: (&'static str, bson::oid::ObjectId),
    sort_key: impl Fn(&mut T) -> &mut i64,
    request_key: Option<&str>,
    projection: Document,
) -> crate::Result<Option<T>>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync,
{
    let Some(key) = request_key else {
        insert_new(collection, document, Some(owner), sort_key).await?;
        return Ok(None);
    };
    if insert_keyed(collection, document, Some(owner), sort_key).await? {
        return Ok(None);
    }
    let earlier = collection
        .find_one(doc! { owner.0: equals_id(owner.1), "request_key": key })
        .projection(projection)
        .await?;
    earlier.map(Some).ok_or_else(|| {
        crate::Error::Unavailable(format!(
            "a request key of {} is taken by nothing found; retry",
            collection.name()
        ))
    })
}

/// The unique index that stores a request's document once among its `owner`'s (see
/// [`insert_per_request`]); documents without a request key are not in it. It replaces
/// the unique index on `request_key` alone ([`UNOWNED_REQUEST_KEY_INDEX`]).
pub fn request_key_index(owner: &str) -> IndexModel {
    unique_partial_index(
        &format!("{owner}_request_key_unique"),
        doc! { owner: 1, "request_key": 1 },
        doc! { "request_key": { "$type": "string" } },
    )
}

/// See [`request_key_index`].
pub const UNOWNED_REQUEST_KEY_INDEX: &str = "request_key_unique";

/// Inserts `document` unless a unique index already holds its key; whether it was
/// inserted. For writes that must happen once however often they are attempted.
pub async fn insert_once<T: serde::Serialize + Send + Sync>(
    collection: &Collection<T>,
    document: &T,
) -> mongodb::error::Result<bool> {
    match collection.insert_one(document).await {
        Ok(_) => Ok(true),
        Err(e) if crate::error::is_duplicate_key(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until the database answers, checking every `every`.
pub async fn wait_until_reachable(db: &Database, every: Duration) {
    while let Err(e) = ping(db).await {
        tracing::warn!(error = %e, "MongoDB is not reachable yet");
        tokio::time::sleep(every).await;
    }
}

/// The field holding the time (ms) of the event that started a document's life (a
/// follow, a like, a comment), and of the one that ended it (unfollowed, unliked,
/// deleted), for counting them as of a moment ([`count_as_of`]).
pub const STARTED_MS: &str = "started_ms";
/// See [`STARTED_MS`].
pub const ENDED_MS: &str = "ended_ms";

/// How many documents matching `filter` were alive at `as_of_ms`: started by then and not
/// ended by then, by the times of their events ([`STARTED_MS`], [`ENDED_MS`]; a document
/// alive now has no end). One count ([`Db::count`]), served by an index `{<filter fields>, ended_ms,
/// started_ms}` ([`alive_keys`]) from its keys alone: the alive have no `ended_ms`, asked
/// as `null` (which a count reads on the keys, where `$exists: false` would fetch every
/// document to tell a missing field from null), the ended since by a range. A document
/// purged meanwhile ended long before `as_of_ms`, so it is not counted whether the count
/// sees it or not.
pub async fn count_as_of<T: Send + Sync>(
    db: &Db,
    collection: &Collection<T>,
    mut filter: Document,
    as_of_ms: i64,
) -> mongodb::error::Result<i64> {
    filter.insert(STARTED_MS, doc! { "$lte": as_of_ms });
    filter.insert("$or", vec![doc! { ENDED_MS: { "$gt": as_of_ms } }, doc! { ENDED_MS: null }]);
    let alive = db.count(collection, filter).await?;
    // Tests hold a recount here, where a purge would have fallen between two counts.
    if let Some(ms) = injected_pause_ms() {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(alive)
}

/// The keys of the index that serves [`count_as_of`] on `owner` (equality, then the end
/// that tells the alive apart, then the start).
pub fn alive_keys(owner: &str) -> Document {
    doc! { owner: 1, ENDED_MS: 1, STARTED_MS: 1 }
}

/// How long tests hold a count (`kit::count_as_of`, `return(<ms>)`).
fn injected_pause_ms() -> Option<u64> {
    fail::fail_point!("kit::count_as_of", |ms: Option<String>| {
        crate::faults::record("kit::count_as_of");
        ms.and_then(|ms| ms.parse().ok())
    });
    None
}

/// One page of a list: the documents of `collection` matching `filter` after the
/// request's position, in `order`, at most one more than the page holds (so that
/// [`crate::paging::PageRequest::finish`] can tell whether another follows), with
/// `projection` (empty: whole documents). Served by an index `{<filter fields>,
/// sort_key}`.
pub async fn page<T>(
    collection: &Collection<T>,
    order: crate::paging::Order,
    filter: Document,
    page: &crate::paging::PageRequest,
    projection: Document,
) -> mongodb::error::Result<Vec<T>>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    use futures::TryStreamExt;
    let mut find =
        collection.find(order.filter(filter, page)).sort(order.sort()).limit(page.fetch_limit());
    if !projection.is_empty() {
        find = find.projection(projection);
    }
    find.await?.try_collect().await
}

/// Up to `limit` documents matching `filter` (with `projection`), after the sort key
/// `after`, in sort-key order: a walk over everything of one owner in pages, for exports.
/// Served by the owner's list index (`{<filter fields>, sort_key}`); the sort key is
/// unique in every collection that has one ([`sort_key_index`]).
pub async fn page_by_key<T>(
    collection: &Collection<T>,
    mut filter: Document,
    projection: Document,
    after: Option<i64>,
    limit: i64,
) -> mongodb::error::Result<Vec<T>>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    use futures::TryStreamExt;
    if let Some(key) = after {
        filter.insert(crate::paging::SORT_KEY, doc! { "$gt": key });
    }
    collection
        .find(filter)
        .projection(projection)
        .sort(doc! { crate::paging::SORT_KEY: 1 })
        .limit(limit)
        .await?
        .try_collect()
        .await
}

/// The ids of the documents matching `filter` (at most `limit` of them), in no
/// particular order.
pub async fn ids<T: Send + Sync>(
    collection: &Collection<T>,
    filter: Document,
    limit: Option<i64>,
) -> mongodb::error::Result<Vec<bson::oid::ObjectId>> {
    id_query(collection, filter, None, limit).await
}

/// The ids of the documents matching `filter`, in `sort` order, at most `limit`.
async fn id_query<T: Send + Sync>(
    collection: &Collection<T>,
    filter: Document,
    sort: Option<Document>,
    limit: Option<i64>,
) -> mongodb::error::Result<Vec<bson::oid::ObjectId>> {
    use futures::TryStreamExt;
    let collection = collection.clone_with_type::<Document>();
    let mut find = collection.find(filter).projection(doc! { "_id": 1 });
    if let Some(sort) = sort {
        find = find.sort(sort);
    }
    if let Some(limit) = limit {
        find = find.limit(limit);
    }
    let rows: Vec<Document> = find.await?.try_collect().await?;
    Ok(rows.iter().filter_map(|r| r.get_object_id("_id").ok()).collect())
}

/// Up to `limit` ids of documents matching `filter`, after `after` in id order: a walk
/// over a whole collection in batches (for operators' recompute commands).
pub async fn ids_after<T: Send + Sync>(
    collection: &Collection<T>,
    mut filter: Document,
    after: Option<bson::oid::ObjectId>,
    limit: i64,
) -> mongodb::error::Result<Vec<bson::oid::ObjectId>> {
    if let Some(id) = after {
        filter.insert("_id", doc! { "$gt": id });
    }
    id_query(collection, filter, Some(doc! { "_id": 1 }), Some(limit)).await
}

impl Db {
    /// [`Db::ensure_indexes`] for a collection whose one index is a TTL index (see
    /// [`ttl_index`]): its documents only expire.
    pub async fn ensure_expiry<T: Send + Sync>(
        &self,
        collection: &Collection<T>,
        name: &str,
        field: &str,
        after: std::time::Duration,
    ) -> mongodb::error::Result<()> {
        self.ensure_indexes(collection, vec![ttl_index(name, field, after)]).await
    }
}

/// A TTL index: MongoDB deletes a document `after` the date in `field` (documents
/// without the field stay). Used to purge ended and deleted documents once their
/// events are long published.
pub fn ttl_index(name: &str, field: &str, after: std::time::Duration) -> IndexModel {
    IndexModel::builder()
        .keys(doc! { field: 1 })
        .options(IndexOptions::builder().name(name.to_owned()).expire_after(after).build())
        .build()
}
