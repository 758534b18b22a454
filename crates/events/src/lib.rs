//! Domain events on RabbitMQ: the topology, the outbox and its relay, and the consumer
//! loop. Services use it to publish what happened and to react to what others did.
//!
//! - [`envelope`]: building an [`Envelope`] and its routing key.
//! - [`outbox`]: how a pending event rides inside the domain document it describes, so
//!   that the write and the event are one single-document atomic update (no
//!   multi-document transaction needed), and the relay that publishes it with
//!   publisher confirms.
//! - [`consumer`]: manual acks, bounded prefetch, handler timeout, bounded retries, a
//!   dead-letter queue, reconnects, and a clean stop.
//! - [`idempotency`]: applying an event to a document at most once.
//! - [`topology`]: the one table of queues and bindings every service declares.
//! - [`sessions`]: every replica refusing the tokens of sessions that ended.
//! - [`blocks`]: a service's copy of who blocks whom, for its reads.
//! - [`unchecked`]: writes marked until their checks after the insert have passed.
//! - [`admin`]: operators' commands (declare the topology, change a queue's type).
//! - [`service`]: the wiring every service shares (database, gate, relay, consumers,
//!   serve), built on the above and `social_kit::serve`.

pub mod admin;
pub mod blocks;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod envelope;
pub mod idempotency;
pub mod live;
pub mod outbox;
pub mod removed_users;
pub mod service;
pub mod sessions;
pub mod topology;
pub mod unchecked;

pub use config::{EventsConfig, QueueType};
pub use envelope::{Envelope, Payload, new_envelope, routing_key};
pub use social_proto::events::v1 as pb;
