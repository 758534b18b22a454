//! For tests only: start a service in-process on `127.0.0.1:0` against a fresh database,
//! wait until it reports SERVING, and talk to it with a real tonic client. Also token
//! minting, helpers to read a status's field violations, and the query-shape checker
//! ([`queries`]) that fails a test whose queries no index serves.
//!
//! Stores come from the environment `scripts/test` prepares: `MONGODB_URI` (default
//! `mongodb://127.0.0.1:27017`) and RabbitMQ on `AMQP_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod broker;
#[cfg(feature = "metrics")]
mod metrics;
mod proxy;
pub mod queries;
mod stack;

#[cfg(feature = "metrics")]
pub use metrics::Meters;
pub use proxy::TcpProxy;
pub use social_post::TimelineSettings;
pub use stack::{Stack, StackOptions, start_graph, start_notification, start_user};

use std::{future::Future, net::SocketAddr, time::Duration};

use bson::oid::ObjectId;
use social_kit::auth::TokenIssuer;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

/// The MongoDB the tests use.
pub fn mongodb_uri() -> String {
    social_kit::config::optional("MONGODB_URI")
        .unwrap_or_else(|| social_kit::config::DEFAULT_MONGODB_URI.into())
}

/// A peer at `url` as the services see each other in tests: `timeout` on every call and
/// the development service credential.
pub fn peer(name: &'static str, url: &str, timeout: Duration) -> social_kit::client::Peer {
    social_kit::client::Peer::new(name, "PEER_URL", url, timeout)
        .and_then(|p| p.with_credential(social_kit::auth::DEV_SERVICE_TOKEN))
        .expect("peer URL")
}

/// A name no other test uses: `prefix_<random hex>`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", ObjectId::new().to_hex())
}

/// Drops a test database when dropped, so that runs against a real MongoDB leave
/// nothing behind. (The drop runs on a thread of its own: `Drop` cannot await.)
pub struct DropDatabase(pub String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        queries::assert_served();
        let name = std::mem::take(&mut self.0);
        let uri = mongodb_uri();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let client = mongodb::Client::with_uri_str(&uri).await?;
                client.database(&name).drop().await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database");
        }
    }
}

/// A service running in this process. Dropping it shuts it down.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Cancelling it shuts the service down.
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// The connection helpers share (see [`Running::shared_channel`]).
    shared: tokio::sync::OnceCell<Channel>,
}

impl Running {
    /// A client channel to it.
    pub async fn channel(&self) -> Channel {
        channel(self.addr).await
    }

    /// A client channel to it on the one connection the [`Stack`]'s helpers share (a
    /// test that needs a connection of its own asks [`Running::channel`]).
    pub async fn shared_channel(&self) -> Channel {
        self.shared.get_or_init(|| channel(self.addr)).await.clone()
    }

    /// Kills it as a crash would: the service's task is aborted, and with it everything
    /// the service owns (its server, outbox relay, consumers and their broker
    /// connections); nothing is flushed or finished.
    pub fn kill(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }

    /// Shuts it down and waits until it has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(h) => h.await?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        queries::assert_served();
    }
}

/// Starts `run(listener, shutdown)` on an ephemeral port and waits until its health
/// check says SERVING.
pub async fn start<R, F>(run: R) -> Running
where
    R: FnOnce(TcpListener, CancellationToken) -> F,
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    start_on(bind().await, run).await
}

/// A listener on an ephemeral port, for [`start_on`] (its address known beforehand).
pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// [`start`] on `listener`.
pub async fn start_on<R, F>(listener: TcpListener, run: R) -> Running
where
    R: FnOnce(TcpListener, CancellationToken) -> F,
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    social_kit::telemetry::init_for_tests();
    queries::install();
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run(listener, shutdown.clone()));
    let running = Running { addr, shutdown, handle: Some(handle), shared: Default::default() };
    wait_serving(addr, "").await;
    running
}

/// Starts an HTTP server `run(listener, shutdown)` on an ephemeral port; it serves once
/// bound.
pub async fn start_http<R, F>(run: R) -> Running
where
    R: FnOnce(TcpListener, CancellationToken) -> F,
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    social_kit::telemetry::init_for_tests();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run(listener, shutdown.clone()));
    Running { addr, shutdown, handle: Some(handle), shared: Default::default() }
}

/// Waits (up to 30 s) until the server at `addr` reports SERVING for `service`.
pub async fn wait_serving(addr: SocketAddr, service: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await
        {
            let status = HealthClient::new(ch)
                .check(HealthCheckRequest { service: service.into() })
                .await
                .map(|r| r.into_inner().status);
            if status.is_ok_and(|s| s == ServingStatus::Serving as i32) {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{addr} never became SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A connected client channel.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect")
}

/// An access token for `user`, signed with the development key the services trust in
/// tests.
pub fn token_for(user: ObjectId) -> String {
    TokenIssuer::development(Duration::from_secs(900)).issue(user).expect("issue").0
}

/// A token for `user` that expires in `ttl`.
pub fn token_expiring_in(user: ObjectId, ttl: Duration) -> String {
    TokenIssuer::development(ttl).issue(user).expect("issue").0
}

/// A token that expired an hour ago.
pub fn expired_token_for(user: ObjectId) -> String {
    let an_hour_ago =
        bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 3_600_000);
    TokenIssuer::development(Duration::from_secs(60))
        .issue_at(user, None, an_hour_ago)
        .expect("issue")
        .0
}

/// `message` as another service sends it: with the development service credential that
/// internal RPCs require.
pub fn as_service<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        social_kit::serve::SERVICE_TOKEN_HEADER,
        social_kit::auth::DEV_SERVICE_TOKEN.parse().expect("ascii"),
    );
    request
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

/// The message of a call that must succeed: `.await.answer()`, which panics, at the
/// caller's line, with the status if it failed.
pub trait Answer<T> {
    fn answer(self) -> T;
}

impl<T> Answer<T> for Result<tonic::Response<T>, Status> {
    #[track_caller]
    fn answer(self) -> T {
        match self {
            Ok(response) => response.into_inner(),
            Err(status) => panic!("expected an answer, got {status:?}"),
        }
    }
}

/// The status of a call that must fail with `code`: `.await.refused(Code::NotFound)`,
/// which panics, at the caller's line, if it succeeded or failed with another code.
pub trait Refused {
    fn refused(self, code: tonic::Code) -> Status;
}

impl<T: std::fmt::Debug> Refused for Result<T, Status> {
    #[track_caller]
    fn refused(self, code: tonic::Code) -> Status {
        match self {
            Ok(answer) => panic!("expected {code:?}, got an answer: {answer:?}"),
            Err(status) => {
                assert_eq!(status.code(), code, "{status:?}");
                status
            }
        }
    }
}

/// The password of every account [`Stack::register`] makes.
pub const PASSWORD: &str = "correct horse battery";

/// The fields named by a status's `BadRequest` details, in order.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|f| f.field.clone()).collect())
        .unwrap_or_default()
}

/// A connection to the tests' Redis (`REDIS_URL`, else the local one), to look at or
/// change what the services keep there.
pub async fn redis() -> redis::aio::MultiplexedConnection {
    let url = social_kit::cache::Settings::for_tests().url;
    let client = redis::Client::open(url).expect("a Redis URL");
    client.get_multiplexed_async_connection().await.expect("the tests' Redis answers")
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The services a server advertises through reflection `v1alpha`, as grpcurl 1.8 asks.
pub async fn reflected_services(addr: SocketAddr) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel(addr).await)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    match responses.message().await.expect("answer").and_then(|r| r.message_response) {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}
