//! Conversions between MongoDB's `bson::DateTime` and protobuf's `Timestamp`.

/// A stored time as a wire timestamp.
pub fn to_timestamp(t: bson::DateTime) -> prost_types::Timestamp {
    let ms = t.timestamp_millis();
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// An optional stored time as an optional wire timestamp.
pub fn to_timestamp_opt(t: Option<bson::DateTime>) -> Option<prost_types::Timestamp> {
    t.map(to_timestamp)
}

/// Milliseconds since the Unix epoch of a wire timestamp.
pub fn millis(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000
}

/// The moment a count is asked for (`as_of` of a request), in milliseconds: now when the
/// request does not say.
pub fn as_of_ms(as_of: Option<&prost_types::Timestamp>) -> i64 {
    as_of.map_or_else(|| bson::DateTime::now().timestamp_millis(), millis)
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    bson::DateTime::now().timestamp_millis()
}

/// A duration in milliseconds (saturating: a duration past `i64::MAX` ms is that).
pub fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Now, at MongoDB's millisecond precision.
pub fn now() -> bson::DateTime {
    bson::DateTime::now()
}
