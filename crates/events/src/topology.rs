//! Declares the exchanges and queues, idempotently, at every (re)connect: one durable
//! topic exchange; per consuming service a durable queue bound by routing key, whose
//! rejected messages go through a dead-letter exchange to `<queue>.dlq`.

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};

use crate::config::EventsConfig;

/// How long an unused test queue lives.
const EPHEMERAL_MS: u32 = 120_000;

/// Declares the main exchange (publishers need only this).
pub async fn declare_exchange(channel: &Channel, config: &EventsConfig) -> lapin::Result<()> {
    channel
        .exchange_declare(
            config.exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                auto_delete: config.ephemeral,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Declares everything `service` consumes through: the exchange, its queue bound to
/// `routing_keys`, and its dead-letter exchange and queue. Returns the queue's name.
pub async fn declare_consumer(
    channel: &Channel,
    config: &EventsConfig,
    service: &str,
    routing_keys: &[&str],
) -> lapin::Result<String> {
    declare_exchange(channel, config).await?;
    let queue = config.queue(service);
    let dlx = config.dead_letter_exchange();
    let dlq = config.dead_letter_queue(service);
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };

    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                auto_delete: config.ephemeral,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut dlq_args = FieldTable::default();
    dlq_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(config.queue_type.as_str().into()),
    );
    if config.ephemeral {
        dlq_args.insert("x-expires".into(), AMQPValue::LongUInt(EPHEMERAL_MS));
    }
    channel
        .queue_declare(dlq.as_str().into(), durable, dlq_args)
        .await?;
    channel
        .queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            queue.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(config.queue_type.as_str().into()),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.as_str().into()),
    );
    if config.ephemeral {
        args.insert("x-expires".into(), AMQPValue::LongUInt(EPHEMERAL_MS));
    }
    channel
        .queue_declare(queue.as_str().into(), durable, args)
        .await?;
    for key in routing_keys {
        channel
            .queue_bind(
                queue.as_str().into(),
                config.exchange.as_str().into(),
                ShortString::from(*key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(queue)
}
