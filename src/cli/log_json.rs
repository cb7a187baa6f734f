//! JSON log lines with unique keys: `timestamp`, `level`, `module` (the
//! tracing target, i.e. the Rust module), then the event's own fields.
//!
//! tracing-subscriber's flattened JSON writes the module as `target`, which
//! repeats the key whenever an event has a `target` field of its own; most
//! parsers keep the last value, so one of the two was lost. An event field
//! named like one of the fixed keys is written as `field.<name>` instead.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Keys every line carries; event fields never overwrite them.
const FIXED: [&str; 3] = ["timestamp", "level", "module"];

/// The `--log-format json` event formatter: one JSON object per line.
pub(super) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", line(event))
    }
}

/// The JSON text of one event, without the newline.
fn line(event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut map = Map::new();
    map.insert(
        "timestamp".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    map.insert("level".into(), meta.level().as_str().into());
    map.insert("module".into(), meta.target().into());
    event.record(&mut Fields(&mut map));
    Value::Object(map).to_string()
}

/// Collects an event's fields into the line's map.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        let key = if FIXED.contains(&name) {
            format!("field.{name}")
        } else {
            name.to_string()
        };
        self.0.insert(key, value);
    }
}

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn an_event_target_field_and_the_module_get_distinct_keys() {
        let buf = Buf::default();
        let sub = tracing_subscriber::fmt()
            .event_format(super::JsonLines)
            .with_writer(buf.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                event = "x",
                target = "offsite",
                level = 3,
                keys = 7u64,
                "done"
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["module"], "gsdr::cli::log_json::tests");
        assert_eq!(v["target"], "offsite");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["field.level"], 3);
        assert_eq!(v["keys"], 7);
        assert_eq!(v["message"], "done");
        // Each key once: the object has as many keys as `"key":` occurrences.
        assert_eq!(text.matches("\":").count(), v.as_object().unwrap().len());
    }
}
