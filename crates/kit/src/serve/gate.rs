//! The gate in front of a service's RPCs: who the caller is (access token, client
//! address), which RPCs only the services may call, and whether start-up is done.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tonic::{
    Request, Status,
    codegen::http,
    server::NamedService,
    service::{
        Interceptor, Routes,
        interceptor::{InterceptedService, ResponseBody},
    },
};

use crate::{auth::TokenVerifier, config::CommonConfig};

/// Verifies the access token of every request that carries one (a bad token is
/// `UNAUTHENTICATED` even on an open RPC; Login and Register never see one), lets only
/// the services themselves call internal RPCs (those the service names in its
/// [`Rpcs`]: `PERMISSION_DENIED` without the service credential), and answers `UNAVAILABLE` until start-up (indexes)
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

/// The metadata a service presents to another's internal RPC.
pub const SERVICE_TOKEN_HEADER: &str = "x-service-token";
/// The metadata the gateway presents with the client address it reports.
pub const GATEWAY_TOKEN_HEADER: &str = "x-gateway-token";
/// The client's address, as the gateway reports it (believed with its credential only).
pub const CLIENT_ADDRESS_HEADER: &str = "x-client-address";
/// Set by the server itself on requests to an internal RPC (a client's is removed).
pub(super) const INTERNAL_MARK: &str = "x-social-internal-rpc";

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
        let presented =
            metadata.get(GATEWAY_TOKEN_HEADER).map(|v| digest(v.to_str().unwrap_or_default()));
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
        && LAST_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
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
            return Err(Status::unavailable("the service is starting; retry shortly"));
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
            request.extensions_mut().insert(crate::auth::ClientAddress(address));
        }
        if let Some(value) = request.metadata().get("authorization") {
            let value = value
                .to_str()
                .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
            let caller = self.verifier.verify_header(value).map_err(Status::from)?;
            if caller.session.is_some_and(|s| self.revocations.is_revoked(s)) {
                return Err(Status::unauthenticated(
                    "this access token's session has ended; log in again",
                ));
            }
            request.extensions_mut().insert(caller);
        }
        Ok(request)
    }
}

impl Gate {
    /// `service` behind this gate.
    pub fn guard<S>(&self, service: S) -> InterceptedService<S, Gate> {
        InterceptedService::new(service, self.clone())
    }

    /// Opens the gate: start-up is done.
    pub(super) fn open(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

/// A generated server that can be served behind a [`Gate`] (every service's is).
pub trait Routable: social_proto::Bounded + NamedService {
    /// Its routes behind `gate`, refusing requests larger than [`super::MAX_REQUEST_BYTES`].
    fn route(self, gate: &Gate) -> Routes;

    /// Its full gRPC name (`social.post.v1.PostService`).
    fn grpc_name(&self) -> &'static str {
        Self::NAME
    }
}

impl<S> Routable for S
where
    S: social_proto::Bounded + NamedService,
    InterceptedService<S, Gate>: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<ResponseBody<tonic::body::Body>>,
            Error = std::convert::Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    <InterceptedService<S, Gate> as tower::Service<http::Request<tonic::body::Body>>>::Future:
        Send + 'static,
{
    fn route(self, gate: &Gate) -> Routes {
        Routes::new(gate.guard(self.bounded(super::MAX_REQUEST_BYTES)))
    }
}

/// The RPCs of one service that the gate treats apart, by method name (`Login`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rpcs {
    /// Only the services may call these (they serve other services: mentions, the
    /// feed, recounts, exports; some cost hundreds of counts per request).
    pub internal: &'static [&'static str],
    /// These establish who the caller is: a token sent with them is ignored, so that a
    /// client still attaching its expired token can log in again.
    pub authenticating: &'static [&'static str],
}

/// Before the gate: marks requests to the service's internal RPCs as such (a mark a
/// client sends is removed first) and drops a token sent to an authenticating one.
#[derive(Clone)]
pub(super) struct Marker {
    internal: Arc<[String]>,
    authenticating: Arc<[String]>,
}

impl Marker {
    /// For the RPCs `rpcs` of the service named `grpc_name`.
    pub(super) fn new(grpc_name: &str, rpcs: Rpcs) -> Self {
        let paths = |methods: &[&str]| -> Arc<[String]> {
            methods.iter().map(|m| format!("/{grpc_name}/{m}")).collect()
        };
        Self { internal: paths(rpcs.internal), authenticating: paths(rpcs.authenticating) }
    }

    pub(super) fn mark<B>(&self, mut request: http::Request<B>) -> http::Request<B> {
        let path = request.uri().path();
        let is = |paths: &[String]| paths.iter().any(|p| p == path);
        let (authenticating, internal) = (is(&self.authenticating), is(&self.internal));
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
}

fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}
