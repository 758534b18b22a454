//! The notification service: consumes follow, like, comment and post events and fans
//! each out into `notifications` documents, one per recipient; lists them, counts the
//! unread, marks them read, and streams new ones live. Owns `notifications`; asks the
//! user service to resolve @mentions. [`run`] is what `main` and the tests call.
//!
//! Live streams work across replicas: the replica that stores a notification
//! broadcasts it on the broker, and every replica (each with its own exclusive queue)
//! pushes it to the streams it holds for the recipient.

mod api;
mod fanout;
mod groups;
mod hub;
mod store;

use prost::Message;
use social_events::{EventsConfig, live::Broadcaster};
use social_kit::{
    client::Peer,
    config::{CommonConfig, ConfigError},
    serve::{Background, Gate, MAX_REQUEST_BYTES, ServeSpec, serve},
};
use social_proto::notification::v1::{
    LiveBatch,
    notification_service_server::{NotificationServiceServer, SERVICE_NAME},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

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
            common: CommonConfig::from_env("notification", "NOTIFICATION_ADDR", "127.0.0.1:50055")?,
            user_service: Peer::from_env(
                "user service",
                "USER_SERVICE_URL",
                "http://127.0.0.1:50051",
            )?,
            events: EventsConfig::from_env()?,
            consume_events: social_kit::config::parse_or("NOTIFICATION_CONSUME_EVENTS", true)?,
            stream_buffer: social_kit::config::parse_or("NOTIFICATION_STREAM_BUFFER", 64)?,
            group_window: social_kit::config::seconds_or("NOTIFICATION_GROUP_WINDOW_SECS", 86_400)?,
        })
    }

    /// The group window in ms (at least 1).
    pub fn group_window_ms(&self) -> i64 {
        i64::try_from(self.group_window.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// Local stores, the given database, user service and events, an ephemeral port.
    pub fn for_tests(
        mongodb_uri: &str,
        database: &str,
        user_service: Peer,
        events: EventsConfig,
    ) -> Self {
        Self {
            common: CommonConfig::for_tests("notification", mongodb_uri, database),
            user_service,
            events,
            consume_events: true,
            stream_buffer: 64,
            group_window: std::time::Duration::from_secs(86_400),
        }
    }
}

/// Serves the notification service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = store::Store::new(&db);
    let gate = Gate::from_config(&config.common)?;
    let hub = hub::Hub::new(config.stream_buffer, shutdown.clone());
    let api = api::Api::new(store.clone(), hub.clone(), gate.revocations());
    let server = NotificationServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
    let routes = Routes::new(gate.guard(server));

    let mut background = Background::new();
    social_events::sessions::refuse_ended_sessions(
        &mut background,
        &config.events,
        "notification",
        &gate,
        config.user_service.clone(),
    );
    let replica = format!("notification-{}", bson::oid::ObjectId::new().to_hex());
    let (events, listener_name) = (config.events.clone(), format!("{replica}-live"));
    background.spawn(|stop| {
        social_events::live::listen(
            events,
            listener_name,
            fanout::STORED,
            {
                let hub = hub.clone();
                move |body| match LiveBatch::decode(body.as_slice()) {
                    Ok(batch) => {
                        for user in &batch.ended_users {
                            if let Ok(user) = bson::oid::ObjectId::parse_str(user) {
                                hub.end_user(user);
                            }
                        }
                        for (user, n) in hub::by_recipient(batch.notifications) {
                            hub.push(user, &n);
                        }
                        for g in batch.groups {
                            match bson::oid::ObjectId::parse_str(&g.user_id) {
                                Ok(user) => hub.push_group(user, g),
                                Err(_) => {
                                    tracing::warn!("broadcast group without a valid recipient")
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "undecodable broadcast"),
                }
            },
            move |live| hub.set_live(live),
            stop,
        )
    });
    if config.consume_events {
        // Publishes what this service has to say: that a deleted account is cleared.
        let relay = social_events::outbox::Relay::new(
            config.events.clone(),
            "notification",
            &db,
            &[&social_events::removed_users::RemovedUsers::collection(
                "notification",
            )],
        );
        let fanout = fanout::Fanout {
            store: store.clone(),
            users: config.user_service.clone(),
            broadcaster: Broadcaster::new(config.events.clone(), &replica),
            relay: relay.waker(),
            group_window_ms: config.group_window_ms(),
        };
        background.spawn(|stop| relay.run(stop));
        let (events, handler) = (config.events.clone(), fanout.handler());
        background.spawn(|stop| {
            social_events::consumer::run(events, fanout::subscription(), handler, stop)
        });
    }

    let spec = ServeSpec {
        config: &config.common,
        grpc_name: SERVICE_NAME,
        db,
        gate,
    };
    serve(spec, listener, routes, store, background, shutdown).await
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
