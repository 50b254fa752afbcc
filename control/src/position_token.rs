//! `PositionToken`: eventsource-py's serialised feed position, the `position_token` column of
//! `projection_checkpoints`: `{"s":"<store_id>","k":[<global_position>]}`.
//!
//! `s` is the application's own name for its event store. eventsource-py's PostgreSQL store
//! defaults it to `pg:<database>` (the database of the URL the application connects with, so
//! through evshift the same for every store behind it) or takes an explicit `store_id`, and it
//! refuses a token whose `s` is not its own. evshift therefore keeps `s` as the application
//! wrote it and rewrites only `k`.

use serde::{Deserialize, Serialize};

/// A decoded int-backed position token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionToken {
    /// The application's store id, kept verbatim.
    pub store_id: String,
    /// The `global_position`.
    pub position: i64,
}

/// The JSON shape, field order as eventsource-py writes it.
#[derive(Serialize, Deserialize)]
struct Wire {
    s: String,
    k: Vec<serde_json::Value>,
}

impl PositionToken {
    /// Decodes a token; `Err` says why it is not an int-backed position.
    pub fn parse(text: &str) -> Result<PositionToken, String> {
        let wire: Wire = serde_json::from_str(text)
            .map_err(|_| format!("position token {text:?} is not {{\"s\":...,\"k\":[...]}}"))?;
        match wire.k.as_slice() {
            [serde_json::Value::Number(n)] if n.as_i64().is_some() => Ok(PositionToken {
                store_id: wire.s,
                position: n.as_i64().unwrap_or_default(),
            }),
            _ => Err(format!(
                "position token {text:?} does not hold one integer position"
            )),
        }
    }

    /// The token with another position, same store id.
    pub fn with_position(&self, position: i64) -> PositionToken {
        PositionToken {
            store_id: self.store_id.clone(),
            position,
        }
    }

    /// The token as eventsource-py writes it (compact JSON, `s` first).
    pub fn encode(&self) -> String {
        let wire = Wire {
            s: self.store_id.clone(),
            k: vec![self.position.into()],
        };
        // A string and an integer: encoding cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_library_format() {
        let token = PositionToken::parse(r#"{"s":"pg:app","k":[42]}"#).unwrap();
        assert_eq!(token.store_id, "pg:app");
        assert_eq!(token.position, 42);
        assert_eq!(token.with_position(7).encode(), r#"{"s":"pg:app","k":[7]}"#);
        let spaced = PositionToken::parse(r#" { "k": [ 5 ], "s": "x" } "#).unwrap();
        assert_eq!(spaced.encode(), r#"{"s":"x","k":[5]}"#);
    }

    #[test]
    fn refuses_other_shapes() {
        for bad in [
            "",
            "12",
            r#"{"s":"a"}"#,
            r#"{"s":"a","k":[]}"#,
            r#"{"s":"a","k":[1,2]}"#,
            r#"{"s":"a","k":["x"]}"#,
            r#"{"s":"a","k":[1.5]}"#,
            r#"{"s":1,"k":[1]}"#,
        ] {
            assert!(PositionToken::parse(bad).is_err(), "{bad}");
        }
    }
}
