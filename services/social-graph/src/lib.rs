//! The social-graph service: who follows, blocks and mutes whom. Owns the `followers`,
//! `blocks` and `mutes` collections and asks the user service whether a followee
//! exists. [`run`] is what `main` and the tests call.

mod api;
mod blocks;
mod checks;
mod events;
mod mutes;
mod relation;
mod store;

use social_events::service::prelude::*;
use social_kit::peers::{GRAPH, USER};
use social_proto::graph::v1::social_graph_service_server::SocialGraphServiceServer;

/// Everything the social-graph service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings every service has; listens on `GRAPH_ADDR`.
    pub common: CommonConfig,
    /// The user service (`USER_SERVICE_URL`).
    pub user_service: Peer,
    /// Where follow events go.
    pub events: EventsConfig,
    /// How long a follow whose checks against deletions and blocks did not finish (its
    /// call failed) waits before it is checked in the background (60 s).
    pub unchecked_after: std::time::Duration,
}

social_kit::service_config!(Config);

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: GRAPH.config_from_env()?,
            user_service: USER.peer_from_env()?,
            events: EventsConfig::from_env()?,
            unchecked_after: std::time::Duration::from_secs(60),
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
            common: CommonConfig::for_tests(GRAPH.service, mongodb_uri, database),
            user_service,
            events,
            unchecked_after: std::time::Duration::from_secs(1),
        }
    }
}

/// Serves the social-graph service on `on` until `stop` is cancelled.
pub async fn run(config: Config, on: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
    let mut wiring = Wiring::new(&config.common, &config.events).await?;
    let store = store::Store::new(wiring.db());
    let relay = wiring.relay(&[store::COLLECTION, blocks::COLLECTION, mutes::COLLECTION]);
    wiring.consume(
        social_events::topology::GRAPH,
        social_events::consumer::handler((store.clone(), relay.clone()), events::apply),
    );
    wiring.refuse_ended_sessions(config.user_service.clone());
    let (checked, left_for) = ((store.clone(), relay.clone()), config.unchecked_after);
    wiring.spawn(|stop| checks::run(checked, left_for, stop));
    wiring.internal(api::INTERNAL);
    let api = api::Api::new(store.clone(), config.user_service.clone(), relay);
    wiring.serve(SocialGraphServiceServer::new(api), store, on, stop).await
}
