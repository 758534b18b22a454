//! The social-graph service: who follows whom. Owns the `followers` collection and asks
//! the user service whether a followee exists. [`run`] is what `main` and the tests call.

mod api;
mod events;
mod store;

use social_events::{EventsConfig, outbox::Relay};
use social_kit::{
    client::Peer,
    config::{CommonConfig, ConfigError},
    serve::{Background, Gate, MAX_REQUEST_BYTES, ServeSpec, serve},
};
use social_proto::graph::v1::social_graph_service_server::{
    SERVICE_NAME, SocialGraphServiceServer,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// Everything the social-graph service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings every service has; listens on `GRAPH_ADDR`.
    pub common: CommonConfig,
    /// The user service (`USER_SERVICE_URL`).
    pub user_service: Peer,
    /// Where follow events go.
    pub events: EventsConfig,
}

impl social_kit::config::ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env("social-graph", "GRAPH_ADDR", "127.0.0.1:50053")?,
            user_service: Peer::from_env(
                "user service",
                "USER_SERVICE_URL",
                "http://127.0.0.1:50051",
            )?,
            events: EventsConfig::from_env()?,
        })
    }

    /// Local stores, the given database and user service, an ephemeral port.
    pub fn for_tests(
        mongodb_uri: &str,
        database: &str,
        user_service: Peer,
        events: EventsConfig,
    ) -> Self {
        Self {
            common: CommonConfig::for_tests("social-graph", mongodb_uri, database),
            user_service,
            events,
        }
    }
}

/// Serves the social-graph service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = store::Store::new(&db);
    let gate = Gate::from_config(&config.common)?;
    let relay = Relay::new(
        config.events.clone(),
        "social-graph",
        &db,
        &[
            store::COLLECTION,
            &social_events::removed_users::RemovedUsers::collection("social-graph"),
        ],
    );
    let (events, handler) = (
        config.events.clone(),
        events::handler(store.clone(), relay.waker()),
    );
    let api = api::Api::new(store.clone(), config.user_service.clone(), relay.waker());
    let server = SocialGraphServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
    let routes = Routes::new(gate.guard(server));
    let mut background = Background::new();
    social_events::sessions::refuse_ended_sessions(
        &mut background,
        &config.events,
        "social-graph",
        &gate,
        config.user_service.clone(),
    );
    background.spawn(|stop| relay.run(stop));
    background
        .spawn(|stop| social_events::consumer::run(events, events::subscription(), handler, stop));
    let spec = ServeSpec {
        config: &config.common,
        grpc_name: SERVICE_NAME,
        db,
        gate,
    };
    serve(spec, listener, routes, store, background, shutdown).await
}
