//! The post service: posts with media, user timelines and the home feed. Owns the `posts`
//! collection and asks the social-graph service whom a reader follows. [`run`] is what
//! `main` and the tests call. The feed's design is in `docs/adr/0001-home-feed.md`.

mod api;
mod store;

use social_kit::{
    auth::TokenVerifier,
    client::Peer,
    config::{CommonConfig, ConfigError},
    serve::{Gate, ServeSpec, serve},
};
use social_proto::post::v1::post_service_server::{PostServiceServer, SERVICE_NAME};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// Everything the post service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings every service has; listens on `POST_ADDR`.
    pub common: CommonConfig,
    /// The social-graph service (`GRAPH_SERVICE_URL`), for the home feed.
    pub graph_service: Peer,
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env("post", "POST_ADDR", "127.0.0.1:50052")?,
            graph_service: Peer::from_env(
                "social-graph service",
                "GRAPH_SERVICE_URL",
                "http://127.0.0.1:50053",
            )?,
        })
    }

    /// Local stores, the given database and graph service, an ephemeral port.
    pub fn for_tests(mongodb_uri: &str, database: &str, graph_service: Peer) -> Self {
        Self {
            common: CommonConfig::for_tests("post", mongodb_uri, database),
            graph_service,
        }
    }
}

/// Serves the post service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = store::Store::new(&db);
    let gate = Gate::new(TokenVerifier::from_config(&config.common)?);
    let api = api::Api::new(store.clone(), config.graph_service.clone());
    let routes = Routes::new(PostServiceServer::with_interceptor(api, gate.clone()));
    let startup = move || {
        let store = store.clone();
        async move { store.init().await }
    };
    let spec = ServeSpec {
        config: &config.common,
        grpc_name: SERVICE_NAME,
        db,
        gate,
    };
    serve(spec, listener, routes, startup, shutdown).await
}
