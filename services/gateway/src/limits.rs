//! Who is calling, and how often they may: the client's address (from the socket, or
//! from `X-Forwarded-For` when the socket is a trusted proxy), the account of a valid
//! bearer token, and rate limits per address for anonymous requests and per account for
//! authenticated ones, stricter for signing up and logging in (GCRA, `governor`).
//!
//! Every answer carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`;
//! a refusal is 429 with `Retry-After`. The counts live in this process: with N gateway
//! replicas behind a balancer a client gets up to N times the limit (a sticky balancer,
//! or a shared store, would tighten it).

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    Quota, RateLimiter, clock::Clock, middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use social_kit::auth::TokenVerifier;

use crate::{
    context::{AppState, Identity, bearer},
    error::ApiError,
};

/// How many requests per period, per key.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;
    /// `<n>/<seconds>s`, e.g. `300/300s`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("expected <requests>/<seconds>s, e.g. 300/300s, not {s:?}");
        let (n, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let requests: u32 = n.trim().parse().map_err(|_| bad())?;
        let secs: u64 = per
            .trim()
            .trim_end_matches('s')
            .parse()
            .map_err(|_| bad())?;
        if requests == 0 || secs == 0 {
            return Err(bad());
        }
        Ok(Self {
            requests,
            per: Duration::from_secs(secs),
        })
    }
}

/// What the limits are.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// `GATEWAY_RATE_ANONYMOUS` (300/300s): per client address, without a token.
    pub anonymous: Rate,
    /// `GATEWAY_RATE_ACCOUNT` (1200/300s): per account, with a token.
    pub account: Rate,
    /// `GATEWAY_RATE_LOGIN` (30/300s): per address, `POST /v1/sessions` and refreshes.
    pub login: Rate,
    /// `GATEWAY_RATE_SIGNUP` (10/3600s): per address, `POST /v1/accounts`.
    pub signup: Rate,
}

type Limiter<K> = RateLimiter<
    K,
    DefaultKeyedStateStore<K>,
    governor::clock::DefaultClock,
    StateInformationMiddleware,
>;

struct Bucket<K: std::hash::Hash + Eq + Clone> {
    rate: Rate,
    limiter: Limiter<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Bucket<K> {
    fn new(rate: Rate) -> Self {
        let burst = NonZeroU32::new(rate.requests).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(rate.per / rate.requests)
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        Self {
            rate,
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }

    /// `Ok(remaining)` or `Err(wait)`.
    fn check(&self, key: &K) -> Result<u32, Duration> {
        match self.limiter.check_key(key) {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => {
                Err(not_until.wait_time_from(governor::clock::DefaultClock::default().now()))
            }
        }
    }
}

/// The limiters of this gateway.
pub struct Limits {
    anonymous: Bucket<IpAddr>,
    account: Bucket<bson::oid::ObjectId>,
    login: Bucket<IpAddr>,
    signup: Bucket<IpAddr>,
}

impl Limits {
    pub fn new(rates: Rates) -> Self {
        Self {
            anonymous: Bucket::new(rates.anonymous),
            account: Bucket::new(rates.account),
            login: Bucket::new(rates.login),
            signup: Bucket::new(rates.signup),
        }
    }

    /// Forgets keys that have been quiet for a while (bounded memory).
    pub fn prune(&self) {
        self.anonymous.limiter.retain_recent();
        self.account.limiter.retain_recent();
        self.login.limiter.retain_recent();
        self.signup.limiter.retain_recent();
    }

    /// The decision for one request: `(rate, Ok(remaining) | Err(wait))`.
    fn check(&self, method: &Method, path: &str, who: &Identity) -> (Rate, Result<u32, Duration>) {
        match (method, path) {
            (&Method::POST, "/v1/accounts") => (self.signup.rate, self.signup.check(&who.ip)),
            (&Method::POST, "/v1/sessions" | "/v1/sessions/refresh") => {
                (self.login.rate, self.login.check(&who.ip))
            }
            _ => match who.caller {
                Some(caller) => (self.account.rate, self.account.check(&caller.user)),
                None => (self.anonymous.rate, self.anonymous.check(&who.ip)),
            },
        }
    }
}

/// Settings of the edge itself.
pub struct Edge {
    pub verifier: TokenVerifier,
    /// `GATEWAY_TRUSTED_PROXIES`: addresses whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
}

/// The client's address: the socket's, unless the socket is a trusted proxy; then the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|a| !trusted.contains(a))
        .unwrap_or(peer)
}

/// The first middleware: who is calling (a bad token is 401 here).
pub async fn identify(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let edge = &state.settings.edge;
    let ip = client_ip(peer.ip(), request.headers(), &edge.trusted_proxies);
    let token = match bearer(request.headers()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let caller = match &token {
        Some(t) => match edge.verifier.verify(t) {
            Ok(c) => Some(c),
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => None,
    };
    request
        .extensions_mut()
        .insert(Identity { ip, caller, token });
    next.run(request).await
}

/// The second middleware: the rate limits, and their headers on every answer.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/openapi.json") {
        return next.run(request).await;
    }
    let Some(who) = request.extensions().get::<Identity>().cloned() else {
        return next.run(request).await;
    };
    let (rate, decision) = state.limits.check(request.method(), &path, &who);
    let (mut response, remaining) = match decision {
        Ok(remaining) => (next.run(request).await, remaining),
        Err(wait) => (ApiError::too_many(wait).into_response(), 0),
    };
    let per_request = rate.per.as_secs_f64() / f64::from(rate.requests);
    let reset = (f64::from(rate.requests.saturating_sub(remaining)) * per_request).ceil() as u64;
    let headers = response.headers_mut();
    for (name, value) in [
        ("ratelimit-limit", rate.requests.to_string()),
        ("ratelimit-remaining", remaining.to_string()),
        ("ratelimit-reset", reset.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// The limits' memory is pruned every minute until `shutdown`.
pub async fn prune_every_minute(
    limits: Arc<Limits>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => limits.prune(),
        }
    }
}
