//! The engagement service: likes of posts and comments, and comments with media. Owns
//! the `likes` and `comments` collections, asks the post service whether a post exists
//! and who wrote it and the social-graph service whether a block forbids a write,
//! publishes `engagement.*` events with the authors in them, and
//! removes a deleted post's comments and likes. [`run`] is what `main` and the tests
//! call.

mod api;
mod checks;
mod events;
mod recompute;
mod store;

pub use recompute::recompute_counters;
use social_events::service::prelude::*;
use social_kit::peers::{ENGAGEMENT, GRAPH, POST, USER};
use social_proto::engagement::v1::engagement_service_server::EngagementServiceServer;

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
    /// The social-graph service (`GRAPH_SERVICE_URL`): whether a block stands between
    /// a writer and an author.
    pub graph_service: Peer,
    /// How long a like or comment whose checks against deletions did not finish (its
    /// call failed) waits before it is checked in the background (60 s).
    pub unchecked_after: std::time::Duration,
}

social_kit::service_config!(Config);

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: ENGAGEMENT.config_from_env()?,
            post_service: POST.peer_from_env()?,
            events: EventsConfig::from_env()?,
            user_service: USER.peer_from_env()?,
            graph_service: GRAPH.peer_from_env()?,
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
            common: CommonConfig::for_tests(ENGAGEMENT.service, mongodb_uri, database),
            user_service: USER.local_peer(),
            graph_service: GRAPH.local_peer(),
            post_service,
            events,
            unchecked_after: std::time::Duration::from_secs(1),
        }
    }
}

/// Serves the engagement service on `on` until `stop` is cancelled.
pub async fn run(config: Config, on: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
    let mut wiring = Wiring::new(&config.common, &config.events).await?;
    let store = store::Store::new(wiring.db());
    let relay = wiring.relay(&[store::LIKES, store::COMMENTS]);
    wiring.consume(
        social_events::topology::ENGAGEMENT,
        social_events::consumer::handler((store.clone(), relay.clone()), events::apply),
    );
    wiring.refuse_ended_sessions(config.user_service.clone());
    let checker = (store.clone(), relay.clone(), config.graph_service.clone());
    let left_for = config.unchecked_after;
    wiring.spawn(|stop| checks::run(checker, left_for, stop));
    wiring.internal(api::INTERNAL);
    let api = api::Api::new(
        store.clone(),
        (config.post_service.clone(), config.graph_service.clone()),
        relay,
    );
    wiring.serve(EngagementServiceServer::new(api), store, on, stop).await
}
