//! Operators' commands on the broker, run by every service binary:
//!
//! - `declare-topology` declares the whole topology ([`crate::topology::QUEUES`]) and
//!   exits: for a deploy pipeline or an init container, so that no event is published
//!   before every queue exists (the services also declare it themselves).
//! - `purge-queues` empties every queue, for a development reset only.
//! - `migrate-queue` moves the service's queue and its dead-letter queue to the type
//!   `EVENTS_QUEUE_TYPE` says, without losing an event, while the other services keep
//!   publishing (docs/events.md, "Changing a queue's type").
//!
//! How a queue is moved: a holding queue of the new type is bound like the old one, so
//! that every new event lands in both; the old queue's messages are moved into it (each
//! copy confirmed by the broker before the original is acknowledged); the old queue is
//! deleted (only if no consumer uses it) and declared again with the new type and its
//! bindings; the holding queue's messages are moved back, and the holding queue is
//! unbound, emptied and deleted. Events published meanwhile may be delivered twice;
//! consumers are idempotent.

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
    },
    types::FieldTable,
};

use crate::{config::EventsConfig, topology};

async fn connect(config: &EventsConfig, name: &str) -> anyhow::Result<Connection> {
    crate::connection::open(&config.amqp_url, name, Duration::from_secs(10)).await
}

/// `declare-topology`: declares every exchange, queue and binding, then returns.
pub async fn declare_topology(config: &EventsConfig) -> anyhow::Result<()> {
    let connection = connect(config, "declare-topology").await?;
    topology::declare(&connection, config, topology::QUEUES).await?;
    tracing::info!(
        exchange = %config.exchange,
        queues = topology::QUEUES.len(),
        queue_type = config.queue_type.as_str(),
        "topology declared"
    );
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// `purge-queues`: empties every queue of the topology and its dead-letter queue (those
/// declared already), for a development reset (`scripts/up --reset`, which empties the
/// database too); how many messages it dropped. Refused unless `development` (the
/// command passes `DEVELOPMENT_KEYS=true`): on a system that serves, it would drop the
/// events in flight.
pub async fn purge_queues(config: &EventsConfig, development: bool) -> anyhow::Result<u32> {
    if !development {
        anyhow::bail!(
            "purge-queues drops every event in flight: it runs only with DEVELOPMENT_KEYS=true \
             (a development machine)"
        );
    }
    let connection = connect(config, "purge-queues").await?;
    let channel = connection.create_channel().await?;
    let mut purged = 0;
    for spec in topology::QUEUES {
        for queue in [config.queue(spec.service), config.dead_letter_queue(spec.service)] {
            if look_up(&connection, &queue).await.is_err() {
                continue; // never declared: nothing in it
            }
            purged +=
                channel.queue_purge(queue.as_str().into(), QueuePurgeOptions::default()).await?;
        }
    }
    tracing::info!(purged, "queues purged");
    let _ = connection.close(200, "done".into()).await;
    Ok(purged)
}

/// `migrate-queue`: moves `service`'s queue and dead-letter queue to
/// `config.queue_type` (see the module docs). Refuses while a consumer uses the queue.
pub async fn migrate_queue(config: &EventsConfig, service: &str) -> anyhow::Result<()> {
    let spec = topology::queue_of(service)
        .ok_or_else(|| anyhow::anyhow!("the {service} service consumes no queue"))?;
    let connection = connect(config, "migrate-queue").await?;
    // Everything else first, so that the exchanges and bindings are there.
    topology::declare(&connection, config, topology::QUEUES).await?;
    let queue = config.queue(service);
    let consumers = look_up(&connection, &queue).await?.consumer_count();
    if consumers > 0 {
        anyhow::bail!(
            "{queue} has {consumers} consumer(s): stop the {service} service's consumers first \
             (scale it to 0), then run this again"
        );
    }
    let mut moved = migrate(
        &connection,
        &queue,
        topology::queue_arguments(config, service),
        &topology::bindings(config, &spec),
        config,
    )
    .await?;
    moved += migrate(
        &connection,
        &config.dead_letter_queue(service),
        topology::base_arguments(config),
        &topology::dead_letter_bindings(config, service),
        config,
    )
    .await?;
    tracing::info!(%queue, queue_type = config.queue_type.as_str(), moved, "queue migrated");
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// Looks a queue up without creating it (a passive declare): its message and consumer
/// counts, or an error if it does not exist.
pub async fn look_up(connection: &Connection, queue: &str) -> anyhow::Result<lapin::Queue> {
    let channel = connection.create_channel().await?;
    let found = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot find the queue {queue}: {e}"));
    let _ = channel.close(200, "looked".into()).await;
    found
}

async fn confirming(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Moves `queue` to a queue of the same name declared with `args` (see the module
/// docs); returns how many messages it moved.
async fn migrate(
    connection: &Connection,
    queue: &str,
    args: FieldTable,
    bindings: &[(String, String)],
    config: &EventsConfig,
) -> anyhow::Result<u64> {
    let holding = format!("{queue}.migrating");
    let channel = confirming(connection).await?;
    channel
        .queue_declare(
            holding.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            topology::base_arguments(config),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot declare the holding queue {holding}: {e}"))?;
    topology::bind(&channel, &holding, bindings).await?;
    let mut moved = 0;
    // A replica still on the old settings may declare the old queue again between our
    // delete and declare: then its messages are moved once more.
    let mut tries = 0;
    let mut channel = channel;
    loop {
        moved += move_all(&channel, queue, &holding).await?;
        let unused = QueueDeleteOptions { if_unused: true, ..Default::default() };
        if let Err(e) = channel.queue_delete(queue.into(), unused).await {
            anyhow::bail!(
                "could not delete {queue} (a consumer started using it?): {e}; its messages \
                 are safe in {holding} and {queue}; stop the consumers and run this again"
            );
        }
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        match channel.queue_declare(queue.into(), durable, args.clone()).await {
            Ok(_) => break,
            Err(e) if topology::is_precondition_failed(&e) && tries < 5 => {
                tries += 1;
                tracing::warn!(%queue, "declared again with the old arguments meanwhile; moving it once more");
                // The refusal closed the channel.
                channel = confirming(connection).await?;
            }
            Err(e) => anyhow::bail!("cannot declare {queue} with the new arguments: {e}"),
        }
    }
    // A channel remembers the type of the queues it touched: RabbitMQ 3.10 closes the
    // connection when one publishes to a queue re-created under another type. A fresh
    // channel for everything after the re-declaration.
    let _ = channel.close(200, "re-declared".into()).await;
    let channel = confirming(connection).await?;
    topology::bind(&channel, queue, bindings).await?;
    moved += move_all(&channel, &holding, queue).await?;
    for (exchange, key) in bindings {
        channel
            .queue_unbind(
                holding.as_str().into(),
                exchange.as_str().into(),
                key.as_str().into(),
                FieldTable::default(),
            )
            .await?;
    }
    // What arrived between the rebind and the unbind. (Quorum queues refuse the
    // `if_empty` delete, so emptiness is checked first: nothing reaches it any more.)
    moved += move_all(&channel, &holding, queue).await?;
    let left = look_up(connection, &holding).await?.message_count();
    if left > 0 {
        anyhow::bail!("{holding} still holds {left} messages; run this again");
    }
    channel
        .queue_delete(holding.as_str().into(), QueueDeleteOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("cannot delete the holding queue {holding}: {e}"))?;
    let _ = channel.close(200, "migrated".into()).await;
    Ok(moved)
}

/// Moves every message of `from` to the back of `to`: each copy is confirmed by the
/// broker before the original is acknowledged, so a failure leaves a message in both
/// queues (a duplicate), never in neither.
async fn move_all(channel: &Channel, from: &str, to: &str) -> anyhow::Result<u64> {
    let mut moved = 0;
    while let Some(message) =
        channel.basic_get(from.into(), BasicGetOptions { no_ack: false }).await?
    {
        let delivery = message.delivery;
        let properties: BasicProperties = delivery.properties.clone();
        let confirm = channel
            .basic_publish(
                "".into(),
                to.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => {}
            other => anyhow::bail!("the broker did not take a copy into {to}: {other:?}"),
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        moved += 1;
    }
    Ok(moved)
}

/// The broker commands every service binary offers: `declare-topology`, and
/// `migrate-queue` for a service that consumes a queue. `events` picks the events
/// settings out of the service's configuration.
pub fn commands<C: 'static>(
    service: &'static str,
    events: fn(&C) -> &EventsConfig,
) -> Vec<social_kit::serve::Command<C>> {
    let mut commands = vec![social_kit::serve::Command::new(
        "declare-topology",
        "declare every exchange, queue and binding of the events, then exit",
        move |config: C| {
            let events = events(&config).clone();
            Box::pin(async move { declare_topology(&events).await })
        },
    )];
    commands.push(social_kit::serve::Command::new(
        "purge-queues",
        "empty every events queue (development only: needs DEVELOPMENT_KEYS=true; \
         scripts/up --reset)",
        move |config: C| {
            let events = events(&config).clone();
            Box::pin(async move {
                let development = social_kit::config::parse_or("DEVELOPMENT_KEYS", false)?;
                let purged = purge_queues(&events, development).await?;
                println!("purged {purged} messages from the {} queues", events.queue_prefix);
                Ok(())
            })
        },
    ));
    if topology::queue_of(service).is_some() {
        commands.push(social_kit::serve::Command::new(
            "migrate-queue",
            "move this service's queue to EVENTS_QUEUE_TYPE without losing events \
             (stop its consumers first; see docs/events.md)",
            move |config: C| {
                let events = events(&config).clone();
                Box::pin(async move { migrate_queue(&events, service).await })
            },
        ));
    }
    commands
}
