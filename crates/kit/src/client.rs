//! The one way a service calls another: a lazily connected channel per peer, a deadline
//! on every call, the caller's trace context in the metadata, and the peer's failures
//! turned into ours (`UNAVAILABLE` when it is down, `DEADLINE_EXCEEDED` when it is slow),
//! never a hang and never `INTERNAL`.
//!
//! A peer URL `http://host:port` is one HTTP/2 connection (through a Kubernetes
//! ClusterIP Service, to one pod). `dns:///host:port` (gRPC's name syntax) balances
//! every call over all the addresses the name resolves to, re-resolved every
//! `PEER_RESOLVE_SECS` (default 5) as pods come and go: point it at a headless Service.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tonic::{
    Code, Request, Response, Status,
    transport::{Channel, Endpoint, channel::Change},
};

use crate::{
    config::ConfigError,
    error::Error,
    telemetry::{self, MetadataInjector},
};

/// Calls a peer as this service, the one way a service does:
/// `social_kit::call!(peer, PostServiceClient.get_post(message))` builds the generated
/// client on `peer`'s channel, sends `message` with the peer's deadline, credential and
/// trace context ([`Peer::request`]) and awaits the answer under the deadline
/// ([`Peer::call`]). The result is the answer's message or the peer's status: the caller
/// handles the codes it expects and turns the rest into its error with [`Peer::error`].
#[macro_export]
macro_rules! call {
    ($peer:expr, $client:ident . $rpc:ident ($message:expr)) => {{
        let peer: &$crate::client::Peer = &$peer;
        peer.call($client::new(peer.channel()).$rpc(peer.request($message))).await
    }};
}

/// A peer service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Peer {
    name: &'static str,
    channel: Channel,
    /// How many addresses a balanced (`dns:///`) peer knows; `None` for one address.
    known: Option<Arc<AtomicUsize>>,
    timeout: Duration,
    /// Presented with every call: the service credential (`x-service-token`, for the
    /// peer's internal RPCs) or the gateway's (`x-gateway-token`, vouching for the client
    /// address it reports).
    credential: Option<(&'static str, tonic::metadata::MetadataValue<tonic::metadata::Ascii>)>,
}

impl Peer {
    /// A peer at `url` (e.g. `http://user:50051`); connects on first use, reconnects on
    /// its own after failures.
    pub fn new(
        name: &'static str,
        url_var: &str,
        url: &str,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let bad = |reason: String| ConfigError { var: url_var.into(), value: url.into(), reason };
        let (channel, known) = match url.strip_prefix("dns:///") {
            Some(target) => {
                let (host, port) = target
                    .rsplit_once(':')
                    .and_then(|(h, p)| {
                        let h = h.trim_start_matches('[').trim_end_matches(']');
                        Some((h.to_owned(), p.parse::<u16>().ok()?))
                    })
                    .filter(|(h, _)| !h.is_empty())
                    .ok_or_else(|| bad("must be dns:///host:port".into()))?;
                let every =
                    crate::config::seconds_or("PEER_RESOLVE_SECS", 5)?.max(Duration::from_secs(1));
                let resolve: Resolver = Arc::new(move || {
                    let target = (host.clone(), port);
                    Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
                });
                let serving = crate::peers::grpc_of(name).unwrap_or_default();
                let (channel, known) = balanced(resolve, serving, every, timeout);
                (channel, Some(known))
            }
            None => (
                endpoint(
                    Endpoint::from_shared(url.to_owned()).map_err(|e| bad(e.to_string()))?,
                    timeout,
                )
                .connect_lazy(),
                None,
            ),
        };
        Ok(Self { name, channel, known, timeout, credential: None })
    }

    /// A peer balanced over the addresses `resolve` gives, asked again every `every`
    /// (what `dns:///` URLs use, with DNS).
    pub fn balanced(
        name: &'static str,
        resolve: Resolver,
        every: Duration,
        timeout: Duration,
    ) -> Self {
        let serving = crate::peers::grpc_of(name).unwrap_or_default();
        let (channel, known) = balanced(resolve, serving, every, timeout);
        Self { name, channel, known: Some(known), timeout, credential: None }
    }

    /// The same peer, presenting `token` to its internal RPCs.
    pub fn with_credential(self, token: &str) -> Result<Self, ConfigError> {
        self.presenting(crate::serve::SERVICE_TOKEN_HEADER, "SERVICE_TOKEN", token)
    }

    /// The same peer, presenting the gateway's `token` (and no service credential).
    pub fn as_gateway(self, token: &str) -> Result<Self, ConfigError> {
        self.presenting(crate::serve::GATEWAY_TOKEN_HEADER, "GATEWAY_TOKEN", token)
    }

    fn presenting(self, header: &'static str, var: &str, token: &str) -> Result<Self, ConfigError> {
        let value = token.parse().map_err(|_| ConfigError {
            var: var.into(),
            value: "<redacted>".into(),
            reason: "must be printable ASCII".into(),
        })?;
        Ok(Self { credential: Some((header, value)), ..self })
    }

    /// The same peer without the service credential: for a caller that is not a service
    /// (the gateway), so that it cannot reach internal RPCs.
    pub fn without_credential(self) -> Self {
        Self { credential: None, ..self }
    }

    /// The peer from environment variable `url_var`, or `default_url`; `PEER_TIMEOUT_MS`
    /// (default 2000) bounds every call.
    pub fn from_env(
        name: &'static str,
        url_var: &str,
        default_url: &str,
    ) -> Result<Self, ConfigError> {
        let url = crate::config::optional(url_var).unwrap_or_else(|| default_url.to_owned());
        let timeout = crate::config::millis_or("PEER_TIMEOUT_MS", 2000)?;
        let peer = Self::new(name, url_var, &url, timeout)?;
        // Without a credential, the peer's internal RPCs answer PERMISSION_DENIED. The
        // development one only where no real key is set (as the gate decides it).
        let development = crate::config::parse_or("DEVELOPMENT_KEYS", false)?;
        let real_keys = crate::config::secret("AUTH_PUBLIC_KEY")?.is_some();
        match crate::config::secret("SERVICE_TOKEN")? {
            Some(token) => peer.with_credential(&token),
            None if development && !real_keys => {
                peer.with_credential(crate::auth::DEV_SERVICE_TOKEN)
            }
            None => Ok(peer),
        }
    }

    /// The same peer with another deadline (e.g. longer, for an operator's command).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self { timeout, ..self.clone() }
    }

    /// The channel, for building a generated client.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// `message` with the deadline and the current trace context.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        if let Some((header, credential)) = &self.credential {
            request.metadata_mut().insert(*header, credential.clone());
        }
        telemetry::inject(&tracing::Span::current(), &mut MetadataInjector(request.metadata_mut()));
        request
    }

    /// Awaits a call under the deadline. The error is the peer's status (or ours for a
    /// deadline) so that the caller can handle the codes it expects (`NOT_FOUND`, ...)
    /// and pass the rest to [`Peer::error`].
    pub async fn call<R>(
        &self,
        call: impl Future<Output = Result<Response<R>, Status>>,
    ) -> Result<R, Status> {
        // A balanced peer with no address that answers: nothing would take the call
        // until its deadline.
        if self.known.as_ref().is_some_and(|k| k.load(Ordering::Acquire) == 0) {
            return Err(Status::unavailable(format!("{} has no address that answers", self.name)));
        }
        let started = std::time::Instant::now();
        let answer = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status),
            Err(_) => {
                Err(Status::deadline_exceeded(format!("{} did not answer in time", self.name)))
            }
        };
        let code = answer.as_ref().map_or_else(Status::code, |_| Code::Ok);
        crate::metrics::client_call(self.name, code, started.elapsed().as_secs_f64());
        answer
    }

    /// An unexpected answer from the peer as our error.
    pub fn error(&self, status: Status) -> Error {
        let peer = self.name;
        match status.code() {
            Code::DeadlineExceeded => {
                Error::DeadlineExceeded(format!("{peer} did not answer in time"))
            }
            // The channel's own timeout surfaces as CANCELLED.
            Code::Cancelled if status.message().contains("Timeout") => {
                Error::DeadlineExceeded(format!("{peer} did not answer in time"))
            }
            Code::Unavailable
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
            | Code::Aborted => {
                tracing::warn!(peer, status = %status, "peer unavailable");
                Error::Unavailable(format!("{peer} is unavailable; retry later"))
            }
            _ => Error::internal(anyhow::anyhow!(
                "{peer} answered {:?}: {}",
                status.code(),
                status.message()
            )),
        }
    }
}

/// Finds a peer's addresses (DNS, or anything else in tests).
pub type Resolver = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = std::io::Result<HashSet<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// What one stream may have waiting unread on a connection to a peer.
const STREAM_WINDOW: u32 = 256 * 1024;
/// What all the streams of one connection may have waiting unread together.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Connection settings of every peer endpoint. No channel-wide timeout: every call
/// carries its own deadline ([`Peer::call`]), which [`Peer::with_timeout`] may lengthen.
/// Its flow-control windows: what a stream has received and not yet been read counts
/// against its connection's window too, so that streams whose reader stops (an export
/// whose client reads a byte now and then) would, at HTTP/2's usual 2 MiB a stream and
/// 5 MiB a connection, take the whole connection after three, and every other call on it
/// would wait. At 256 KiB a stream and 16 MiB a connection, it takes 64; and an export
/// lets go of a reader that keeps it waiting (`export::within`).
fn endpoint(endpoint: Endpoint, timeout: Duration) -> Endpoint {
    endpoint
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
}

/// The endpoint of the pod at `addr`, with [`endpoint`]'s settings.
fn endpoint_at(addr: SocketAddr, timeout: Duration) -> Option<Endpoint> {
    let e = Endpoint::from_shared(format!("http://{addr}")).ok()?;
    Some(endpoint(e, timeout))
}

/// What a probe of an address said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Its health says `SERVING` for the service.
    Serving,
    /// It said otherwise: `NOT_SERVING` (starting, stopping), an unknown service (an IP
    /// now held by a pod of another service), or it refused the connection.
    NotServing,
    /// No answer in time: a busy pod, or a busy caller. Not a reason to drop it at once.
    Silent,
}

/// Rounds in a row a known address may stay silent before it is dropped.
const SILENT_ROUNDS: u32 = 3;

/// Asks `channel`'s health for `service` (`""`: the server as a whole) within `within`.
async fn probe(channel: Channel, service: &'static str, within: Duration) -> Probe {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let request = HealthCheckRequest { service: service.to_owned() };
    match tokio::time::timeout(within, HealthClient::new(channel).check(request)).await {
        Err(_) => Probe::Silent,
        Ok(Ok(answer)) if answer.get_ref().status == ServingStatus::Serving as i32 => {
            Probe::Serving
        }
        Ok(_) => Probe::NotServing,
    }
}

/// The addresses a peer is balanced over, and what it knows of each.
struct Addresses {
    service: &'static str,
    timeout: Duration,
    /// In use.
    known: HashSet<SocketAddr>,
    /// A lazily connected channel per address for its probes (kept between rounds).
    probes: HashMap<SocketAddr, Channel>,
    /// Rounds in a row each known address was silent.
    silent: HashMap<SocketAddr, u32>,
}

impl Addresses {
    /// The addresses to use after a resolution that found `resolved` (empty when it
    /// failed): those resolved that serve, and those known that are silent for fewer
    /// than [`SILENT_ROUNDS`] in a row; when nothing resolved serves (DNS failed, every
    /// pod unready), the known ones that still serve or are not yet long silent.
    async fn next(&mut self, resolved: HashSet<SocketAddr>) -> HashSet<SocketAddr> {
        let within = self.timeout.min(Duration::from_secs(1));
        let mut candidates = Vec::new();
        let mut asked = Vec::new();
        for addr in resolved.union(&self.known) {
            let channel = match self.probes.get(addr) {
                Some(channel) => channel.clone(),
                None => {
                    let Some(e) = endpoint_at(*addr, within) else {
                        continue;
                    };
                    let channel = e.connect_lazy();
                    self.probes.insert(*addr, channel.clone());
                    channel
                }
            };
            candidates.push(*addr);
            asked.push(probe(channel, self.service, within));
        }
        let said: HashMap<SocketAddr, Probe> =
            candidates.iter().copied().zip(futures::future::join_all(asked).await).collect();
        self.choose(&resolved, &said)
    }

    /// What [`Self::next`] decides, given what each address `said`.
    fn choose(
        &mut self,
        resolved: &HashSet<SocketAddr>,
        said: &HashMap<SocketAddr, Probe>,
    ) -> HashSet<SocketAddr> {
        let serving_resolved = resolved.iter().any(|a| said.get(a) == Some(&Probe::Serving));
        let pool = if serving_resolved { resolved } else { &self.known };
        let mut next = HashSet::new();
        for addr in pool {
            match said.get(addr) {
                Some(Probe::Serving) => {
                    self.silent.remove(addr);
                    next.insert(*addr);
                }
                Some(Probe::Silent) if self.known.contains(addr) => {
                    let rounds = self.silent.entry(*addr).or_insert(0);
                    *rounds += 1;
                    if *rounds < SILENT_ROUNDS {
                        next.insert(*addr);
                    }
                }
                _ => {}
            }
        }
        self.silent.retain(|a, _| next.contains(a));
        self.probes.retain(|a, _| next.contains(a) || resolved.contains(a));
        next
    }
}

/// A channel that spreads calls over the addresses `resolve` finds (power of two
/// choices, by load) and that say they serve `service`, kept up to date every `every`
/// until the channel is dropped. A resolution that fails or finds nothing that serves
/// keeps those known before that still serve (a DNS hiccup does not empty the set, and
/// an old address is asked again every time, never trusted for ever); an address that
/// does not answer its probe in time stays a few rounds (a slow round, under load, does
/// not empty the set either).
fn balanced(
    resolve: Resolver,
    service: &'static str,
    every: Duration,
    timeout: Duration,
) -> (Channel, Arc<AtomicUsize>) {
    let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
    let count = Arc::new(AtomicUsize::new(0));
    let known_count = count.clone();
    tokio::spawn(async move {
        let mut addresses = Addresses {
            service,
            timeout,
            known: HashSet::new(),
            probes: HashMap::new(),
            silent: HashMap::new(),
        };
        loop {
            let resolved = resolve().await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "resolving a peer failed");
                HashSet::new()
            });
            let found = addresses.next(resolved).await;
            for added in found.difference(&addresses.known) {
                let Some(e) = endpoint_at(*added, timeout) else {
                    continue;
                };
                let insert = Change::Insert(*added, e);
                if changes.send(insert).await.is_err() {
                    return;
                }
            }
            for gone in addresses.known.difference(&found) {
                if changes.send(Change::Remove(*gone)).await.is_err() {
                    return;
                }
            }
            addresses.known = found;
            known_count.store(addresses.known.len(), Ordering::Release);
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = changes.closed() => return,
            }
        }
    });
    (channel, count)
}

#[cfg(test)]
mod balancing {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    use super::*;

    /// A health server on a port of its own that counts the calls it serves.
    async fn replica() -> (SocketAddr, Arc<AtomicUsize>) {
        let (addr, served, _) = replica_of(None).await;
        (addr, served)
    }

    /// A health server that counts the calls it serves and, with `service`, says that
    /// one is SERVING (its reporter changes that).
    async fn replica_of(
        service: Option<&str>,
    ) -> (SocketAddr, Arc<AtomicUsize>, tonic_health::server::HealthReporter) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("its address");
        let served = Arc::new(AtomicUsize::new(0));
        let (reporter, health) = tonic_health::server::health_reporter();
        if let Some(service) = service {
            reporter.set_service_status(service, tonic_health::ServingStatus::Serving).await;
        }
        let counter = served.clone();
        let counted =
            tonic::service::interceptor::InterceptedService::new(health, move |r: Request<()>| {
                // The balancer's own probes are not calls.
                if r.metadata().contains_key(CALL) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                Ok(r)
            });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(counted)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (addr, served, reporter)
    }

    /// The metadata that marks a test's calls (the probes lack it).
    const CALL: &str = "x-test-call";

    async fn calls(peer: &Peer, n: usize) {
        let mut client = HealthClient::new(peer.channel());
        for _ in 0..n {
            let mut request = peer.request(HealthCheckRequest::default());
            request.metadata_mut().insert(CALL, tonic::metadata::MetadataValue::from_static("1"));
            client.check(request).await.expect("served");
        }
    }

    #[tokio::test]
    async fn calls_spread_over_every_replica_the_name_has_and_follow_it_as_it_changes() {
        let (a, served_a) = replica().await;
        let (b, served_b) = replica().await;
        // A pod DNS still lists that stopped listening: it gets no calls.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("its address")
        };
        let replicas = Arc::new(Mutex::new(HashSet::from([a, b, closed])));
        let current = replicas.clone();
        let resolve: Resolver = Arc::new(move || {
            let found = current.lock().map(|r| r.clone()).unwrap_or_default();
            Box::pin(async move { Ok(found) })
        });
        let every = Duration::from_millis(100);
        let peer = Peer::balanced("health", resolve, every, Duration::from_secs(2));
        calls(&peer, 60).await;
        let (on_a, on_b) = (served_a.load(Ordering::SeqCst), served_b.load(Ordering::SeqCst));
        assert_eq!(on_a + on_b, 60);
        assert!(on_a > 0 && on_b > 0, "one connection, one replica: {on_a} / {on_b}");

        // Replica a goes away (its pod is replaced): the next resolution drops it.
        replicas.lock().expect("not poisoned").remove(&a);
        tokio::time::sleep(every * 3).await;
        let before = served_a.load(Ordering::SeqCst);
        calls(&peer, 20).await;
        assert_eq!(served_a.load(Ordering::SeqCst), before, "nothing to a removed replica");
        assert_eq!(served_b.load(Ordering::SeqCst), on_b + 20);

        // Resolutions that fail after a first one keep what it found.
        let asked = Arc::new(AtomicUsize::new(0));
        let times = asked.clone();
        let flaky: Resolver = Arc::new(move || {
            let first = times.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if first { Ok(HashSet::from([b])) } else { Err(std::io::Error::other("no DNS")) }
            })
        });
        let kept = Peer::balanced("health", flaky, every, Duration::from_secs(2));
        tokio::time::sleep(every * 3).await;
        assert!(asked.load(Ordering::SeqCst) > 1, "asked again");
        let before = served_b.load(Ordering::SeqCst);
        calls(&kept, 5).await;
        assert_eq!(served_b.load(Ordering::SeqCst), before + 5);
    }

    /// An address now held by a pod of another service (it answers, but does not know
    /// the peer's service) gets no calls; and when DNS fails, a known address that stops
    /// serving is dropped, not trusted for ever.
    #[tokio::test]
    async fn only_addresses_that_serve_the_peers_service_get_calls_even_when_dns_fails() {
        let post = crate::peers::POST;
        let (a, served_a, reporter_a) = replica_of(Some(post.grpc)).await;
        let (other, served_other, _) = replica_of(Some("social.user.v1.UserService")).await;
        let asked = Arc::new(AtomicUsize::new(0));
        let times = asked.clone();
        let resolve: Resolver = Arc::new(move || {
            let first = times.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if first {
                    Ok(HashSet::from([a, other]))
                } else {
                    Err(std::io::Error::other("no DNS"))
                }
            })
        });
        let every = Duration::from_millis(100);
        let peer = Peer::balanced(post.name, resolve, every, Duration::from_secs(2));
        calls(&peer, 20).await;
        assert_eq!(served_a.load(Ordering::SeqCst), 20);
        assert_eq!(served_other.load(Ordering::SeqCst), 0, "the other service's pod");

        // DNS keeps failing, and a stops serving (it is stopping): it is dropped.
        reporter_a.set_service_status(post.grpc, tonic_health::ServingStatus::NotServing).await;
        tokio::time::sleep(every * 5).await;
        assert!(asked.load(Ordering::SeqCst) > 2, "asked again");
        let before = served_a.load(Ordering::SeqCst);
        let mut client = HealthClient::new(peer.channel());
        let err = peer
            .call(client.check(peer.request(HealthCheckRequest::default())))
            .await
            .expect_err("nobody serves");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert_eq!(served_a.load(Ordering::SeqCst), before, "a stopping pod got a call");
    }

    /// A round whose probes time out (a busy pod, a busy caller) does not empty the set:
    /// a known address stays until it has been silent [`SILENT_ROUNDS`] rounds in a row;
    /// one that says it does not serve goes at once; a new silent one is not taken.
    #[test]
    fn silent_addresses_stay_a_few_rounds_and_those_that_say_no_go_at_once() {
        let addr = |port: u16| SocketAddr::from(([10, 0, 0, 1], port));
        let (a, b, c) = (addr(1), addr(2), addr(3));
        let mut addresses = Addresses {
            service: "social.post.v1.PostService",
            timeout: Duration::from_secs(2),
            known: HashSet::from([a, b]),
            probes: HashMap::new(),
            silent: HashMap::new(),
        };
        let said = |probes: &[(SocketAddr, Probe)]| probes.iter().copied().collect();
        let resolved = HashSet::from([a, b, c]);
        // Everything silent (the caller stalled): both known stay, the new one waits.
        for round in 1..SILENT_ROUNDS {
            let silent = said(&[(a, Probe::Silent), (b, Probe::Silent), (c, Probe::Silent)]);
            let next = addresses.choose(&resolved, &silent);
            assert_eq!(next, HashSet::from([a, b]), "round {round}");
            addresses.known = next;
        }
        // a answers again; b stays silent one round too many; c says it serves.
        let next = addresses.choose(
            &resolved,
            &said(&[(a, Probe::Serving), (b, Probe::Silent), (c, Probe::Serving)]),
        );
        assert_eq!(next, HashSet::from([a, c]));
        addresses.known = next;
        // c says no (stopping, or another service's pod now): gone at once.
        let next = addresses.choose(
            &resolved,
            &said(&[(a, Probe::Serving), (b, Probe::Silent), (c, Probe::NotServing)]),
        );
        assert_eq!(next, HashSet::from([a]));
    }

    #[tokio::test]
    async fn a_name_with_no_address_that_answers_is_unavailable_at_once() {
        let nothing: Resolver = Arc::new(|| Box::pin(async { Ok(HashSet::new()) }));
        let peer =
            Peer::balanced("nobody", nothing, Duration::from_secs(1), Duration::from_secs(30));
        let mut client = HealthClient::new(peer.channel());
        let err = peer
            .call(client.check(peer.request(HealthCheckRequest::default())))
            .await
            .expect_err("nobody answers");
        assert_eq!(err.code(), Code::Unavailable, "not a 30 s wait: {err:?}");
    }

    #[test]
    fn dns_urls_need_a_host_and_a_port() {
        for url in ["dns:///user", "dns:///:50051", "dns:///user:port"] {
            let err = tokio::runtime::Runtime::new()
                .expect("a runtime")
                .block_on(async {
                    Peer::new("user", "USER_SERVICE_URL", url, Duration::from_secs(1))
                })
                .expect_err(url);
            assert_eq!(err.var, "USER_SERVICE_URL");
        }
    }
}
