//! The canonical text of an event row: what "the same event" means when two stores are
//! compared (invariant I1: every column but `global_position` and `txid`).
//!
//! Every comparison of the verification is built from [`CANONICAL_COLUMNS`]: the `full` level
//! selects these expressions and compares them column by column in Rust; the `hash` level
//! hashes [`canonical_row_text`], the same expressions joined as one record, inside each
//! store. The rendering does not depend on the session (time zone, `DateStyle`,
//! `extra_float_digits`) nor on the server's build, so two stores render an equal row equally:
//!
//! - uuids: `uuid::text` (lower-case, hyphenated);
//! - `aggregate_type`, `event_type`, `actor_id`: the text as stored;
//! - `version`: decimal;
//! - `timestamp`, `created_at`: UTC ISO 8601 with microseconds, `2024-05-01T09:30:00.123456Z`;
//! - `payload`: `jsonb::text`, the canonical jsonb form (keys sorted and de-duplicated,
//!   normalised spacing), so two stores holding the same jsonb value print the same text;
//! - NULL (`tenant_id`, `actor_id`): no value at all, distinct from an empty string.
//!
//! The row text is `ROW(...)::text`, PostgreSQL's record output: a value holding a comma, a
//! quote, a parenthesis, a backslash or white space is quoted, an empty string is `""` and
//! NULL is nothing, so no two different rows share a text.
//!
//! The row hash is the first 8 bytes of the text's MD5 as a signed 64-bit integer: MD5 is
//! defined byte for byte everywhere, unlike `hashtextextended`, whose value may differ between
//! server architectures and major versions. A store's digest is the row count and the sum of
//! the row hashes modulo 2^64: order-independent, and unlike XOR a row present twice does not
//! cancel out.

use std::fmt;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::error::ControlError;

/// One compared column: its name and the SQL expression rendering it as canonical text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanonicalColumn {
    pub name: &'static str,
    pub sql: &'static str,
}

/// A `timestamptz` column as UTC ISO 8601 text with microseconds.
macro_rules! utc_text {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}

/// The columns of `events` that must be equal in both stores, in canonical order.
/// `global_position` and `txid` are left out: each store assigns its own.
pub const CANONICAL_COLUMNS: [CanonicalColumn; 10] = [
    CanonicalColumn {
        name: "event_id",
        sql: "event_id::text",
    },
    CanonicalColumn {
        name: "aggregate_id",
        sql: "aggregate_id::text",
    },
    CanonicalColumn {
        name: "aggregate_type",
        sql: "aggregate_type::text",
    },
    CanonicalColumn {
        name: "event_type",
        sql: "event_type::text",
    },
    CanonicalColumn {
        name: "tenant_id",
        sql: "tenant_id::text",
    },
    CanonicalColumn {
        name: "actor_id",
        sql: "actor_id::text",
    },
    CanonicalColumn {
        name: "version",
        sql: "version::text",
    },
    CanonicalColumn {
        name: "timestamp",
        sql: utc_text!("\"timestamp\""),
    },
    CanonicalColumn {
        name: "payload",
        sql: "payload::text",
    },
    CanonicalColumn {
        name: "created_at",
        sql: utc_text!("created_at"),
    },
];

/// The index of `event_id` in [`CANONICAL_COLUMNS`].
pub const EVENT_ID_COLUMN: usize = 0;

static ROW_TEXT: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<&str> = CANONICAL_COLUMNS.iter().map(|c| c.sql).collect();
    format!("ROW({})::text", columns.join(", "))
});

static ROW_HASH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "('x' || left(md5({}), 16))::bit(64)::bigint",
        canonical_row_text()
    )
});

static COLUMN_LIST: LazyLock<String> = LazyLock::new(|| {
    CANONICAL_COLUMNS
        .iter()
        .map(|c| c.sql)
        .collect::<Vec<_>>()
        .join(", ")
});

/// The SQL expression of a row's canonical text, over `events` columns.
pub fn canonical_row_text() -> &'static str {
    &ROW_TEXT
}

/// The SQL expression of a row's 64-bit hash (a `bigint`).
pub fn row_hash() -> &'static str {
    &ROW_HASH
}

/// The canonical column expressions, comma-separated, for a select list.
pub fn column_list() -> &'static str {
    &COLUMN_LIST
}

/// A store's order-independent digest of a set of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Rows digested.
    pub events: i64,
    /// The sum of the row hashes modulo 2^64, as 16 hex digits.
    #[serde(with = "hex_u64")]
    pub sum: u64,
}

impl Digest {
    /// From a store's `count(*)` and `sum(hash)::text` (a numeric of any size and sign).
    pub fn from_sum_text(events: i64, sum: &str) -> Result<Digest, ControlError> {
        let total: i128 = sum.trim().parse().map_err(|_| {
            ControlError::Internal(format!("a digest sum {sum:?} is not an integer"))
        })?;
        // Reduction modulo 2^64: the low 64 bits of the two's complement.
        Ok(Digest {
            events,
            sum: total.rem_euclid(1i128 << 64) as u64,
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x} over {} events", self.sum, self.events)
    }
}

/// A `u64` as 16 lower-case hex digits in JSON: a number that large does not survive every
/// JSON reader.
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_text_covers_every_column_but_position_and_txid() {
        let text = canonical_row_text();
        for column in CANONICAL_COLUMNS {
            assert!(text.contains(column.sql), "{}", column.name);
        }
        assert!(!text.contains("global_position"));
        assert!(!text.contains("txid"));
        assert_eq!(CANONICAL_COLUMNS[EVENT_ID_COLUMN].name, "event_id");
        assert!(row_hash().contains(text));
    }

    #[test]
    fn sums_reduce_modulo_two_to_the_64() {
        assert_eq!(Digest::from_sum_text(0, "0").unwrap().sum, 0);
        assert_eq!(Digest::from_sum_text(1, "-1").unwrap().sum, u64::MAX);
        let big = (1i128 << 64) + 5;
        assert_eq!(Digest::from_sum_text(2, &big.to_string()).unwrap().sum, 5);
        assert!(Digest::from_sum_text(1, "1.5").is_err());
    }

    #[test]
    fn digests_print_as_hex() {
        let digest = Digest {
            events: 3,
            sum: 0xab,
        };
        let json = serde_json::to_value(digest).unwrap();
        assert_eq!(json["sum"], "00000000000000ab");
        assert_eq!(serde_json::from_value::<Digest>(json).unwrap(), digest);
        assert_eq!(digest.to_string(), "00000000000000ab over 3 events");
    }
}
