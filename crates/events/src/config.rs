//! Settings of the events machinery, from the environment.

use std::{str::FromStr, time::Duration};

use social_kit::config::{ConfigError, optional, parse_or};

/// The type of the consumers' durable queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated, for production clusters (RabbitMQ 3.8+).
    Quorum,
    /// Single-node queues, for brokers without quorum queues.
    Classic,
}

impl QueueType {
    /// The `x-queue-type` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quorum => "quorum",
            Self::Classic => "classic",
        }
    }
}

impl FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "quorum" => Ok(Self::Quorum),
            "classic" => Ok(Self::Classic),
            _ => Err("expected `quorum` or `classic`".into()),
        }
    }
}

/// Where events go and how they are consumed.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// `AMQP_URL`.
    pub amqp_url: String,
    /// `EVENTS_EXCHANGE`: the durable topic exchange.
    pub exchange: String,
    /// `EVENTS_QUEUE_PREFIX`: consumer queues are `<prefix>.<service>`.
    pub queue_prefix: String,
    /// `EVENTS_QUEUE_TYPE`: `quorum` (default) or `classic`.
    pub queue_type: QueueType,
    /// `EVENTS_PREFETCH`: unacknowledged deliveries per consumer.
    pub prefetch: u16,
    /// `EVENTS_MAX_ATTEMPTS`: deliveries of a failing message before it is dead-lettered.
    pub max_attempts: u32,
    /// `EVENTS_HANDLER_TIMEOUT_MS`: longest a handler may take for one message.
    pub handler_timeout: Duration,
    /// `OUTBOX_POLL_MS`: the relay's backstop poll (it also wakes at once after a write).
    pub outbox_poll: Duration,
    /// `EVENTS_HOLD_LIMIT_SECS`: how long a message whose dependency is down is retried
    /// in place before a copy is re-queued; keep it well below the broker's
    /// `consumer_timeout` (30 min by default).
    pub hold_limit: Duration,
    /// For tests (`EVENTS_EPHEMERAL`, false): queues expire two minutes after their last
    /// consumer leaves, and exchanges go with their last binding, so test runs leave
    /// nothing behind. Never in production: a queue with no consumer for two minutes
    /// would take its events with it.
    pub ephemeral: bool,
}

impl EventsConfig {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            amqp_url: optional("AMQP_URL")
                .unwrap_or_else(|| social_kit::config::DEFAULT_AMQP_URL.into()),
            exchange: optional("EVENTS_EXCHANGE").unwrap_or_else(|| "social.events".into()),
            queue_prefix: optional("EVENTS_QUEUE_PREFIX").unwrap_or_else(|| "social".into()),
            queue_type: parse_or("EVENTS_QUEUE_TYPE", QueueType::Quorum)?,
            prefetch: parse_or("EVENTS_PREFETCH", 32)?,
            max_attempts: parse_or("EVENTS_MAX_ATTEMPTS", 5)?,
            handler_timeout: social_kit::config::millis_or("EVENTS_HANDLER_TIMEOUT_MS", 10_000)?,
            outbox_poll: social_kit::config::millis_or("OUTBOX_POLL_MS", 1000)?,
            hold_limit: social_kit::config::seconds_or("EVENTS_HOLD_LIMIT_SECS", 300)?,
            ephemeral: parse_or("EVENTS_EPHEMERAL", false)?,
        })
    }

    /// Names of its own (`<name>`) so that tests run in parallel on one broker;
    /// classic queues that expire when unused.
    pub fn for_tests(name: &str) -> Self {
        Self {
            amqp_url: optional("AMQP_URL")
                .unwrap_or_else(|| social_kit::config::DEFAULT_AMQP_URL.into()),
            exchange: format!("{name}.events"),
            queue_prefix: name.to_owned(),
            // Light for the broker: hundreds of tests each declare several queues. The
            // quorum type is exercised by the tests that ask for it.
            queue_type: QueueType::Classic,
            prefetch: 16,
            max_attempts: 3,
            handler_timeout: Duration::from_secs(5),
            outbox_poll: Duration::from_millis(200),
            hold_limit: Duration::from_secs(300),
            ephemeral: true,
        }
    }

    /// The durable queue of `service`.
    pub fn queue(&self, service: &str) -> String {
        format!("{}.{service}", self.queue_prefix)
    }

    /// The dead-letter exchange.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.exchange)
    }

    /// The dead-letter queue of `service`.
    pub fn dead_letter_queue(&self, service: &str) -> String {
        format!("{}.dlq", self.queue(service))
    }
}
