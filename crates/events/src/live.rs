//! Broadcast between the replicas of a service, for live pushes (the notification
//! stream): every replica binds its own exclusive, auto-deleted queue to a routing key
//! and hears every message published on it. A publish is confirmed by the broker (it
//! reached every bound queue); a listener reports whether its queue is bound, so that
//! its owner serves streams only while it hears everything. Nothing here is durable:
//! a replica that is down misses messages, and clients resynchronise from the store.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use lapin::{
    BasicProperties, Channel,
    options::{
        BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
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
        Self { config, name: name.to_owned(), channel: Arc::new(Mutex::new(None)) }
    }

    /// Publishes `body` with `routing_key` and waits for the broker's confirm; an error
    /// means the replicas may not have it (the caller retries). Gives up after two
    /// seconds: a broadcast must not hold its caller up for long.
    pub async fn publish(&self, routing_key: &str, body: &[u8]) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(2), self.publish_now(routing_key, body))
            .await
            .map_err(|_| anyhow::anyhow!("the broker did not take the broadcast in time"))?
    }

    async fn publish_now(&self, routing_key: &str, body: &[u8]) -> anyhow::Result<()> {
        // The channel is shared: the lock is held to publish, not for the confirm.
        let confirm = {
            let mut slot = self.channel.lock().await;
            if slot.as_ref().is_none_or(|c| !c.status().connected()) {
                *slot = Some(self.open().await?);
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
            match sent {
                Ok(confirm) => confirm,
                Err(e) => {
                    *slot = None;
                    return Err(e.into());
                }
            }
        };
        match confirm.await {
            Ok(lapin::Confirmation::Nack(_)) => anyhow::bail!("the broker refused the broadcast"),
            Ok(_) => Ok(()),
            Err(e) => {
                *self.channel.lock().await = None;
                Err(e.into())
            }
        }
    }

    async fn open(&self) -> anyhow::Result<Channel> {
        let connection =
            crate::connection::open(&self.config.amqp_url, &self.name, Duration::from_secs(2))
                .await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        crate::topology::declare_exchange(&channel, &self.config).await?;
        Ok(channel)
    }
}

/// Hears every message published with `routing_key` until `shutdown`, reconnecting
/// after failures, and hands each body to `deliver`. `live(true)` is called once the
/// queue is bound and consumed, `live(false)` as soon as it is lost: between the two,
/// every broadcast reaches `deliver`.
pub async fn listen(
    config: EventsConfig,
    name: String,
    routing_key: &'static str,
    deliver: impl Fn(Vec<u8>) + Send + Sync + 'static,
    live: impl Fn(bool) + Send + Sync + 'static,
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
                    BasicConsumeOptions { no_ack: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await?;
            tracing::info!(routing_key, "listening for broadcasts");
            live(true);
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
        live(false);
        if let Err(e) = listened {
            tracing::warn!(error = %format!("{e:#}"), "broadcast listener lost its connection; reconnecting");
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
