//! The notification service: consumes follow, like, comment and post events and fans
//! each out into `notifications` documents, one per recipient; lists them, counts the
//! unread, marks them read, and streams new ones live. Owns `notifications`; asks the
//! user service to resolve @mentions. [`run`] is what `main` and the tests call.
//!
//! Live streams work across replicas: the replica that stores a notification
//! broadcasts it on the broker, and every replica (each with its own exclusive queue)
//! pushes it to the streams it holds for the recipient.

mod api;
mod events;
mod groups;
mod hub;
mod store;

use social_events::live::Broadcaster;
use social_events::service::prelude::*;
use social_kit::peers::{NOTIFICATION, USER};
use social_proto::notification::v1::notification_service_server::NotificationServiceServer;

/// Everything the notification service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings every service has; listens on `NOTIFICATION_ADDR`.
    pub common: CommonConfig,
    /// The user service (`USER_SERVICE_URL`), for @mentions.
    pub user_service: Peer,
    /// Where events come from.
    pub events: EventsConfig,
    /// `NOTIFICATION_CONSUME_EVENTS` (default true): whether this replica stores
    /// notifications from events, or only serves reads and streams.
    pub consume_events: bool,
    /// `NOTIFICATION_STREAM_BUFFER` (default 64): notifications a stream may have
    /// waiting before it is closed as fallen behind.
    pub stream_buffer: usize,
    /// `NOTIFICATION_GROUP_WINDOW_SECS` (default 86400): likes of one post, likes of one
    /// comment, and follows group within windows this long.
    pub group_window: std::time::Duration,
    /// `NOTIFICATION_STRAY_AFTER_SECS` (default 120): a notification stored this long ago
    /// whose push never went out (its event failed after storing it, and was
    /// dead-lettered) is counted into its group and pushed by a sweep that runs every
    /// quarter of this (at most every 30 s).
    pub stray_after: std::time::Duration,
}

social_kit::service_config!(Config);

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: NOTIFICATION.config_from_env()?,
            user_service: USER.peer_from_env()?,
            events: EventsConfig::from_env()?,
            consume_events: social_kit::config::parse_or("NOTIFICATION_CONSUME_EVENTS", true)?,
            stream_buffer: social_kit::config::parse_or("NOTIFICATION_STREAM_BUFFER", 64)?,
            group_window: social_kit::config::seconds_or("NOTIFICATION_GROUP_WINDOW_SECS", 86_400)?,
            stray_after: social_kit::config::seconds_or("NOTIFICATION_STRAY_AFTER_SECS", 120)?,
        })
    }

    /// The group window in ms (at least 1).
    pub fn group_window_ms(&self) -> i64 {
        i64::try_from(self.group_window.as_millis()).unwrap_or(i64::MAX).max(1)
    }

    /// Local stores, the given database, user service and events, an ephemeral port.
    pub fn for_tests(
        mongodb_uri: &str,
        database: &str,
        user_service: Peer,
        events: EventsConfig,
    ) -> Self {
        Self {
            common: CommonConfig::for_tests(NOTIFICATION.service, mongodb_uri, database),
            user_service,
            events,
            consume_events: true,
            stream_buffer: 64,
            group_window: std::time::Duration::from_secs(86_400),
            stray_after: std::time::Duration::from_secs(120),
        }
    }
}

/// Serves the notification service on `on` until `stop` is cancelled.
pub async fn run(config: Config, on: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
    let mut wiring = Wiring::new(&config.common, &config.events).await?;
    let store = store::Store::new(wiring.db());
    let hub = hub::Hub::new(config.stream_buffer, stop.clone());
    wiring.refuse_ended_sessions(config.user_service.clone());
    let replica = wiring.replica();
    let (events, listener_name) = (config.events.clone(), format!("{replica}-live"));
    let (hears, live) = (hub.clone(), hub.clone());
    wiring.spawn(|stop| {
        social_events::live::listen(
            events,
            listener_name,
            events::STORED,
            move |body| hears.hear(&body),
            move |up| live.set_live(up),
            stop,
        )
    });
    if config.consume_events {
        // Publishes what this service has to say: that a deleted account is cleared.
        let relay = wiring.relay(&[]);
        let fanout = events::Fanout {
            store: store.clone(),
            users: config.user_service.clone(),
            broadcaster: Broadcaster::new(config.events.clone(), &replica),
            relay,
            group_window_ms: config.group_window_ms(),
        };
        let (sweeper, stray_after) = (fanout.clone(), config.stray_after);
        wiring.spawn(move |stop| sweep(sweeper, stray_after, stop));
        wiring.consume(social_events::topology::NOTIFICATION, fanout.handler());
    }
    let api = api::Api::new(store.clone(), hub, wiring.gate().revocations());
    wiring.serve(NotificationServiceServer::new(api), store, on, stop).await
}

/// Pushes, every quarter of `stray_after` (at most 30 s), what events stored but never
/// pushed (see [`events::Fanout::sweep`]), until `stop`.
async fn sweep(fanout: events::Fanout, stray_after: std::time::Duration, stop: CancellationToken) {
    let every = (stray_after / 4)
        .clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match fanout.sweep(stray_after).await {
            Ok(0) => {}
            Ok(pushed) => {
                tracing::warn!(pushed, "pushed notifications whose event failed after storing them")
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not push unpushed notifications; trying again")
            }
        }
    }
}

/// `social-notification group-existing`: puts the notifications stored before groups
/// existed (no `group_key`) into their groups, so that ListNotificationGroups shows them
/// too; how many it grouped. Safe to run while the service runs, and again.
pub async fn group_existing(config: &Config) -> anyhow::Result<u64> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = store::Store::new(&db);
    store.init().await?;
    let grouped = store.group_existing(config.group_window_ms()).await?;
    tracing::info!(grouped, "existing notifications grouped");
    Ok(grouped)
}
