//! `serve()`: one gRPC server with the service's routes, `grpc.health.v1.Health`,
//! reflection (`v1` and `v1alpha`), a tracing span per request ([`access_log`]), a
//! [`Gate`] that verifies access tokens and holds requests back until start-up is done,
//! and graceful shutdown with a deadline. [`binary`] is the body of every service's
//! `main()`.

mod access_log;
mod binary;
mod gate;
mod shed;

use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};
use tonic::{service::Routes, transport::Server};
use tonic_health::ServingStatus;

pub use binary::{Command, binary_main, load_config, main, main_once, shutdown_on_signals};
pub use gate::{
    CLIENT_ADDRESS_HEADER, GATEWAY_TOKEN_HEADER, Gate, Routable, Rpcs, SERVICE_TOKEN_HEADER,
};

use crate::{config::CommonConfig, mongo::Db};

/// The largest request message a service accepts. The largest valid request (an update
/// with 500 characters of text and four media items with 2,048-character URLs, or a
/// batch of 100 ids) is under 20 KiB; anything much larger is refused while decoding
/// (`OUT_OF_RANGE`) before a handler spends time on it.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What [`serve`] needs to know about the service.
pub struct ServeSpec<'a> {
    /// Shared settings (name, shutdown grace).
    pub config: &'a CommonConfig,
    /// The full gRPC name of the service, e.g. `social.user.v1.UserService`.
    pub grpc_name: &'static str,
    /// The service's database, pinged for health.
    pub db: Db,
    /// The gate its routes were wrapped in.
    pub gate: Gate,
    /// Its RPCs that the gate treats apart.
    pub rpcs: Rpcs,
}

/// What a service does before it serves: ping its database, create its indexes.
/// Retried until it succeeds; requests wait behind the [`Gate`] meanwhile.
pub trait Startup: Send + Sync + 'static {
    /// One attempt.
    fn startup(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Whether a started service says `SERVING`: its database answered the last ping, or
/// has failed them for less than `grace`. A primary election (10-12 s) fails every
/// ping of every service at once: without the grace, every replica of every service
/// would leave its balancer together, and come back together.
struct Readiness {
    grace: Duration,
    failing_since: Option<Instant>,
}

impl Readiness {
    fn new(grace: Duration) -> Self {
        Self { grace, failing_since: None }
    }

    /// Records a ping's outcome at `now`; whether the service is ready.
    fn observe(&mut self, answered: bool, now: Instant) -> bool {
        if answered {
            self.failing_since = None;
            return true;
        }
        let since = *self.failing_since.get_or_insert(now);
        now.duration_since(since) < self.grace
    }
}

/// Serves `routes` on `listener` until `shutdown`; then stops accepting, gives in-flight
/// RPCs `config.shutdown_grace`, and then stops the `background` tasks (relay,
/// consumers), which therefore outlive every RPC that may feed them.
///
/// Health is `NOT_SERVING` until `startup` (ping, indexes) succeeds, retried every
/// second; then it follows a ping every few seconds, turning `NOT_SERVING` only once
/// the pings have failed for `config.database_grace` ([`Readiness`]), and is
/// `NOT_SERVING` again once shutdown begins.
pub async fn serve(
    spec: ServeSpec<'_>,
    listener: TcpListener,
    routes: Routes,
    startup: impl Startup,
    background: Background,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let set_status = {
        let reporter = reporter.clone();
        let name = spec.grpc_name;
        move |status: ServingStatus| {
            let reporter = reporter.clone();
            async move {
                reporter.set_service_status(name, status).await;
                reporter.set_service_status("", status).await;
            }
        }
    };
    set_status(ServingStatus::NotServing).await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(social_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // So that grpcurl can decode google.rpc.BadRequest in error details.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(spec.grpc_name)
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // Owned by this future: gone with it, whether it returns or is dropped.
    let health_task = AbortOnDropHandle::new(tokio::spawn({
        let db = spec.db.clone();
        let gate = spec.gate.clone();
        let shutdown = shutdown.clone();
        let set_status = set_status.clone();
        let mut readiness = Readiness::new(spec.config.database_grace);
        async move {
            let mut serving = false;
            loop {
                let (ok, answered) = if gate.is_ready() {
                    let answered = crate::mongo::ping(&db).await.is_ok();
                    (readiness.observe(answered, Instant::now()), answered)
                } else {
                    match startup.startup().await {
                        Ok(()) => {
                            gate.open();
                            tracing::info!("start-up done");
                            (true, true)
                        }
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "start-up failed; retrying");
                            (false, false)
                        }
                    }
                };
                if ok != serving {
                    serving = ok;
                    let status =
                        if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
                    tracing::info!(?status, "health");
                    set_status(status).await;
                }
                let pause = if answered { Duration::from_secs(5) } else { Duration::from_secs(1) };
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }));

    let addr = listener.local_addr()?;
    tracing::info!(%addr, service = spec.grpc_name, "listening");
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    let stop_accepting = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            set_status(ServingStatus::NotServing).await;
            tracing::info!("shutting down: no new connections");
        }
    };
    let server = Server::builder()
        .layer(crate::metrics::ServerLayer)
        .layer(access_log::access_log())
        .layer(shed::ShedLayer::new(spec.config.max_in_flight))
        .layer(tower::util::MapRequestLayer::new({
            let marker = gate::Marker::new(spec.grpc_name, spec.rpcs);
            move |request| marker.mark(request)
        }))
        .add_routes(routes)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, stop_accepting);
    tokio::pin!(server);

    let result = tokio::select! {
        r = &mut server => r,
        () = shutdown.cancelled() => {
            match tokio::time::timeout(spec.config.shutdown_grace, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(grace = ?spec.config.shutdown_grace, "in-flight RPCs outlived the shutdown grace; dropping them");
                    Ok(())
                }
            }
        }
    };
    health_task.abort();
    // In-flight RPCs are done (or cut): the background tasks get a short, fixed time on
    // top, so that the whole stop fits the platform's grace period (SIGKILL after
    // `terminationGracePeriodSeconds`); what they drop is redelivered or retried.
    background.stop(BACKGROUND_GRACE).await;
    // Ends the driver's sessions and closes its pools while the runtime still runs: left
    // to the client's drop, that happens in a task racing the runtime's end (a panic in
    // the driver's connection requester, seen at SIGTERM).
    let client = spec.db.client().clone();
    if tokio::time::timeout(BACKGROUND_GRACE, client.shutdown()).await.is_err() {
        tracing::warn!("the MongoDB client did not close in time");
    }
    result.map_err(Into::into)
}

/// How long background tasks (relay, consumers) may take to stop after the RPCs.
const BACKGROUND_GRACE: Duration = Duration::from_secs(5);

/// Tasks that run beside the server (outbox relay, event consumers) and stop after it:
/// in-flight RPCs finish first, then these are told to stop and awaited. They are owned:
/// dropping the group (the service's future dropped, as when a crash is played in a
/// test) aborts them, so nothing of a stopped service keeps working detached.
#[derive(Default)]
pub struct Background {
    stop: CancellationToken,
    tasks: Vec<AbortOnDropHandle<()>>,
}

impl Background {
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `task`, which gets the token that tells it to stop.
    pub fn spawn<F>(&mut self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(AbortOnDropHandle::new(tokio::spawn(task(self.stop.clone()))));
    }

    /// Tells every task to stop and waits for them, at most `deadline`; tasks still
    /// running then are aborted (what they held is redelivered or retried later).
    pub async fn stop(self, deadline: Duration) {
        self.stop.cancel();
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(deadline, all).await.is_err() {
            // Dropping the handles (the timed-out join) aborts the tasks.
            tracing::warn!(?deadline, "background tasks did not stop in time; aborting them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_failing_for_less_than_the_grace_leaves_the_service_ready() {
        let mut readiness = Readiness::new(Duration::from_secs(30));
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert!(readiness.observe(true, at(0)));
        // An election: 12 s of failed pings.
        for s in [5, 6, 11, 17] {
            assert!(readiness.observe(false, at(s)), "ready at {s} s");
        }
        assert!(readiness.observe(true, at(18)));
        // The failures start over after an answer; past the grace, not ready.
        assert!(readiness.observe(false, at(20)));
        assert!(readiness.observe(false, at(49)));
        assert!(!readiness.observe(false, at(50)), "30 s of failures");
        assert!(readiness.observe(true, at(51)), "ready again at the first answer");
    }
}
