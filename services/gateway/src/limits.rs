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
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    Quota, RateLimiter, clock::Clock, middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use social_kit::auth::TokenVerifier;

use bson::oid::ObjectId;

use crate::{
    context::{AppState, Identity, bearer},
    error::{ApiError, ApiResult},
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
        let secs: u64 = per.trim().trim_end_matches('s').parse().map_err(|_| bad())?;
        if requests == 0 || secs == 0 {
            return Err(bad());
        }
        Ok(Self { requests, per: Duration::from_secs(secs) })
    }
}

/// What the limits are.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// `GATEWAY_RATE_ANONYMOUS` (300/300s): per client address, without a token.
    pub anonymous: Rate,
    /// `GATEWAY_RATE_ACCOUNT` (1200/300s): per account, with a token.
    pub account: Rate,
    /// `GATEWAY_RATE_LOGIN` (30/300s): per address, the requests that check a password
    /// (`POST /v1/sessions`, `PUT /v1/me/password`, `DELETE /v1/me`).
    pub login: Rate,
    /// `GATEWAY_RATE_REFRESH` (300/300s): per address, `POST /v1/sessions/refresh`. Apart
    /// from the logins: every signed-in client behind one address (a carrier's NAT, an
    /// office) refreshes every 15 minutes, and a client spending one budget must not
    /// take the other from its neighbours.
    pub refresh: Rate,
    /// `GATEWAY_RATE_SIGNUP` (10/3600s): per address, `POST /v1/accounts`.
    pub signup: Rate,
    /// `GATEWAY_RATE_EXPORT` (5/3600s): per account, `GET /v1/me/export` (it reads
    /// everything of the account).
    pub export: Rate,
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

/// How much more than one IPv6 /64 (one subscriber) the larger networks it belongs to
/// may send together: a /56 and a /48 are one site or customer, handed out whole (a
/// tunnel broker gives a /48 for free), so that rotating through their /64s does not buy
/// fresh budgets without end.
#[derive(Debug, Clone, Copy)]
pub struct Aggregates {
    /// `GATEWAY_RATE_IPV6_56_FACTOR` (4): a /56 gets this many times a /64's rate.
    pub per_56: u32,
    /// `GATEWAY_RATE_IPV6_48_FACTOR` (16): a /48 gets this many times a /64's rate.
    pub per_48: u32,
}

impl Default for Aggregates {
    fn default() -> Self {
        Self { per_56: 4, per_48: 16 }
    }
}

/// Buckets keyed by the client's address: an IPv4 address, or an IPv6 /64, and the
/// /56 and /48 it is in, each of which must allow the request.
struct AddressBuckets {
    address: Bucket<IpAddr>,
    per_56: Bucket<IpAddr>,
    per_48: Bucket<IpAddr>,
}

impl AddressBuckets {
    fn new(rate: Rate, aggregates: Aggregates) -> Self {
        let times =
            |n: u32| Rate { requests: rate.requests.saturating_mul(n.max(1)), per: rate.per };
        Self {
            address: Bucket::new(rate),
            per_56: Bucket::new(times(aggregates.per_56)),
            per_48: Bucket::new(times(aggregates.per_48)),
        }
    }

    /// `Ok(remaining)` (the least any bucket has left) or `Err(wait)`. The larger
    /// networks are charged only for what the smaller ones let through.
    fn check(&self, ip: IpAddr) -> Result<u32, Duration> {
        let own = self.address.check(&bucket_address(ip))?;
        let IpAddr::V6(v6) = bucket_address(ip) else {
            return Ok(own);
        };
        let s = v6.segments();
        let net =
            |last: u16| IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], last, 0, 0, 0, 0));
        let per_56 = self.per_56.check(&net(s[3] & 0xff00))?;
        let per_48 = self.per_48.check(&net(0))?;
        Ok(own.min(per_56).min(per_48))
    }

    fn prune(&self) {
        self.address.limiter.retain_recent();
        self.per_56.limiter.retain_recent();
        self.per_48.limiter.retain_recent();
    }
}

/// How many live notification streams may be open at once through this gateway: each
/// holds a connection, a stream of the notification service and a buffer.
#[derive(Debug, Clone, Copy)]
pub struct StreamCaps {
    /// `GATEWAY_STREAMS_PER_ACCOUNT` (5): per account (a few devices and tabs).
    pub per_account: usize,
    /// `GATEWAY_STREAMS_PER_ADDRESS` (1000): per client address (an IPv6 /64), whatever
    /// the accounts: one client with many accounts, but also many people behind one
    /// carrier's NAT, hence the margin.
    pub per_address: usize,
    /// `GATEWAY_EXPORTS_AT_ONCE` (16): account exports streaming through this gateway at
    /// once, whoever asks: each may hold 256 KiB of the one connection to the user
    /// service that every call to it shares (`kit::client`), whose window is 16 MiB.
    pub exports: usize,
}

impl Default for StreamCaps {
    fn default() -> Self {
        Self { per_account: 5, per_address: 1000, exports: 16 }
    }
}

/// The streams open now, by account and by address (entries leave at zero).
#[derive(Default)]
struct OpenStreams {
    accounts: HashMap<ObjectId, usize>,
    addresses: HashMap<IpAddr, usize>,
}

/// One open stream's place under the caps, given back when dropped.
pub struct StreamSlot {
    limits: Arc<Limits>,
    account: ObjectId,
    address: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let Ok(mut open) = self.limits.streams.lock() else {
            return;
        };
        let open = &mut *open;
        release(&mut open.accounts, &self.account);
        release(&mut open.addresses, &self.address);
    }
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// The route of an account's export, which has a budget and places of its own.
const EXPORT_ROUTE: &str = "/v1/me/export";

/// How long a client refused a stream is told to wait.
const STREAM_RETRY: Duration = Duration::from_secs(30);

/// The limiters of this gateway.
pub struct Limits {
    anonymous: AddressBuckets,
    account: Bucket<bson::oid::ObjectId>,
    login: AddressBuckets,
    refresh: AddressBuckets,
    signup: AddressBuckets,
    export: Bucket<bson::oid::ObjectId>,
    rates: Rates,
    caps: StreamCaps,
    streams: Mutex<OpenStreams>,
    exports: Arc<tokio::sync::Semaphore>,
    /// The accounts with an export streaming: one each at a time.
    exporting: Mutex<std::collections::HashSet<ObjectId>>,
}

/// One export's place under the caps (through this gateway, and its account's one at a
/// time), given back when dropped.
pub struct ExportSlot {
    limits: Arc<Limits>,
    account: ObjectId,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::fmt::Debug for ExportSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportSlot").field("account", &self.account).finish()
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        self.limits.exporting().remove(&self.account);
    }
}

impl Limits {
    pub fn new(rates: Rates, aggregates: Aggregates, caps: StreamCaps) -> Self {
        Self {
            anonymous: AddressBuckets::new(rates.anonymous, aggregates),
            account: Bucket::new(rates.account),
            login: AddressBuckets::new(rates.login, aggregates),
            refresh: AddressBuckets::new(rates.refresh, aggregates),
            signup: AddressBuckets::new(rates.signup, aggregates),
            export: Bucket::new(rates.export),
            rates,
            caps,
            streams: Mutex::default(),
            exports: Arc::new(tokio::sync::Semaphore::new(caps.exports.max(1))),
            exporting: Mutex::default(),
        }
    }

    /// A place for one more export streaming through this gateway, `account`'s only one
    /// (held until its stream is dropped), or 429 when [`StreamCaps::exports`] are
    /// streaming or `account` has one streaming already: a few accounts cannot take
    /// every place.
    pub fn start_export(self: &Arc<Self>, account: ObjectId) -> ApiResult<ExportSlot> {
        let mut exporting = self.exporting();
        if let Some(refused) = self.export_refused(&exporting, account) {
            return Err(refused);
        }
        let permit = self.exports.clone().try_acquire_owned().map_err(|_| self.exports_taken())?;
        exporting.insert(account);
        Ok(ExportSlot { limits: Arc::clone(self), account, _permit: permit })
    }

    /// Why an export of `account` would be refused now, if it would: checked before the
    /// export is charged to the account's hourly budget, so that a refusal costs none of
    /// it ([`Self::start_export`] decides).
    pub fn export_refusal(&self, account: ObjectId) -> Option<ApiError> {
        let exporting = self.exporting();
        self.export_refused(&exporting, account)
            .or_else(|| (self.exports.available_permits() == 0).then(|| self.exports_taken()))
    }

    /// The accounts with an export streaming (a panic elsewhere while it was held
    /// changes nothing of it: the set is whole between any two of its operations).
    fn exporting(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<ObjectId>> {
        self.exporting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn export_refused(
        &self,
        exporting: &std::collections::HashSet<ObjectId>,
        account: ObjectId,
    ) -> Option<ApiError> {
        exporting.contains(&account).then(|| {
            let why = "an export of this account is streaming already; retry once it ends";
            ApiError::too_many_because(why, STREAM_RETRY)
        })
    }

    fn exports_taken(&self) -> ApiError {
        let why = format!(
            "{} exports are streaming through this gateway already; retry shortly",
            self.caps.exports
        );
        ApiError::too_many_because(why, STREAM_RETRY)
    }

    /// A place for one more live stream of `account` from `ip`, or 429 saying which cap
    /// it would pass.
    pub fn open_stream(self: &Arc<Self>, account: ObjectId, ip: IpAddr) -> ApiResult<StreamSlot> {
        let address = bucket_address(ip);
        let mut open = self
            .streams
            .lock()
            .map_err(|_| ApiError::new(tonic::Code::Internal, "internal error"))?;
        let (per_account, per_address) = (self.caps.per_account, self.caps.per_address);
        let full = if open.accounts.get(&account).copied().unwrap_or(0) >= per_account {
            Some(format!(
                "this account has {per_account} live streams open already; close one first"
            ))
        } else if open.addresses.get(&address).copied().unwrap_or(0) >= per_address {
            Some(format!(
                "{per_address} live streams are open from this address already; close one first"
            ))
        } else {
            None
        };
        if let Some(why) = full {
            return Err(ApiError::too_many_because(why, STREAM_RETRY));
        }
        *open.accounts.entry(account).or_default() += 1;
        *open.addresses.entry(address).or_default() += 1;
        Ok(StreamSlot { limits: self.clone(), account, address })
    }

    /// Forgets keys that have been quiet for a while (bounded memory).
    pub fn prune(&self) {
        self.anonymous.prune();
        self.account.limiter.retain_recent();
        self.login.prune();
        self.refresh.prune();
        self.signup.prune();
        self.export.limiter.retain_recent();
    }

    /// Charges one more request to `who`'s account (work a request does on its behalf
    /// beyond its own); whether the account's rate allowed it.
    pub fn charge_account(&self, who: &Identity) -> bool {
        who.caller.is_some_and(|caller| self.account.check(&caller.user).is_ok())
    }

    /// The decision for one request: `(rate, Ok(remaining) | Err(wait))`. Requests that
    /// check a password share the login bucket; refreshes have their own.
    fn check(&self, method: &Method, path: &str, who: &Identity) -> (Rate, Result<u32, Duration>) {
        match (method, path) {
            (&Method::POST, "/v1/accounts") => (self.rates.signup, self.signup.check(who.ip)),
            (&Method::POST, "/v1/sessions/refresh") => {
                (self.rates.refresh, self.refresh.check(who.ip))
            }
            (&Method::POST, "/v1/sessions")
            | (&Method::PUT, "/v1/me/password")
            | (&Method::DELETE, "/v1/me") => (self.rates.login, self.login.check(who.ip)),
            (&Method::GET, EXPORT_ROUTE) => match who.caller {
                Some(caller) => (self.rates.export, self.export.check(&caller.user)),
                None => (self.rates.anonymous, self.anonymous.check(who.ip)),
            },
            _ => match who.caller {
                Some(caller) => (self.account.rate, self.account.check(&caller.user)),
                None => (self.rates.anonymous, self.anonymous.check(who.ip)),
            },
        }
    }
}

/// The key an address is counted under: IPv4 addresses as they are, IPv6 ones by their
/// /64 (one subscriber's network: rotating through it must not buy fresh budgets).
fn bucket_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Settings of the edge itself.
pub struct Edge {
    pub verifier: TokenVerifier,
    /// `GATEWAY_TRUSTED_PROXIES`: addresses whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// The client's address: the socket's, unless the socket is a trusted proxy; then the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. An entry that
/// does not parse (`unknown`, `ip:port`) ends the walk at the last trusted hop: what is
/// left of it is the client's to forge.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let trusts = |a: &IpAddr| trusted.iter().any(|net| net.contains(a));
    if !trusts(&peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for entry in entries.into_iter().rev() {
        match entry.trim().parse::<IpAddr>() {
            Ok(a) if trusts(&a) => client = a,
            Ok(a) => return a,
            Err(_) => return client,
        }
    }
    client
}

/// Routes that obtain a token: one the client still sends (expired, revoked) is ignored,
/// as the user service ignores it on Login and Register.
fn obtains_token(method: &Method, path: &str) -> bool {
    method == Method::POST && (obtains_account(path) || path == "/v1/sessions/refresh")
}

/// Whether `path` is sign-up's or login's: the creating routes a caller without an
/// account uses (and so the only ones whose `Idempotency-Key`s are the anonymous
/// callers', `crate::idempotency`).
pub fn obtains_account(path: &str) -> bool {
    matches!(path, "/v1/accounts" | "/v1/sessions")
}

/// The ticket of a browser's stream (`GET /v1/notifications/stream?ticket=`, without
/// `Authorization`).
fn ticket(request: &Request) -> Option<String> {
    if request.method() != Method::GET
        || request.uri().path() != crate::stream::STREAM_PATH
        || request.headers().contains_key(header::AUTHORIZATION)
    {
        return None;
    }
    let query = request.uri().query()?;
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("ticket=")?;
        // Tickets are hex: anything else is no ticket of ours (and needs no decoding).
        (value.len() <= 128 && value.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| value.to_owned())
            .or_else(|| Some(String::new()))
    })
}

/// The longest `Authorization` header worth verifying (access tokens are ~300 bytes).
const MAX_TOKEN_BYTES: usize = 4096;

/// The first middleware: who is calling. A bad token is 401 here, charged to the
/// client's address (so that forging tokens is no cheaper than anonymous requests).
pub async fn identify(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let edge = &state.settings.edge;
    let ip = client_ip(peer.ip(), request.headers(), &edge.trusted_proxies);
    let refuse = |e: ApiError| {
        let anonymous = Identity { ip, caller: None, token: None, idempotency: None };
        let (_, decision) = state.limits.check(&Method::GET, "", &anonymous);
        match decision {
            Ok(_) => e.into_response(),
            Err(wait) => ApiError::too_many(wait).into_response(),
        }
    };
    let token = if obtains_token(request.method(), request.uri().path()) {
        None
    } else if let Some(ticket) = ticket(&request) {
        // A browser's stream: its single-use ticket stands for the token it was issued
        // for (unknown, spent or expired: 401, charged to the address).
        match state.shared.redeem_ticket(&ticket).await {
            Ok(Some(token)) => Some(token),
            Ok(None) => {
                return refuse(ApiError::new(
                    tonic::Code::Unauthenticated,
                    "the stream ticket is unknown, used or expired; ask for a new one",
                ));
            }
            // Charged like any refusal: an outage is no free probe.
            Err(e) => return refuse(e),
        }
    } else {
        match bearer(request.headers()) {
            Ok(Some(t)) if t.len() > MAX_TOKEN_BYTES => {
                return refuse(ApiError::new(
                    tonic::Code::Unauthenticated,
                    "the access token is invalid",
                ));
            }
            Ok(t) => t,
            Err(e) => return refuse(e),
        }
    };
    let caller = match &token {
        Some(t) => match edge.verifier.verify(t) {
            Ok(c) => Some(c),
            Err(e) => return refuse(ApiError::from(e)),
        },
        None => None,
    };
    request.extensions_mut().insert(Identity { ip, caller, token, idempotency: None });
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
    // An export that would be refused costs none of the account's exports an hour.
    if request.method() == Method::GET
        && path == EXPORT_ROUTE
        && let Some(refused) =
            who.caller.and_then(|caller| state.limits.export_refusal(caller.user))
    {
        return refused.into_response();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_forwarded_address() {
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let ip = |v: &str| client_ip(proxy, &forwarded(v), &trusted).to_string();
        assert_eq!(ip("1.2.3.4"), "1.2.3.4");
        assert_eq!(ip("6.6.6.6, 1.2.3.4, 10.0.0.7"), "1.2.3.4", "forged entries on the left");
        // What the proxy wrote does not parse: the last trusted hop is all we know.
        assert_eq!(ip("6.6.6.6, unknown"), "10.0.0.9");
        assert_eq!(ip("6.6.6.6, 1.2.3.4:5678, 10.0.0.7"), "10.0.0.7");
        // From an untrusted socket the header is ignored.
        let direct: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(client_ip(direct, &forwarded("1.2.3.4"), &trusted), direct);
    }

    /// Every rate at 2 a minute.
    fn two_a_minute() -> Rates {
        let rate = Rate::per(2, 60);
        Rates {
            anonymous: rate,
            account: rate,
            login: rate,
            refresh: rate,
            signup: rate,
            export: rate,
        }
    }

    #[test]
    fn a_48_rotating_its_64s_and_56s_is_limited_as_a_whole() {
        let limits = Limits::new(two_a_minute(), Aggregates::default(), StreamCaps::default());
        let who = |ip: &str| Identity {
            ip: ip.parse().unwrap(),
            caller: None,
            token: None,
            idempotency: None,
        };
        let ask = |ip: &str| limits.check(&Method::GET, "/v1/posts/x", &who(ip)).1.is_ok();
        // One /64: its own 2.
        assert!(ask("2001:db8:1:101::1") && ask("2001:db8:1:101::2"));
        assert!(!ask("2001:db8:1:101::3"), "a /64 is one client");
        // Other /64s of that /56: 8 in all, then refused.
        let in_56 = (2..10).filter(|i| ask(&format!("2001:db8:1:1{i:02x}::1"))).count();
        assert_eq!(in_56 + 2, 8, "a /56 gets four /64s' worth");
        // Other /56s of that /48: 32 in all.
        let accepted = (2..40)
            .flat_map(|n| [format!("2001:db8:1:{n:02x}00::1"), format!("2001:db8:1:{n:02x}01::1")])
            .filter(|ip| ask(ip))
            .count();
        assert_eq!(accepted + 8, 32, "a /48 gets sixteen /64s' worth");
        // Another /48 is another site.
        assert!(ask("2001:db8:2::1"));
        // IPv4 addresses are counted one by one.
        assert!(ask("203.0.113.1") && ask("203.0.113.1") && !ask("203.0.113.1"));
        assert!(ask("203.0.113.2"));
    }

    /// Limits with two export places, and three accounts.
    fn two_export_places() -> (Arc<Limits>, [ObjectId; 3]) {
        let caps = StreamCaps { exports: 2, ..StreamCaps::default() };
        let limits = Arc::new(Limits::new(two_a_minute(), Aggregates::default(), caps));
        (limits, [ObjectId::new(), ObjectId::new(), ObjectId::new()])
    }

    #[test]
    fn exports_are_capped_at_once_until_one_ends() {
        let (limits, [a, b, c]) = two_export_places();
        let first = limits.start_export(a).expect("the first");
        let refused = limits.start_export(a).expect_err("a's second while its first streams");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let _second = limits.start_export(b).expect("another account's");
        let refused = limits.start_export(c).expect_err("a third while two stream");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        drop(first);
        let _third = limits.start_export(c).expect("one ended: a place again");
        let refused = limits.start_export(a).expect_err("the places are taken again");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(!limits.exporting().contains(&a), "a refused export holds nothing");
    }

    #[test]
    fn an_export_that_would_be_refused_is_told_before_it_is_charged() {
        let (limits, [a, b, c]) = two_export_places();
        assert!(limits.export_refusal(a).is_none());
        let first = limits.start_export(a).expect("a's");
        assert!(limits.export_refusal(a).is_some(), "a's own is streaming");
        assert!(limits.export_refusal(b).is_none());
        let _second = limits.start_export(b).expect("b's");
        assert!(limits.export_refusal(c).is_some(), "every place is taken");
        drop(first);
        assert!(limits.export_refusal(c).is_none());
        assert!(limits.export_refusal(a).is_none());
    }

    #[test]
    fn streams_are_capped_per_account_and_per_address_until_they_close() {
        let limits = Arc::new(Limits::new(
            two_a_minute(),
            Aggregates::default(),
            StreamCaps { per_account: 2, per_address: 3, ..StreamCaps::default() },
        ));
        let (alice, bob, carol) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        let home: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        let elsewhere: IpAddr = "203.0.113.7".parse().unwrap();
        let first = limits.open_stream(alice, home).unwrap();
        let _second = limits.open_stream(alice, elsewhere).unwrap();
        let refused = limits.open_stream(alice, home).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("this account"), "{refused:?}");
        // Another account from the same network: the address's cap.
        let _bob = limits.open_stream(bob, same_64).unwrap();
        let _bob_again = limits.open_stream(bob, home).unwrap();
        let refused = limits.open_stream(carol, same_64).err().unwrap();
        assert!(refused.message().contains("this address"), "{refused:?}");
        // A closed stream gives its place back, to its account and its address.
        drop(first);
        let _carol = limits.open_stream(carol, home).unwrap();
        assert!(limits.open_stream(alice, elsewhere).is_ok());
        // Nothing is kept for what is closed.
        drop((_second, _bob, _bob_again, _carol));
        let open = limits.streams.lock().unwrap();
        assert!(open.accounts.is_empty() && open.addresses.is_empty());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket_address(a), bucket_address(b));
        assert_ne!(bucket_address(a), bucket_address(other));
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().unwrap();
        assert_eq!(bucket_address(mapped).to_string(), "1.2.3.4");
    }
}
