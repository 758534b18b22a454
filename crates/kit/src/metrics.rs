//! RPC metrics, as the OpenTelemetry semantic conventions for RPC name them:
//! `rpc.server.call.duration` (seconds) for every call a service serves, by
//! `rpc.service`, `rpc.method` and `rpc.grpc.status_code`, and
//! `rpc.client.call.duration` for every call to a peer, by `server.address` (the peer)
//! and status code; `messaging.process.duration` for every event a consumer handled, by
//! queue, routing key and outcome (`processed`, `retried`, `requeued`,
//! `dead_lettered`). The event pipeline and the services add: `outbox.pending.events`
//! and `outbox.oldest.age` (per collection, measured by the relay every
//! [`BACKLOG_EVERY`]), `messaging.client.sent.messages` (every publish by routing key and
//! outcome: `confirmed`, `returned`, `nacked`, `failed`), `notification.streams.open`
//! and `user.login.throttled`. Durations are in seconds, in [`DURATION_BUCKETS`]; a
//! call to a path that is no RPC of the system is recorded as [`OTHER`]. Exported over
//! OTLP with the traces when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`crate::telemetry::init`]); without it they
//! cost a no-op.

use std::{
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::Instant,
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Gauge, Histogram, UpDownCounter},
};
use tonic::codegen::http;

/// The instruments, made from the global meter provider on first use (after
/// [`crate::telemetry::init`] installed it).
struct Instruments {
    server: Histogram<f64>,
    client: Histogram<f64>,
    events: Histogram<f64>,
    published: Counter<u64>,
    outbox_pending: Gauge<u64>,
    outbox_age: Gauge<f64>,
    streams: UpDownCounter<i64>,
    throttled: Counter<u64>,
}

/// How often a relay measures its outbox backlog.
pub const BACKLOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The bucket boundaries of every duration histogram, in seconds: those of the
/// OpenTelemetry semantic conventions for durations. The SDK's default boundaries (0, 5,
/// 10, 25 ... 10,000) are meant for milliseconds: in seconds every call under 5 s would
/// fall in one bucket, and every percentile a dashboard draws from them would be made up.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("social");
        Instruments {
            server: meter
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .with_description("Duration of the RPCs this service served")
                .build(),
            client: meter
                .f64_histogram("rpc.client.call.duration")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .with_description("Duration of this service's calls to its peers")
                .build(),
            events: meter
                .f64_histogram("messaging.process.duration")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .with_description("Duration of handling one event, by outcome")
                .build(),
            published: meter
                .u64_counter("messaging.client.sent.messages")
                .with_description("Events published by the outbox relay, by outcome")
                .build(),
            outbox_pending: meter
                .u64_gauge("outbox.pending.events")
                .with_description("Events stored and not yet confirmed by the broker")
                .build(),
            outbox_age: meter
                .f64_gauge("outbox.oldest.age")
                .with_unit("s")
                .with_description("Age of the oldest event not yet published (0 when none)")
                .build(),
            streams: meter
                .i64_up_down_counter("notification.streams.open")
                .with_description("Live notification streams open on this replica")
                .build(),
            throttled: meter
                .u64_counter("user.login.throttled")
                .with_description("Logins refused by the failed-login throttle")
                .build(),
        }
    })
}

/// Records one call to peer `peer` that took `seconds` and ended with `code`.
pub fn client_call(peer: &'static str, code: tonic::Code, seconds: f64) {
    instruments().client.record(
        seconds,
        &[
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("server.address", peer),
            KeyValue::new("rpc.grpc.status_code", code as i64),
        ],
    );
}

/// Records one event of `routing_key` from `queue`, handled in `seconds` with
/// `outcome`.
pub fn event(queue: &str, routing_key: &str, outcome: &'static str, seconds: f64) {
    instruments().events.record(
        seconds,
        &[
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.destination.name", queue.to_owned()),
            KeyValue::new("messaging.rabbitmq.destination.routing_key", routing_key.to_owned()),
            KeyValue::new("outcome", outcome),
        ],
    );
}

/// Records one publish of an event with `routing_key` that ended with `outcome`
/// (`confirmed`, `returned`, `nacked` or `failed`). It counts publishes, not events: an
/// event published again (its batch failed, or taking it out of its outbox did) counts
/// again.
pub fn published(routing_key: &'static str, outcome: &'static str) {
    instruments().published.add(
        1,
        &[
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.rabbitmq.destination.routing_key", routing_key),
            KeyValue::new("outcome", outcome),
        ],
    );
}

/// Records the outbox backlog of `collection`: `events` pending, the oldest
/// `oldest_age_secs` old.
pub fn outbox_backlog(collection: &str, events: u64, oldest_age_secs: f64) {
    let attrs = [KeyValue::new("outbox.collection", collection.to_owned())];
    instruments().outbox_pending.record(events, &attrs);
    instruments().outbox_age.record(oldest_age_secs, &attrs);
}

/// One more (`1`) or one fewer (`-1`) live notification stream.
pub fn streams_open(delta: i64) {
    instruments().streams.add(delta, &[]);
}

/// One login refused by the throttle.
pub fn login_throttled() {
    instruments().throttled.add(1, &[]);
}

/// The tower layer that records `rpc.server.call.duration` for every call served.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerLayer;

impl<S> tower::Layer<S> for ServerLayer {
    type Service = Server<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Server { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Server<S> {
    inner: S,
}

/// What one call records when it ends.
struct Call {
    started: Instant,
    service: String,
    method: String,
}

impl Call {
    fn end(self, code: i64) {
        instruments().server.record(
            self.started.elapsed().as_secs_f64(),
            &[
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", self.service),
                KeyValue::new("rpc.method", self.method),
                KeyValue::new("rpc.grpc.status_code", code),
            ],
        );
    }
}

/// What a call to a path that is no RPC of this system is recorded as: a client may send
/// any path, and each would otherwise be a new series.
pub const OTHER: &str = "_OTHER";

/// The `rpc.service` and `rpc.method` of a call to `path` (`/package.Service/Method`):
/// its own for the RPCs of this system, health and reflection; [`OTHER`] for any other.
fn labels(path: &str) -> (&str, &str) {
    static KNOWN: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        use prost::Message;
        let sets = [
            social_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut known = std::collections::HashSet::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        known
    });
    match path.trim_start_matches('/').split_once('/') {
        Some(labels) if known.contains(path) => labels,
        _ => (OTHER, OTHER),
    }
}

/// The `grpc-status` in `headers`, if there is one.
fn status(headers: &http::HeaderMap) -> Option<i64> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

impl<S, B, R> tower::Service<http::Request<B>> for Server<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Metered<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = labels(request.uri().path());
        let call = Call {
            started: Instant::now(),
            service: service.to_owned(),
            method: method.to_owned(),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // A call that fails at once answers with its status in the headers
            // ("trailers only"); others say it in the trailers at the end of the body.
            let call = match status(response.headers()) {
                Some(code) => {
                    call.end(code);
                    None
                }
                None => Some(call),
            };
            Ok(response.map(|inner| Metered { inner, call }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when its trailers (or its end) come.
    pub struct Metered<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for Metered<B> {
        fn drop(this: Pin<&mut Self>) {
            // The client went away before the end: CANCELLED.
            if let Some(call) = this.project().call.take() {
                call.end(tonic::Code::Cancelled as i64);
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for Metered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status)
                    && let Some(call) = this.call.take()
                {
                    call.end(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.call.take() {
                    call.end(tonic::Code::Unknown as i64);
                }
            }
            Poll::Ready(None) => {
                // Ended without a status: the server answered OK without trailers.
                if let Some(call) = this.call.take() {
                    call.end(tonic::Code::Ok as i64);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use opentelemetry_sdk::metrics::{
        InMemoryMetricExporter, SdkMeterProvider,
        data::{AggregatedMetrics, MetricData},
    };
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    use crate::client::Peer;

    /// (attribute values in `keys` order) → how many calls, for histogram `name`.
    fn calls(
        exporter: &InMemoryMetricExporter,
        name: &str,
        keys: &[&str],
    ) -> HashMap<Vec<String>, u64> {
        let mut out = HashMap::new();
        for resource in exporter.get_finished_metrics().expect("exported") {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics().filter(|m| m.name() == name) {
                    let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() else {
                        panic!("{name} is not an f64 histogram");
                    };
                    for point in h.data_points() {
                        let attrs: HashMap<String, String> = point
                            .attributes()
                            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                            .collect();
                        assert_eq!(attrs.get("rpc.system").map(String::as_str), Some("grpc"));
                        let key = keys
                            .iter()
                            .map(|k| attrs.get(*k).cloned().unwrap_or_default())
                            .collect();
                        *out.entry(key).or_default() += point.count();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_path_that_is_no_rpc_of_the_system_is_other() {
        assert_eq!(
            super::labels("/social.post.v1.PostService/GetPost"),
            ("social.post.v1.PostService", "GetPost")
        );
        assert_eq!(
            super::labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        for unknown in [
            "/social.post.v1.PostService/NoSuchMethod",
            "/made.up.Service/Call",
            "/not-grpc-at-all",
            "/",
        ] {
            assert_eq!(super::labels(unknown), (super::OTHER, super::OTHER), "{unknown}");
        }
    }

    /// The bucket bounds and counts of every data point of histogram `name`.
    fn buckets(exporter: &InMemoryMetricExporter, name: &str) -> Vec<(Vec<f64>, Vec<u64>)> {
        let mut out = Vec::new();
        for resource in exporter.get_finished_metrics().expect("exported") {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics().filter(|m| m.name() == name) {
                    let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() else {
                        panic!("{name} is not an f64 histogram");
                    };
                    out.extend(
                        h.data_points()
                            .map(|p| (p.bounds().collect(), p.bucket_counts().collect())),
                    );
                }
            }
        }
        out
    }

    /// A meter provider, installed as the global one, whose points land in the exporter.
    fn recording() -> (InMemoryMetricExporter, SdkMeterProvider) {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder().with_periodic_exporter(exporter.clone()).build();
        opentelemetry::global::set_meter_provider(provider.clone());
        (exporter, provider)
    }

    #[tokio::test]
    async fn a_three_millisecond_call_lands_in_a_bucket_at_or_below_five_milliseconds() {
        let (exporter, provider) = recording();
        super::client_call("peer", tonic::Code::Ok, 0.003);
        super::event("queue", "a.b.c", "handled", 0.003);
        let grpc = opentelemetry::KeyValue::new("rpc.system", "grpc");
        super::instruments().server.record(0.003, &[grpc]);
        provider.force_flush().expect("flushed");
        for name in
            ["rpc.client.call.duration", "messaging.process.duration", "rpc.server.call.duration"]
        {
            let points = buckets(&exporter, name);
            assert!(!points.is_empty(), "{name} recorded nothing");
            for (bounds, counts) in points {
                assert_eq!(bounds, super::DURATION_BUCKETS.to_vec(), "{name}");
                // The first bucket holds everything up to its bound, 5 ms.
                assert!(bounds[0] <= 0.005, "{name}: {bounds:?}");
                assert_eq!(counts[0], 1, "{name}: {counts:?}");
            }
        }
    }

    #[tokio::test]
    async fn calls_served_and_made_are_counted_by_method_peer_and_status() {
        let (exporter, provider) = recording();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("social.test.Known", tonic_health::ServingStatus::Serving)
            .await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(super::ServerLayer)
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let peer =
            Peer::new("health peer", "URL", &format!("http://{addr}"), Duration::from_secs(2))
                .expect("a valid URL");
        let mut client = HealthClient::new(peer.channel());
        let check = |service: &str| HealthCheckRequest { service: service.into() };
        peer.call(client.check(peer.request(check("social.test.Known")))).await.expect("known");
        let unknown = peer
            .call(client.check(peer.request(check("social.test.Unknown"))))
            .await
            .expect_err("unknown");
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        provider.force_flush().expect("flushed");
        let served = calls(
            &exporter,
            "rpc.server.call.duration",
            &["rpc.service", "rpc.method", "rpc.grpc.status_code"],
        );
        let health = "grpc.health.v1.Health".to_owned();
        let by = |code: &str| vec![health.clone(), "Check".into(), code.into()];
        assert_eq!(served.get(&by("0")), Some(&1), "{served:?}");
        assert_eq!(served.get(&by("5")), Some(&1), "NOT_FOUND: {served:?}");
        let made = calls(
            &exporter,
            "rpc.client.call.duration",
            &["server.address", "rpc.grpc.status_code"],
        );
        assert_eq!(made.get(&vec!["health peer".into(), "0".into()]), Some(&1), "{made:?}");
        assert_eq!(made.get(&vec!["health peer".into(), "5".into()]), Some(&1), "{made:?}");
    }
}
