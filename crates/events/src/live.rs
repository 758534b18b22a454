//! Best-effort broadcast between the replicas of a service, for live pushes (the
//! notification stream): every replica binds its own exclusive, auto-deleted queue to
//! a routing key and hears every message published on it. Nothing here is durable:
//! a replica that is down misses messages, and clients resynchronise from the store.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use lapin::{
    BasicProperties, Channel,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::EventsConfig;

/// Publishes broadcast messages on one connection, reconnecting when needed.
#[derive(Clone)]
pub struct Broadcaster {
    config: EventsConfig,
    name: String,
    channel: Arc<Mutex<Option<Channel>>>,
}

impl Broadcaster {
    /// A broadcaster that connects on first use.
    pub fn new(config: EventsConfig, name: &str) -> Self {
        Self {
            config,
            name: name.to_owned(),
            channel: Arc::new(Mutex::new(None)),
        }
    }

    /// Publishes `body` with `routing_key`; an error means the message is lost. Gives up
    /// after two seconds: a broadcast is best effort and must not hold its caller up.
    pub async fn publish(&self, routing_key: &str, body: &[u8]) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(2), self.publish_now(routing_key, body))
            .await
            .map_err(|_| anyhow::anyhow!("the broker did not take the broadcast in time"))?
    }

    async fn publish_now(&self, routing_key: &str, body: &[u8]) -> anyhow::Result<()> {
        let mut slot = self.channel.lock().await;
        if slot.as_ref().is_none_or(|c| !c.status().connected()) {
            let properties = lapin::ConnectionProperties::default()
                .with_connection_name(self.name.as_str().into());
            let connection = tokio::time::timeout(
                Duration::from_secs(2),
                lapin::Connection::connect(&self.config.amqp_url, properties),
            )
            .await??;
            let channel = connection.create_channel().await?;
            crate::topology::declare_exchange(&channel, &self.config).await?;
            *slot = Some(channel);
        }
        let Some(channel) = slot.as_ref() else {
            return Err(anyhow::anyhow!("no channel"));
        };
        let sent = channel
            .basic_publish(
                self.config.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_content_type("application/x-protobuf".into()),
            )
            .await;
        if let Err(e) = sent {
            *slot = None;
            return Err(e.into());
        }
        Ok(())
    }
}

/// Hears every message published with `routing_key` until `shutdown`, reconnecting
/// after failures, and hands each body to `deliver`.
pub async fn listen(
    config: EventsConfig,
    name: String,
    routing_key: &'static str,
    deliver: impl Fn(Vec<u8>) + Send + Sync + 'static,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let Some(connection) = crate::connection::connect(&config.amqp_url, &name, &shutdown).await
        else {
            break;
        };
        let listened = async {
            let channel = connection.create_channel().await?;
            crate::topology::declare_exchange(&channel, &config).await?;
            let queue = channel
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            channel
                .queue_bind(
                    queue.name().clone(),
                    config.exchange.as_str().into(),
                    routing_key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let mut messages = channel
                .basic_consume(
                    queue.name().clone(),
                    "".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            tracing::info!(routing_key, "listening for broadcasts");
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok::<_, anyhow::Error>(()),
                    next = messages.next() => match next {
                        Some(Ok(delivery)) => deliver(delivery.data),
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(anyhow::anyhow!("broadcast stream ended")),
                    },
                }
            }
        }
        .await;
        if let Err(e) = listened {
            tracing::warn!(error = %format!("{e:#}"), "broadcast listener lost its connection; reconnecting");
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
