//! Usernames and emails, each held by one account: a document per value, keyed by the
//! value (`usernames`, `emails`), so that uniqueness needs no unique index on `users`
//! and `users` can be sharded by `_id` (a sharded collection enforces uniqueness only
//! for its shard key; docs/adr/0002-scaling-out.md).
//!
//! A registration reserves its username, then its email (an insert keyed by the value,
//! naming the account), stores the account, then confirms both reservations. A
//! reservation is held while its account exists and holds the value (a deleted account
//! keeps its username through its quarantine, its email not at all), or, not yet
//! confirmed and its account not stored, for [`IN_FLIGHT`] after it was made (a
//! registration under way). Anything else is free: a registration that stopped before
//! storing its account, an account purged after its quarantine, an email a deletion
//! gave up. The next claimant takes a free reservation over with an update conditional
//! on what it saw, and a registration whose reservation was taken over before it
//! confirmed undoes its account: the confirmation decides, not the clock, so a paused
//! registration can lose its name but never share it.
//!
//! Accounts stored before reservations existed (a `users` collection that still has the
//! unique indexes on `username_lower` and `email` of that release) are found through
//! those indexes when a value has no reservation, and the indexes still refuse a second
//! holder, until `social-user reserve-names` gives each of them its reservations and
//! retires the indexes ([`Names::reserve_existing`]). Indexes are known by their keys,
//! not their names (which the stand-in does not keep).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use std::time::Duration;

use bson::{Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use social_kit::time::{ms as millis, now_ms};
use social_kit::{Result, error::is_duplicate_key, mongo};

/// How long an unconfirmed reservation whose account is not stored yet stays held: a
/// registration takes milliseconds between its reservation and its confirmation.
pub const IN_FLIGHT: Duration = Duration::from_secs(60);

/// The unique indexes on `users` that reservations replace, by the field each indexed.
pub const LEGACY_INDEXES: [&str; 2] = ["username_lower", "email"];

/// Which value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The lowercase username (`username_lower`).
    Username,
    /// The (lowercase) email.
    Email,
}

impl Kind {
    /// The field of `users` holding the value.
    fn field(self) -> &'static str {
        match self {
            Kind::Username => "username_lower",
            Kind::Email => "email",
        }
    }
}

/// One value's reservation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reservation {
    #[serde(rename = "_id")]
    value: String,
    /// The account it is for.
    user_id: ObjectId,
    /// When it was made (ms).
    at_ms: i64,
    /// When the account was stored with it (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    confirmed_ms: Option<i64>,
    /// The registration's idempotency key, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_key: Option<String>,
}

/// Who holds a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A stored account (live, or deleted and in its quarantine).
    Account(ObjectId),
    /// A registration under way, with its idempotency key.
    InFlight(Option<String>),
}

/// What [`Names::reserve`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The value is reserved for the account.
    Ours,
    /// Somebody else holds it.
    Held(Holder),
}

/// The two reservation collections. Cheap to clone.
#[derive(Clone)]
pub struct Names {
    usernames: Collection<Reservation>,
    emails: Collection<Reservation>,
    users: Collection<Document>,
    /// Whether accounts may lack reservations (the legacy indexes were there at start).
    legacy: Arc<AtomicBool>,
}

impl Names {
    pub fn new(db: &mongo::Db, users: &str) -> Self {
        Self {
            usernames: db.collection("usernames"),
            emails: db.collection("emails"),
            users: db.collection(users),
            legacy: Arc::default(),
        }
    }

    /// The fields of `users` that still have their pre-reservation unique index.
    async fn legacy_indexes(&self) -> anyhow::Result<Vec<&'static str>> {
        let indexes: Vec<mongodb::IndexModel> = match self.users.list_indexes().await {
            Ok(cursor) => cursor.try_collect().await?,
            // NamespaceNotFound: no `users` yet.
            Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 26) => {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        Ok(LEGACY_INDEXES
            .into_iter()
            .filter(|field| {
                indexes.iter().any(|i| {
                    i.keys == doc! { *field: 1 }
                        && i.options.as_ref().and_then(|o| o.unique) == Some(true)
                })
            })
            .collect())
    }

    /// Learns whether accounts stored before reservations may lack them.
    pub async fn init(&self) -> anyhow::Result<()> {
        let legacy = !self.legacy_indexes().await?.is_empty();
        self.legacy.store(legacy, Ordering::Relaxed);
        if legacy {
            tracing::warn!(
                "users has its pre-reservation unique indexes: run `social-user reserve-names` \
                 once every user replica runs this release"
            );
        }
        Ok(())
    }

    fn of(&self, kind: Kind) -> &Collection<Reservation> {
        match kind {
            Kind::Username => &self.usernames,
            Kind::Email => &self.emails,
        }
    }

    /// The account a reservation names, if it holds `value` or (not yet stored) may
    /// still: `Free` otherwise, with the filter that takes the reservation over only as
    /// it was seen.
    async fn standing(&self, kind: Kind, r: &Reservation) -> Result<Standing> {
        let owner = self
            .users
            .find_one(doc! { "_id": r.user_id })
            .projection(doc! { kind.field(): 1 })
            .await?;
        let seen = doc! { "_id": &r.value, "user_id": mongo::equals_id(r.user_id) };
        Ok(match owner {
            Some(account) if account.get_str(kind.field()).ok() == Some(r.value.as_str()) => {
                Standing::Held(Holder::Account(r.user_id))
            }
            // The account gave the value up (a deleted account's email) and never takes
            // it back, or was stored and is gone for good (ids are never reused).
            Some(_) => Standing::Free(seen),
            None if r.confirmed_ms.is_some() => Standing::Free(seen),
            None if now_ms().saturating_sub(r.at_ms) < millis(IN_FLIGHT) => {
                Standing::Held(Holder::InFlight(r.request_key.clone()))
            }
            // A registration that stopped before storing its account: free unless it
            // confirms (stores its account) first.
            None => {
                let mut unconfirmed = seen;
                unconfirmed.insert("confirmed_ms", doc! { "$exists": false });
                Standing::Free(unconfirmed)
            }
        })
    }

    /// Who holds `value`, if anybody.
    pub async fn holder(&self, kind: Kind, value: &str) -> Result<Option<Holder>> {
        if let Some(r) = self.of(kind).find_one(doc! { "_id": value }).await?
            && let Standing::Held(h) = self.standing(kind, &r).await?
        {
            return Ok(Some(h));
        }
        Ok(self
            .legacy_holders(kind, &[value.to_owned()])
            .await?
            .into_iter()
            .next()
            .map(|(_, id)| Holder::Account(id)))
    }

    /// Reserves `value` for account `me` (made by a registration sending `key`), taking
    /// a free reservation over; `Ours` again for a reservation `me` already has.
    pub async fn reserve(
        &self,
        kind: Kind,
        value: &str,
        me: ObjectId,
        key: Option<&str>,
    ) -> Result<Claim> {
        let fresh = Reservation {
            value: value.to_owned(),
            user_id: me,
            at_ms: now_ms(),
            confirmed_ms: None,
            request_key: key.map(str::to_owned),
        };
        let reservations = self.of(kind);
        // Each round either settles or saw another claimant move first.
        for _ in 0..4 {
            match reservations.insert_one(&fresh).await {
                Ok(_) => return Ok(Claim::Ours),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(e.into()),
            }
            let Some(r) = reservations.find_one(doc! { "_id": value }).await? else {
                continue;
            };
            if r.user_id == me {
                return Ok(Claim::Ours);
            }
            match self.standing(kind, &r).await? {
                Standing::Held(h) => return Ok(Claim::Held(h)),
                Standing::Free(seen) => {
                    if reservations.replace_one(seen, &fresh).await?.matched_count == 1 {
                        tracing::info!(?kind, from = %r.user_id, to = %me, "took a free reservation over");
                        return Ok(Claim::Ours);
                    }
                }
            }
        }
        Err(social_kit::Error::Unavailable(
            "others are claiming this value at the same moment; retry".into(),
        ))
    }

    /// Confirms `me`'s reservation of `value` (its account is stored); `false` if it was
    /// taken over first.
    pub async fn confirm(&self, kind: Kind, value: &str, me: ObjectId) -> Result<bool> {
        let r = self
            .of(kind)
            .update_one(
                doc! { "_id": value, "user_id": mongo::equals_id(me) },
                doc! { "$set": { "confirmed_ms": now_ms() } },
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    /// Gives up `me`'s reservation of `value`, if it still has it.
    pub async fn release(&self, kind: Kind, value: &str, me: ObjectId) -> Result<()> {
        self.of(kind).delete_one(doc! { "_id": value, "user_id": mongo::equals_id(me) }).await?;
        Ok(())
    }

    /// The accounts that `values` are reserved for, as `(value, account)`, in no order;
    /// each account still to be checked for holding its value.
    pub async fn owners(&self, kind: Kind, values: &[String]) -> Result<Vec<(String, ObjectId)>> {
        Ok(self
            .of(kind)
            .find(doc! { "_id": { "$in": values } })
            .await?
            .map_ok(|r| (r.value, r.user_id))
            .try_collect()
            .await?)
    }

    /// Accounts holding `values` found through the legacy unique index, while there is
    /// one: hinted, so that a query never scans `users` once it is retired (the hint then
    /// fails and the lookups stop).
    pub async fn legacy_holders(
        &self,
        kind: Kind,
        values: &[String],
    ) -> Result<Vec<(String, ObjectId)>> {
        if values.is_empty() || !self.legacy.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let found = self
            .users
            .find(doc! { kind.field(): { "$in": values } })
            .projection(doc! { kind.field(): 1 })
            .hint(mongodb::options::Hint::Keys(doc! { kind.field(): 1 }))
            .await;
        let docs: Vec<Document> = match found {
            Ok(cursor) => cursor.try_collect().await?,
            // BadValue: the hinted index is gone.
            Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 2) =>
            {
                self.legacy.store(false, Ordering::Relaxed);
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(docs
            .into_iter()
            .filter_map(|d| {
                Some((d.get_str(kind.field()).ok()?.to_owned(), d.get_object_id("_id").ok()?))
            })
            .collect())
    }

    /// Gives every stored account its reservations (confirmed), in `_id` order, then
    /// retires the legacy unique indexes: for a `users` collection from before
    /// reservations, once no replica of an older release still registers. Idempotent.
    /// A value that a registration under way holds leaves the indexes in place (an
    /// error: run it again). How many reservations it confirmed.
    pub async fn reserve_existing(&self) -> anyhow::Result<u64> {
        let mut after = None;
        let (mut made, mut left) = (0_u64, 0_u64);
        loop {
            let mut filter = doc! {};
            if let Some(last) = after {
                filter.insert("_id", doc! { "$gt": last });
            }
            let batch: Vec<Document> = self
                .users
                .find(filter)
                .projection(doc! { "username_lower": 1, "email": 1 })
                .sort(doc! { "_id": 1 })
                .limit(500)
                .await?
                .try_collect()
                .await?;
            let Some(last) = batch.last() else { break };
            after = Some(last.get_object_id("_id")?);
            for account in &batch {
                let id = account.get_object_id("_id")?;
                for kind in [Kind::Username, Kind::Email] {
                    let Ok(value) = account.get_str(kind.field()) else {
                        continue;
                    };
                    if kind == Kind::Email && value.starts_with("deleted:") {
                        continue;
                    }
                    // A reservation made by this release meanwhile is taken over unless
                    // somebody holds it (one the old index refused, left by a
                    // registration that stopped).
                    match self.reserve(kind, value, id, None).await? {
                        Claim::Ours => {
                            self.confirm(kind, value, id).await?;
                            made += 1;
                        }
                        Claim::Held(holder) => {
                            tracing::error!(?kind, account = %id, ?holder, "value held by another meanwhile");
                            left += 1;
                        }
                    }
                }
            }
        }
        // While the old indexes stand, they keep those accounts' values theirs: a value
        // that a registration in flight reserved meanwhile is free again within a minute.
        anyhow::ensure!(
            left == 0,
            "{left} values of accounts stored before reservations are reserved by registrations \
             under way; the unique indexes on users stay: run this again in a minute"
        );
        for field in self.legacy_indexes().await? {
            let dropped = self
                .users
                .client()
                .database(&self.users.namespace().db)
                .run_command(doc! { "dropIndexes": self.users.name(), "index": { field: 1 } })
                .await;
            match dropped {
                Ok(_) => tracing::info!(field, "retired a unique index on users"),
                // IndexNotFound (27): retired already.
                Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 27) =>
                    {}
                Err(e) => return Err(e.into()),
            }
        }
        self.legacy.store(false, Ordering::Relaxed);
        Ok(made)
    }
}

/// What a reservation is worth to a claimant.
enum Standing {
    Held(Holder),
    /// Free: take it over with this filter (it matches the reservation as seen).
    Free(Document),
}
