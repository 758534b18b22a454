//! What every request goes through around its handler: the client's identity and rate
//! limits, the body limit, compression, CORS, the access log with its span, request ids,
//! and answers in the error shape for unknown routes and methods.

use std::time::Duration;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, Method, header},
    middleware,
};
use tower_http::{
    compression::{
        CompressionLayer,
        predicate::{NotForContentType, Predicate, SizeAbove},
    },
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::{DefaultOnResponse, TraceLayer},
};

use crate::{Config, context::AppState, error, limits};

/// `routes` with everything around them, for `state`.
pub(crate) fn around(routes: Router<AppState>, state: AppState, config: &Config) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(
            config.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static(crate::idempotency::HEADER),
        ])
        .expose_headers([
            header::LINK,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
            request_id.clone(),
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600));
    routes
        .fallback(|| async { error::ApiError::new(tonic::Code::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(state.clone(), crate::idempotency::remember))
        .layer(middleware::from_fn_with_state(state.clone(), limits::limit))
        .layer(middleware::from_fn_with_state(state.clone(), limits::identify))
        // Through the extractors, so that a body too large is answered in the error shape.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(CompressionLayer::new().compress_when(compressed()))
        .layer(cors)
        // The access log: one line per request, with its status and latency, in its span.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Below this size an answer goes as it is: gzip would save a few hundred bytes of a
/// packet that is sent anyway, and each compressed answer costs a compressor's state
/// (about 300 KiB, allocated, zeroed and freed): more than the rest of a cached read's
/// time in the gateway (docs/BENCHMARKS.md).
pub(crate) const COMPRESSED_FROM_BYTES: u64 = 1024;

/// Which answers are compressed (for a client that accepts gzip): those of at least
/// [`COMPRESSED_FROM_BYTES`] or of unknown length, except gRPC, images and event streams
/// (tower-http's defaults, with a larger floor).
fn compressed() -> impl Predicate {
    SizeAbove::new(COMPRESSED_FROM_BYTES)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE)
}

/// A span per request: method, route, request id, and the caller's trace context
/// (`traceparent`), so that the services' spans join the client's trace.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or(request.uri().path(), |p| p.as_str())
        .to_owned();
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        otel.name = %format!("{} {route}", request.method()),
        http.method = %request.method(),
        http.route = %route,
        request_id = %id,
    );
    social_kit::telemetry::extract(
        &span,
        &social_kit::telemetry::HeaderExtractor(request.headers()),
    );
    span
}
