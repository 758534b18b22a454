//! The query-shape checker, on in every test that starts a service: MongoDB's
//! `notablescan` where MongoDB cannot run. The stand-in the tests run against scans
//! every table, so a query no index serves costs nothing here and everything on MongoDB
//! at 100,000 documents; this module makes such a query fail the test that sent it.
//!
//! Every command the services send (the driver's command monitoring: find, aggregate,
//! count, distinct, update, delete, findAndModify) is reduced to its *shape*: the filter's
//! fields with the kind of predicate on each (`=` for equality or a `$in` of at most 200
//! values, `range`, `in>200`, or another operator), and the sort. Each shape is checked
//! against the indexes its collection declares (`social_kit::mongo::declared_indexes`)
//! by the planner's rules:
//!
//! - an equality on every field of a unique index (or on `_id`) is a point lookup;
//! - otherwise one index must hold every field the filter names (nothing is fetched only
//!   to be thrown away), start with a field the filter bounds or the sort walks, and give
//!   the sort: after the equality fields come the sort's fields in order, all in the
//!   index's direction or all against it (a range or a `$in` over 200 values before
//!   them leaves an in-memory sort);
//! - each branch of an `$or` must be served on its own.
//!
//! A shape that breaks a rule by design is exempted in [`EXEMPT`], with its reason.
//! When `QUERY_SHAPES_DIR` is set, every shape seen and what serves it is appended to a
//! file there, from which `scripts/queries` writes and checks `docs/QUERIES.md`.

use std::{
    collections::BTreeMap,
    fmt,
    io::Write,
    sync::{Mutex, Once},
};

use bson::{Bson, Document};
use social_kit::mongo::DeclaredIndex;

/// Shapes that no index serves on purpose: (collection, shape, why).
pub const EXEMPT: &[(&str, &str, &str)] = &[
    (
        "notifications",
        "find {group_key: $exists}",
        "`social-notification group-existing`, an operator's one-time migration, walks the \
     notifications stored before groups existed once; an index on `group_key` for it \
     would cost every insert for ever",
    ),
    (
        "pulled_authors",
        "find {}",
        "bounded by design: the authors with more followers than `HOME_FANOUT_MAX_FOLLOWERS` \
     (10,000: a few per hundred thousand accounts), read whole by each post process every \
     30 s (`services/post/src/timelines.rs`)",
    ),
    ("users", "find {username_lower: =}", LEGACY_NAMES),
    ("users", "find {email: =}", LEGACY_NAMES),
];

/// The collections sharded once the system outgrows one replica set, each by its shard
/// key: (collection, field, hashed) (docs/adr/0002-scaling-out.md). The others stay
/// unsharded. A unique index of a sharded collection must begin with its shard key
/// (none but `_id`'s for a hashed one): every test checks that of the indexes declared,
/// and docs/QUERIES.md says of each query whether it would reach one shard or all.
pub const SHARD_KEYS: &[(&str, &str, bool)] = &[
    ("users", "_id", true),
    ("usernames", "_id", true),
    ("emails", "_id", true),
    ("posts", "user_id", false),
    ("comments", "post_id", false),
    ("likes", "user_id", false),
    ("followers", "follower_id", false),
    ("notifications", "user_id", false),
    ("notification_groups", "user_id", false),
];

/// Whether `shape` would reach one shard (an equality on the shard key), all of them,
/// or stays on the collection's one (unsharded).
fn targeting(shape: &Shape) -> &'static str {
    let Some((_, key, _)) = SHARD_KEYS.iter().find(|(c, _, _)| *c == shape.collection) else {
        return "unsharded";
    };
    let on_key = |fields: &Fields| fields.get(*key) == Some(&Predicate::Equal);
    if on_key(&shape.fields) || (!shape.or.is_empty() && shape.or.iter().all(on_key)) {
        "one shard"
    } else {
        "every shard"
    }
}

/// The unique indexes declared in `database` that would keep their collection from
/// being sharded by its key, described.
fn unshardable(database: &str) -> Vec<String> {
    social_kit::mongo::declared_in(database)
        .into_iter()
        .filter(|(_, index)| index.unique)
        .filter_map(|(collection, index)| {
            let (_, key, hashed) = SHARD_KEYS.iter().find(|(c, _, _)| *c == collection)?;
            let first = index.keys.keys().next().map(String::as_str);
            if !hashed && first == Some(*key) {
                return None;
            }
            Some(format!(
                "{collection}: unique index `{}` {} does not begin with the shard key `{key}`{} \
                 (docs/adr/0002-scaling-out.md)",
                index.name,
                index.keys,
                if *hashed { " (hashed: no unique index but `_id`'s)" } else { "" },
            ))
        })
        .collect()
}

const LEGACY_NAMES: &str = "accounts stored before usernames and emails had reservations \
    (services/user/src/names.rs) are looked up by the unique indexes that release made, hinted, \
    until `social-user reserve-names` retires them; this release declares neither";

/// The predicate a filter puts on one field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Predicate {
    /// A value, `$eq`, or `$in` over at most 200 values: index bounds of points.
    Equal,
    /// `$gt`, `$gte`, `$lt`, `$lte`.
    Range,
    /// `$in` over more than 200 values: bounds, but no merge of sorted runs.
    ManyValues,
    /// Anything else (`$exists`, `$nin`, `$ne`, `$elemMatch`, ...): checked on the key.
    Other(String),
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Equal => f.write_str("="),
            Self::Range => f.write_str("range"),
            Self::ManyValues => f.write_str("in>200"),
            Self::Other(ops) => f.write_str(ops),
        }
    }
}

type Fields = BTreeMap<String, Predicate>;

/// What a command asks of its collection, as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Shape {
    database: String,
    collection: String,
    command: String,
    fields: Fields,
    /// The branches of a top-level `$or`, if any.
    or: Vec<Fields>,
    sort: Vec<(String, i32)>,
}

fn write_fields(f: &mut fmt::Formatter<'_>, fields: &Fields) -> fmt::Result {
    f.write_str("{")?;
    for (i, (field, p)) in fields.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{field}: {p}")?;
    }
    f.write_str("}")
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.command)?;
        write_fields(f, &self.fields)?;
        if !self.or.is_empty() {
            f.write_str(" $or [")?;
            for (i, branch) in self.or.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_fields(f, branch)?;
            }
            f.write_str("]")?;
        }
        if !self.sort.is_empty() {
            f.write_str(" sort {")?;
            for (i, (field, direction)) in self.sort.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{field}: {direction}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

fn predicate(value: &Bson) -> Predicate {
    let Bson::Document(ops) = value else {
        return Predicate::Equal;
    };
    if !ops.keys().any(|k| k.starts_with('$')) {
        return Predicate::Equal; // a whole sub-document
    }
    let names: Vec<&str> = ops.keys().map(String::as_str).collect();
    let range = |k: &str| matches!(k, "$gt" | "$gte" | "$lt" | "$lte");
    if names.iter().all(|k| range(k)) {
        return Predicate::Range;
    }
    match names.as_slice() {
        ["$eq"] => Predicate::Equal,
        ["$in"] => match ops.get_array("$in") {
            Ok(values) if values.len() > 200 => Predicate::ManyValues,
            _ => Predicate::Equal,
        },
        _ => Predicate::Other(names.join("+")),
    }
}

/// Keeps the most selective predicate of a field named twice (through `$and`).
fn merge(into: &mut Fields, field: String, p: Predicate) {
    match into.get(&field) {
        Some(existing) if *existing <= p => {}
        _ => {
            into.insert(field, p);
        }
    }
}

/// The fields and `$or` branches of `filter`.
fn parse_filter(filter: &Document) -> (Fields, Vec<Fields>) {
    let (mut fields, mut or) = (Fields::new(), Vec::new());
    for (key, value) in filter {
        match key.as_str() {
            "$comment" => {}
            "$and" => {
                for part in value.as_array().into_iter().flatten() {
                    if let Bson::Document(part) = part {
                        let (more, branches) = parse_filter(part);
                        for (field, p) in more {
                            merge(&mut fields, field, p);
                        }
                        if !or.is_empty() && !branches.is_empty() {
                            merge(&mut fields, "$or".into(), Predicate::Other("$or+$or".into()));
                        }
                        or.extend(branches);
                    }
                }
            }
            "$or" => {
                // Several `$or`s (through `$and`) would be a product of their branches,
                // and an `$or` within a branch one more level: neither is read here, so
                // the shape names them and no index serves it (see [`serves`]).
                if !or.is_empty() {
                    merge(&mut fields, "$or".into(), Predicate::Other("$or+$or".into()));
                }
                for branch in value.as_array().into_iter().flatten() {
                    if let Bson::Document(branch) = branch {
                        let (mut branch, nested) = parse_filter(branch);
                        if !nested.is_empty() {
                            merge(&mut branch, "$or".into(), Predicate::Other("$or".into()));
                        }
                        or.push(branch);
                    }
                }
            }
            other if other.starts_with('$') => {
                merge(&mut fields, other.to_owned(), Predicate::Other(other.into()));
            }
            field => merge(&mut fields, field.to_owned(), predicate(value)),
        }
    }
    (fields, or)
}

fn sort_of(sort: Option<&Bson>) -> Vec<(String, i32)> {
    let Some(Bson::Document(sort)) = sort else {
        return Vec::new();
    };
    sort.iter()
        .map(|(field, direction)| {
            let d = match direction {
                Bson::Int32(n) => i64::from(*n),
                Bson::Int64(n) => *n,
                Bson::Double(n) => *n as i64,
                _ => 1,
            };
            (field.clone(), if d < 0 { -1 } else { 1 })
        })
        .collect()
}

/// The shapes of one command (several for an update or delete of several statements).
fn shapes(database: &str, name: &str, command: &Document) -> Vec<Shape> {
    let shape = |collection: &str, filter: Option<&Document>, sort: Option<&Bson>| {
        let (fields, or) = filter.map(parse_filter).unwrap_or_default();
        Shape {
            database: database.to_owned(),
            collection: collection.to_owned(),
            command: name.to_owned(),
            fields,
            or,
            sort: sort_of(sort),
        }
    };
    let collection = |key: &str| command.get_str(key).ok();
    match name {
        "find" => collection("find")
            .map(|c| shape(c, command.get_document("filter").ok(), command.get("sort")))
            .into_iter()
            .collect(),
        "count" => collection("count")
            .map(|c| shape(c, command.get_document("query").ok(), None))
            .into_iter()
            .collect(),
        "distinct" => collection("distinct")
            .map(|c| shape(c, command.get_document("query").ok(), None))
            .into_iter()
            .collect(),
        "findAndModify" | "findandmodify" => collection(name)
            .map(|c| shape(c, command.get_document("query").ok(), command.get("sort")))
            .into_iter()
            .collect(),
        "aggregate" => {
            let Some(c) = collection("aggregate") else {
                return Vec::new();
            };
            let stages: Vec<&Document> = command
                .get_array("pipeline")
                .into_iter()
                .flatten()
                .filter_map(Bson::as_document)
                .collect();
            let filter = stages.first().and_then(|s| s.get_document("$match").ok());
            let sort = stages.get(usize::from(filter.is_some())).and_then(|s| s.get("$sort"));
            vec![shape(c, filter, sort)]
        }
        "update" | "delete" => {
            let Some(c) = collection(name) else {
                return Vec::new();
            };
            let statements = if name == "update" { "updates" } else { "deletes" };
            command
                .get_array(statements)
                .into_iter()
                .flatten()
                .filter_map(Bson::as_document)
                .map(|s| shape(c, s.get_document("q").ok(), None))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// An index's keys in order, with their directions.
fn keys(index: &DeclaredIndex) -> Vec<(String, i32)> {
    sort_of(Some(&Bson::Document(index.keys.clone())))
}

/// Whether `index` serves a query on `fields` sorted by `sort` (the module's rules).
fn serves(index: &DeclaredIndex, fields: &Fields, sort: &[(String, i32)]) -> bool {
    let keys = keys(index);
    if keys.is_empty() {
        return false;
    }
    let equal = |f: &str| fields.get(f) == Some(&Predicate::Equal);
    // A partial index holds only the documents its filter names: the query must name
    // each of its fields by equality (the values are not compared here).
    if let Some(partial) = &index.partial
        && !partial.keys().all(|f| equal(f))
    {
        return false;
    }
    // A sparse index lacks the documents without its fields: the query must exclude
    // them, by an equality (to a value other than null), a `$in` or a range on one.
    if index.sparse
        && !keys.iter().any(|(k, _)| {
            matches!(
                fields.get(k),
                Some(Predicate::Equal | Predicate::Range | Predicate::ManyValues)
            )
        })
    {
        return false;
    }
    if index.unique && !keys.is_empty() && keys.iter().all(|(k, _)| equal(k)) {
        return true; // a point lookup
    }
    // Another operator on a key (`$exists`, which cannot tell a missing field from
    // null on the keys; `$elemMatch`, `$regex`, ...) is checked on the fetched
    // documents; only `$ne` and `$nin` are bounds.
    let on_keys = |p: &Predicate| match p {
        Predicate::Other(op) => op == "$ne" || op == "$nin",
        _ => true,
    };
    if keys.iter().any(|(k, _)| fields.get(k).is_some_and(|p| !on_keys(p))) {
        return false;
    }
    // A field the index lacks is read from the fetched documents: some may be thrown
    // away. Allowed only for `$nin`/`$ne` on `_id`, which throws away no more documents
    // than it names.
    let fetched_only = |f: &String, p: &Predicate| {
        f == "_id" && matches!(p, Predicate::Other(op) if op == "$nin" || op == "$ne")
    };
    // (A field the partial filter names by equality is true of every document in it.)
    let in_partial = |f: &String| index.partial.as_ref().is_some_and(|p| p.contains_key(f));
    if fields
        .iter()
        .any(|(f, p)| !keys.iter().any(|(k, _)| k == f) && !fetched_only(f, p) && !in_partial(f))
    {
        return false; // documents fetched only to be discarded
    }
    // The bounds: the longest prefix of the index whose fields the filter holds equal
    // (points); every equality must be in it, or the scan walks keys it could skip.
    let points = |f: &str| matches!(fields.get(f), Some(Predicate::Equal | Predicate::ManyValues));
    let prefix = keys.iter().take_while(|(k, _)| points(k)).count();
    if fields
        .keys()
        .any(|f| points(f) && !in_partial(f) && !keys[..prefix].iter().any(|(k, _)| k == f))
    {
        return false; // an equality checked on keys the bounds did not exclude
    }
    // The sort: the fields it walks come right after that prefix, all in the index's
    // direction or all against it; a `$in` over 200 values in the prefix is not merged.
    let walked: Vec<&(String, i32)> = sort.iter().filter(|(f, _)| !equal(f)).collect();
    if !walked.is_empty() {
        let merged = keys[..prefix].iter().all(|(k, _)| fields.get(k) == Some(&Predicate::Equal));
        let follows = walked.len() <= keys.len() - prefix
            && walked.iter().zip(&keys[prefix..]).all(|(s, k)| s.0 == k.0);
        if !merged || !follows {
            return false; // an in-memory sort
        }
        let same = |(s, k): (&&(String, i32), &(String, i32))| s.1 == k.1;
        let pairs = || walked.iter().zip(&keys[prefix..]);
        if !(pairs().all(same) || pairs().all(|p| !same(p))) {
            return false;
        }
    }
    // Something bounds the scan: the prefix, a range on the next field, or the sort
    // walking the index from its start (with a limit).
    prefix > 0
        || matches!(fields.get(&keys[0].0), Some(Predicate::Range))
        || walked.first().is_some_and(|(f, _)| *f == keys[0].0)
}

/// The verdict on one shape: the indexes that serve it, or why none does.
fn verdict(shape: &Shape) -> Result<String, String> {
    let rendered = shape.to_string();
    if let Some((_, _, why)) =
        EXEMPT.iter().find(|(c, s, _)| *c == shape.collection && *s == rendered)
    {
        return Ok(format!("exempt: {why}"));
    }
    if shape.command == "count" && shape.fields.is_empty() && shape.or.is_empty() {
        return Ok("collection metadata".into());
    }
    let mut indexes = social_kit::mongo::declared_indexes(&shape.database, &shape.collection);
    indexes.push(DeclaredIndex {
        name: "_id_".into(),
        keys: bson::doc! { "_id": 1 },
        unique: true,
        expire_after: None,
        partial: None,
        sparse: false,
    });
    let branches: Vec<Fields> = if shape.or.is_empty() {
        vec![shape.fields.clone()]
    } else {
        shape
            .or
            .iter()
            .map(|branch| {
                let mut fields = shape.fields.clone();
                for (f, p) in branch {
                    merge(&mut fields, f.clone(), p.clone());
                }
                fields
            })
            .collect()
    };
    let mut served_by = Vec::new();
    for fields in &branches {
        match indexes.iter().find(|i| serves(i, fields, &shape.sort)) {
            Some(index) => served_by.push(index.name.clone()),
            None => {
                let nearest = indexes
                    .iter()
                    .max_by_key(|i| {
                        let keys = keys(i);
                        keys.iter().take_while(|(k, _)| fields.contains_key(k)).count()
                    })
                    .map(|i| format!("{} {}", i.name, i.keys))
                    .unwrap_or_default();
                return Err(format!(
                    "{}: `{rendered}` is served by no index (nearest: {nearest})",
                    shape.collection
                ));
            }
        }
    }
    served_by.dedup();
    Ok(served_by.join(", "))
}

/// Shapes seen, and whether each was checked yet.
static SEEN: Mutex<BTreeMap<Shape, bool>> = Mutex::new(BTreeMap::new());
/// Commands sent, by collection and shape, since the process started.
static SENT: Mutex<BTreeMap<(String, String), u64>> = Mutex::new(BTreeMap::new());

/// How many commands this process has sent to collections named `collection` (in any
/// database) whose shape (as docs/QUERIES.md writes it) contains `shape`: a test's proof
/// that a read did not reach the database (background work, such as a relay's scan,
/// has other shapes).
pub fn sent(collection: &str, shape: &str) -> u64 {
    SENT.lock()
        .map(|sent| {
            sent.iter()
                .filter(|((c, s), _)| c == collection && s.contains(shape))
                .map(|(_, n)| *n)
                .sum()
        })
        .unwrap_or(0)
}

fn record(event: &mongodb::event::command::CommandStartedEvent) {
    let found = shapes(&event.db, &event.command_name, &event.command);
    if found.is_empty() {
        return;
    }
    if let Ok(mut sent) = SENT.lock() {
        for shape in &found {
            let key = (shape.collection.clone(), shape.to_string());
            *sent.entry(key).or_default() += 1;
        }
    }
    if let Ok(mut seen) = SEEN.lock() {
        for shape in found {
            seen.entry(shape).or_insert(false);
        }
    }
}

/// Turns the checker on for every service this process starts from now on.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        social_kit::mongo::monitor_commands(mongodb::event::EventHandler::callback(|event| {
            if let mongodb::event::command::CommandEvent::Started(started) = event {
                record(&started);
            }
        }));
    });
}

/// Checks the shapes seen since the last call: the ones no index serves, described, and
/// the unique indexes of their databases that a sharded collection could not have.
/// Each shape seen is written to `QUERY_SHAPES_DIR`, if set, with its verdict and how
/// many shards it would reach.
pub fn unserved() -> Vec<String> {
    let fresh: Vec<Shape> = match SEEN.lock() {
        Ok(mut seen) => seen
            .iter_mut()
            .filter(|(_, checked)| !**checked)
            .map(|(shape, checked)| {
                *checked = true;
                shape.clone()
            })
            .collect(),
        Err(_) => return Vec::new(),
    };
    let mut lines = String::new();
    let mut unserved = Vec::new();
    let mut databases = std::collections::BTreeSet::new();
    for shape in fresh {
        let served = match verdict(&shape) {
            Ok(by) => by,
            Err(why) => {
                unserved.push(why);
                "UNSERVED".into()
            }
        };
        let sharded = targeting(&shape);
        lines.push_str(&format!("{}\t{shape}\t{served}\t{sharded}\n", shape.collection));
        databases.insert(shape.database.clone());
    }
    for database in databases {
        unserved.extend(unshardable(&database));
    }
    if let Some(dir) = social_kit::config::optional("QUERY_SHAPES_DIR")
        && !lines.is_empty()
    {
        let path = std::path::Path::new(&dir).join(format!("{}.tsv", std::process::id()));
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?
                .write_all(lines.as_bytes())
        });
        if let Err(e) = written {
            eprintln!("cannot record query shapes in {dir}: {e}");
        }
    }
    unserved.sort();
    unserved.dedup();
    unserved
}

/// Fails the test (unless it fails already) when a query it sent is served by no index.
pub fn assert_served() {
    if std::thread::panicking() {
        return;
    }
    let unserved = unserved();
    assert!(
        unserved.is_empty(),
        "queries served by no index, or indexes that keep a collection from being sharded \
         (see crates/testkit/src/queries.rs):\n  {}",
        unserved.join("\n  ")
    );
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn index(keys: Document, unique: bool) -> DeclaredIndex {
        DeclaredIndex {
            name: "i".into(),
            keys,
            unique,
            expire_after: None,
            partial: None,
            sparse: false,
        }
    }

    fn shape(filter: Document, sort: Document) -> (Fields, Vec<(String, i32)>) {
        (parse_filter(&filter).0, sort_of(Some(&Bson::Document(sort))))
    }

    #[test]
    fn the_planner_rules() {
        let by_user = index(doc! { "user_id": 1, "sort_key": -1 }, false);
        let (f, s) = shape(doc! { "user_id": 1 }, doc! { "sort_key": -1 });
        assert!(serves(&by_user, &f, &s), "equality then the sort");
        let (f, s) = shape(doc! { "user_id": 1 }, doc! { "sort_key": 1 });
        assert!(serves(&by_user, &f, &s), "the sort walked backwards");
        let (f, s) = shape(
            doc! { "user_id": { "$in": [1, 2] }, "sort_key": { "$lt": 5 } },
            doc! { "sort_key": -1 },
        );
        assert!(serves(&by_user, &f, &s), "a small $in merges sorted runs");
        let many: Vec<i32> = (0..201).collect();
        let (f, s) = shape(doc! { "user_id": { "$in": many } }, doc! { "sort_key": -1 });
        assert!(!serves(&by_user, &f, &s), "a $in over 200 values sorts in memory");
        let (f, s) = shape(doc! { "user_id": 1, "state": "active" }, doc! {});
        assert!(!serves(&by_user, &f, &s), "state is fetched and discarded");
        let (f, s) = shape(doc! { "user_id": 1 }, doc! { "_id": 1 });
        assert!(!serves(&by_user, &f, &s), "a sort no index gives");
        let (f, s) = shape(doc! { "sort_key": { "$gt": 1 } }, doc! {});
        assert!(!serves(&by_user, &f, &s), "the index's first field unbounded");
        let unique = index(doc! { "token": 1 }, true);
        let (f, s) = shape(doc! { "token": "t", "state": "active" }, doc! {});
        assert!(serves(&unique, &f, &s), "a point lookup");
        let walk_all = index(doc! { "state": 1, "sort_key": -1, "user_id": 1 }, false);
        let (f, s) = shape(doc! { "user_id": 1, "state": "a" }, doc! { "sort_key": -1 });
        assert!(!serves(&walk_all, &f, &s), "an equality after the sort");
        let range_first = index(doc! { "user_id": 1, "at": 1, "sort_key": -1 }, false);
        let (f, s) = shape(doc! { "user_id": 1, "at": { "$gt": 1 } }, doc! { "sort_key": -1 });
        assert!(!serves(&range_first, &f, &s), "a range before the sort");
    }

    #[test]
    fn sparse_and_partial_indexes_and_operators_read_from_the_documents() {
        let lifetime = index(doc! { "post_id": 1, "started_ms": 1, "ended_ms": 1 }, false);
        let (f, s) = shape(
            doc! { "post_id": 1, "started_ms": { "$lte": 5 }, "ended_ms": { "$exists": false } },
            doc! {},
        );
        assert!(!serves(&lifetime, &f, &s), "$exists: a missing field and null share a key");
        let (f, s) = shape(
            doc! { "post_id": 1, "started_ms": { "$lte": 5 }, "ended_ms": { "$ne": 3 } },
            doc! {},
        );
        assert!(serves(&lifetime, &f, &s), "$ne is bounds");
        let mut sparse = index(doc! { "ended_ms": 1 }, false);
        sparse.sparse = true;
        let (f, s) = shape(doc! { "ended_ms": { "$gt": 5 } }, doc! {});
        assert!(serves(&sparse, &f, &s), "a range excludes the missing");
        let (f, s) = shape(doc! {}, doc! { "ended_ms": 1 });
        assert!(!serves(&sparse, &f, &s), "the documents without the field are not in it");
        let mut partial = index(doc! { "at": 1 }, false);
        partial.partial = Some(doc! { "pending": 0 });
        let (f, s) = shape(doc! { "pending": 0, "at": { "$lt": 5 } }, doc! {});
        assert!(serves(&partial, &f, &s), "its filter named");
        let (f, s) = shape(doc! { "at": { "$lt": 5 } }, doc! {});
        assert!(!serves(&partial, &f, &s), "documents outside it wanted");
    }

    #[test]
    fn or_within_or_or_twice_names_them() {
        let command = doc! {
            "find": "likes",
            "filter": { "$and": [
                { "$or": [{ "a": 1 }, { "b": 1 }] },
                { "$or": [{ "c": 1 }, { "d": 1 }] },
            ] },
        };
        let found = shapes("db", "find", &command);
        assert!(found[0].fields.contains_key("$or"), "{}", found[0]);
        let command = doc! {
            "find": "likes",
            "filter": { "$or": [{ "a": 1, "$or": [{ "c": 1 }, { "d": 1 }] }, { "b": 1 }] },
        };
        let found = shapes("db", "find", &command);
        assert!(found[0].or[0].contains_key("$or"), "{}", found[0]);
    }

    #[test]
    fn shapes_read_as_the_planner_sees_them() {
        let command = doc! {
            "find": "likes",
            "filter": { "user_id": { "$in": [1] }, "state": "active", "_id": { "$gt": 3 } },
            "sort": { "_id": 1 },
        };
        let found = shapes("db", "find", &command);
        assert_eq!(found[0].to_string(), "find {_id: range, state: =, user_id: =} sort {_id: 1}");
        let command = doc! {
            "update": "users",
            "updates": [{ "q": { "_id": 1, "applied": { "$nin": ["e"] } }, "u": {} }],
        };
        assert_eq!(
            shapes("db", "update", &command)[0].to_string(),
            "update {_id: =, applied: $nin}"
        );
    }
}
