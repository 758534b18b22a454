//! Talking to RabbitMQ directly from tests: publishing a raw message (a duplicate, a
//! poison pill) and looking into a queue.

use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
};
use social_events::EventsConfig;

async fn channel(config: &EventsConfig) -> lapin::Channel {
    let connection = Connection::connect(&config.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    channel
}

/// Publishes `body` on the events exchange with `routing_key`, and waits for the confirm.
pub async fn publish_raw(config: &EventsConfig, routing_key: &str, body: &[u8], message_id: &str) {
    publish_all(config, routing_key, &[(body.to_vec(), message_id.to_owned())]).await;
}

/// Publishes each `(body, message id)` on the events exchange with `routing_key`, on one
/// channel, and waits for every confirm.
pub async fn publish_all(config: &EventsConfig, routing_key: &str, messages: &[(Vec<u8>, String)]) {
    let channel = channel(config).await;
    for (body, message_id) in messages {
        channel
            .basic_publish(
                config.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_message_id(message_id.as_str().into())
                    .with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
}

/// Looks `queue` up without creating it (a passive declare).
async fn look_up(config: &EventsConfig, queue: &str) -> anyhow::Result<lapin::Queue> {
    let connection = Connection::connect(&config.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    social_events::admin::look_up(&connection, queue).await
}

/// Whether `queue` exists (a consumer declared it).
pub async fn queue_exists(config: &EventsConfig, queue: &str) -> bool {
    look_up(config, queue).await.is_ok()
}

/// How many consumers `queue` has (0 if it does not exist).
pub async fn consumer_count(config: &EventsConfig, queue: &str) -> u32 {
    look_up(config, queue).await.map(|q| q.consumer_count()).unwrap_or(0)
}

/// Whether `service`'s queue exists with exactly the arguments `config` declares (a
/// declaration with other arguments is refused by the broker).
pub async fn declared_as(config: &EventsConfig, service: &str) -> bool {
    channel(config)
        .await
        .queue_declare(
            config.queue(service).as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            social_events::topology::queue_arguments(config, service),
        )
        .await
        .is_ok()
}

/// How many messages wait in `queue` (0 if it does not exist yet).
pub async fn queue_depth(config: &EventsConfig, queue: &str) -> u32 {
    look_up(config, queue).await.map(|q| q.message_count()).unwrap_or(0)
}

/// Takes every message waiting in `queue` and returns their bodies.
pub async fn take_all(config: &EventsConfig, queue: &str) -> Vec<Vec<u8>> {
    let channel = channel(config).await;
    let mut bodies = Vec::new();
    while let Ok(Some(got)) =
        channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await
    {
        bodies.push(got.delivery.data.clone());
    }
    bodies
}

/// Takes one message from `queue`, if any, and returns its body.
pub async fn take_one(config: &EventsConfig, queue: &str) -> Option<Vec<u8>> {
    let channel = channel(config).await;
    let got = channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.ok()??;
    Some(got.delivery.data.clone())
}
