//! The consumer loop: one durable queue per service, manual acks, bounded prefetch, a
//! timeout per handler, bounded retries, a dead-letter queue for messages that keep
//! failing or cannot be decoded, reconnection after a broker restart, and a clean stop.
//!
//! Handlers must be idempotent (see [`crate::idempotency`]): delivery is at least once.
//!
//! Failures are of two kinds ([`social_kit::error::is_transient`]):
//! - a dependency is down or slow (MongoDB unreachable, a peer `UNAVAILABLE` or
//!   `DEADLINE_EXCEEDED`, a handler timeout): the message is not at fault, so it is
//!   retried in place with capped exponential backoff, and never counts as an attempt.
//!   But a try that times out while a later try of another event of the same type
//!   succeeded (the dependency answers exactly this work, begun after it) is the
//!   message's own failure (a query only it makes hangs): it counts as an attempt like
//!   any error, so a message that always hangs ends in the dead-letter queue instead of
//!   holding a prefetch slot for ever.
//!   After `EVENTS_HOLD_LIMIT_SECS` (or at shutdown) a copy with the same attempt count is put at
//!   the back of the queue and the original acknowledged. An outage delays events, it
//!   never dead-letters them. With every prefetch slot waiting, the consumer takes
//!   nothing new until the dependency is back.
//! - anything else (a handler error, a panic): the message is re-published to the back
//!   of its queue with an attempt count in the `x-attempt` header and acknowledged;
//!   after `max_attempts` it is rejected into the dead-letter queue. This works the same
//!   for quorum and classic queues.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use lapin::{
    BasicProperties, Channel, Confirmation,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    },
    types::{AMQPValue, FieldTable},
};
use prost::Message;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{config::EventsConfig, envelope::Envelope, topology::QueueSpec};

/// Handles one event. `Err` means "try again later": at once and without limit when the
/// error is transient, else up to the last attempt, after which the message is
/// dead-lettered; [`MoreToDo`] means "run me again now" (a long job in steps).
pub type Handler = Arc<dyn Fn(Envelope) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// The [`Handler`] that applies each event with `apply`, given a clone of `state` (the
/// store and whatever else the service's handling needs).
pub fn handler<S, F, Fut>(state: S, apply: F) -> Handler
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Envelope) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    use futures::FutureExt;
    Arc::new(move |envelope| apply(state.clone(), envelope).boxed())
}

/// What a handler returns when it did one step of a long job (removing a large account)
/// within its [`Budget`] and the next step should run at once: not a failure, never
/// counted, no backoff. Each step must leave the job resumable.
#[derive(Debug, thiserror::Error)]
#[error("more to do")]
pub struct MoreToDo;

/// How long one step of a long job may run, well within the handler timeout; and how
/// long each of its batches took (logged at debug under the target [`BATCHES`], so that
/// a job whose batches grow slower shows: each must read only what is left).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    until: Instant,
    batch_started: Instant,
}

/// The log target of [`Budget::done`].
pub const BATCHES: &str = "social_events::batches";

impl Budget {
    /// A budget of two seconds from now.
    pub fn start() -> Self {
        let now = Instant::now();
        Self { until: now + Duration::from_secs(2), batch_started: now }
    }

    /// `Err(MoreToDo)` once the budget is spent: end this step there.
    pub fn check(&self) -> anyhow::Result<()> {
        if Instant::now() >= self.until { Err(MoreToDo.into()) } else { Ok(()) }
    }

    /// Records a batch of `items` of the job `step` done, and starts timing the next.
    pub fn done(&mut self, step: &str, items: usize) {
        let now = Instant::now();
        let micros = u64::try_from((now - self.batch_started).as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(target: BATCHES, step, items, micros, "batch done");
        self.batch_started = now;
    }

    /// Does the job `step` in batches until one does nothing, within the budget:
    /// `batch()` does one and says how many items it did.
    pub async fn repeat<Batch>(
        &mut self,
        step: &str,
        mut batch: impl FnMut() -> Batch,
    ) -> anyhow::Result<()>
    where
        Batch: std::future::Future<Output = anyhow::Result<usize>>,
    {
        loop {
            self.check()?;
            let items = batch().await?;
            if items == 0 {
                return Ok(());
            }
            self.done(step, items);
        }
    }

    /// Does the job `step` in batches until `next()` gives an empty one, within the
    /// budget: `each` handles every item, then `relay` is woken (the items' events are
    /// in their outboxes) and the batch recorded.
    pub async fn drain<T, Next, Each>(
        &mut self,
        step: &str,
        relay: &crate::outbox::RelayWaker,
        mut next: impl FnMut() -> Next,
        mut each: impl FnMut(T) -> Each,
    ) -> anyhow::Result<()>
    where
        Next: std::future::Future<Output = anyhow::Result<Vec<T>>>,
        Each: std::future::Future<Output = anyhow::Result<()>>,
    {
        loop {
            self.check()?;
            let batch = next().await?;
            if batch.is_empty() {
                return Ok(());
            }
            let items = batch.len();
            for item in batch {
                each(item).await?;
            }
            relay.wake();
            self.done(step, items);
        }
    }
}

/// The oldest event a consumer applies: a day short of the 30 days for which the
/// services remember what they applied (`crate::idempotency::WINDOW`, the notification
/// service's undone actions and removed targets). An event that waited longer, in an
/// outbox or a queue, could be applied twice, or after what undid it: it goes to the
/// dead-letter queue, with an error in the log, for an operator to look at.
pub const MAX_EVENT_AGE: Duration = Duration::from_secs(29 * 24 * 3600);

/// Events that are safe to apply however late: deletions, whose cascades are idempotent
/// by nature and must not be dropped, the cascades' reports, and the ends of blocks and
/// mutes; but for the services
/// listed with each, which apply it as a counter's step (remembered 30 days).
const SAFE_WHENEVER: &[(&str, &[&str])] = &[
    ("user.user.deleted", &[]),
    ("post.post.deleted", &[]),
    // The post service counts it down from `comments_count`.
    ("engagement.comment.deleted", &["post"]),
    ("deletion.account.cleared", &[]),
    // An end, applied by block or mute id: always safe (`crate::blocks`).
    ("graph.user.unblocked", &[]),
    ("graph.user.unmuted", &[]),
];

/// How old `event`, of type `kind`, is, if it is too old for `service` to apply (see
/// [`MAX_EVENT_AGE`]).
fn too_late(event: &Envelope, kind: &str, service: &str) -> Option<Duration> {
    if SAFE_WHENEVER.iter().any(|(k, but)| *k == kind && !but.contains(&service)) {
        return None;
    }
    let at = social_kit::time::millis(event.occurred_at.as_ref()?);
    let now = bson::DateTime::now().timestamp_millis();
    let age = Duration::from_millis(u64::try_from(now.saturating_sub(at)).ok()?);
    (age > MAX_EVENT_AGE).then_some(age)
}

const ATTEMPT_HEADER: &str = "x-attempt";
/// The longest wait between two tries of a message whose dependency is down.
const TRANSIENT_MAX_DELAY: Duration = Duration::from_secs(30);

/// Consumes `queue` until `shutdown`: then stops taking messages, lets the ones in
/// hand finish (up to the handler timeout) and returns; anything unacknowledged is
/// redelivered. Declares the whole topology ([`crate::topology::QUEUES`], and `queue`
/// if it is not in it) at every connect. After a failure (a lost connection, a refused
/// declaration) it reconnects after a delay that doubles up to 30 s, and starts again
/// from the shortest delay once it has consumed for a minute.
pub async fn run(
    config: EventsConfig,
    queue: QueueSpec,
    handler: Handler,
    shutdown: CancellationToken,
) {
    let name = format!("{}-consumer", queue.service);
    let mut declared: Vec<QueueSpec> = crate::topology::QUEUES.to_vec();
    if !declared.contains(&queue) {
        declared.push(queue);
    }
    let mut delays = crate::connection::backoff(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY);
    while !shutdown.is_cancelled() {
        let Some(connection) = crate::connection::connect(&config.amqp_url, &name, &shutdown).await
        else {
            break;
        };
        let started = Instant::now();
        let consumed = async {
            crate::topology::declare(&connection, &config, &declared).await?;
            consume(&config, &queue, &handler, &connection, &shutdown).await
        }
        .await;
        let _ = connection.close(200, "bye".into()).await;
        match consumed {
            Ok(()) => break,
            Err(e) => {
                if started.elapsed() >= HEALTHY_AFTER {
                    delays = crate::connection::backoff(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY);
                }
                let delay = delays.next().unwrap_or(RECONNECT_MAX_DELAY);
                tracing::warn!(error = %format!("{e:#}"), service = queue.service, ?delay, "consumer stopped; reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Shortest and longest wait before a consumer connects again after a failure.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(500);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(30);
/// A consumer that ran this long was healthy: its next failure starts a fresh backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

async fn consume(
    config: &EventsConfig,
    spec: &QueueSpec,
    handler: &Handler,
    connection: &lapin::Connection,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    let queue = config.queue(spec.service);
    channel.basic_qos(config.prefetch, BasicQosOptions::default()).await?;
    // Confirms for the copies re-published for a retry (see `handle`).
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let tag = format!("{}-{}", spec.service, bson::oid::ObjectId::new().to_hex());
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(%queue, "consuming");
    let mut in_hand = JoinSet::new();
    let passed = Arc::new(Passed::default());
    let result = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            Some(_) = in_hand.join_next(), if !in_hand.is_empty() => {}
            next = deliveries.next() => match next {
                Some(Ok(delivery)) => {
                    let with = Handling {
                        config: config.clone(),
                        handler: handler.clone(),
                        channel: channel.clone(),
                        queue: queue.clone(),
                        service: spec.service,
                        shutdown: shutdown.clone(),
                        passed: passed.clone(),
                    };
                    in_hand.spawn(async move { handle(&with, delivery).await });
                }
                Some(Err(e)) => break Err(anyhow::Error::new(e)),
                None => break Err(anyhow::anyhow!("the consumer stream ended")),
            },
        }
    };
    // Stop taking messages, finish what is in hand, then close (unacked ones return).
    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
    let grace = config.handler_timeout + Duration::from_secs(1);
    let _ =
        tokio::time::timeout(grace, async { while in_hand.join_next().await.is_some() {} }).await;
    in_hand.abort_all();
    let _ = channel.close(200, "bye".into()).await;
    result
}

fn attempt_of(delivery: &Delivery) -> u32 {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ATTEMPT_HEADER))
        .and_then(|v| match v {
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            _ => None,
        })
        .unwrap_or(1)
}

fn trace_context(delivery: &Delivery) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(headers) = delivery.properties.headers() {
        for (k, v) in headers.inner() {
            if let AMQPValue::LongString(s) = v {
                map.insert(k.to_string(), s.to_string());
            }
        }
    }
    map
}

/// When the latest successful try of each event type began (a handful of types).
#[derive(Default)]
struct Passed(Mutex<HashMap<&'static str, Instant>>);

impl Passed {
    fn record(&self, kind: &'static str, began: Instant) {
        if let Ok(mut latest) = self.0.lock() {
            let at = latest.entry(kind).or_insert(began);
            *at = (*at).max(began);
        }
    }

    /// Whether a try of `kind` that began after `began` succeeded.
    fn since(&self, kind: &'static str, began: Instant) -> bool {
        self.0.lock().ok().and_then(|latest| latest.get(kind).copied()).is_some_and(|at| at > began)
    }
}

/// What every message of one consumer is handled with.
struct Handling {
    config: EventsConfig,
    handler: Handler,
    channel: Channel,
    queue: String,
    service: &'static str,
    shutdown: CancellationToken,
    passed: Arc<Passed>,
}

async fn handle(with: &Handling, delivery: Delivery) {
    let Handling { config, handler, channel, queue, service, shutdown, passed } = with;
    let span = tracing::info_span!(
        "event.consume",
        otel.kind = "consumer",
        routing_key = %delivery.routing_key,
        event_id = tracing::field::Empty,
    );
    social_kit::telemetry::extract(&span, &trace_context(&delivery));
    let started = Instant::now();
    let key = delivery.routing_key.to_string();
    let done = |outcome: &'static str| {
        social_kit::metrics::event(queue, &key, outcome, started.elapsed().as_secs_f64());
    };
    async move {
        // Its type from its payload: a copy re-queued by `requeue` arrives with the
        // queue's name as its routing key.
        let decoded = Envelope::decode(delivery.data.as_slice())
            .ok()
            .and_then(|e| Some((e.payload.as_ref().map(crate::envelope::routing_key)?, e)));
        let Some((kind, envelope)) = decoded else {
            tracing::error!("undecodable message; dead-lettering it");
            reject(&delivery, false).await;
            done("dead_lettered");
            return;
        };
        tracing::Span::current().record("event_id", envelope.event_id.as_str());
        if let Some(age) = too_late(&envelope, kind, service) {
            tracing::error!(
                age_days = age.as_secs() / 86_400,
                "an event older than the consumers' memory of what they applied; \
                 dead-lettering it for an operator rather than risk applying it twice"
            );
            reject(&delivery, false).await;
            done("dead_lettered");
            return;
        }
        let attempt = attempt_of(&delivery);
        let mut delays =
            crate::connection::backoff(Duration::from_millis(200), TRANSIENT_MAX_DELAY);
        let held_since = Instant::now();
        let error = loop {
            let run = AssertUnwindSafe(handler(envelope.clone())).catch_unwind();
            let began = Instant::now();
            let why = match tokio::time::timeout(config.handler_timeout, run).await {
                Ok(Ok(Ok(()))) => {
                    passed.record(kind, began);
                    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                        tracing::warn!(error = %e, "ack failed; the message will be redelivered");
                    }
                    done("processed");
                    return;
                }
                // A long job done in steps: the next step at once, from a fresh backoff.
                Ok(Ok(Err(e))) if e.is::<MoreToDo>() => {
                    delays = crate::connection::backoff(
                        Duration::from_millis(200),
                        TRANSIENT_MAX_DELAY,
                    );
                    if held_since.elapsed() >= config.hold_limit {
                        requeue(channel, queue, &delivery, attempt).await;
                        done("requeued");
                        return;
                    }
                    continue;
                }
                Ok(Ok(Err(e))) if social_kit::error::is_transient(&e) => format!("{e:#}"),
                // Others went through meanwhile: it hangs on this message alone.
                Err(_) if passed.since(kind, began) => {
                    break "handler timed out while a later event of its type was handled".to_owned();
                }
                // A dependency that hangs rather than refuses looks like this.
                Err(_) => "handler timed out".to_owned(),
                Ok(Ok(Err(e))) => break format!("{e:#}"),
                Ok(Err(_)) => break "handler panicked".to_owned(),
            };
            if held_since.elapsed() >= config.hold_limit {
                // Give the slot back before the broker's consumer timeout closes the
                // channel: a copy, with the same attempt count, waits at the back.
                tracing::warn!(error = %why, "a dependency is still failing; re-queueing the message");
                requeue(channel, queue, &delivery, attempt).await;
                done("requeued");
                return;
            }
            let delay = delays.next().unwrap_or(TRANSIENT_MAX_DELAY);
            tracing::warn!(error = %why, ?delay, "a dependency failed; retrying the message in place");
            tokio::select! {
                () = shutdown.cancelled() => {
                    requeue(channel, queue, &delivery, attempt).await;
                    done("requeued");
                    return;
                }
                () = tokio::time::sleep(delay) => {}
            }
        };
        if attempt >= config.max_attempts {
            tracing::error!(%error, attempt, "giving up on a message; dead-lettering it");
            reject(&delivery, false).await;
            done("dead_lettered");
            return;
        }
        tracing::warn!(%error, attempt, "handler failed; retrying");
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        requeue(channel, queue, &delivery, attempt + 1).await;
        done("retried");
    }
    .instrument(span)
    .await;
}

/// Puts a copy of `delivery` at the back of `queue` with `attempt` in its header and
/// acknowledges the original once the broker confirmed the copy; if it did not, returns
/// the original to the queue instead. A copy starts with a fresh delivery count, which
/// a quorum queue's delivery limit would otherwise exhaust.
async fn requeue(channel: &Channel, queue: &str, delivery: &Delivery, attempt: u32) {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
    let properties: BasicProperties = delivery.properties.clone().with_headers(headers);
    let copy = async {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await?
            .await
    };
    // Straight into our own queue, which exists: an ack is all there is to check (a
    // returned message could not be told apart across concurrent handlers anyway).
    match tokio::time::timeout(Duration::from_secs(10), copy).await {
        Ok(Ok(Confirmation::Ack(_))) => {
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        }
        outcome => {
            let e = match outcome {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(_)) => "the broker refused the copy".to_owned(),
                Err(_) => "the broker did not confirm the copy in time".to_owned(),
            };
            tracing::warn!(error = %e, "could not re-queue a copy; returning the message");
            reject(delivery, true).await;
        }
    }
}

/// Rejects `delivery`: back into its queue (`requeue`) or into the dead-letter queue.
async fn reject(delivery: &Delivery, requeue: bool) {
    let _ = delivery.acker.nack(BasicNackOptions { requeue, ..Default::default() }).await;
}

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;

    use super::*;
    use crate::pb::{self, envelope::Payload};

    fn a_month_old(payload: Payload) -> Envelope {
        let mut event = crate::envelope::new_envelope(ObjectId::new(), payload);
        let month_ago = bson::DateTime::now().timestamp_millis() - 31 * 86_400_000;
        event.occurred_at =
            Some(social_kit::time::to_timestamp(bson::DateTime::from_millis(month_ago)));
        event
    }

    #[test]
    fn deletions_are_applied_however_late_and_other_events_are_not() {
        let deletions = [
            Payload::UserDeleted(pb::UserDeleted::default()),
            Payload::PostDeleted(pb::PostDeleted::default()),
            Payload::CommentDeleted(pb::CommentDeleted::default()),
            Payload::AccountCleared(pb::AccountCleared::default()),
        ];
        for payload in deletions {
            let kind = crate::envelope::routing_key(&payload);
            assert!(too_late(&a_month_old(payload), kind, "engagement").is_none(), "{kind}");
        }
        let like = Payload::PostLiked(pb::PostLiked::default());
        let kind = crate::envelope::routing_key(&like);
        assert!(too_late(&a_month_old(like), kind, "notification").is_some());
        // A step of a counter whose memory of what it applied is 30 days: not that late.
        let comment = Payload::CommentDeleted(pb::CommentDeleted::default());
        let kind = crate::envelope::routing_key(&comment);
        assert!(too_late(&a_month_old(comment), kind, "post").is_some());
    }
}
