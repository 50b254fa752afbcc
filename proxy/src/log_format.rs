//! `[log] format = "json"`: one JSON object per line, with the fields of every enclosing span
//! lifted to the top level next to the event's own.
//!
//! tracing-subscriber's own JSON format nests span fields under `span` and `spans`; a log
//! pipeline then has to know which span carries `migration_id`. Here a line written inside the
//! driver's `migration` span carries `migration_id` and `tenant_id` itself, like the fields of
//! the event. An event's field wins over a span's of the same name, an inner span's over an
//! outer one's.
//!
//! ```json
//! {"timestamp":"2025-01-01T00:00:00.000000Z","level":"INFO","target":"evshift_control::driver",
//!  "message":"migration phase changed","span":"migration","spans":["migration"],
//!  "migration_id":7,"operation":"bulk_copy_completed","phase":"DUAL_WRITE","tenant_id":"..."}
//! ```

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Keys every line has; a field of the same name is written as `field_<name>`.
const RESERVED: [&str; 6] = ["timestamp", "level", "target", "message", "span", "spans"];

/// The JSON-lines event format. Use it with [`JsonFields`] as the field formatter, which
/// stores each span's fields as a JSON object this format reads back.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                spans.push(span.name());
                if let Some(formatted) = span.extensions().get::<FormattedFields<JsonFields>>() {
                    fields.extend(span_fields(formatted));
                }
            }
        }
        event.record(&mut FieldCollector(&mut fields));
        let message = fields.remove("message").unwrap_or(Value::Null);

        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut line = String::with_capacity(256);
        line.push('{');
        push_entry(&mut line, "timestamp", &Value::from(timestamp));
        push_entry(&mut line, "level", &Value::from(meta.level().as_str()));
        push_entry(&mut line, "target", &Value::from(meta.target()));
        push_entry(&mut line, "message", &message);
        if let Some(innermost) = spans.last() {
            push_entry(&mut line, "span", &Value::from(*innermost));
            push_entry(&mut line, "spans", &Value::from(spans.clone()));
        }
        for (key, value) in &fields {
            if RESERVED.contains(&key.as_str()) {
                push_entry(&mut line, &format!("field_{key}"), value);
            } else {
                push_entry(&mut line, key, value);
            }
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// A span's fields as `JsonFields` stored them (a JSON object; empty when it has none).
fn span_fields(formatted: &FormattedFields<JsonFields>) -> Map<String, Value> {
    match serde_json::from_str(formatted) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Appends `"key":value` to an object being written, with a comma unless it is the first.
fn push_entry(line: &mut String, key: &str, value: &Value) {
    if !line.ends_with('{') {
        line.push(',');
    }
    // Serialising a string or a `Value` cannot fail.
    line.push_str(&serde_json::to_string(key).unwrap_or_default());
    line.push(':');
    line.push_str(&serde_json::to_string(value).unwrap_or_default());
}

/// Collects an event's fields as JSON values: numbers and booleans as such, everything else
/// (`%display`, `?debug`, errors) as its text.
struct FieldCollector<'a>(&'a mut Map<String, Value>);

impl FieldCollector<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_string(), value);
    }
}

impl Visit for FieldCollector<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number: keep their text.
        let value = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::from(value.to_string()));
        self.put(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer keeping what the subscriber wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The lines written while `body` runs, each parsed as JSON.
    fn lines_of(body: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, body);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is JSON"))
            .collect()
    }

    #[test]
    fn span_fields_reach_the_top_level_of_each_line() {
        let lines = lines_of(|| {
            let span = tracing::info_span!("migration", migration_id = 7, tenant_id = %"t-1");
            let _entered = span.enter();
            tracing::info!(
                phase = "BULK_COPY",
                operation = "bulk_copy",
                copied = 10u64,
                "copied"
            );
        });
        let line = &lines[0];
        assert_eq!(line["message"], "copied");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["migration_id"], 7);
        assert_eq!(line["tenant_id"], "t-1");
        assert_eq!(line["phase"], "BULK_COPY");
        assert_eq!(line["operation"], "bulk_copy");
        assert_eq!(line["copied"], 10);
        assert_eq!(line["span"], "migration");
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn inner_spans_and_events_override_outer_fields() {
        let lines = lines_of(|| {
            let outer = tracing::info_span!("migration", phase = "PENDING", operation = "drive");
            let _outer = outer.enter();
            let inner = tracing::info_span!("eventsource.migration.bulk_copy", phase = "BULK_COPY");
            let _inner = inner.enter();
            tracing::info!(operation = "checkpoint", "batch");
        });
        let line = &lines[0];
        assert_eq!(line["phase"], "BULK_COPY");
        assert_eq!(line["operation"], "checkpoint");
        assert_eq!(line["span"], "eventsource.migration.bulk_copy");
        assert_eq!(
            line["spans"],
            serde_json::json!(["migration", "eventsource.migration.bulk_copy"])
        );
    }

    #[test]
    fn a_field_named_like_a_fixed_key_does_not_replace_it() {
        let lines = lines_of(|| tracing::warn!(target = "x", level = 3, "odd fields"));
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["field_level"], 3);
        assert_eq!(line["field_target"], "x");
        assert_eq!(line["message"], "odd fields");
    }

    #[test]
    fn lines_outside_spans_have_no_span_keys() {
        let lines = lines_of(|| tracing::error!(error = %"boom", "failed"));
        assert!(lines[0].get("span").is_none());
        assert_eq!(lines[0]["error"], "boom");
    }
}
