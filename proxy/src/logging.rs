//! The process's one tracing subscriber: log lines on stderr (`[log]`, text or JSON) and, in a
//! build with the `otel` feature and with `[tracing] otlp_endpoint` set, the spans exported to
//! an OpenTelemetry collector (`span_export`).
//!
//! Each output has a filter of its own, so the log level and the exported spans are chosen
//! apart: a collector can take every migration span while the log stays at `warn`.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{Config, LogFormat};
use crate::log_format::JsonLines;

/// A boxed output of the subscriber.
type Output = Box<dyn Layer<Registry> + Send + Sync>;

/// Keeps the span export running; dropping it sends the spans still queued. Drop it outside
/// the tokio runtime (the exporter's HTTP client blocks).
pub struct LoggingGuard {
    #[cfg(feature = "otel")]
    export: Option<crate::span_export::SpanExport>,
}

impl Drop for LoggingGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(export) = self.export.take() {
            export.shutdown();
        }
    }
}

/// Installs the subscriber for `evshift serve`. `RUST_LOG` overrides `[log] level`. Fails only
/// when the span exporter cannot be set up.
pub fn init(config: &Config) -> anyhow::Result<LoggingGuard> {
    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log: Output = match config.log.format {
        // Span fields as JSON, so that each line can carry its spans' fields (log_format).
        LogFormat::Json => log
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLines)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Text => log.with_filter(log_filter).boxed(),
    };
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut outputs = vec![log];
    let guard = LoggingGuard {
        #[cfg(feature = "otel")]
        export: match &config.tracing.otlp_endpoint {
            Some(endpoint) => {
                let export = crate::span_export::SpanExport::start(&config.tracing, endpoint)?;
                outputs.push(
                    export
                        .layer()
                        .with_filter(EnvFilter::new(&config.tracing.level))
                        .boxed(),
                );
                Some(export)
            }
            None => None,
        },
    };
    tracing_subscriber::registry().with(outputs).init();
    Ok(guard)
}
