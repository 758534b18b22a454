//! Validation helpers shared by the services' request parsers. Each returns
//! `Err(description)`; the caller records it against the field path with
//! [`crate::error::Violations`].

use std::str::FromStr;

use bson::oid::ObjectId;

/// The request metadata that makes a creating RPC safe to retry: one post or comment is
/// stored per (author, key), and a retry with the key gets that one.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What an idempotency key must be (the gRPC metadata and the HTTP header alike).
pub const IDEMPOTENCY_KEY_RULE: &str = "must be 1 to 255 visible ASCII characters";

/// Whether `key` follows [`IDEMPOTENCY_KEY_RULE`].
pub fn is_idempotency_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The request's idempotency key ([`IDEMPOTENCY_KEY`]), if it sent one: one that
/// follows [`IDEMPOTENCY_KEY_RULE`], or `INVALID_ARGUMENT` naming it.
pub fn idempotency_key<T>(request: &tonic::Request<T>) -> crate::Result<Option<String>> {
    let Some(value) = request.metadata().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if is_idempotency_key(k) => Ok(Some(k.to_owned())),
        _ => Err(crate::Error::invalid(IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_RULE)),
    }
}

/// Parses a 24-character lowercase hex ObjectId, as ids are written (an id in capitals is
/// no id the API document allows).
pub fn object_id(s: &str) -> Result<ObjectId, String> {
    if s.is_empty() {
        return Err("is required".into());
    }
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if s.len() != 24 || !s.bytes().all(hex) {
        return Err("must be a 24-character lowercase hex id".into());
    }
    ObjectId::parse_str(s).map_err(|_| "must be a 24-character lowercase hex id".into())
}

/// Parses a batch of ids (1..=100), naming each bad one by its index; distinct, in the
/// order given. A batch over the limit is refused before any element is looked at, so
/// that a huge request costs no more than a valid one.
pub fn id_batch(field: &str, ids: &[String], v: &mut crate::error::Violations) -> Vec<ObjectId> {
    if !batch_size(field, ids.len(), "ids", v) {
        return Vec::new();
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if let Some(oid) = v.take(&format!("{field}[{i}]"), object_id(id))
            && seen.insert(oid)
        {
            out.push(oid);
        }
    }
    out
}

/// Whether a batch of `len` `what` (ids, usernames) is within 1..=[`MAX_BATCH`];
/// records the violation on `field` if not.
pub fn batch_size(field: &str, len: usize, what: &str, v: &mut crate::error::Violations) -> bool {
    if len == 0 {
        v.add(field, format!("must contain at least one of the {what}"));
        false
    } else if len > MAX_BATCH {
        v.add(field, format!("must contain at most {MAX_BATCH} {what}"));
        false
    } else {
        true
    }
}

/// `sent` as an error may repeat it: its first 40 characters, with `…` when it is longer
/// (an answer's size must not grow with what a client sends: see `error::Violations`).
pub fn quoted(sent: &str) -> String {
    cut(sent, 40)
}

/// The first `max` characters of `text`, with `…` when it is longer.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Largest batch of ids in one request.
pub const MAX_BATCH: usize = 100;

/// Number of Unicode scalar values in `s`.
pub fn chars(s: &str) -> usize {
    s.chars().count()
}

/// At most `max` characters.
pub fn max_chars(s: &str, max: usize) -> Result<(), String> {
    if chars(s) > max { Err(format!("must be at most {max} characters")) } else { Ok(()) }
}

/// Text as sent at most `max` characters (what the API document promises), trimmed
/// of surrounding whitespace for storing.
pub fn trimmed(s: &str, max: usize) -> (&str, Result<(), String>) {
    (s.trim(), max_chars(s, max))
}

/// 3-30 characters of `[A-Za-z0-9_]` (as sent: surrounding whitespace is no part of a
/// username).
pub fn username(s: &str) -> Result<(), String> {
    let n = s.len();
    if !(3..=30).contains(&n) {
        return Err("must be 3 to 30 characters".into());
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err("may contain only letters, digits and _".into());
    }
    Ok(())
}

/// One `@`, a non-empty local part, a domain with a dot, at most 254 characters;
/// returns the address lowercased.
pub fn email(sent: &str) -> Result<String, String> {
    let s = sent.trim();
    if s.is_empty() {
        return Err("is required".into());
    }
    if chars(sent) > 254 {
        return Err("must be at most 254 characters".into());
    }
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("must contain exactly one @".into());
    };
    if local.is_empty() {
        return Err("must have a name before the @".into());
    }
    let dotted = domain.split('.').collect::<Vec<_>>();
    if dotted.len() < 2 || dotted.iter().any(|label| label.is_empty()) {
        return Err("must have a domain with a dot after the @".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces".into());
    }
    Ok(s.to_lowercase())
}

/// 8-128 characters.
pub fn password(s: &str) -> Result<(), String> {
    let n = chars(s);
    if !(8..=128).contains(&n) {
        return Err("must be 8 to 128 characters".into());
    }
    Ok(())
}

/// The longest URL, in characters (an http URL is ASCII: its bytes).
pub const MAX_URL: usize = 2048;

/// An absolute `http` or `https` URL of at most [`MAX_URL`] characters.
pub fn url(s: &str) -> Result<(), String> {
    if s.len() > MAX_URL {
        return Err(format!("must be at most {MAX_URL} characters"));
    }
    let uri = tonic::codegen::http::Uri::from_str(s)
        .map_err(|_| "must be an absolute http or https URL".to_owned())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    if scheme_ok && host_ok { Ok(()) } else { Err("must be an absolute http or https URL".into()) }
}

/// An optional URL as sent at most [`MAX_URL`] characters (what the API document
/// promises), trimmed for storing: `""` where only whitespace was sent, else an absolute
/// http or https URL.
pub fn optional_url(s: &str) -> (&str, Result<(), String>) {
    let (value, fits) = trimmed(s, MAX_URL);
    let valid = fits.and_then(|()| if value.is_empty() { Ok(()) } else { url(value) });
    (value, valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_error_repeats_of_a_value_is_its_start() {
        assert_eq!(quoted("bio"), "bio");
        let long = "é".repeat(60_000);
        assert_eq!(quoted(&long), format!("{}…", "é".repeat(40)));
    }

    #[test]
    fn text_is_measured_as_sent_and_kept_trimmed() {
        assert_eq!(trimmed(" ab ", 4), ("ab", Ok(())));
        let sent = format!(" {} ", "a".repeat(50));
        let (kept, fits) = trimmed(&sent, 50);
        assert_eq!(kept.len(), 50);
        assert_eq!(fits, Err("must be at most 50 characters".into()));
        assert!(email(&format!("{}@example.com ", "a".repeat(242))).is_err());
    }

    #[test]
    fn usernames() {
        assert!(username("al").is_err());
        assert!(username("alice_01").is_ok());
        assert!(username("alice!").is_err());
        assert!(username(&"a".repeat(31)).is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(email("Alice@Example.COM"), Ok("alice@example.com".into()));
        assert!(email("a@b").is_err());
        assert!(email("@b.c").is_err());
        assert!(email("a@@b.c").is_err());
        assert!(email("a@b..c").is_err());
    }

    #[test]
    fn urls() {
        assert!(url("https://cdn.example.com/a.png").is_ok());
        assert!(url("ftp://x.y/z").is_err());
        assert!(url("/relative").is_err());
        assert!(url(&format!("https://x.y/{}", "a".repeat(2048))).is_err());
    }

    #[test]
    fn an_oversized_batch_is_refused_without_parsing_it() {
        let mut v = crate::error::Violations::default();
        let many = vec!["not an id".to_owned(); 100_000];
        assert!(id_batch("ids", &many, &mut v).is_empty());
        // One violation for the size, none per element.
        match v.finish() {
            Err(crate::Error::InvalidArgument(vs)) => assert_eq!(vs.len(), 1),
            other => panic!("{other:?}"),
        }
        let mut v = crate::error::Violations::default();
        let id = "65f0c0ffee0123456789abcd".to_owned();
        let dup = id_batch("ids", &[id.clone(), id], &mut v);
        assert_eq!(dup.len(), 1);
    }

    #[test]
    fn ids() {
        assert!(object_id("65f0c0ffee0123456789abcd").is_ok());
        assert!(object_id("xyz").is_err());
        assert!(object_id("").is_err());
    }
}
