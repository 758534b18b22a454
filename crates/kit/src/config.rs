//! Configuration from environment variables, with defaults that work on a developer
//! machine. A value that is set but invalid is an error naming the variable; a variable
//! that is unset takes its default.

use std::{fmt::Display, net::SocketAddr, str::FromStr, time::Duration};

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid environment variable {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub var: String,
    /// What it was set to.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Reads the variable `var`, or `None` when it is unset or empty.
pub fn optional(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// Reads a secret or key `var`: `None` when unset; an error when it is set but empty
/// (an empty key is a mistake in a manifest, never a way to say "none").
pub fn secret(var: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var(var) {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Err(ConfigError {
            var: var.to_owned(),
            value: String::new(),
            reason: "is set but empty; give it a value or unset it".into(),
        }),
        Ok(v) => Ok(Some(v)),
    }
}

/// Reads and parses `var`, or returns `default` when it is unset.
pub fn parse_or<T>(var: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match optional(var) {
        None => Ok(default),
        Some(value) => parse_value(var, value),
    }
}

/// Reads and parses `var` (`default` when unset) as a count or a length that must be at
/// least 1: a 0 would refuse or end everything.
pub fn at_least_one_or<T>(var: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr + Display + PartialOrd + From<u8>,
    T::Err: Display,
{
    let value = parse_or(var, default)?;
    if value < T::from(1) {
        return Err(ConfigError {
            var: var.to_owned(),
            value: value.to_string(),
            reason: "must be at least 1".into(),
        });
    }
    Ok(value)
}

/// Parses `value`, set for `var`: an error naming both when it does not parse.
fn parse_value<T>(var: &str, value: String) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    value.trim().parse().map_err(|e: T::Err| ConfigError {
        var: var.to_owned(),
        reason: e.to_string(),
        value,
    })
}

/// Reads `var` as a whole number of seconds.
pub fn seconds_or(var: &str, default: u64) -> Result<Duration, ConfigError> {
    parse_or(var, default).map(Duration::from_secs)
}

/// Reads `var` as a whole number of milliseconds.
pub fn millis_or(var: &str, default: u64) -> Result<Duration, ConfigError> {
    parse_or(var, default).map(Duration::from_millis)
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Coloured, one line per event, for people.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "human" | "text" | "pretty" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            _ => Err("expected `human` or `json`".into()),
        }
    }
}

/// The settings every service has, read from the environment.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// Short service name (`user`, `post`, ...), used in logs, traces and health.
    pub service: &'static str,
    /// Where the gRPC server listens (`<NAME>_ADDR`).
    pub listen_addr: SocketAddr,
    /// `MONGODB_URI`.
    pub mongodb_uri: String,
    /// `MONGODB_DATABASE`.
    pub mongodb_database: String,
    /// `MONGODB_TIMEOUT_MS`: server selection and connect timeout.
    pub mongodb_timeout: Duration,
    /// `AMQP_URL`.
    pub amqp_url: String,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `SHUTDOWN_GRACE_SECS`: how long in-flight RPCs get after SIGTERM.
    pub shutdown_grace: Duration,
    /// `READINESS_DATABASE_GRACE_SECS` (30): how long the database may fail its pings
    /// before the service says `NOT_SERVING`: longer than a replica set's election
    /// (10-12 s), which would otherwise take every replica of every service out of its
    /// balancer at once.
    pub database_grace: Duration,
    /// `MAX_REQUESTS_IN_FLIGHT` (1000): RPCs a process runs at once; one more is
    /// refused at once with `UNAVAILABLE` (see `serve::shed`).
    pub max_in_flight: usize,
    /// `AUTH_PUBLIC_KEY`: PEM of the Ed25519 key that verifies access tokens.
    pub auth_public_key_pem: Option<String>,
    /// `SERVICE_TOKEN`: the credential services present to each other's internal RPCs.
    pub service_token: Option<String>,
    /// `GATEWAY_TOKEN`: the credential of the HTTP gateway, which vouches for the client
    /// addresses it reports (a different secret from `SERVICE_TOKEN`).
    pub gateway_token: Option<String>,
    /// `DEVELOPMENT_KEYS=true`: use the published development key pair and service
    /// token where none is set. Never in a deployment anyone else can reach.
    pub development_keys: bool,
}

/// Default MongoDB URI for a developer machine.
pub const DEFAULT_MONGODB_URI: &str = "mongodb://127.0.0.1:27017";
/// Default AMQP URL for a developer machine.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl CommonConfig {
    /// Reads the shared settings; `addr_var` names the listen-address variable.
    pub fn from_env(
        service: &'static str,
        addr_var: &str,
        default_addr: &str,
    ) -> Result<Self, ConfigError> {
        let default_addr: SocketAddr = default_addr.parse().map_err(|e| ConfigError {
            var: addr_var.into(),
            value: default_addr.into(),
            reason: format!("built-in default is invalid: {e}"),
        })?;
        Ok(Self {
            service,
            listen_addr: parse_or(addr_var, default_addr)?,
            mongodb_uri: optional("MONGODB_URI").unwrap_or_else(|| DEFAULT_MONGODB_URI.into()),
            mongodb_database: optional("MONGODB_DATABASE").unwrap_or_else(|| "social".into()),
            mongodb_timeout: millis_or("MONGODB_TIMEOUT_MS", 2000)?,
            amqp_url: optional("AMQP_URL").unwrap_or_else(|| DEFAULT_AMQP_URL.into()),
            log_format: parse_or("LOG_FORMAT", LogFormat::Human)?,
            shutdown_grace: seconds_or("SHUTDOWN_GRACE_SECS", 10)?,
            database_grace: seconds_or("READINESS_DATABASE_GRACE_SECS", 30)?,
            max_in_flight: at_least_one_or("MAX_REQUESTS_IN_FLIGHT", 1000)?,
            auth_public_key_pem: secret("AUTH_PUBLIC_KEY")?,
            service_token: secret("SERVICE_TOKEN")?,
            gateway_token: secret("GATEWAY_TOKEN")?,
            development_keys: parse_or("DEVELOPMENT_KEYS", false)?,
        })
    }

    /// Settings for tests: local stores, the given database, an ephemeral port.
    pub fn for_tests(service: &'static str, mongodb_uri: &str, database: &str) -> Self {
        Self {
            service,
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            mongodb_uri: mongodb_uri.into(),
            mongodb_database: database.into(),
            mongodb_timeout: Duration::from_secs(2),
            amqp_url: DEFAULT_AMQP_URL.into(),
            log_format: LogFormat::Human,
            shutdown_grace: Duration::from_secs(5),
            database_grace: Duration::from_secs(30),
            max_in_flight: 1000,
            auth_public_key_pem: None,
            service_token: None,
            gateway_token: None,
            development_keys: true,
        }
    }
}

/// A service's whole configuration, which holds the shared part.
pub trait ServiceConfig {
    /// The settings every service has.
    fn common(&self) -> &CommonConfig;
}

/// Implements [`ServiceConfig`] for a configuration whose shared part is its `common`
/// field.
#[macro_export]
macro_rules! service_config {
    ($config:ty) => {
        impl $crate::config::ServiceConfig for $config {
            fn common(&self) -> &$crate::config::CommonConfig {
                &self.common
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_value_names_the_variable() {
        let err = parse_value::<SocketAddr>("USER_ADDR", "nope".into()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("USER_ADDR=\"nope\""), "{message}");
        assert!(message.contains("invalid socket address"), "{message}");
        assert_eq!(parse_value::<u64>("SHUTDOWN_GRACE_SECS", " 12 ".into()).unwrap(), 12);
    }

    #[test]
    fn log_format_parses() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
