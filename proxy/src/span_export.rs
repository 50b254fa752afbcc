//! `SpanExport`: evshift's tracing spans sent to an OpenTelemetry collector over OTLP/HTTP
//! (cargo feature `otel`, `[tracing] otlp_endpoint`).
//!
//! The spans are the ones the logs carry (`migration` and the `eventsource.migration.*` spans
//! inside it, with their fields as attributes). A `tracing-opentelemetry` layer hands each
//! closed span to the SDK's batch processor, which exports from a thread of its own: a slow or
//! absent collector never holds a session or a migration up; what does not fit its queue is
//! dropped.

use std::time::Duration;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::{Layer, Registry};

use crate::config::{OtlpProtocol, TracingConfig};

/// The instrumentation scope named on every exported span.
const SCOPE: &str = "evshift";

/// The running exporter: a tracer provider with one batch processor.
pub struct SpanExport {
    provider: SdkTracerProvider,
}

impl SpanExport {
    /// Sets up the exporter for `endpoint`. Nothing is sent until a span closes; an
    /// unreachable collector shows in the SDK's own log lines, not here.
    pub fn start(config: &TracingConfig, endpoint: &str) -> anyhow::Result<SpanExport> {
        let protocol = match config.otlp_protocol {
            OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
            OtlpProtocol::HttpJson => Protocol::HttpJson,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_millis(config.export_timeout_ms))
            .build()
            .with_context(|| format!("cannot set up the span exporter for {endpoint}"))?;
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batches)
            .build();
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        Ok(SpanExport { provider })
    }

    /// The subscriber layer that turns closed spans into exported ones.
    pub fn layer(&self) -> impl Layer<Registry> + Send + Sync {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(SCOPE))
    }

    /// Sends the spans still queued and stops the exporter's thread.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("evshift: the last spans could not be exported: {error}");
        }
    }
}
