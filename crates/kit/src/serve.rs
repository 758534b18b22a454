//! `serve()`: one gRPC server with the service's routes, `grpc.health.v1.Health`,
//! reflection (`v1` and `v1alpha`), a tracing span per request, a gate that verifies
//! access tokens and holds requests back until start-up is done, and graceful shutdown
//! with a deadline. Also [`main`], the body of every service's `main()`.

use std::{
    future::Future,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use mongodb::Database;
use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};
use tonic::{
    Request, Status,
    codegen::http,
    service::{Interceptor, Routes},
    transport::Server,
};
use tonic_health::ServingStatus;

use crate::{
    auth::TokenVerifier,
    config::CommonConfig,
    telemetry::{self, HeaderExtractor},
};

/// Verifies the access token of every request that carries one (a bad token is
/// `UNAUTHENTICATED` even on an open RPC; Login and Register never see one), lets only
/// the services themselves call internal RPCs ([`INTERNAL`]: `PERMISSION_DENIED`
/// without the service credential), and answers `UNAVAILABLE` until start-up (indexes)
/// is done. Handlers that need a caller ask [`crate::auth::caller`].
#[derive(Clone)]
pub struct Gate {
    verifier: TokenVerifier,
    /// SHA-256 of the service credential (compared by digest: no timing to learn from).
    service_token: [u8; 32],
    /// SHA-256 of the gateway's credential, which vouches for `x-client-address`.
    gateway_token: [u8; 32],
    /// Sessions that ended: their tokens are refused.
    revocations: crate::auth::Revocations,
    ready: Arc<AtomicBool>,
}

/// The RPCs only services may call: they serve other services (mentions, the feed,
/// recounts) and some cost hundreds of counts per request.
pub const INTERNAL: &[&str] = &[
    "/social.user.v1.UserService/BatchGetUsersByUsername",
    "/social.user.v1.UserService/ListEndedSessions",
    "/social.graph.v1.SocialGraphService/ListFollowingIds",
    "/social.graph.v1.SocialGraphService/CountFollows",
    "/social.engagement.v1.EngagementService/CountPostEngagement",
    "/social.post.v1.PostService/ExportUserPosts",
    "/social.engagement.v1.EngagementService/ExportUserEngagement",
    "/social.graph.v1.SocialGraphService/ExportUserFollows",
];

/// The metadata a service presents to another's internal RPC.
pub const SERVICE_TOKEN_HEADER: &str = "x-service-token";
/// The metadata the gateway presents with the client address it reports.
pub const GATEWAY_TOKEN_HEADER: &str = "x-gateway-token";
/// The client's address, as the gateway reports it (believed with its credential only).
pub const CLIENT_ADDRESS_HEADER: &str = "x-client-address";
/// Set by the server itself on requests to an internal RPC (a client's is removed).
const INTERNAL_MARK: &str = "x-social-internal-rpc";

impl Gate {
    /// A gate that opens when [`serve`] finishes the service's start-up, verifying tokens
    /// with `verifier` and accepting `service_token` on internal RPCs.
    pub fn new(verifier: TokenVerifier, service_token: &str, gateway_token: &str) -> Self {
        Self {
            verifier,
            service_token: digest(service_token),
            gateway_token: digest(gateway_token),
            revocations: crate::auth::Revocations::default(),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The ended sessions this gate refuses the tokens of (fed by
    /// `social_events::sessions::follow`).
    pub fn revocations(&self) -> crate::auth::Revocations {
        self.revocations.clone()
    }

    /// The gate of a service configured by `config`: its token verifier, the service
    /// credential and the gateway's (each an error naming its variable when missing
    /// outside development).
    pub fn from_config(config: &CommonConfig) -> Result<Self, crate::config::ConfigError> {
        Ok(Self::new(
            TokenVerifier::from_config(config)?,
            &crate::auth::service_token(config)?,
            &crate::auth::gateway_token(config)?,
        ))
    }

    /// Who the request acts for: the address the gateway reports with its credential,
    /// else the connection's peer (a client calling directly).
    fn client_address(&self, request: &Request<()>) -> Option<std::net::IpAddr> {
        let metadata = request.metadata();
        let presented = metadata
            .get(GATEWAY_TOKEN_HEADER)
            .map(|v| digest(v.to_str().unwrap_or_default()));
        let from_gateway = presented == Some(self.gateway_token);
        if presented.is_some() && !from_gateway {
            wrong_gateway_token();
        }
        let reported = metadata
            .get(CLIENT_ADDRESS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match (from_gateway, reported) {
            (true, Some(address)) => Some(address),
            _ => request.remote_addr().map(|a| a.ip()),
        }
    }

    /// Whether start-up is done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// A gateway credential that does not match (a rotated or mistyped `GATEWAY_TOKEN`):
/// every client behind that gateway is counted as the gateway's own address. Logged as
/// a warning at most once a minute.
fn wrong_gateway_token() {
    static LAST_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let now = bson::DateTime::now().timestamp_millis();
    let last = LAST_MS.load(Ordering::Relaxed);
    if now - last >= 60_000
        && LAST_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            "a caller presented a gateway credential that does not match GATEWAY_TOKEN: \
             the client addresses it reports are ignored (check GATEWAY_TOKEN on the \
             gateway and here)"
        );
    }
}

impl Interceptor for Gate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if !self.is_ready() {
            return Err(Status::unavailable(
                "the service is starting; retry shortly",
            ));
        }
        if request.metadata().contains_key(INTERNAL_MARK) {
            let presented = request
                .metadata()
                .get(SERVICE_TOKEN_HEADER)
                .map(|v| digest(v.to_str().unwrap_or_default()));
            if presented != Some(self.service_token) {
                return Err(Status::permission_denied(
                    "this RPC is internal to the services and needs their credential",
                ));
            }
        }
        if let Some(address) = self.client_address(&request) {
            request
                .extensions_mut()
                .insert(crate::auth::ClientAddress(address));
        }
        if let Some(value) = request.metadata().get("authorization") {
            let value = value
                .to_str()
                .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
            let caller = self.verifier.verify_header(value).map_err(Status::from)?;
            if caller
                .session
                .is_some_and(|s| self.revocations.is_revoked(s))
            {
                return Err(Status::unauthenticated(
                    "this access token's session has ended; log in again",
                ));
            }
            request.extensions_mut().insert(caller);
        }
        Ok(request)
    }
}

/// The largest request message a service accepts. The largest valid request (an update
/// with 500 characters of text and four media items with 2,048-character URLs, or a
/// batch of 100 ids) is under 20 KiB; anything much larger is refused while decoding
/// (`OUT_OF_RANGE`) before a handler spends time on it.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

impl Gate {
    /// `service` behind this gate.
    pub fn guard<S>(&self, service: S) -> tonic::service::interceptor::InterceptedService<S, Gate> {
        tonic::service::interceptor::InterceptedService::new(service, self.clone())
    }
}

/// What [`serve`] needs to know about the service.
pub struct ServeSpec<'a> {
    /// Shared settings (name, shutdown grace).
    pub config: &'a CommonConfig,
    /// The full gRPC name of the service, e.g. `social.user.v1.UserService`.
    pub grpc_name: &'static str,
    /// The service's database, pinged for health.
    pub db: Database,
    /// The gate its routes were wrapped in.
    pub gate: Gate,
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
        Self {
            grace,
            failing_since: None,
        }
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
                            gate.ready.store(true, Ordering::Release);
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
                    let status = if ok {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    tracing::info!(?status, "health");
                    set_status(status).await;
                }
                let pause = if answered {
                    Duration::from_secs(5)
                } else {
                    Duration::from_secs(1)
                };
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
        .layer(access_log())
        .layer(tower::util::MapRequestLayer::new(
            mark_request as fn(_) -> _,
        ))
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
    if tokio::time::timeout(BACKGROUND_GRACE, client.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("the MongoDB client did not close in time");
    }
    result.map_err(Into::into)
}

/// The RPCs that establish who the caller is. A token sent with them is ignored, so that
/// a client still attaching its expired token can log in again.
const AUTHENTICATING: &[&str] = &[
    "/social.user.v1.UserService/Login",
    "/social.user.v1.UserService/Register",
];

/// Before the gate: a token sent to Login or Register is dropped, and requests to an
/// internal RPC are marked as such (a mark a client sends is removed first).
fn mark_request(mut request: http::Request<Body>) -> http::Request<Body> {
    let path = request.uri().path();
    let (authenticating, internal) = (AUTHENTICATING.contains(&path), INTERNAL.contains(&path));
    let headers = request.headers_mut();
    headers.remove(INTERNAL_MARK);
    if authenticating {
        headers.remove(http::header::AUTHORIZATION);
    }
    if internal {
        headers.insert(INTERNAL_MARK, http::HeaderValue::from_static("1"));
    }
    request
}

fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// How long background tasks (relay, consumers) may take to stop after the RPCs.
const BACKGROUND_GRACE: Duration = Duration::from_secs(5);

type Body = tonic::body::Body;
/// The span name of health and reflection requests.
const PROBE: &str = "grpc.probe";
type AccessLog = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
    fn(&http::Request<Body>) -> tracing::Span,
    (),
    fn(&http::Response<Body>, Duration, &tracing::Span),
    (),
    (),
    fn(tower_http::classify::GrpcFailureClass, Duration, &tracing::Span),
>;

/// A span per request (joined to the caller's trace), a line per answer with its
/// latency, and one per failure at a level that says whose problem it is.
fn access_log() -> AccessLog {
    fn answered(_: &http::Response<Body>, latency: Duration, span: &tracing::Span) {
        let latency_ms = latency.as_secs_f64() * 1000.0;
        // Probes get a debug span, usually disabled: only real requests log at info.
        if !span.is_disabled() && span.metadata().is_some_and(|m| m.name() != PROBE) {
            tracing::info!(latency_ms, "answered");
        } else {
            tracing::debug!(latency_ms, "answered");
        }
    }
    fn failed(class: tower_http::classify::GrpcFailureClass, latency: Duration, _: &tracing::Span) {
        use tower_http::classify::{GrpcCode, GrpcFailureClass};
        let latency_ms = latency.as_secs_f64() * 1000.0;
        match class {
            GrpcFailureClass::Status(status) => match status.code() {
                Some(
                    GrpcCode::Internal
                    | GrpcCode::Unknown
                    | GrpcCode::DataLoss
                    | GrpcCode::Unimplemented,
                ) => {
                    tracing::error!(code = status.code_raw(), latency_ms, "failed")
                }
                Some(
                    GrpcCode::Unavailable
                    | GrpcCode::DeadlineExceeded
                    | GrpcCode::ResourceExhausted,
                ) => {
                    tracing::warn!(code = status.code_raw(), latency_ms, "failed")
                }
                _ => tracing::info!(code = status.code_raw(), latency_ms, "refused"),
            },
            GrpcFailureClass::Error(error) => tracing::warn!(%error, latency_ms, "failed"),
            other => tracing::warn!(%other, latency_ms, "failed"),
        }
    }
    tower_http::trace::TraceLayer::new_for_grpc()
        .make_span_with(request_span as fn(&http::Request<tonic::body::Body>) -> tracing::Span)
        .on_request(())
        .on_response(answered as fn(&http::Response<tonic::body::Body>, Duration, &tracing::Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(failed as fn(tower_http::classify::GrpcFailureClass, Duration, &tracing::Span))
}

fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let method = request.uri().path().trim_start_matches('/');
    // Health probes and reflection are logged at debug: a probe every few seconds
    // would drown the access log.
    let span = if method.starts_with("grpc.") {
        tracing::debug_span!(PROBE, otel.name = %method, otel.kind = "server", rpc.system = "grpc")
    } else {
        tracing::info_span!("grpc.request", otel.name = %method, otel.kind = "server", rpc.system = "grpc")
    };
    telemetry::extract(&span, &HeaderExtractor(request.headers()));
    span
}

/// A token cancelled on SIGTERM or SIGINT (Ctrl-C).
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

/// The body of a service's `main()`: telemetry, bind, run until a signal, flush. `run`
/// gets the bound listener and the shutdown token.
pub async fn main<R, F>(config: &CommonConfig, run: R) -> ExitCode
where
    R: FnOnce(TcpListener, CancellationToken) -> F,
    F: Future<Output = anyhow::Result<()>>,
{
    let telemetry = match telemetry::init(config.service, config.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot start telemetry: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(config.listen_addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %config.listen_addr, error = %e, "cannot listen");
            telemetry.shutdown();
            return ExitCode::FAILURE;
        }
    };
    let shutdown = shutdown_on_signals();
    let code = match run(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "service failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

/// Loads a configuration or exits with a message naming the bad variable.
pub fn load_config<C, E: std::fmt::Display>(
    load: impl FnOnce() -> Result<C, E>,
) -> Result<C, ExitCode> {
    load().map_err(|e| {
        eprintln!("configuration error: {e}");
        ExitCode::from(2)
    })
}

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
        self.tasks.push(AbortOnDropHandle::new(tokio::spawn(task(
            self.stop.clone(),
        ))));
    }

    /// Tells every task to stop and waits for them, at most `deadline`; tasks still
    /// running then are aborted (what they held is redelivered or retried later).
    pub async fn stop(self, deadline: Duration) {
        self.stop.cancel();
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(deadline, all).await.is_err() {
            // Dropping the handles (the timed-out join) aborts the tasks.
            tracing::warn!(
                ?deadline,
                "background tasks did not stop in time; aborting them"
            );
        }
    }
}

/// The body of a one-shot command (an operator's subcommand): telemetry, run, flush.
pub async fn main_once<F>(config: &CommonConfig, run: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let telemetry = match telemetry::init(config.service, config.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot start telemetry: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

/// An operator's subcommand of a service binary (`<binary> <name>`): runs once with the
/// service's configuration and exits.
pub struct Command<C> {
    /// What the operator types.
    pub name: &'static str,
    /// One line for the usage message.
    pub about: &'static str,
    /// What it does.
    pub run: Box<dyn FnOnce(C) -> BoxFuture<'static, anyhow::Result<()>>>,
}

impl<C> Command<C> {
    /// A command `name` that runs `run`.
    pub fn new(
        name: &'static str,
        about: &'static str,
        run: impl FnOnce(C) -> BoxFuture<'static, anyhow::Result<()>> + 'static,
    ) -> Self {
        Self {
            name,
            about,
            run: Box::new(run),
        }
    }
}

/// Runs a service binary: `<binary> [serve]` serves until SIGTERM; `<binary> <command>`
/// runs one of `commands` (recompute counters, declare the events topology, ...) and
/// exits. A bad environment variable exits with status 2 and its name.
pub async fn binary_main<C: crate::config::ServiceConfig>(
    binary: &str,
    load: impl FnOnce() -> Result<C, crate::config::ConfigError>,
    serve: impl FnOnce(C, TcpListener, CancellationToken) -> BoxFuture<'static, anyhow::Result<()>>,
    commands: Vec<Command<C>>,
) -> ExitCode {
    let asked = std::env::args().nth(1);
    let usage = || {
        let mut text = format!(
            "usage: {binary} [COMMAND]\n\n  serve                serve until SIGTERM (the default)\n"
        );
        for c in &commands {
            text.push_str(&format!("  {:<20} {}\n", c.name, c.about));
        }
        text.push_str("\nSettings come from environment variables (see the README).");
        text
    };
    match asked.as_deref() {
        Some("help" | "--help" | "-h") => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        None | Some("serve") => {}
        Some(other) if commands.iter().any(|c| c.name == other) => {}
        Some(other) => {
            eprintln!("unknown command {other:?}\n{}", usage());
            return ExitCode::from(2);
        }
    }
    let config = match load_config(load) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let common = config.common().clone();
    match asked.as_deref() {
        None | Some("serve") => main(&common, |l, s| serve(config, l, s)).await,
        Some(name) => {
            let Some(command) = commands.into_iter().find(|c| c.name == name) else {
                return ExitCode::from(2);
            };
            main_once(&common, (command.run)(config)).await
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
        assert!(
            readiness.observe(true, at(51)),
            "ready again at the first answer"
        );
    }
}
