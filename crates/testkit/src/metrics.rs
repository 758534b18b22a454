//! Reading the services' metrics in a test (feature `metrics`): an in-memory exporter
//! installed as the process's meter provider. The services' instruments bind to the
//! provider installed when the first metric is recorded, so install it first thing, in
//! a test that has its process to itself (nextest gives each test one).

use std::collections::HashMap;

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::{
    InMemoryMetricExporter, SdkMeterProvider,
    data::{AggregatedMetrics, MetricData},
};

/// The process's metrics, exported to memory.
pub struct Meters {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

impl Meters {
    /// Installs an in-memory exporter as the process's meter provider.
    pub fn install() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder().with_periodic_exporter(exporter.clone()).build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Self { provider, exporter }
    }

    /// The data points of metric `name` as of now: each one's attributes, and its count
    /// (histograms) or value (counters, up-down counters, gauges).
    pub fn points(&self, name: &str) -> Vec<(HashMap<String, String>, f64)> {
        fn attrs<'a>(kvs: impl Iterator<Item = &'a KeyValue>) -> HashMap<String, String> {
            kvs.map(|kv| (kv.key.to_string(), kv.value.to_string())).collect()
        }
        self.provider.force_flush().unwrap();
        let mut out = Vec::new();
        // Each data point's attributes and value.
        macro_rules! values {
            ($data:expr) => {
                out.extend($data.data_points().map(|p| (attrs(p.attributes()), p.value() as f64)))
            };
        }
        // Cumulative: the last export holds every total.
        if let Some(resource) = self.exporter.get_finished_metrics().unwrap().last() {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics().filter(|m| m.name() == name) {
                    match metric.data() {
                        AggregatedMetrics::F64(MetricData::Histogram(h)) => out.extend(
                            h.data_points().map(|p| (attrs(p.attributes()), p.count() as f64)),
                        ),
                        AggregatedMetrics::U64(MetricData::Sum(c)) => values!(c),
                        AggregatedMetrics::I64(MetricData::Sum(c)) => values!(c),
                        AggregatedMetrics::U64(MetricData::Gauge(g)) => values!(g),
                        other => panic!("{name}: unexpected data {other:?}"),
                    }
                }
            }
        }
        out
    }

    /// The total of metric `name` by the values of attributes `keys`.
    pub fn by(&self, name: &str, keys: &[&str]) -> HashMap<Vec<String>, f64> {
        let mut out = HashMap::new();
        for (attrs, value) in self.points(name) {
            let key = keys.iter().map(|k| attrs.get(*k).cloned().unwrap_or_default()).collect();
            *out.entry(key).or_default() += value;
        }
        out
    }
}
