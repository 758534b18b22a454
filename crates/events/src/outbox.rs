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
//! handler calls [`RelayWaker::wake`] and polls as a backstop; it reconnects with backoff when
//! the broker goes away. An unroutable event (no queue bound yet) or one the broker
//! refuses stays and is retried with backoff; the document's later events wait behind it
//! (events of one document go out in order), other documents do not.
//!
//! Entries are strings (`<traceparent or -> <base64 of the encoded Envelope>`): the
//! stand-in mangles sub-documents pushed into arrays, and a string is all we need.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use bson::{Bson, Document, doc};
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

use crate::{config::EventsConfig, envelope::Envelope, routing_key, topology::QueueSpec};

/// The array of pending events in a document.
pub const FIELD: &str = "outbox";
/// How many events the array holds (what the relay looks for).
pub const PENDING: &str = "outbox_pending";

/// An event as stored in an outbox, with the current trace context.
pub fn entry(envelope: &Envelope) -> String {
    let traceparent = social_kit::telemetry::current_context_map()
        .remove("traceparent")
        .unwrap_or_else(|| "-".into());
    format!("{traceparent} {}", STANDARD.encode(envelope.encode_to_vec()))
}

/// The envelope and trace parent of an outbox entry.
pub fn parse(entry: &str) -> anyhow::Result<(Envelope, Option<String>)> {
    let (traceparent, body) =
        entry.split_once(' ').ok_or_else(|| anyhow::anyhow!("outbox entry without a separator"))?;
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

/// A TTL index that purges documents `after` their `field` (e.g. `deleted_at`), but only
/// once their outbox is empty: a deleted document still carrying an unpublished event
/// (a broker unreachable for longer than the TTL) stays until the event is out.
pub fn purge_index(name: &str, field: &str, after: Duration) -> IndexModel {
    IndexModel::builder()
        .keys(doc! { field: 1 })
        .options(
            mongodb::options::IndexOptions::builder()
                .name(name.to_owned())
                .expire_after(after)
                .partial_filter_expression(doc! { PENDING: 0 })
                .build(),
        )
        .build()
}

/// Wakes the relay after a write that carries events.
#[derive(Clone, Default)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
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
    waker: RelayWaker,
    /// Declared before anything is published (see [`crate::topology`]).
    queues: Vec<QueueSpec>,
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
            waker: RelayWaker::default(),
            queues: crate::topology::QUEUES.to_vec(),
        }
    }

    /// Declares `queues` instead of the whole topology (for tests of unroutable events).
    pub fn declaring(mut self, queues: Vec<QueueSpec>) -> Self {
        self.queues = queues;
        self
    }

    /// The handle that wakes this relay.
    pub fn waker(&self) -> RelayWaker {
        self.waker.clone()
    }

    /// Runs until `shutdown`, then returns after the confirms of the batch in hand (at
    /// most [`SHUTDOWN_CONFIRM_GRACE`] more).
    ///
    /// A failed database read or write (MongoDB unreachable) keeps the broker channel
    /// and waits longer after each failure; a failed publish or confirm drops the channel
    /// (confirms abandoned mid-batch must not be taken for later ones) and reconnects.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut channel: Option<Channel> = None;
        let mut held = Held::default();
        let mut store_delays = store_backoff();
        // Owned by this future, so it ends with it (a stop, or the task aborted).
        let _backlog = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(measure_backlog(
            self.collections.clone(),
            shutdown.child_token(),
        )));
        while !shutdown.is_cancelled() {
            if channel.as_ref().is_none_or(|c| !c.status().connected()) {
                channel = self.open(&shutdown).await;
                if channel.is_none() {
                    break; // shutting down
                }
            }
            if let Some(ch) = &channel {
                match self.drain(ch, &mut held, &shutdown).await {
                    Ok(0) => store_delays = store_backoff(),
                    Ok(n) => {
                        store_delays = store_backoff();
                        // More may be pending (a document's next event, new writes).
                        tracing::debug!(published = n, "outbox pass");
                        continue;
                    }
                    Err(_) if shutdown.is_cancelled() => break,
                    Err(e) => {
                        let delay = if is_store_failure(&e) {
                            let delay = store_delays.next().unwrap_or(STORE_MAX_DELAY);
                            tracing::warn!(error = %format!("{e:#}"), ?delay, "outbox relay cannot read or update its documents; keeping the broker connection, retrying");
                            delay
                        } else {
                            tracing::warn!(error = %format!("{e:#}"), "outbox relay failed to publish; reconnecting");
                            // Dropping the last handle closes the connection.
                            channel = None;
                            Duration::from_millis(500)
                        };
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(delay) => {}
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
        let mut delays =
            crate::connection::backoff(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let connection = crate::connection::connect(
                &self.config.amqp_url,
                &format!("{}-relay", self.service),
                shutdown,
            )
            .await?;
            let opened = async {
                // Every queue first: an event published before its consumer's queue
                // exists would be confirmed and lost for that consumer.
                crate::topology::declare(&connection, &self.config, &self.queues).await?;
                let channel = connection.create_channel().await?;
                channel.confirm_select(ConfirmSelectOptions::default()).await?;
                Ok::<_, anyhow::Error>(channel)
            }
            .await;
            match opened {
                Ok(channel) => {
                    tracing::info!("outbox relay connected");
                    return Some(channel);
                }
                Err(e) => {
                    // E.g. the exchange exists with another type: do not hammer the broker.
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    tracing::error!(error = %format!("{e:#}"), ?delay, "cannot declare the topology or open a publishing channel; retrying");
                    let _ = connection.close(200, "retrying".into()).await;
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Publishes what is pending; returns how many events went out. Each pass takes the
    /// first pending event of every document (a document's next event goes out once
    /// this one is confirmed, so a document's events keep their order), in batches
    /// whose confirms are awaited together. Documents whose event was not taken are
    /// held back (see [`Held`]) while the others go on.
    async fn drain(
        &self,
        channel: &Channel,
        held: &mut Held,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<usize> {
        let mut published = 0;
        held.prune();
        for collection in &self.collections {
            let mut docs = collection
                .find(doc! { PENDING: { "$gt": 0 } })
                .projection(doc! { FIELD: 1 })
                .batch_size(256)
                .await?;
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(document) = docs.try_next().await? {
                if shutdown.is_cancelled() {
                    return Ok(published);
                }
                let Some(id) = document.get("_id").cloned() else {
                    continue;
                };
                let key = format!("{}/{id}", collection.name());
                if held.waiting(&key) {
                    continue;
                }
                let first = document
                    .get_array(FIELD)
                    .ok()
                    .and_then(|a| a.iter().find_map(|v| v.as_str().map(str::to_owned)));
                let Some(entry) = first else { continue };
                let event = parse(&entry)
                    .inspect_err(|e| {
                        // Cannot happen short of a corrupted document; keeping it would
                        // hold the document's other events back for ever.
                        tracing::error!(error = %e, "dropping an unreadable outbox entry");
                    })
                    .ok();
                batch.push(Pending { key, id, entry, event });
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    published += self.send(channel, collection, full, held, shutdown).await?;
                }
            }
            published += self.send(channel, collection, batch, held, shutdown).await?;
        }
        Ok(published)
    }

    /// Publishes a batch (one event per document), awaits the confirms, and takes the
    /// confirmed events out of their documents.
    async fn send(
        &self,
        channel: &Channel,
        collection: &Collection<Document>,
        batch: Vec<Pending>,
        held: &mut Held,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<usize> {
        // All published first: the broker then confirms (and syncs to disk) together.
        let mut in_flight = Vec::with_capacity(batch.len());
        for pending in &batch {
            in_flight.push(match &pending.event {
                Some((envelope, traceparent)) => {
                    match self.publish(channel, envelope, traceparent.clone()).await {
                        Ok(publish) => publish,
                        Err(e) => {
                            // The ones published before it are abandoned with it.
                            let published = in_flight.iter().map(Option::is_some);
                            count_failed(&batch, published);
                            return Err(e);
                        }
                    }
                }
                None => None,
            });
        }
        // lapin hands a returned (unroutable) message to whichever confirm completes
        // next, not to its own: collect every confirm first, then judge each event by
        // its own ack AND by its id not being among the returned ones.
        let mut outcomes = Vec::with_capacity(in_flight.len());
        let mut returned = std::collections::HashSet::new();
        let published: Vec<bool> = in_flight.iter().map(Option::is_some).collect();
        for publish in in_flight {
            outcomes.push(match publish {
                None => None,
                Some(publish) => match publish.confirmed(shutdown).await {
                    Ok((acked, bounced)) => {
                        returned.extend(bounced);
                        Some(acked)
                    }
                    Err(e) => {
                        // The channel goes and none of the batch is taken out of its
                        // document: every one of them is published again later.
                        count_failed(&batch, published.iter().copied());
                        return Err(e);
                    }
                },
            });
        }
        let mut sent = Vec::with_capacity(batch.len());
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            let delivered = match outcome {
                None => true,
                Some(acked) => {
                    let bounced = returned.contains(pending.event_id());
                    if let Some(key) = pending.routing_key() {
                        let outcome = match (acked, bounced) {
                            (true, false) => "confirmed",
                            (_, true) => "returned",
                            (false, false) => "nacked",
                        };
                        social_kit::metrics::published(key, outcome);
                    }
                    acked && !bounced
                }
            };
            if delivered {
                sent.push(pending);
            } else {
                tracing::warn!(event_id = %pending.event_id(), "the broker did not take an event (no queue bound for it yet, or refused); keeping it");
                held.hold(pending.key);
            }
        }
        futures::future::try_join_all(sent.iter().map(|p| self.mark_sent(collection, p))).await?;
        for pending in &sent {
            held.release(&pending.key);
        }
        Ok(sent.len())
    }

    /// Takes a published entry out of its document (once, however many relays run).
    async fn mark_sent(
        &self,
        collection: &Collection<Document>,
        pending: &Pending,
    ) -> mongodb::error::Result<()> {
        let entry = pending.entry.as_str();
        collection
            .update_one(
                doc! { "_id": pending.id.clone(), FIELD: entry },
                doc! { "$pull": { FIELD: entry }, "$inc": { PENDING: -1 } },
            )
            .await?;
        Ok(())
    }

    /// Publishes one event; `None` if there is nothing to publish (no payload: dropped).
    async fn publish(
        &self,
        channel: &Channel,
        envelope: &Envelope,
        traceparent: Option<String>,
    ) -> anyhow::Result<Option<InFlight>> {
        let Some(payload) = &envelope.payload else {
            tracing::error!(event_id = %envelope.event_id, "dropping an event without payload");
            return Ok(None);
        };
        let key = routing_key(payload);
        let mut headers = FieldTable::default();
        if let Some(tp) = traceparent {
            headers.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
        }
        let timestamp = envelope.occurred_at.as_ref().map_or(0, |t| t.seconds.max(0) as u64);
        let properties = BasicProperties::default()
            .with_message_id(envelope.event_id.as_str().into())
            .with_content_type("application/x-protobuf".into())
            .with_delivery_mode(2)
            .with_timestamp(timestamp)
            .with_type(key.into())
            .with_app_id(self.service.into())
            .with_headers(headers);
        let body = envelope.encode_to_vec();
        let publish = channel.basic_publish(
            self.config.exchange.as_str().into(),
            key.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            &body,
            properties,
        );
        // A broker that blocks publishers (memory or disk alarm) must not hang the relay.
        let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, publish)
            .await
            .map_err(|_| {
                anyhow::anyhow!("the broker did not take an event within {CONFIRM_TIMEOUT:?}")
            })
            .and_then(|r| r.map_err(anyhow::Error::from))
            .inspect_err(|_| social_kit::metrics::published(key, "failed"))?;
        // (The caller counts the others of its batch.)
        Ok(Some(InFlight { confirm }))
    }
}

/// Counts as `failed` each event of `batch` that `published` says went out.
fn count_failed(batch: &[Pending], published: impl IntoIterator<Item = bool>) {
    for (pending, published) in batch.iter().zip(published) {
        if published && let Some(key) = pending.routing_key() {
            social_kit::metrics::published(key, "failed");
        }
    }
}

/// How many events are published before their confirms are awaited.
const BATCH: usize = 128;

/// An outbox entry about to be published.
struct Pending {
    /// `<collection>/<document id>`, for [`Held`].
    key: String,
    id: Bson,
    entry: String,
    /// The entry's event and trace parent; `None` if unreadable (dropped).
    event: Option<(Envelope, Option<String>)>,
}

impl Pending {
    /// The event's id, which is its message id.
    fn event_id(&self) -> &str {
        self.event.as_ref().map_or("", |(e, _)| e.event_id.as_str())
    }

    fn routing_key(&self) -> Option<&'static str> {
        let (envelope, _) = self.event.as_ref()?;
        envelope.payload.as_ref().map(routing_key)
    }
}

/// Measures each collection's backlog every [`social_kit::metrics::BACKLOG_EVERY`]
/// until `shutdown`, whether or not the broker is reachable (a broker outage is when the
/// backlog grows). Reads at most [`BACKLOG_SCAN`] documents per collection.
async fn measure_backlog(collections: Vec<Collection<Document>>, shutdown: CancellationToken) {
    loop {
        for collection in &collections {
            match backlog(collection).await {
                Ok((events, oldest)) => {
                    social_kit::metrics::outbox_backlog(collection.name(), events, oldest);
                }
                Err(e) => {
                    tracing::debug!(error = %e, collection = collection.name(), "cannot measure the outbox backlog");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(social_kit::metrics::BACKLOG_EVERY) => {}
        }
    }
}

/// The most documents one backlog measure reads.
const BACKLOG_SCAN: i64 = 10_000;

/// How many events `collection` holds unpublished, and the age in seconds of the oldest
/// (by the first event of each document, which is its oldest).
async fn backlog(collection: &Collection<Document>) -> anyhow::Result<(u64, f64)> {
    let mut docs = collection
        .find(doc! { PENDING: { "$gt": 0 } })
        .projection(doc! { FIELD: 1, PENDING: 1 })
        .limit(BACKLOG_SCAN)
        .await?;
    let now = bson::DateTime::now().timestamp_millis();
    let mut events = 0u64;
    let mut oldest = 0f64;
    while let Some(document) = docs.try_next().await? {
        let pending = match document.get(PENDING) {
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            _ => 1,
        };
        events += pending.max(0) as u64;
        let first = document
            .get_array(FIELD)
            .ok()
            .and_then(|a| a.iter().find_map(Bson::as_str))
            .and_then(|entry| parse(entry).ok());
        if let Some(at) = first.and_then(|(e, _)| e.occurred_at) {
            let age_ms = now.saturating_sub(social_kit::time::millis(&at));
            oldest = oldest.max(age_ms as f64 / 1000.0);
        }
    }
    Ok((events, oldest))
}

/// A published event waiting for the broker's confirm.
struct InFlight {
    confirm: lapin::PublisherConfirm,
}

impl InFlight {
    /// Whether the broker acked this publish, and the id of the returned (unroutable)
    /// message lapin attached to this confirm, which may be another event's.
    async fn confirmed(
        self,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<(bool, Option<String>)> {
        // At shutdown the confirms in flight are still awaited, briefly: an event the
        // broker took must leave its outbox, or the next start publishes it again. A
        // broker that blocks publishers must not hang the shutdown, though.
        let cut = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_CONFIRM_GRACE).await;
        };
        let confirm = tokio::select! {
            () = cut => anyhow::bail!("shutting down before the broker confirmed"),
            r = tokio::time::timeout(CONFIRM_TIMEOUT, self.confirm) => {
                r.map_err(|_| anyhow::anyhow!("the broker did not confirm within {CONFIRM_TIMEOUT:?}"))??
            }
        };
        let returned_id = |m: &lapin::message::Delivery| {
            m.properties.message_id().as_ref().map(ToString::to_string).unwrap_or_default()
        };
        Ok(match confirm {
            Confirmation::Ack(returned) => (true, returned.as_deref().map(returned_id)),
            Confirmation::Nack(returned) => (false, returned.as_deref().map(returned_id)),
            Confirmation::NotRequested => anyhow::bail!("publisher confirms are off"),
        })
    }
}

/// The longest wait for the broker's confirm of one event.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long confirms in flight are still awaited once shutdown begins (within the 5 s
/// the background tasks get).
const SHUTDOWN_CONFIRM_GRACE: Duration = Duration::from_secs(3);
/// The longest wait after failed reads or writes of the outbox documents.
const STORE_MAX_DELAY: Duration = Duration::from_secs(30);

/// Delays after failed reads or writes of the outbox documents: 200 ms doubling to 30 s.
fn store_backoff() -> backon::ExponentialBackoff {
    crate::connection::backoff(Duration::from_millis(200), STORE_MAX_DELAY)
}

/// Whether a relay failure came from MongoDB rather than from the broker.
fn is_store_failure(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.downcast_ref::<mongodb::error::Error>().is_some())
}

/// Documents whose next event the broker did not take (no queue bound for it yet, or a
/// nack), with when to try again: the wait doubles from 1 s to 1 min per failure, so
/// that a stuck event neither spins the relay nor holds up other documents.
#[derive(Default)]
struct Held(HashMap<String, (u32, Instant)>);

impl Held {
    fn waiting(&self, key: &str) -> bool {
        self.0.get(key).is_some_and(|(_, until)| Instant::now() < *until)
    }

    fn hold(&mut self, key: String) {
        let failures = self.0.get(&key).map_or(0, |(n, _)| *n).saturating_add(1);
        let wait = Duration::from_secs(1 << (failures - 1).min(6)).min(Duration::from_secs(60));
        self.0.insert(key, (failures, Instant::now() + wait));
    }

    /// Forgets documents not seen failing for a while (another relay sent them).
    fn prune(&mut self) {
        let now = Instant::now();
        self.0.retain(|_, (_, until)| {
            now.saturating_duration_since(*until) < Duration::from_secs(600)
        });
    }

    fn release(&mut self, key: &str) {
        self.0.remove(key);
    }
}

/// A projection that leaves the bookkeeping fields (outbox, applied event ids) out of
/// reads of domain documents.
pub fn without_bookkeeping() -> Document {
    let mut projection = crate::idempotency::without_counter_bookkeeping();
    projection.insert(FIELD, 0);
    projection.insert(PENDING, 0);
    projection
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

    #[test]
    fn a_held_document_waits_longer_after_each_failure() {
        let mut held = Held::default();
        held.hold("c/1".into());
        assert!(held.waiting("c/1"));
        assert!(!held.waiting("c/2"), "other documents go on");
        let first = held.0["c/1"].1;
        held.hold("c/1".into());
        assert!(held.0["c/1"].1 > first);
        for _ in 0..20 {
            held.hold("c/1".into());
        }
        assert!(held.0["c/1"].1 <= Instant::now() + Duration::from_secs(60));
        held.release("c/1");
        assert!(!held.waiting("c/1"));
    }

    #[test]
    fn purging_waits_for_the_outbox_to_empty() {
        let index = purge_index("deleted_ttl", "deleted_at", Duration::from_secs(60));
        let options = index.options.unwrap();
        assert_eq!(options.expire_after, Some(Duration::from_secs(60)));
        assert_eq!(options.partial_filter_expression, Some(doc! { PENDING: 0 }));
    }
}
