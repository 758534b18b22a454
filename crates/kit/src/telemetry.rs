//! Logs and traces: `tracing` with a human or JSON formatter (`LOG_FORMAT`), a `RUST_LOG`
//! filter, and OpenTelemetry spans exported over OTLP only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. W3C trace context travels in gRPC metadata (and,
//! through [`inject`] / [`extract`], in any other string map such as AMQP headers).

use std::{collections::HashMap, sync::Once};

use opentelemetry::{
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Keeps the trace and metric pipelines alive; call [`Telemetry::shutdown`] to flush
/// them at exit.
pub struct Telemetry {
    provider: SdkTracerProvider,
    meters: Option<SdkMeterProvider>,
}

/// Longest the exporters get to flush at exit, together. The whole stop (the platform's
/// preStop wait, `SHUTDOWN_GRACE_SECS`, the background tasks' and the database's 5 s
/// each) fits Kubernetes' 60-s grace with this on top, even with the collector down,
/// when each exporter would otherwise wait out its own 10-s timeout.
pub const FLUSH_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

impl Telemetry {
    /// Flushes spans and metrics not yet exported and stops the exporters, for at most
    /// [`FLUSH_WITHIN`]; what is not out by then is dropped.
    pub fn shutdown(self) {
        let flushed = within(FLUSH_WITHIN, move || {
            if let Err(e) = self.provider.shutdown() {
                eprintln!("failed to flush traces: {e}");
            }
            if let Some(meters) = self.meters
                && let Err(e) = meters.shutdown()
            {
                eprintln!("failed to flush metrics: {e}");
            }
        });
        if !flushed {
            eprintln!("telemetry not flushed within {FLUSH_WITHIN:?}; exiting without the rest");
        }
    }
}

/// Runs `work` on a thread of its own and waits for it at most `deadline`; whether it
/// finished (if not, it is left to the process's end).
fn within(deadline: std::time::Duration, work: impl FnOnce() + Send + 'static) -> bool {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        work();
        let _ = done.send(());
    });
    finished.recv_timeout(deadline).is_ok()
}

/// Installs the global subscriber and propagator. Call once, at start-up.
pub fn init(service: &'static str, format: LogFormat) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // One series per replica: without an instance id, the replicas of a service would
    // collide in the collector's Prometheus exporter (counters seeming to reset, gauges
    // flipping between replicas).
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let resource = Resource::builder()
        .with_service_name(format!("social-{service}"))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            format!("{host}-{}", std::process::id()),
        ))
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut meters = None;
    if crate::config::optional("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        // The exporters read the endpoint and the other OTEL_* variables themselves
        // (metrics every OTEL_METRIC_EXPORT_INTERVAL ms, 60 s by default).
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
        builder = builder.with_batch_exporter(exporter);
        // OTEL_METRICS_EXPORTER=none: traces only (a backend such as Jaeger takes no
        // metrics).
        if crate::config::optional("OTEL_METRICS_EXPORTER").as_deref() != Some("none") {
            let metrics = opentelemetry_otlp::MetricExporter::builder().with_tonic().build()?;
            let provider = SdkMeterProvider::builder()
                .with_resource(resource)
                .with_periodic_exporter(metrics)
                .build();
            opentelemetry::global::set_meter_provider(provider.clone());
            meters = Some(provider);
        }
    }
    let provider = builder.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,h2=warn,tower=warn,lapin=warn,hyper=warn"));
    let fmt = match format {
        // Colours only on a terminal: escape codes in log files cost CPU and help no one.
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .flatten_event(true)
            .boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(Telemetry { provider, meters })
}

/// For tests: silent unless `TEST_LOG` is set; safe to call from every test.
pub fn init_for_tests() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        if std::env::var_os("TEST_LOG").is_some() {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
    });
}

/// Writes the current span's trace context into `carrier`.
pub fn inject(span: &tracing::Span, carrier: &mut dyn Injector) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, carrier));
}

/// Makes `span` a child of the trace context found in `carrier`, if any.
pub fn extract(span: &tracing::Span, carrier: &dyn Extractor) {
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    let _ = span.set_parent(cx);
}

/// Trace context as a plain string map (for AMQP headers).
pub fn current_context_map() -> HashMap<String, String> {
    let mut map = HashMap::new();
    inject(&tracing::Span::current(), &mut map);
    map
}

/// Reads trace context from HTTP/2 headers (gRPC metadata).
pub struct HeaderExtractor<'a>(pub &'a tonic::codegen::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes trace context into gRPC metadata.
pub struct MetadataInjector<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_flush_that_hangs_is_left_behind() {
        // An exporter whose collector never answers: it would wait out its timeout.
        let hanging = super::within(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(30));
        });
        assert!(!hanging, "the stop waited for the hanging flush");
        assert!(super::within(Duration::from_secs(30), || {}));
    }
}
