//! The 10-bit slot a service process mints sort keys under (`crate::paging`), leased in
//! the collection `sort_key_slots` of its database, so that no two live processes mint
//! with the same one and keys are distinct across processes without an index unique
//! over a whole collection (which a sharded collection cannot have).
//!
//! A process claims a free slot (one never leased, or whose lease ran out) before it
//! serves, renews its lease every [`RENEW_EVERY`] for [`LEASE`], and stores a key only
//! while the lease is confirmed, less [`CLOCK_MARGIN`] ([`crate::paging::storable`]).
//! Another process takes the slot only after the lease ran out by its own clock, and
//! mints from then on: keys carry their minting millisecond, so the two never mint the
//! same key unless the clocks differ by more than the margin. A process that loses its
//! lease (paused past it, cut off from the database) stores nothing until it holds a
//! slot again, and re-mints what it minted under the old one. The services of one
//! process (the in-process test stack) share its slot, in each database they use.

use std::time::Duration;

use bson::{doc, oid::ObjectId};
use mongodb::Collection;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use tokio_util::sync::CancellationToken;

use super::Db;
use crate::paging::{self, SLOTS};
use crate::time::{ms as millis, now_ms};

/// The collection of leases, in every database that has listed documents.
pub const COLLECTION: &str = "sort_key_slots";
/// How long a lease lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often a held lease is renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How far another process's clock may be ahead of this one's: keys are stored only
/// until this long before the lease runs out.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(20);

/// This process, as a lease holder.
static HOLDER: LazyLock<String> = LazyLock::new(|| ObjectId::new().to_hex());

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    #[serde(rename = "_id")]
    slot: i64,
    holder: String,
    /// When it runs out (ms, the holder's clock).
    expires_ms: i64,
}

/// The leases of one database. Cheap to clone.
#[derive(Clone)]
pub struct Slots {
    leases: Collection<Lease>,
}

impl Slots {
    pub fn new(db: &Db) -> Self {
        Self { leases: db.collection(COLLECTION) }
    }

    /// Holds a slot from now on: the one this process holds already (in another
    /// database), else the first free one from a random start. Until it does, nothing
    /// this process mints is stored.
    pub async fn claim(&self) -> crate::Result<i64> {
        let held = paging::held_slot();
        if held.is_none() {
            paging::lose_slot();
        }
        let start = held.unwrap_or_else(|| {
            let random = ObjectId::new().bytes();
            i64::from(u16::from_be_bytes([random[10], random[11]])) % SLOTS
        });
        // A process holds one slot in every database it writes to.
        let tries = if held.is_some() { 1 } else { SLOTS };
        for i in 0..tries {
            let slot = (start + i) % SLOTS;
            let asked = now_ms();
            if self.take(slot, asked).await? {
                paging::hold_slot(slot, asked, valid_until(asked));
                tracing::info!(slot, "holds a sort-key slot");
                return Ok(slot);
            }
        }
        Err(crate::Error::Unavailable(format!(
            "all {SLOTS} sort-key slots are leased by live processes"
        )))
    }

    /// Takes `slot` if it is free or this process's already.
    async fn take(&self, slot: i64, now: i64) -> crate::Result<bool> {
        let lease =
            Lease { slot, holder: HOLDER.clone(), expires_ms: now.saturating_add(millis(LEASE)) };
        match self.leases.insert_one(&lease).await {
            Ok(_) => return Ok(true),
            Err(e) if crate::error::is_duplicate_key(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let set = doc! { "$set": { "holder": &lease.holder, "expires_ms": lease.expires_ms } };
        for taken in [
            doc! { "_id": slot, "expires_ms": { "$lt": now } },
            doc! { "_id": slot, "holder": &lease.holder },
        ] {
            if self.leases.update_one(taken, set.clone()).await?.matched_count == 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Renews the lease of the slot this process holds; `false` when it holds none or
    /// another process has it now (this one then holds none).
    pub async fn renew(&self) -> crate::Result<bool> {
        let Some(slot) = paging::held_slot() else {
            return Ok(false);
        };
        let asked = now_ms();
        let renewed = self
            .leases
            .update_one(
                doc! { "_id": slot, "holder": HOLDER.as_str() },
                doc! { "$set": { "expires_ms": asked.saturating_add(millis(LEASE)) } },
            )
            .await?;
        if renewed.matched_count == 1 {
            paging::hold_slot(slot, asked, valid_until(asked));
            Ok(true)
        } else {
            tracing::error!(slot, "lost its sort-key slot to another process");
            paging::lose_slot();
            Ok(false)
        }
    }

    /// Renews the lease until `stop`, claiming a slot again when it has none.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RENEW_EVERY) => {}
            }
            let held = match self.renew().await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew the sort-key slot's lease");
                    true
                }
            };
            if !held && let Err(e) = self.claim().await {
                tracing::warn!(error = %e, "no sort-key slot; retrying");
            }
        }
    }
}

/// Until when keys minted under a lease asked for at `asked` may be stored.
fn valid_until(asked: i64) -> i64 {
    asked.saturating_add(millis(LEASE)).saturating_sub(millis(CLOCK_MARGIN))
}
