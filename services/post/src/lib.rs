//! The post service: posts with media, user timelines and the home feed. Owns the `posts`
//! collection, asks the social-graph service whom a reader follows, publishes
//! `post.post.created` / `deleted`, and keeps like and comment counters from engagement
//! events. [`run`] is what `main` and the tests call. The feed's design is in
//! `docs/adr/0001-home-feed.md`.

mod api;
mod checks;
mod events;
mod recompute;
mod store;
mod timelines;

pub use recompute::recompute_counters;
use social_events::service::prelude::*;
use social_kit::peers::{ENGAGEMENT, GRAPH, POST, USER};
use social_proto::post::v1::post_service_server::PostServiceServer;
pub use timelines::Settings as TimelineSettings;

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
    /// The cache `GetPost` and `BatchGetPosts` read through (`REDIS_URL`,
    /// `REDIS_KEY_PREFIX`, `POST_CACHE_TTL_SECS`: 60, 0 turns it off).
    pub cache: social_kit::cache::Settings,
    /// Home timelines in the same Redis (`HOME_TIMELINE_LENGTH`,
    /// `HOME_TIMELINE_IDLE_SECS`, `HOME_FANOUT_MAX_FOLLOWERS`).
    pub timelines: TimelineSettings,
    /// `POST_CONSUME_EVENTS` (true): false for a replica that only serves requests,
    /// leaving the events to the others.
    pub consume_events: bool,
    /// How long a post whose check against its author's deletion did not finish (its
    /// call failed) waits before it is checked in the background (60 s).
    pub unchecked_after: std::time::Duration,
}

social_kit::service_config!(Config);

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: POST.config_from_env()?,
            graph_service: GRAPH.peer_from_env()?,
            engagement_service: ENGAGEMENT.peer_from_env()?,
            events: EventsConfig::from_env()?,
            user_service: USER.peer_from_env()?,
            cache: social_kit::cache::Settings::from_env("POST_CACHE_TTL_SECS", 60)?,
            timelines: TimelineSettings::from_env()?,
            consume_events: social_kit::config::parse_or("POST_CONSUME_EVENTS", true)?,
            unchecked_after: std::time::Duration::from_secs(60),
        })
    }

    /// Local stores, the given database, graph service and events, an ephemeral port.
    pub fn for_tests(
        mongodb_uri: &str,
        database: &str,
        graph_service: Peer,
        events: EventsConfig,
    ) -> Self {
        Self {
            common: CommonConfig::for_tests(POST.service, mongodb_uri, database),
            graph_service,
            user_service: USER.local_peer(),
            engagement_service: ENGAGEMENT.local_peer(),
            events,
            cache: social_kit::cache::Settings::for_tests(),
            timelines: TimelineSettings::default(),
            consume_events: true,
            unchecked_after: std::time::Duration::from_secs(1),
        }
    }
}

/// Serves the post service on `on` until `stop` is cancelled.
pub async fn run(config: Config, on: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
    let mut wiring = Wiring::new(&config.common, &config.events).await?;
    let store = store::Store::new(wiring.db()).with_caches(&config.cache)?;
    let relay = wiring.relay(&[store::COLLECTION]);
    let timelines = timelines::Timelines::new(
        config.timelines.clone(),
        config.cache.redis()?,
        &config.cache.prefix,
        store.clone(),
        wiring.db(),
        config.graph_service.clone(),
    );
    if let Some(timelines) = &timelines {
        let fresh = timelines.clone();
        wiring.spawn(move |stop| fresh.keep_pulled_fresh(stop));
    }
    if config.consume_events {
        wiring.consume(
            social_events::topology::POST,
            social_events::consumer::handler((store.clone(), relay.clone()), events::apply),
        );
        let queue = social_events::topology::POST_TIMELINES;
        match &timelines {
            Some(timelines) => wiring.consume(
                queue,
                social_events::consumer::handler(timelines.clone(), timelines::apply),
            ),
            // Off: every service still declares and binds the timelines' queue (the
            // topology is one table), so its events are taken and dropped here rather
            // than left to pile up in the broker until its alarms stop every publisher.
            // Timelines turned on again may then have missed them: see ADR 0003.
            None => wiring
                .consume(queue, social_events::consumer::handler((), |(), _| async { Ok(()) })),
        }
    }
    wiring.refuse_ended_sessions(config.user_service.clone());
    let (checked, left_for) = ((store.clone(), relay.clone()), config.unchecked_after);
    wiring.spawn(|stop| checks::run(checked, left_for, stop));
    wiring.internal(api::INTERNAL);
    let api = api::Api::new(store.clone(), config.graph_service.clone(), relay, timelines);
    wiring.serve(PostServiceServer::new(api), store, on, stop).await
}
