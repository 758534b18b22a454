//! Keyset pagination with opaque page tokens, over a per-document `sort_key`.
//!
//! Every listed document gets a `sort_key` when it is created: a Snowflake-style 63-bit
//! integer, `milliseconds since 2020 << 22 | slot << 12 | sequence`, so keys follow
//! creation time and order same-millisecond documents of one process by creation. Lists
//! sort on it (descending or ascending) and a page token carries the last key served
//! plus a hash of the query that issued it: items inserted while a client pages cause no
//! duplicate and no skip among older items, and a token replayed against another query
//! is rejected.
//!
//! Keys are distinct by construction, across processes: each service process leases
//! its 10-bit slot (`kit::mongo::slots`), so that no two live processes mint with the
//! same slot, and a key is stored only while the slot it was minted under is still held
//! ([`storable`]). A unique index on `(owner, sort_key)` backs this up inside each
//! owner's list (`kit::mongo::insert_keyed` draws a new key when it refuses one). A page
//! that ends on an item therefore never hides another with the same key, even in lists
//! that span owners (a home feed, a followers list) on a sharded collection, where no
//! index can be unique over the whole collection. A process that never leases (a tool)
//! mints under random bits, distinct in practice only.
//!
//! An integer key rather than `(created_at, _id)`: one indexable field makes the keyset
//! filter a single range (`{sort_key: {$lt: k}}`), served by an index
//! `{<owner>: 1, sort_key: -1}` on MongoDB, and evaluated in SQL by the stand-in
//! nx-27017, which falls back to Python (seconds over thousands of followees) for date
//! ranges and `$or`s.

use std::sync::{
    LazyLock,
    atomic::{AtomicI64, AtomicU64, Ordering},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bson::{Document, doc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
pub use social_proto::Paged;

use crate::error::{Result, Violations};

/// The field every listed document carries.
pub const SORT_KEY: &str = "sort_key";
/// Items per page when the client does not say.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page; bigger requests are served this many.
pub const MAX_PAGE_SIZE: usize = 100;

/// 2020-01-01T00:00:00Z in Unix milliseconds.
const EPOCH_MS: i64 = 1_577_836_800_000;
static PROCESS_BITS: LazyLock<i64> = LazyLock::new(|| {
    let random = bson::oid::ObjectId::new().bytes();
    (i64::from(random[4]) << 2 | i64::from(random[5] & 0b11)) & 0x3FF
});
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// How many slots there are (10 bits).
pub const SLOTS: i64 = 1024;
/// [`SLOT`] of a process that never leases one: it mints under [`PROCESS_BITS`].
const UNLEASED: i64 = -1;
/// [`SLOT`] of a process that leases, while it holds none: nothing it mints is stored.
const WAITING: i64 = -2;
/// The slot this process holds (or [`UNLEASED`], [`WAITING`]).
static SLOT: AtomicI64 = AtomicI64::new(UNLEASED);
/// Since when (ms, this clock) it holds it: keys minted before are not under it.
static HELD_SINCE_MS: AtomicI64 = AtomicI64::new(0);
/// Until when (ms, this clock) keys minted under it may be stored: its lease, less the
/// margin that covers other clocks being ahead of this one (`kit::mongo::slots`).
static VALID_UNTIL_MS: AtomicI64 = AtomicI64::new(0);

/// Records that this process holds `slot` since `since_ms`, confirmed until
/// `valid_until_ms` (renewals move that on).
pub fn hold_slot(slot: i64, since_ms: i64, valid_until_ms: i64) {
    VALID_UNTIL_MS.store(valid_until_ms, Ordering::SeqCst);
    if SLOT.load(Ordering::SeqCst) != slot {
        HELD_SINCE_MS.store(since_ms, Ordering::SeqCst);
        SLOT.store(slot, Ordering::SeqCst);
    }
}

/// The slot this process holds, if any.
pub fn held_slot() -> Option<i64> {
    Some(SLOT.load(Ordering::SeqCst)).filter(|s| *s >= 0)
}

/// Records that this process will lease a slot (a service): until it holds one,
/// nothing it mints is stored.
pub fn expect_slot() {
    let _ = SLOT.compare_exchange(UNLEASED, WAITING, Ordering::SeqCst, Ordering::SeqCst);
}

/// Records that this process leases slots and holds none (yet, or any more).
pub fn lose_slot() {
    SLOT.store(WAITING, Ordering::SeqCst);
    VALID_UNTIL_MS.store(0, Ordering::SeqCst);
}

/// Whether a key may be stored now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storable {
    /// Yes.
    Yes,
    /// It was minted under a slot this process no longer holds (or before it held it):
    /// mint another.
    Remint,
    /// This process holds no slot: nothing it mints may be stored until it does.
    NoSlot,
}

/// Whether `key`, minted by this process, may be stored now (see the module docs).
pub fn storable(key: i64) -> Storable {
    let slot = SLOT.load(Ordering::SeqCst);
    if slot == UNLEASED {
        return Storable::Yes;
    }
    let now = bson::DateTime::now().timestamp_millis();
    if slot < 0 || now >= VALID_UNTIL_MS.load(Ordering::SeqCst) {
        return Storable::NoSlot;
    }
    if now < HELD_SINCE_MS.load(Ordering::SeqCst) {
        // The clock went back past the moment the slot was taken: what it mints now
        // could fall in the previous holder's time. Claimed again (`mongo::slots`).
        lose_slot();
        return Storable::NoSlot;
    }
    if key_slot(key) != slot || key_time_ms(key) < HELD_SINCE_MS.load(Ordering::SeqCst) {
        return Storable::Remint;
    }
    Storable::Yes
}

/// The slot a key was minted under.
pub fn key_slot(key: i64) -> i64 {
    (key >> 12) & 0x3FF
}

fn slot_bits() -> i64 {
    match SLOT.load(Ordering::SeqCst) {
        s if s >= 0 => s,
        _ => *PROCESS_BITS,
    }
}

/// The time (ms since the Unix epoch) a sort key was minted at.
pub fn key_time_ms(key: i64) -> i64 {
    (key >> 22) + EPOCH_MS
}

/// A new sort key for a document created now (to replace one another document took).
pub fn fresh_sort_key() -> i64 {
    sort_key(bson::DateTime::now())
}

/// The least sort key minted at `at` or later: every key below it was minted before.
pub fn sort_key_floor(at: bson::DateTime) -> i64 {
    ((at.timestamp_millis() - EPOCH_MS).max(0) & ((1 << 41) - 1)) << 22
}

/// A new sort key for a document created at `created_at`.
pub fn sort_key(created_at: bson::DateTime) -> i64 {
    let ms = (created_at.timestamp_millis() - EPOCH_MS).max(0) & ((1 << 41) - 1);
    let sequence = (SEQUENCE.fetch_add(1, Ordering::Relaxed) & 0xFFF) as i64;
    ms << 22 | slot_bits() << 12 | sequence
}

/// A validated page request.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// How many items to return.
    pub size: usize,
    /// Start after the item with this sort key; `None` for the first page.
    pub after: Option<i64>,
    query: String,
}

#[derive(Serialize, Deserialize)]
struct Token {
    /// Version of this format.
    v: u8,
    /// Query hash.
    q: String,
    /// Last sort key served.
    k: i64,
}

fn query_hash(query: &str) -> String {
    hex::encode(&Sha256::digest(query.as_bytes())[..8])
}

impl PageRequest {
    /// Parses a list request's page for the query described by `query` (a stable
    /// description of every filter of the request, e.g. `posts:user=<id>`), recording
    /// violations.
    pub fn parse(request: &impl Paged, query: String, v: &mut Violations) -> Self {
        let size = match request.page_size() {
            n if n < 0 => {
                v.add("page_size", "must not be negative");
                DEFAULT_PAGE_SIZE
            }
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let after = match request.page_token() {
            "" => None,
            token => v.take("page_token", decode(token, &query)),
        };
        Self { size, after, query }
    }

    /// Parses the page of a list request that has no other fields to validate.
    pub fn of(request: &impl Paged, query: String) -> Result<Self> {
        let mut v = Violations::default();
        let page = Self::parse(request, query, &mut v);
        v.finish().map(|()| page)
    }

    /// Parses a list request of the form `(<owner>_id, page_size, page_token)`, e.g.
    /// ListFollowers' `user_id` or ListComments' `post_id`: the owner's id, validated
    /// and named `field` in violations, and the page, bound to `kind` and the owner.
    pub fn for_owner(
        kind: &str,
        (field, owner): (&str, &str),
        request: &impl Paged,
    ) -> Result<(bson::oid::ObjectId, Self)> {
        let mut v = Violations::default();
        let id = v.take(field, crate::validate::object_id(owner));
        let page = Self::parse(request, format!("{kind}:{owner}"), &mut v);
        v.finish()?;
        Ok((id.unwrap_or_default(), page))
    }

    /// How many documents to fetch: one more than the page, to learn whether another
    /// page follows.
    pub fn fetch_limit(&self) -> i64 {
        self.size as i64 + 1
    }

    /// Trims a fetched batch to the page and returns the token of the next page (empty
    /// on the last page). `key` gives an item's sort key.
    pub fn finish<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> i64) -> (Vec<T>, String) {
        if items.len() <= self.size {
            return (items, String::new());
        }
        items.truncate(self.size);
        let token = items.last().map(|last| encode(key(last), &self.query)).unwrap_or_default();
        (items, token)
    }

    /// [`Self::finish`], each item turned into what the answer carries (a document into
    /// its wire message).
    pub fn finish_into<T: Into<W>, W>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> i64,
    ) -> (Vec<W>, String) {
        let (items, token) = self.finish(items, key);
        (items.into_iter().map(Into::into).collect(), token)
    }
}

fn encode(key: i64, query: &str) -> String {
    let token = Token { v: 2, q: query_hash(query), k: key };
    // Serialising three plain fields cannot fail.
    let json = serde_json::to_vec(&token).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

fn decode(token: &str, query: &str) -> std::result::Result<i64, String> {
    const BAD: &str = "is not a page token issued by this server";
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| BAD.to_owned())?;
    let t: Token = serde_json::from_slice(&bytes).map_err(|_| BAD.to_owned())?;
    if t.v != 2 {
        return Err(BAD.into());
    }
    if t.q != query_hash(query) {
        return Err("was issued for a different query".into());
    }
    Ok(t.k)
}

/// The order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first.
    NewestFirst,
    /// Oldest first.
    OldestFirst,
}

impl Order {
    /// The sort document.
    pub fn sort(self) -> Document {
        doc! { SORT_KEY: self.dir() }
    }

    fn dir(self) -> i32 {
        match self {
            Self::NewestFirst => -1,
            Self::OldestFirst => 1,
        }
    }

    /// `filter` restricted to the items after `page.after` in this order.
    pub fn filter(self, mut filter: Document, page: &PageRequest) -> Document {
        if let Some(key) = page.after {
            let op = match self {
                Self::NewestFirst => "$lt",
                Self::OldestFirst => "$gt",
            };
            filter.insert(SORT_KEY, doc! { op: key });
        }
        filter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(token: &str, query: &str) -> Result<PageRequest> {
        PageRequest::of(&(10, token), query.into())
    }

    #[test]
    fn a_service_stores_no_key_before_it_holds_a_slot_nor_after_its_clock_went_back() {
        // Each test runs in a process of its own (nextest): the slot is this one's.
        assert_eq!(storable(fresh_sort_key()), Storable::Yes, "a tool never leases");
        expect_slot();
        assert_eq!(storable(fresh_sort_key()), Storable::NoSlot);
        let now = bson::DateTime::now().timestamp_millis();
        hold_slot(7, now, now + 40_000);
        let key = fresh_sort_key();
        assert_eq!((key_slot(key), storable(key)), (7, Storable::Yes));
        hold_slot(8, now, now + 40_000);
        assert_eq!(storable(key), Storable::Remint, "minted under the slot it lost");
        // Held since a moment the clock is now before: nothing is stored, and the slot
        // is given up to be claimed again.
        lose_slot();
        hold_slot(9, now + 60_000, now + 100_000);
        assert_eq!(storable(fresh_sort_key()), Storable::NoSlot);
        assert_eq!(held_slot(), None);
    }

    #[test]
    fn the_floor_of_a_time_is_below_its_keys_and_above_earlier_ones() {
        let t = bson::DateTime::from_millis(1_795_000_000_305);
        let before = bson::DateTime::from_millis(1_795_000_000_304);
        for _ in 0..5000 {
            assert!(sort_key_floor(t) <= sort_key(t));
            assert!(sort_key(before) < sort_key_floor(t));
        }
    }

    #[test]
    fn token_round_trips_and_is_bound_to_its_query() {
        let p = page("", "q1").unwrap();
        let items: Vec<i64> = (0..11).rev().collect();
        let (items, token) = p.finish(items, |x| *x);
        assert_eq!(items.len(), 10);
        let next = page(&token, "q1").unwrap();
        assert_eq!(next.after, Some(items[9]));
        assert!(page(&token, "q2").is_err());
        assert!(page("garbage", "q1").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(PageRequest::of(&(0, ""), "q".into()).unwrap().size, 20);
        assert_eq!(PageRequest::of(&(1000, ""), "q".into()).unwrap().size, 100);
        assert!(PageRequest::of(&(-1, ""), "q".into()).is_err());
    }

    #[test]
    fn sort_keys_follow_time_and_are_distinct() {
        let t = bson::DateTime::from_millis(1_795_000_000_000);
        let keys: Vec<i64> = (0..1000).map(|_| sort_key(t)).collect();
        let mut distinct = keys.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), keys.len());
        assert!(keys.windows(2).all(|w| w[0] < w[1] || (w[0] & 0xFFF) == 0xFFF));
        let later = sort_key(bson::DateTime::from_millis(1_795_000_000_001));
        assert!(keys.iter().all(|k| *k < later));
        assert!(later > 0);
    }
}
