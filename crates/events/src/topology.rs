//! The topology, from one table: the durable topic exchange, and per consuming service
//! a durable queue bound by routing key, whose rejected messages go through a
//! dead-letter exchange to `<queue>.dlq`.
//!
//! Every service declares ALL of it ([`QUEUES`]), idempotently, whenever it connects
//! and before its relay publishes anything: a `mandatory` publish is only returned when
//! it reaches no queue at all, so an event published while one consumer's queue did not
//! exist yet (a fresh broker, pods starting in any order) would be confirmed, dropped
//! from the outbox, and lost for that consumer. A queue an operator deletes while the
//! services run is declared again only when one of them connects again (its consumer,
//! cancelled by the broker, does at once): what is published meanwhile is lost to it
//! (docs/operating.md says not to).
//!
//! A queue that exists with other arguments than declared (usually `x-queue-type`
//! after `EVENTS_QUEUE_TYPE` changed) is reported once per connection and used as it
//! is: it still receives and delivers every event. `<binary> migrate-queue` moves it to
//! the declared type without losing events (see [`crate::admin`] and docs/events.md).

use lapin::{
    Channel, Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};

use crate::config::EventsConfig;

/// How long an unused test queue lives.
const EPHEMERAL_MS: u32 = 120_000;

/// A consuming service's durable queue and the routing keys bound to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    /// The consuming service; its queue is `<prefix>.<service>`.
    pub service: &'static str,
    /// The routing keys bound to its queue.
    pub routing_keys: &'static [&'static str],
}

/// The user service's queue: follows move `followers_count` / `following_count`;
/// blocks are kept for reads; a deleted account's report comments go.
pub const USER: QueueSpec = QueueSpec {
    service: "user",
    routing_keys: &[
        "graph.user.followed",
        "graph.user.unfollowed",
        "deletion.account.cleared",
        "graph.user.blocked",
        "graph.user.unblocked",
        "user.user.deleted",
    ],
};

/// The post service's queue: likes and comments move a post's counters; blocks are
/// kept for reads.
pub const POST: QueueSpec = QueueSpec {
    service: "post",
    routing_keys: &[
        "engagement.post.liked",
        "engagement.post.unliked",
        "engagement.comment.created",
        "engagement.comment.deleted",
        "user.user.deleted",
        "graph.user.blocked",
        "graph.user.unblocked",
    ],
};

/// The post service's home timelines (`services/post/src/timelines.rs`): new posts go
/// to their author's followers' timelines; follows and mutes change what a timeline
/// shows; a deleted account's timeline goes. Its own queue, so that a large fan-out
/// never holds up counters.
pub const POST_TIMELINES: QueueSpec = QueueSpec {
    service: "post-timelines",
    routing_keys: &[
        "post.post.created",
        "graph.user.followed",
        "graph.user.unfollowed",
        "graph.user.muted",
        "graph.user.unmuted",
        "user.user.deleted",
    ],
};

/// The social-graph service's queue: a deleted account's follows and blocks go; a
/// block's follows end.
pub const GRAPH: QueueSpec = QueueSpec {
    service: "social-graph",
    routing_keys: &["user.user.deleted", "graph.user.blocked"],
};

/// The engagement service's queue: a deleted post's cascade, comment like counters;
/// blocks are kept for reads.
pub const ENGAGEMENT: QueueSpec = QueueSpec {
    service: "engagement",
    routing_keys: &[
        "post.post.deleted",
        "engagement.comment.liked",
        "engagement.comment.unliked",
        "engagement.comment.deleted",
        "user.user.deleted",
        "graph.user.blocked",
        "graph.user.unblocked",
    ],
};

/// The notification service's queue: everything that notifies or takes one back, blocks
/// (what the blocked caused goes; nothing new between the two is told) and mutes.
pub const NOTIFICATION: QueueSpec = QueueSpec {
    service: "notification",
    routing_keys: &[
        "graph.user.followed",
        "graph.user.unfollowed",
        "engagement.post.liked",
        "engagement.post.unliked",
        "engagement.comment.liked",
        "engagement.comment.unliked",
        "engagement.comment.created",
        "engagement.comment.deleted",
        "post.post.created",
        "post.post.deleted",
        "user.user.deleted",
        "graph.user.blocked",
        "graph.user.unblocked",
        "graph.user.muted",
        "graph.user.unmuted",
    ],
};

/// Every consumer queue of the system: the one place where "who consumes what" is
/// written (docs/events.md has the same table for people).
pub const QUEUES: &[QueueSpec] = &[USER, POST, POST_TIMELINES, GRAPH, ENGAGEMENT, NOTIFICATION];

/// The queue of `service` in [`QUEUES`].
pub fn queue_of(service: &str) -> Option<QueueSpec> {
    QUEUES.iter().copied().find(|q| q.service == service)
}

/// Declares the main exchange alone (what a best-effort broadcaster needs).
pub async fn declare_exchange(channel: &Channel, config: &EventsConfig) -> lapin::Result<()> {
    exchange(channel, &config.exchange, ExchangeKind::Topic, config).await
}

async fn exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
    config: &EventsConfig,
) -> lapin::Result<()> {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                auto_delete: config.ephemeral,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

/// The arguments `service`'s queue is declared with.
pub fn queue_arguments(config: &EventsConfig, service: &str) -> FieldTable {
    let queue = config.queue(service);
    let mut args = base_arguments(config);
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(config.dead_letter_exchange().as_str().into()),
    );
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.as_str().into()));
    args
}

/// The arguments every queue of ours has: its type, and a short life in tests.
pub fn base_arguments(config: &EventsConfig) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(config.queue_type.as_str().into()));
    if config.ephemeral {
        args.insert("x-expires".into(), AMQPValue::LongUInt(EPHEMERAL_MS));
    }
    args
}

/// Where a queue is bound: `(exchange, routing key)` pairs.
pub fn bindings(config: &EventsConfig, spec: &QueueSpec) -> Vec<(String, String)> {
    spec.routing_keys.iter().map(|key| (config.exchange.clone(), (*key).to_owned())).collect()
}

/// Where `service`'s dead-letter queue is bound.
pub fn dead_letter_bindings(config: &EventsConfig, service: &str) -> Vec<(String, String)> {
    vec![(config.dead_letter_exchange(), config.queue(service))]
}

/// Declares the exchanges and, for each of `queues`, its queue, its dead-letter queue
/// and their bindings. Idempotent. A queue that exists with other arguments is
/// reported and used as it is; any other refusal (an exchange of another type, no
/// permission) is an error.
pub async fn declare(
    connection: &Connection,
    config: &EventsConfig,
    queues: &[QueueSpec],
) -> anyhow::Result<()> {
    let mut channel = connection.create_channel().await?;
    let dlx = config.dead_letter_exchange();
    exchange(&channel, &config.exchange, ExchangeKind::Topic, config).await.map_err(|e| {
        anyhow::anyhow!("cannot declare the topic exchange {}: {e}", config.exchange)
    })?;
    exchange(&channel, &dlx, ExchangeKind::Direct, config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot declare the dead-letter exchange {dlx}: {e}"))?;
    for spec in queues {
        let dlq = config.dead_letter_queue(spec.service);
        queue(connection, &mut channel, &dlq, base_arguments(config)).await?;
        bind(&channel, &dlq, &dead_letter_bindings(config, spec.service)).await?;
        let name = config.queue(spec.service);
        queue(connection, &mut channel, &name, queue_arguments(config, spec.service)).await?;
        bind(&channel, &name, &bindings(config, spec)).await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// Binds `queue` as `bindings` say.
pub async fn bind(
    channel: &Channel,
    queue: &str,
    bindings: &[(String, String)],
) -> lapin::Result<()> {
    for (exchange, key) in bindings {
        channel
            .queue_bind(
                queue.into(),
                exchange.as_str().into(),
                ShortString::from(key.as_str()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Declares a durable queue. If it exists with other arguments, the broker closes the
/// channel: the mismatch is logged with the way out, a fresh channel replaces the
/// closed one, and the queue is used as it is (checked to exist).
async fn queue(
    connection: &Connection,
    channel: &mut Channel,
    name: &str,
    args: FieldTable,
) -> anyhow::Result<()> {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    let declared_type = match args.inner().get("x-queue-type") {
        Some(AMQPValue::LongString(t)) => t.to_string(),
        _ => String::new(),
    };
    match channel.queue_declare(name.into(), durable, args).await {
        Ok(_) => Ok(()),
        Err(e) if is_precondition_failed(&e) => {
            tracing::error!(
                queue = name,
                declared_type,
                error = %e,
                "a queue exists with other arguments than this service declares (usually \
                 its type: EVENTS_QUEUE_TYPE changed). It is used as it is and loses nothing; \
                 to move it to the declared type run `<service binary> migrate-queue` as \
                 docs/events.md ('Changing a queue's type') describes"
            );
            *channel = connection.create_channel().await?;
            channel
                .queue_declare(
                    name.into(),
                    QueueDeclareOptions { passive: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await?;
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("cannot declare the queue {name}: {e}")),
    }
}

/// Whether the broker refused an operation with PRECONDITION_FAILED (406): a queue or
/// exchange exists with other arguments, or a queue to delete is in use.
pub fn is_precondition_failed(err: &lapin::Error) -> bool {
    matches!(err.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 406)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_has_one_queue_and_every_key_a_publisher() {
        let mut services: Vec<_> = QUEUES.iter().map(|q| q.service).collect();
        services.sort_unstable();
        services.dedup();
        assert_eq!(services.len(), QUEUES.len());
        assert!(queue_of("notification").is_some());
        assert!(queue_of("nobody").is_none());
        // Every bound key is one some payload is published with.
        let published: Vec<&str> = crate::envelope::ALL_ROUTING_KEYS.to_vec();
        for q in QUEUES {
            for key in q.routing_keys {
                assert!(published.contains(key), "{key} is published by nobody");
            }
        }
    }
}
