//! Keyset pagination with opaque page tokens.
//!
//! Every list is sorted by a time field and then `_id`, both descending (or both
//! ascending). A token holds the last item's `(time, _id)` and a hash of the query that
//! issued it, so that items inserted while a client pages cause no duplicate and no skip
//! among older items, and a token replayed against another query is rejected.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bson::{Document, doc, oid::ObjectId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, Violations};

/// Items per page when the client does not say.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page; bigger requests are served this many.
pub const MAX_PAGE_SIZE: usize = 100;

/// Where a page starts: just past this `(time, id)` in the list's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The sort time of the last item served, in milliseconds.
    pub time: bson::DateTime,
    /// Its id.
    pub id: ObjectId,
}

/// A validated page request.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// How many items to return.
    pub size: usize,
    /// Start after this item; `None` for the first page.
    pub after: Option<Cursor>,
    query: String,
}

#[derive(Serialize, Deserialize)]
struct Token {
    /// Version of this format.
    v: u8,
    /// Query hash.
    q: String,
    /// Time in ms.
    t: i64,
    /// Id hex.
    i: String,
}

fn query_hash(query: &str) -> String {
    let digest = Sha256::digest(query.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl PageRequest {
    /// Parses `page_size` and `page_token` for the query described by `query` (a stable
    /// description of every filter of the request, e.g. `posts:user=<id>`), recording
    /// violations.
    pub fn parse(page_size: i32, page_token: &str, query: String, v: &mut Violations) -> Self {
        let size = match page_size {
            n if n < 0 => {
                v.add("page_size", "must not be negative");
                DEFAULT_PAGE_SIZE
            }
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            v.take("page_token", decode(page_token, &query))
        };
        Self { size, after, query }
    }

    /// Parses a page request that has no other fields to validate.
    pub fn parse_alone(page_size: i32, page_token: &str, query: String) -> Result<Self> {
        let mut v = Violations::default();
        let page = Self::parse(page_size, page_token, query, &mut v);
        v.finish().map(|()| page)
    }

    /// How many documents to fetch: one more than the page, to learn whether another
    /// page follows.
    pub fn fetch_limit(&self) -> i64 {
        self.size as i64 + 1
    }

    /// Trims a fetched batch to the page and returns the token of the next page (empty
    /// on the last page). `key` gives an item's `(time, id)`.
    pub fn finish<T>(
        &self,
        mut items: Vec<T>,
        key: impl Fn(&T) -> (bson::DateTime, ObjectId),
    ) -> (Vec<T>, String) {
        if items.len() <= self.size {
            return (items, String::new());
        }
        items.truncate(self.size);
        let token = items
            .last()
            .map(|last| {
                let (time, id) = key(last);
                encode(&Cursor { time, id }, &self.query)
            })
            .unwrap_or_default();
        (items, token)
    }
}

fn encode(c: &Cursor, query: &str) -> String {
    let token = Token {
        v: 1,
        q: query_hash(query),
        t: c.time.timestamp_millis(),
        i: c.id.to_hex(),
    };
    // Serialising four plain fields cannot fail.
    let json = serde_json::to_vec(&token).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

fn decode(token: &str, query: &str) -> std::result::Result<Cursor, String> {
    const BAD: &str = "is not a page token issued by this server";
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| BAD.to_owned())?;
    let t: Token = serde_json::from_slice(&bytes).map_err(|_| BAD.to_owned())?;
    if t.v != 1 {
        return Err(BAD.into());
    }
    if t.q != query_hash(query) {
        return Err("was issued for a different query".into());
    }
    let id = ObjectId::parse_str(&t.i).map_err(|_| BAD.to_owned())?;
    Ok(Cursor {
        time: bson::DateTime::from_millis(t.t),
        id,
    })
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
    /// The sort document: `time_field` then `_id`, in this order.
    pub fn sort(self, time_field: &str) -> Document {
        let dir = self.dir();
        doc! { time_field: dir, "_id": dir }
    }

    fn dir(self) -> i32 {
        match self {
            Self::NewestFirst => -1,
            Self::OldestFirst => 1,
        }
    }

    /// `filter` restricted to the items after `page.after` in this order.
    pub fn filter(self, filter: Document, page: &PageRequest, time_field: &str) -> Document {
        let Some(c) = page.after else {
            return filter;
        };
        let (op, op_or_equal) = match self {
            Self::NewestFirst => ("$lt", "$lte"),
            Self::OldestFirst => ("$gt", "$gte"),
        };
        // (t, id) after (c.t, c.id) ≡ t ≤ c.t and (t < c.t or id < c.id) when t ≤ c.t.
        // The plain range gives the index its bounds on MongoDB and lets the stand-in
        // filter in SQL before it evaluates the `$or` (an `$or` alone made it scan).
        let mut filter = filter;
        filter.insert(time_field, doc! { op_or_equal: c.time });
        filter.insert(
            "$or",
            vec![
                doc! { time_field: { op: c.time } },
                doc! { "_id": { op: c.id } },
            ],
        );
        filter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(token: &str, query: &str) -> Result<PageRequest> {
        PageRequest::parse_alone(10, token, query.into())
    }

    #[test]
    fn token_round_trips_and_is_bound_to_its_query() {
        let p = page("", "q1").unwrap();
        let items: Vec<(bson::DateTime, ObjectId)> = (0..11)
            .map(|i| (bson::DateTime::from_millis(1000 - i), ObjectId::new()))
            .collect();
        let (items, token) = p.finish(items, |x| *x);
        assert_eq!(items.len(), 10);
        let next = page(&token, "q1").unwrap();
        assert_eq!(next.after.unwrap().id, items[9].1);
        assert!(page(&token, "q2").is_err());
        assert!(page("garbage", "q1").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(
            PageRequest::parse_alone(0, "", "q".into()).unwrap().size,
            20
        );
        assert_eq!(
            PageRequest::parse_alone(1000, "", "q".into()).unwrap().size,
            100
        );
        assert!(PageRequest::parse_alone(-1, "", "q".into()).is_err());
    }
}
