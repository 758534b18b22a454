//! The outbox: an event rides inside the document it describes until it is published.
//!
//! The domain write and its event are ONE single-document update (or insert): the event
//! is appended to the document's `outbox` array and `outbox_pending` is incremented in
//! the same operation. MongoDB makes that atomic without a transaction (the stand-in has
//! no isolated transactions, and a standalone MongoDB none at all), so an acknowledged
//! RPC cannot lose its event: a crash before the relay publishes it only delays it.
//!
//! The [`Relay`] finds documents with `outbox_pending > 0`, publishes each event with
//! publisher confirms and `mandatory`, and only after the broker's ack removes it from
//! the document (conditionally, so two relays decrement once). It wakes at once when a
//! handler calls [`Waker::wake`] and polls as a backstop; it reconnects with backoff when
//! the broker goes away. An unroutable event (no queue bound yet) stays and is retried.
//!
//! Entries are strings (`<traceparent or -> <base64 of the encoded Envelope>`): the
//! stand-in mangles sub-documents pushed into arrays, and a string is all we need.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use bson::{Document, doc};
use futures::TryStreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use mongodb::{Collection, Database, IndexModel};
use prost::Message;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{config::EventsConfig, envelope::Envelope, routing_key};

/// The array of pending events in a document.
pub const FIELD: &str = "outbox";
/// How many events the array holds (what the relay looks for).
pub const PENDING: &str = "outbox_pending";

/// An event as stored in an outbox, with the current trace context.
pub fn entry(envelope: &Envelope) -> String {
    let traceparent = social_kit::telemetry::current_context_map()
        .remove("traceparent")
        .unwrap_or_else(|| "-".into());
    format!(
        "{traceparent} {}",
        STANDARD.encode(envelope.encode_to_vec())
    )
}

/// The envelope and trace parent of an outbox entry.
pub fn parse(entry: &str) -> anyhow::Result<(Envelope, Option<String>)> {
    let (traceparent, body) = entry
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("outbox entry without a separator"))?;
    let envelope = Envelope::decode(STANDARD.decode(body)?.as_slice())?;
    let traceparent = (traceparent != "-").then(|| traceparent.to_owned());
    Ok((envelope, traceparent))
}

/// Adds "append `envelope` to the outbox" to an update document.
pub fn push(update: &mut Document, envelope: &Envelope) {
    let entry = entry(envelope);
    match update.get_document_mut("$push") {
        Ok(push) => {
            push.insert(FIELD, entry);
        }
        Err(_) => {
            update.insert("$push", doc! { FIELD: entry });
        }
    }
    match update.get_document_mut("$inc") {
        Ok(inc) => {
            inc.insert(PENDING, 1);
        }
        Err(_) => {
            update.insert("$inc", doc! { PENDING: 1 });
        }
    }
}

/// The index the relay's query uses, for every collection with an outbox.
pub fn index() -> IndexModel {
    social_kit::mongo::index("outbox_pending", doc! { PENDING: 1 }, false)
}

/// Wakes the relay after a write that carries events.
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    /// Tells the relay there is something to publish.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Publishes the outboxes of some collections.
pub struct Relay {
    config: EventsConfig,
    service: &'static str,
    collections: Vec<Collection<Document>>,
    waker: Waker,
}

impl Relay {
    /// A relay for `collections` of `db`, publishing as `service`.
    pub fn new(
        config: EventsConfig,
        service: &'static str,
        db: &Database,
        collections: &[&str],
    ) -> Self {
        Self {
            config,
            service,
            collections: collections.iter().map(|c| db.collection(c)).collect(),
            waker: Waker::default(),
        }
    }

    /// The handle that wakes this relay.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Runs until `shutdown`, then returns after finishing the event in hand.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut channel: Option<Channel> = None;
        while !shutdown.is_cancelled() {
            if channel.as_ref().is_none_or(|c| !c.status().connected()) {
                channel = self.open(&shutdown).await;
                if channel.is_none() {
                    break; // shutting down
                }
            }
            if let Some(ch) = &channel {
                match self.drain(ch, &shutdown).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(published = n, "outbox drained"),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "outbox relay failed; will retry");
                        if !ch.status().connected() {
                            channel = None;
                        }
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                        continue;
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.waker.0.notified() => {}
                () = tokio::time::sleep(self.config.outbox_poll) => {}
            }
        }
    }

    async fn open(&self, shutdown: &CancellationToken) -> Option<Channel> {
        loop {
            let connection = crate::connection::connect(
                &self.config.amqp_url,
                &format!("{}-relay", self.service),
                shutdown,
            )
            .await?;
            let opened = async {
                let channel = connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                crate::topology::declare_exchange(&channel, &self.config).await?;
                Ok::<_, lapin::Error>(channel)
            }
            .await;
            match opened {
                Ok(channel) => {
                    tracing::info!("outbox relay connected");
                    return Some(channel);
                }
                Err(e) => tracing::warn!(error = %e, "cannot open a publishing channel; retrying"),
            }
        }
    }

    /// Publishes everything pending; returns how many events went out.
    async fn drain(
        &self,
        channel: &Channel,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<usize> {
        let mut published = 0;
        for collection in &self.collections {
            let docs: Vec<Document> = collection
                .find(doc! { PENDING: { "$gt": 0 } })
                .projection(doc! { FIELD: 1 })
                .limit(500)
                .await?
                .try_collect()
                .await?;
            for document in docs {
                let Ok(id) = document.get("_id").cloned().ok_or(()) else {
                    continue;
                };
                let entries: Vec<String> = document
                    .get_array(FIELD)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                for entry in entries {
                    if shutdown.is_cancelled() {
                        return Ok(published);
                    }
                    let delivered = match parse(&entry) {
                        Ok((envelope, traceparent)) => {
                            self.publish(channel, &envelope, traceparent).await?
                        }
                        Err(e) => {
                            // Cannot happen short of a corrupted document; keeping it would
                            // block nothing but would be retried forever.
                            tracing::error!(error = %e, "dropping an unreadable outbox entry");
                            true
                        }
                    };
                    if delivered {
                        collection
                            .update_one(
                                doc! { "_id": id.clone(), FIELD: entry.as_str() },
                                doc! { "$pull": { FIELD: entry.as_str() }, "$inc": { PENDING: -1 } },
                            )
                            .await?;
                        published += 1;
                    }
                }
            }
        }
        Ok(published)
    }

    /// Publishes one event and waits for the broker's confirm. `Ok(false)`: not taken
    /// (unroutable or nacked), to be retried.
    async fn publish(
        &self,
        channel: &Channel,
        envelope: &Envelope,
        traceparent: Option<String>,
    ) -> anyhow::Result<bool> {
        let Some(payload) = &envelope.payload else {
            tracing::error!(event_id = %envelope.event_id, "dropping an event without payload");
            return Ok(true);
        };
        let key = routing_key(payload);
        let mut headers = FieldTable::default();
        if let Some(tp) = traceparent {
            headers.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
        }
        let timestamp = envelope
            .occurred_at
            .as_ref()
            .map_or(0, |t| t.seconds.max(0) as u64);
        let properties = BasicProperties::default()
            .with_message_id(envelope.event_id.as_str().into())
            .with_content_type("application/x-protobuf".into())
            .with_delivery_mode(2)
            .with_timestamp(timestamp)
            .with_type(key.into())
            .with_app_id(self.service.into())
            .with_headers(headers);
        let confirm = channel
            .basic_publish(
                self.config.exchange.as_str().into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &envelope.encode_to_vec(),
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(true),
            Confirmation::Ack(Some(_)) => {
                tracing::warn!(routing_key = key, event_id = %envelope.event_id, "no queue is bound for this event yet; keeping it");
                Ok(false)
            }
            Confirmation::Nack(_) => {
                tracing::warn!(routing_key = key, "the broker refused an event; retrying");
                Ok(false)
            }
            Confirmation::NotRequested => Err(anyhow::anyhow!("publisher confirms are off")),
        }
    }
}

/// A projection that leaves the bookkeeping fields (outbox, applied event ids) out of
/// reads of domain documents.
pub fn without_bookkeeping() -> Document {
    doc! { FIELD: 0, PENDING: 0, crate::idempotency::FIELD: 0 }
}

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;

    use super::*;
    use crate::{Payload, new_envelope, pb::UserFollowed};

    #[test]
    fn entries_round_trip() {
        let e = new_envelope(
            ObjectId::new(),
            Payload::UserFollowed(UserFollowed {
                follower_id: "a".into(),
                followee_id: "b".into(),
            }),
        );
        let (back, tp) = parse(&entry(&e)).unwrap();
        assert_eq!(back, e);
        assert_eq!(tp, None);
    }
}
