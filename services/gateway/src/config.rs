//! Everything the gateway reads from its environment.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use social_kit::{
    client::Peer,
    config::{CommonConfig, ConfigError, at_least_one_or, optional, parse_or},
    peers::{self, Known},
};

use crate::{
    limits::{self, Rate, Rates, StreamCaps},
    server::Timeouts,
};

/// Everything the gateway reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shared settings; listens on `GATEWAY_ADDR`. (`MONGODB_*` are not used.)
    pub common: CommonConfig,
    pub user_service: Peer,
    pub post_service: Peer,
    pub graph_service: Peer,
    pub engagement_service: Peer,
    pub notification_service: Peer,
    /// The rate limits (`GATEWAY_RATE_*`).
    pub rates: Rates,
    /// How much more the IPv6 networks around a client's /64 may send together.
    pub aggregates: limits::Aggregates,
    /// `GATEWAY_TRUSTED_PROXIES`: comma-separated addresses or networks
    /// (`10.0.0.0/8`) whose `X-Forwarded-For` is believed (a load balancer's, an ingress
    /// controller's pods).
    pub trusted_proxies: Vec<IpNet>,
    /// `GATEWAY_CORS_ORIGINS`: comma-separated origins browsers may call from.
    pub cors_origins: Vec<String>,
    /// `GATEWAY_MAX_BODY_BYTES` (65536): the largest request body.
    pub max_body_bytes: usize,
    /// How many live streams may be open per account and per address.
    pub streams: StreamCaps,
    /// How long a client may take to send its headers or to take what is written.
    pub timeouts: Timeouts,
    /// `REDIS_URL` (`redis://127.0.0.1:6379`): where the replicas share stream tickets
    /// and the answers of idempotent requests.
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX` (`social:`): the start of every key the gateway writes there.
    pub redis_key_prefix: String,
}

social_kit::service_config!(Config);

/// Redis on a developer machine (the default of `REDIS_URL`).
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

fn list(var: &str) -> Vec<String> {
    optional(var)
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        // Not a service: its peers never carry the service credential, so that the edge
        // cannot reach internal RPCs whatever its environment holds.
        let peer = |known: Known| known.peer_from_env().map(Peer::without_credential);
        let trusted_proxies = list("GATEWAY_TRUSTED_PROXIES")
            .into_iter()
            .map(|a| {
                a.parse::<IpNet>().or_else(|_| a.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                    ConfigError {
                        var: "GATEWAY_TRUSTED_PROXIES".into(),
                        value: a.clone(),
                        reason: "expected comma-separated IP addresses or networks (10.0.0.0/8)"
                            .into(),
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            common: CommonConfig::from_env("gateway", "GATEWAY_ADDR", "127.0.0.1:8080")?,
            user_service: peer(peers::USER)?,
            post_service: peer(peers::POST)?,
            graph_service: peer(peers::GRAPH)?,
            engagement_service: peer(peers::ENGAGEMENT)?,
            notification_service: peer(peers::NOTIFICATION)?,
            rates: Rates {
                anonymous: parse_or("GATEWAY_RATE_ANONYMOUS", Rate::per(300, 300))?,
                account: parse_or("GATEWAY_RATE_ACCOUNT", Rate::per(1200, 300))?,
                login: parse_or("GATEWAY_RATE_LOGIN", Rate::per(30, 300))?,
                refresh: parse_or("GATEWAY_RATE_REFRESH", Rate::per(300, 300))?,
                signup: parse_or("GATEWAY_RATE_SIGNUP", Rate::per(10, 3600))?,
                export: parse_or("GATEWAY_RATE_EXPORT", Rate::per(5, 3600))?,
            },
            aggregates: limits::Aggregates {
                per_56: parse_or("GATEWAY_RATE_IPV6_56_FACTOR", 4)?,
                per_48: parse_or("GATEWAY_RATE_IPV6_48_FACTOR", 16)?,
            },
            trusted_proxies,
            cors_origins: list("GATEWAY_CORS_ORIGINS"),
            max_body_bytes: parse_or("GATEWAY_MAX_BODY_BYTES", 64 * 1024)?,
            streams: StreamCaps {
                per_account: at_least_one_or("GATEWAY_STREAMS_PER_ACCOUNT", 5)?,
                per_address: at_least_one_or("GATEWAY_STREAMS_PER_ADDRESS", 1000)?,
                exports: at_least_one_or("GATEWAY_EXPORTS_AT_ONCE", 16)?,
            },
            timeouts: Timeouts {
                headers: Duration::from_secs(at_least_one_or("GATEWAY_HEADER_TIMEOUT_SECS", 75)?),
                write_stall: Duration::from_secs(at_least_one_or(
                    "GATEWAY_WRITE_TIMEOUT_SECS",
                    30,
                )?),
            },
            redis_url: optional("REDIS_URL").unwrap_or_else(|| DEFAULT_REDIS_URL.into()),
            redis_key_prefix: optional("REDIS_KEY_PREFIX").unwrap_or_else(|| "social:".into()),
        })
    }

    /// The services at these peers, the defaults otherwise, an ephemeral port.
    pub fn for_tests(services: [Peer; 5]) -> Self {
        let [user_service, post_service, graph_service, engagement_service, notification_service] =
            services;
        Self {
            common: CommonConfig::for_tests("gateway", "mongodb://unused", "unused"),
            user_service,
            post_service,
            graph_service,
            engagement_service,
            notification_service,
            rates: Rates {
                anonymous: Rate::per(300, 300),
                account: Rate::per(1200, 300),
                login: Rate::per(30, 300),
                refresh: Rate::per(300, 300),
                signup: Rate::per(100, 3600),
                export: Rate::per(5, 3600),
            },
            aggregates: limits::Aggregates::default(),
            trusted_proxies: Vec::new(),
            cors_origins: vec!["https://app.example.com".into()],
            max_body_bytes: 64 * 1024,
            streams: StreamCaps::default(),
            timeouts: Timeouts::default(),
            redis_url: optional("REDIS_URL").unwrap_or_else(|| DEFAULT_REDIS_URL.into()),
            redis_key_prefix: format!("test-{}:", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl Rate {
    /// `requests` per `seconds`.
    pub const fn per(requests: u32, seconds: u64) -> Self {
        Self { requests, per: Duration::from_secs(seconds) }
    }
}
