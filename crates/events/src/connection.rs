//! Connecting to RabbitMQ, retrying with backoff until it answers or shutdown.

use std::time::Duration;

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use lapin::{Connection, ConnectionProperties, uri::AMQPUri};
use tokio_util::sync::CancellationToken;

/// Endless delays doubling from `min` to `max`, with jitter: how every retry loop of
/// this crate waits.
pub(crate) fn backoff(min: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The largest frame asked of the broker, unless the URL names one (`?frame_max=`). lapin
/// keeps 32 frames' worth of buffer each way on every connection: 8 MiB per connection at
/// RabbitMQ's default of 128 KiB, most of an idle service's memory. Events are a few
/// hundred bytes; a larger one is sent in several frames.
pub const FRAME_MAX: u32 = 16 * 1024;

/// Opens a connection to `url` named `name`, giving up after `timeout`.
pub async fn open(url: &str, name: &str, timeout: Duration) -> anyhow::Result<Connection> {
    let mut uri: AMQPUri =
        url.parse().map_err(|e| anyhow::anyhow!("AMQP_URL is not an AMQP URL: {e}"))?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connection = tokio::time::timeout(timeout, Connection::connect_uri(uri, properties))
        .await
        .map_err(|_| anyhow::anyhow!("RabbitMQ did not answer within {timeout:?}"))?;
    connection.context("cannot connect to RabbitMQ")
}

/// Connects to `url`, retrying with exponential backoff (capped at 5 s) until it works;
/// `None` if `shutdown` comes first.
pub async fn connect(url: &str, name: &str, shutdown: &CancellationToken) -> Option<Connection> {
    let mut delays = backoff(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return None,
            r = open(url, name, Duration::from_secs(10)) => r,
        };
        match attempt {
            Ok(connection) => return Some(connection),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "RabbitMQ is not reachable; retrying")
            }
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
