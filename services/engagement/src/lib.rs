//! The engagement service: likes of posts and comments, and comments with media. Owns
//! the `likes` and `comments` collections, asks the post service whether a post exists
//! and who wrote it, publishes `engagement.*` events with the authors in them, and
//! removes a deleted post's comments and likes. [`run`] is what `main` and the tests
//! call.

mod api;
mod checks;
mod events;
mod recompute;
mod store;

pub use recompute::recompute_counters;
use social_events::{EventsConfig, outbox::Relay};
use social_kit::{
    client::Peer,
    config::{CommonConfig, ConfigError},
    serve::{Background, Gate, MAX_REQUEST_BYTES, ServeSpec, serve},
};
use social_proto::engagement::v1::engagement_service_server::{
    EngagementServiceServer, SERVICE_NAME,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// Everything the engagement service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings every service has; listens on `ENGAGEMENT_ADDR`.
    pub common: CommonConfig,
    /// The post service (`POST_SERVICE_URL`).
    pub post_service: Peer,
    /// Where engagement events go and post events come from.
    pub events: EventsConfig,
    /// The user service (`USER_SERVICE_URL`): which sessions ended.
    pub user_service: Peer,
    /// How long a like or comment whose checks against deletions did not finish (its
    /// call failed) waits before it is checked in the background (60 s).
    pub unchecked_after: std::time::Duration,
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
            common: CommonConfig::from_env("engagement", "ENGAGEMENT_ADDR", "127.0.0.1:50054")?,
            post_service: Peer::from_env(
                "post service",
                "POST_SERVICE_URL",
                "http://127.0.0.1:50052",
            )?,
            events: EventsConfig::from_env()?,
            user_service: social_events::sessions::user_service()?,
            unchecked_after: std::time::Duration::from_secs(60),
        })
    }

    /// Local stores, the given database, post service and events, an ephemeral port.
    pub fn for_tests(
        mongodb_uri: &str,
        database: &str,
        post_service: Peer,
        events: EventsConfig,
    ) -> Self {
        Self {
            common: CommonConfig::for_tests("engagement", mongodb_uri, database),
            user_service: social_events::sessions::user_service_at("http://127.0.0.1:50051"),
            post_service,
            events,
            unchecked_after: std::time::Duration::from_secs(1),
        }
    }
}

/// Serves the engagement service on `listener` until `shutdown` is cancelled.
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
        "engagement",
        &db,
        &[
            store::LIKES,
            store::COMMENTS,
            &social_events::removed_users::RemovedUsers::collection("engagement"),
        ],
    );
    let api = api::Api::new(store.clone(), config.post_service.clone(), relay.waker());
    let server = EngagementServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
    let routes = Routes::new(gate.guard(server));

    let (events, handler) = (
        config.events.clone(),
        events::handler(store.clone(), relay.waker()),
    );
    let mut background = Background::new();
    let (checked, waker, left_for) = (store.clone(), relay.waker(), config.unchecked_after);
    background.spawn(|stop| checks::run(checked, waker, left_for, stop));
    background.spawn(|stop| relay.run(stop));
    social_events::sessions::refuse_ended_sessions(
        &mut background,
        &config.events,
        "engagement",
        &gate,
        config.user_service.clone(),
    );
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
