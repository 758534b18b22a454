//! The post service: posts with media, user timelines and the home feed. Owns the `posts`
//! collection, asks the social-graph service whom a reader follows, publishes
//! `post.post.created` / `deleted`, and keeps like and comment counters from engagement
//! events. [`run`] is what `main` and the tests call. The feed's design is in
//! `docs/adr/0001-home-feed.md`.

mod api;
mod events;
mod recompute;
mod store;

use std::time::Duration;

pub use recompute::recompute_counters;
use social_events::{EventsConfig, outbox::Relay};
use social_kit::{
    client::Peer,
    config::{CommonConfig, ConfigError},
    serve::{Background, Gate, MAX_REQUEST_BYTES, ServeSpec, serve},
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
    /// The engagement service (`ENGAGEMENT_SERVICE_URL`), asked only when recomputing
    /// counters.
    pub engagement_service: Peer,
    /// Where post events go and engagement events come from.
    pub events: EventsConfig,
    /// The user service (`USER_SERVICE_URL`): which sessions ended.
    pub user_service: Peer,
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
            common: CommonConfig::from_env("post", "POST_ADDR", "127.0.0.1:50052")?,
            graph_service: Peer::from_env(
                "social-graph service",
                "GRAPH_SERVICE_URL",
                "http://127.0.0.1:50053",
            )?,
            engagement_service: Peer::from_env(
                "engagement service",
                "ENGAGEMENT_SERVICE_URL",
                "http://127.0.0.1:50054",
            )?,
            events: EventsConfig::from_env()?,
            user_service: social_events::sessions::user_service()?,
        })
    }

    /// Local stores, the given database, graph service and events, an ephemeral port.
    pub fn for_tests(
        mongodb_uri: &str,
        database: &str,
        graph_service: Peer,
        events: EventsConfig,
    ) -> Self {
        #[allow(clippy::expect_used)] // a constant URL
        let engagement_service = Peer::new(
            "engagement service",
            "ENGAGEMENT_SERVICE_URL",
            "http://127.0.0.1:50054",
            Duration::from_secs(2),
        )
        .and_then(|p| p.with_credential(social_kit::auth::DEV_SERVICE_TOKEN))
        .expect("valid URL");
        Self {
            common: CommonConfig::for_tests("post", mongodb_uri, database),
            graph_service,
            user_service: social_events::sessions::user_service_at("http://127.0.0.1:50051"),
            engagement_service,
            events,
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
    let gate = Gate::from_config(&config.common)?;
    let relay = Relay::new(
        config.events.clone(),
        "post",
        &db,
        &[
            store::COLLECTION,
            &social_events::removed_users::RemovedUsers::collection("post"),
        ],
    );
    let api = api::Api::new(store.clone(), config.graph_service.clone(), relay.waker());
    let server = PostServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
    let routes = Routes::new(gate.guard(server));

    let (events, handler) = (
        config.events.clone(),
        events::handler(store.clone(), relay.waker()),
    );
    let mut background = Background::new();
    background.spawn(|stop| relay.run(stop));
    background
        .spawn(|stop| social_events::consumer::run(events, events::subscription(), handler, stop));
    social_events::sessions::refuse_ended_sessions(
        &mut background,
        &config.events,
        "post",
        &gate,
        config.user_service.clone(),
    );

    let spec = ServeSpec {
        config: &config.common,
        grpc_name: SERVICE_NAME,
        db,
        gate,
    };
    serve(spec, listener, routes, store, background, shutdown).await
}
