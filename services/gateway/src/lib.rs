//! The gateway: the HTTP/JSON front door for web and mobile clients (`social-gateway`,
//! `GATEWAY_ADDR`, default `127.0.0.1:8080`). It calls the five services through the
//! kit's peer client (deadline, trace context, error mapping) and never touches MongoDB
//! or RabbitMQ itself; what its replicas must see alike (browsers' stream tickets,
//! answers remembered for `Idempotency-Key`s) is in Redis (`shared`, `idempotency`).
//!
//! One module per resource (`accounts`, `posts`, `graph`, `notifications`, and `stream`
//! for the live notifications as Server-Sent Events), each calling the services the one
//! way `context::ask!` does; one error body and its mapping from a service's status
//! (`error`); the rate limits and the client's identity (`limits`); what wraps every
//! route (`middleware`); the probes (`readiness`); the OpenAPI document derived from the
//! handlers and types themselves (`openapi`, `GET /openapi.json`); the environment
//! (`config`); and the HTTP server with its per-connection limits (`server`). [`run`] is
//! what `main` and the tests call.

mod accounts;
mod config;
mod context;
mod error;
mod graph;
mod idempotency;
mod limits;
mod middleware;
mod model;
mod moderation;
mod notifications;
mod openapi;
mod posts;
mod readiness;
mod server;
mod shared;
mod stream;

use std::sync::Arc;

pub use config::Config;
pub use limits::{Rate, Rates, StreamCaps};
pub use openapi::openapi;
pub use server::Timeouts;
use social_kit::auth::TokenVerifier;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::context::{AppState, Gateway, Services};

/// What the handlers share beyond the services.
pub struct Settings {
    edge: limits::Edge,
    /// `GATEWAY_MAX_BODY_BYTES`: the largest request body.
    max_body_bytes: usize,
    /// The last `/readyz` answer and when it was found (probes are not rate limited:
    /// at most one round of health checks per second, whoever asks).
    readiness: tokio::sync::Mutex<Option<(std::time::Instant, Vec<&'static str>)>>,
}

/// Serves the gateway on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let limits = Arc::new(limits::Limits::new(config.rates, config.aggregates, config.streams));
    let gateway_token = social_kit::auth::gateway_token(&config.common)?;
    let state = AppState::new(Gateway {
        // Every call carries the gateway's credential, which vouches for the client
        // address it reports (the user service counts password guesses by network).
        services: Services {
            users: config.user_service.clone().as_gateway(&gateway_token)?,
            posts: config.post_service.clone().as_gateway(&gateway_token)?,
            graph: config.graph_service.clone().as_gateway(&gateway_token)?,
            engagement: config.engagement_service.clone().as_gateway(&gateway_token)?,
            notifications: config.notification_service.clone().as_gateway(&gateway_token)?,
        },
        limits: limits.clone(),
        shutdown: shutdown.clone(),
        settings: Arc::new(Settings {
            edge: limits::Edge {
                verifier: TokenVerifier::from_config(&config.common)?,
                trusted_proxies: config.trusted_proxies.clone(),
            },
            max_body_bytes: config.max_body_bytes,
            readiness: tokio::sync::Mutex::new(None),
        }),
        shared: shared::Shared::new(&config.redis_url, &config.redis_key_prefix, &gateway_token)?,
    });
    let routes = openapi::routes()?.merge(readiness::routes());
    let app = middleware::around(routes, state, &config);

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
