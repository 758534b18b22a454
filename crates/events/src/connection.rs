//! Connecting to RabbitMQ, retrying with backoff until it answers or shutdown.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use lapin::{Connection, ConnectionProperties};
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

/// Connects to `url`, retrying with exponential backoff (capped at 5 s) until it works;
/// `None` if `shutdown` comes first.
pub async fn connect(url: &str, name: &str, shutdown: &CancellationToken) -> Option<Connection> {
    let mut delays = backoff(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return None,
            r = tokio::time::timeout(Duration::from_secs(10), Connection::connect(url, properties)) => r,
        };
        match attempt {
            Ok(Ok(connection)) => return Some(connection),
            Ok(Err(e)) => tracing::warn!(error = %e, "RabbitMQ is not reachable; retrying"),
            Err(_) => tracing::warn!("RabbitMQ did not answer in time; retrying"),
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
