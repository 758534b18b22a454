//! The gateway: the HTTP/JSON front door for web and mobile clients (`social-gateway`,
//! `GATEWAY_ADDR`, default `127.0.0.1:8080`). It calls the five services through the
//! kit's peer client (deadline, trace context, error mapping) and never touches MongoDB
//! or RabbitMQ itself.
//!
//! One module per resource (`accounts`, `posts`, `graph`, `notifications`), one error
//! body and its mapping from a service's status (`error`), the rate limits and the
//! client's identity (`limits`), and the OpenAPI document derived from the handlers and
//! types themselves (`GET /openapi.json`). [`run`] is what `main` and the tests call.

mod accounts;
mod context;
mod error;
mod graph;
mod limits;
mod model;
mod notifications;
mod posts;
mod server;
mod stream;

use std::{net::IpAddr, sync::Arc, time::Duration};

use ipnet::IpNet;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware,
    response::IntoResponse,
    routing::get,
};
pub use limits::{Rate, Rates, StreamCaps};
pub use server::Timeouts;
use social_kit::{
    auth::TokenVerifier,
    client::Peer,
    config::{CommonConfig, ConfigError, at_least_one_or, optional, parse_or},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::{DefaultOnResponse, TraceLayer},
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;

use crate::context::{AppState, Services};

/// Everything the gateway reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shared settings; listens on `GATEWAY_ADDR`. (`MONGODB_*` are not used.)
    pub common: CommonConfig,
    pub user_service: Peer,
    pub post_service: Peer,
    pub graph_service: Peer,
    pub engagement_service: Peer,
    pub notification_service: Peer,
    /// The rate limits (`GATEWAY_RATE_*`).
    pub rates: Rates,
    /// How much more the IPv6 networks around a client's /64 may send together.
    pub aggregates: limits::Aggregates,
    /// `GATEWAY_TRUSTED_PROXIES`: comma-separated addresses or networks
    /// (`10.0.0.0/8`) whose `X-Forwarded-For` is believed (a load balancer's, an ingress
    /// controller's pods).
    pub trusted_proxies: Vec<IpNet>,
    /// `GATEWAY_CORS_ORIGINS`: comma-separated origins browsers may call from.
    pub cors_origins: Vec<String>,
    /// `GATEWAY_MAX_BODY_BYTES` (65536): the largest request body.
    pub max_body_bytes: usize,
    /// How many live streams may be open per account and per address.
    pub streams: StreamCaps,
    /// How long a client may take to send its headers or to take what is written.
    pub timeouts: Timeouts,
}

impl social_kit::config::ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

fn list(var: &str) -> Vec<String> {
    optional(var)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        // Not a service: its peers never carry the service credential, so that the edge
        // cannot reach internal RPCs whatever its environment holds.
        let peer = |name, var, url| Peer::from_env(name, var, url).map(Peer::without_credential);
        let trusted_proxies = list("GATEWAY_TRUSTED_PROXIES")
            .into_iter()
            .map(|a| {
                a.parse::<IpNet>()
                    .or_else(|_| a.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| ConfigError {
                        var: "GATEWAY_TRUSTED_PROXIES".into(),
                        value: a.clone(),
                        reason: "expected comma-separated IP addresses or networks (10.0.0.0/8)"
                            .into(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            common: CommonConfig::from_env("gateway", "GATEWAY_ADDR", "127.0.0.1:8080")?,
            user_service: peer("user service", "USER_SERVICE_URL", "http://127.0.0.1:50051")?,
            post_service: peer("post service", "POST_SERVICE_URL", "http://127.0.0.1:50052")?,
            graph_service: peer(
                "social-graph service",
                "GRAPH_SERVICE_URL",
                "http://127.0.0.1:50053",
            )?,
            engagement_service: peer(
                "engagement service",
                "ENGAGEMENT_SERVICE_URL",
                "http://127.0.0.1:50054",
            )?,
            notification_service: peer(
                "notification service",
                "NOTIFICATION_SERVICE_URL",
                "http://127.0.0.1:50055",
            )?,
            rates: Rates {
                anonymous: parse_or("GATEWAY_RATE_ANONYMOUS", Rate::per(300, 300))?,
                account: parse_or("GATEWAY_RATE_ACCOUNT", Rate::per(1200, 300))?,
                login: parse_or("GATEWAY_RATE_LOGIN", Rate::per(30, 300))?,
                signup: parse_or("GATEWAY_RATE_SIGNUP", Rate::per(10, 3600))?,
                export: parse_or("GATEWAY_RATE_EXPORT", Rate::per(5, 3600))?,
            },
            aggregates: limits::Aggregates {
                per_56: parse_or("GATEWAY_RATE_IPV6_56_FACTOR", 4)?,
                per_48: parse_or("GATEWAY_RATE_IPV6_48_FACTOR", 16)?,
            },
            trusted_proxies,
            cors_origins: list("GATEWAY_CORS_ORIGINS"),
            max_body_bytes: parse_or("GATEWAY_MAX_BODY_BYTES", 64 * 1024)?,
            streams: StreamCaps {
                per_account: at_least_one_or("GATEWAY_STREAMS_PER_ACCOUNT", 5)?,
                per_address: at_least_one_or("GATEWAY_STREAMS_PER_ADDRESS", 1000)?,
            },
            timeouts: Timeouts {
                headers: Duration::from_secs(at_least_one_or("GATEWAY_HEADER_TIMEOUT_SECS", 75)?),
                write_stall: Duration::from_secs(at_least_one_or(
                    "GATEWAY_WRITE_TIMEOUT_SECS",
                    30,
                )?),
            },
        })
    }

    /// The services at these peers, the defaults otherwise, an ephemeral port.
    pub fn for_tests(services: [Peer; 5]) -> Self {
        let [
            user_service,
            post_service,
            graph_service,
            engagement_service,
            notification_service,
        ] = services;
        Self {
            common: CommonConfig::for_tests("gateway", "mongodb://unused", "unused"),
            user_service,
            post_service,
            graph_service,
            engagement_service,
            notification_service,
            rates: Rates {
                anonymous: Rate::per(300, 300),
                account: Rate::per(1200, 300),
                login: Rate::per(30, 300),
                signup: Rate::per(100, 3600),
                export: Rate::per(5, 3600),
            },
            aggregates: limits::Aggregates::default(),
            trusted_proxies: Vec::new(),
            cors_origins: vec!["https://app.example.com".into()],
            max_body_bytes: 64 * 1024,
            streams: StreamCaps::default(),
            timeouts: Timeouts::default(),
        }
    }
}

impl Rate {
    /// `requests` per `seconds`.
    pub const fn per(requests: u32, seconds: u64) -> Self {
        Self {
            requests,
            per: Duration::from_secs(seconds),
        }
    }
}

/// What the handlers share beyond the services.
pub struct Settings {
    edge: limits::Edge,
    /// The last `/readyz` answer and when it was found (probes are not rate limited:
    /// at most one round of health checks per second, whoever asks).
    readiness: tokio::sync::Mutex<Option<(std::time::Instant, Vec<&'static str>)>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "social network API",
        description = "The HTTP/JSON API for web and mobile clients. Errors are \
            `{\"error\": {\"code\", \"status\", \"message\", \"details\"}}`; lists take \
            `page_size` and `page_token` and answer `next_page_token` and a `Link` header.",
        version = "1"
    ),
    modifiers(&Bearer),
    components(schemas(error::ErrorBody, error::ErrorStatus, error::FieldViolation))
)]
struct ApiDoc;

/// The bearer scheme of the OpenAPI document.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The access_token of POST /v1/accounts, POST /v1/sessions or \
                         POST /v1/sessions/refresh",
                    ))
                    .build(),
            ),
        );
    }
}

/// The errors every route may answer, documented on each operation that does not say
/// more itself: 401 (any request may carry a bad token), 429 (the rate limits), 503 and
/// 504 (a service down or slow), and, for operations that take input, 400 and (with a
/// body) 413.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            ContentBuilder, Ref, ResponseBuilder, header::HeaderBuilder, schema::Type,
        };
        let error = |description: &str, retry: bool| {
            let mut response = ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
            if retry {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer))
                        .description(Some("seconds to wait before retrying"))
                        .build(),
                );
            }
            response.build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let takes_input = op.parameters.as_ref().is_some_and(|p| !p.is_empty())
                    || op.request_body.is_some();
                let mut common = vec![
                    (
                        "401",
                        error("the access token is missing, invalid or expired", false),
                    ),
                    (
                        "429",
                        error("too many requests: retry after Retry-After seconds", true),
                    ),
                    (
                        "503",
                        error(
                            "a service is unavailable: retry after Retry-After seconds",
                            true,
                        ),
                    ),
                    (
                        "504",
                        error(
                            "a service did not answer in time (the request may have been carried out)",
                            false,
                        ),
                    ),
                ];
                if takes_input {
                    common.push((
                        "400",
                        error("a parameter or field is invalid; details name it", false),
                    ));
                }
                if op.request_body.is_some() {
                    common.push((
                        "413",
                        error("the body is larger than any valid request", false),
                    ));
                }
                for (status, response) in common {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| response.into());
                }
            }
        }
    }
}

/// The routes and their OpenAPI document.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::routes())
        .merge(posts::routes())
        .merge(graph::routes())
        .merge(notifications::routes())
        .merge(stream::routes())
        .split_for_parts();
    // After the merge: the routes' operations are only there now.
    CommonErrors.modify(&mut doc);
    (routes, doc)
}

/// The OpenAPI document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// `/healthz`: the process answers.
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `/readyz`: whether this gateway takes requests: 200 while it runs, 503 once it is
/// stopping (so that its balancer drains it). A service that is down does not make it
/// unready: its routes answer 503 and the others go on (every gateway pod leaving the
/// balancer would take them all down). The body names the services whose health,
/// asked by name at most once a second, is not `SERVING`, for operators and scripts.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    use social_proto::{
        engagement::v1::engagement_service_server, graph::v1::social_graph_service_server,
        notification::v1::notification_service_server, post::v1::post_service_server,
        user::v1::user_service_server,
    };
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut last = state.settings.readiness.lock().await;
    let down = match last.as_ref() {
        Some((at, down)) if at.elapsed() < Duration::from_secs(1) => down.clone(),
        _ => {
            let s = &state.services;
            let checks = [
                ("user", user_service_server::SERVICE_NAME, &s.users),
                ("post", post_service_server::SERVICE_NAME, &s.posts),
                (
                    "social-graph",
                    social_graph_service_server::SERVICE_NAME,
                    &s.graph,
                ),
                (
                    "engagement",
                    engagement_service_server::SERVICE_NAME,
                    &s.engagement,
                ),
                (
                    "notification",
                    notification_service_server::SERVICE_NAME,
                    &s.notifications,
                ),
            ]
            .map(|(name, service, peer)| async move {
                let mut client = HealthClient::new(peer.channel());
                let request = HealthCheckRequest {
                    service: service.to_owned(),
                };
                let serving = peer
                    .call(client.check(peer.request(request)))
                    .await
                    .is_ok_and(|r| r.status == 1);
                (!serving).then_some(name)
            });
            let down: Vec<&'static str> = futures::future::join_all(checks)
                .await
                .into_iter()
                .flatten()
                .collect();
            *last = Some((std::time::Instant::now(), down.clone()));
            down
        }
    };
    drop(last);
    let (status, word) = if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else {
        (StatusCode::OK, "ready")
    };
    (
        status,
        Json(serde_json::json!({ "status": word, "not_serving": down })),
    )
}

/// The OpenAPI document as served: written once, and gzipped once, at start-up. Every
/// request for it is a copy of the same bytes: compressing ~100 KiB again for each
/// (the document is outside the rate limits) would be CPU for anyone to take.
#[derive(Clone)]
struct Document {
    plain: axum::body::Bytes,
    gzip: Option<axum::body::Bytes>,
}

impl Document {
    fn new(json: Vec<u8>) -> Self {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let gzip = encoder
            .write_all(&json)
            .and_then(|()| encoder.finish())
            .ok()
            .map(Into::into);
        Self {
            plain: json.into(),
            gzip,
        }
    }

    /// The document, gzipped if `headers` accept it.
    fn answer(&self, headers: &axum::http::HeaderMap) -> axum::response::Response {
        let gzip_accepted = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|coding| {
                let mut parts = coding.split(';');
                let name = parts.next().unwrap_or_default().trim();
                // `q=0` (written with up to three decimals) refuses it.
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        == Some(0.0)
                });
                name.eq_ignore_ascii_case("gzip") && !refused
            });
        let vary = (header::VARY, "accept-encoding");
        let json = (header::CONTENT_TYPE, "application/json");
        match &self.gzip {
            // Already encoded: the compression layer leaves it as it is.
            Some(gzip) if gzip_accepted => (
                [json, vary, (header::CONTENT_ENCODING, "gzip")],
                gzip.clone(),
            )
                .into_response(),
            _ => ([json, vary], self.plain.clone()).into_response(),
        }
    }
}

/// Serves the gateway on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let limits = Arc::new(limits::Limits::new(
        config.rates,
        config.aggregates,
        config.streams,
    ));
    let gateway_token = social_kit::auth::gateway_token(&config.common)?;
    let state = AppState {
        // Every call carries the gateway's credential, which vouches for the client
        // address it reports (the user service counts password guesses by network).
        services: Services {
            users: config.user_service.clone().as_gateway(&gateway_token)?,
            posts: config.post_service.clone().as_gateway(&gateway_token)?,
            graph: config.graph_service.clone().as_gateway(&gateway_token)?,
            engagement: config
                .engagement_service
                .clone()
                .as_gateway(&gateway_token)?,
            notifications: config
                .notification_service
                .clone()
                .as_gateway(&gateway_token)?,
        },
        limits: limits.clone(),
        shutdown: shutdown.clone(),
        settings: Arc::new(Settings {
            edge: limits::Edge {
                verifier: TokenVerifier::from_config(&config.common)?,
                trusted_proxies: config.trusted_proxies.clone(),
            },
            readiness: tokio::sync::Mutex::new(None),
        }),
    };
    let (routes, openapi) = api();
    let openapi = Document::new(serde_json::to_vec(&openapi)?);
    let request_id = HeaderName::from_static("x-request-id");
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::LINK,
            header::LOCATION,
            header::RETRY_AFTER,
            request_id.clone(),
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600));
    let app = routes
        .route(
            "/openapi.json",
            get(move |headers: axum::http::HeaderMap| {
                let openapi = openapi.clone();
                async move { openapi.answer(&headers) }
            }),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { error::ApiError::new(tonic::Code::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(state.clone(), limits::limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::identify,
        ))
        // Through the extractors, so that a body too large is answered in the error shape.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(CompressionLayer::new())
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
        .with_state(state);

    let addr = listener.local_addr()?;
    tracing::info!(%addr, "gateway listening");
    // Owned by this future: it ends with the gateway, however the gateway ends.
    let _pruning = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        limits::prune_every_minute(limits, shutdown.clone()),
    ));
    let server = server::Server::new(config.timeouts);
    let serve = server.serve(listener, app, shutdown.clone());
    // In-flight requests get SHUTDOWN_GRACE_SECS after SIGTERM (streams end at once);
    // then what is left is closed, so that the pod stops within its grace period.
    let grace = config.common.shutdown_grace;
    let bound = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = serve => {}
        () = bound => tracing::warn!(?grace, "requests still open after the shutdown grace; closing them"),
    }
    Ok(())
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
