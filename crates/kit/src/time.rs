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

/// Now, at MongoDB's millisecond precision.
/// Milliseconds since the Unix epoch of a wire timestamp.
pub fn millis(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000
}

/// The moment a count is asked for (`as_of` of a request), in milliseconds: now when the
/// request does not say.
pub fn as_of_ms(as_of: Option<&prost_types::Timestamp>) -> i64 {
    as_of.map_or_else(|| bson::DateTime::now().timestamp_millis(), millis)
}

pub fn now() -> bson::DateTime {
    bson::DateTime::now()
}

/// Deserialises a stored time that may have been written by `$set`.
///
/// MongoDB keeps a `$set` date as a BSON date. The stand-in nx-27017 0.8.1 stores a date
/// set by `update_one` / `find_one_and_update` as text (`2026-11-24 20:19:15.305000`,
/// UTC), though it keeps dates of inserted documents. Fields that updates write are
/// read through this so both servers work; queries never filter on such fields.
pub fn lenient<'de, D>(deserializer: D) -> Result<bson::DateTime, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::{Deserialize, de::Error};
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
        other => Err(D::Error::custom(format!(
            "expected a date, found {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Doc {
        #[serde(deserialize_with = "super::lenient")]
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
        assert_eq!(
            d.t.try_to_rfc3339_string().unwrap(),
            "2026-11-24T20:19:15.305Z"
        );
    }
}
