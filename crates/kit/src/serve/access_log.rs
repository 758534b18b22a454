//! The access log: a span per request joined to the caller's trace, a line per answer
//! with its latency, and one per failure at a level that says whose problem it is.

use std::time::Duration;

use tonic::codegen::http;

use crate::telemetry::{self, HeaderExtractor};

type Body = tonic::body::Body;
/// The span name of health and reflection requests.
const PROBE: &str = "grpc.probe";
pub(super) type AccessLog = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
    fn(&http::Request<Body>) -> tracing::Span,
    (),
    fn(&http::Response<Body>, Duration, &tracing::Span),
    (),
    (),
    fn(tower_http::classify::GrpcFailureClass, Duration, &tracing::Span),
>;

/// A span per request (joined to the caller's trace), a line per answer with its
/// latency, and one per failure at a level that says whose problem it is.
pub(super) fn access_log() -> AccessLog {
    fn answered(_: &http::Response<Body>, latency: Duration, span: &tracing::Span) {
        let latency_ms = latency.as_secs_f64() * 1000.0;
        // Probes get a debug span, usually disabled: only real requests log at info.
        if !span.is_disabled() && span.metadata().is_some_and(|m| m.name() != PROBE) {
            tracing::info!(latency_ms, "answered");
        } else {
            tracing::debug!(latency_ms, "answered");
        }
    }
    fn failed(class: tower_http::classify::GrpcFailureClass, latency: Duration, _: &tracing::Span) {
        use tower_http::classify::{GrpcCode, GrpcFailureClass};
        let latency_ms = latency.as_secs_f64() * 1000.0;
        match class {
            GrpcFailureClass::Status(status) => match status.code() {
                Some(
                    GrpcCode::Internal
                    | GrpcCode::Unknown
                    | GrpcCode::DataLoss
                    | GrpcCode::Unimplemented,
                ) => {
                    tracing::error!(code = status.code_raw(), latency_ms, "failed")
                }
                Some(
                    GrpcCode::Unavailable
                    | GrpcCode::DeadlineExceeded
                    | GrpcCode::ResourceExhausted,
                ) => {
                    tracing::warn!(code = status.code_raw(), latency_ms, "failed")
                }
                _ => tracing::info!(code = status.code_raw(), latency_ms, "refused"),
            },
            GrpcFailureClass::Error(error) => tracing::warn!(%error, latency_ms, "failed"),
            other => tracing::warn!(%other, latency_ms, "failed"),
        }
    }
    tower_http::trace::TraceLayer::new_for_grpc()
        .make_span_with(request_span as fn(&http::Request<tonic::body::Body>) -> tracing::Span)
        .on_request(())
        .on_response(answered as fn(&http::Response<tonic::body::Body>, Duration, &tracing::Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(failed as fn(tower_http::classify::GrpcFailureClass, Duration, &tracing::Span))
}

fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let method = request.uri().path().trim_start_matches('/');
    // Health probes and reflection are logged at debug: a probe every few seconds
    // would drown the access log.
    let span = if method.starts_with("grpc.") {
        tracing::debug_span!(PROBE, otel.name = %method, otel.kind = "server", rpc.system = "grpc")
    } else {
        tracing::info_span!("grpc.request", otel.name = %method, otel.kind = "server", rpc.system = "grpc")
    };
    telemetry::extract(&span, &HeaderExtractor(request.headers()));
    span
}
