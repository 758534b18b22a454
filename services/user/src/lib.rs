//! The user service: accounts, profiles, Argon2id passwords and access tokens. Owns the
//! `users` collection. [`run`] is what `main` and the tests call.

mod api;
mod events;
mod password;
mod recompute;
mod store;

pub use recompute::recompute_counters;

use std::time::Duration;

use social_events::EventsConfig;
use social_kit::{
    auth::{TokenIssuer, TokenVerifier},
    client::Peer,
    config::{CommonConfig, ConfigError},
    serve::{Background, Gate, ServeSpec, serve},
};
use social_proto::user::v1::user_service_server::{SERVICE_NAME, UserServiceServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// Everything the user service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings every service has; listens on `USER_ADDR`.
    pub common: CommonConfig,
    /// `AUTH_PRIVATE_KEY`: PEM of the Ed25519 key that signs access tokens.
    pub private_key_pem: Option<String>,
    /// `AUTH_TOKEN_TTL_SECS`: how long an access token lives.
    pub token_ttl: Duration,
    /// Where follow events come from.
    pub events: EventsConfig,
    /// The social-graph service (`GRAPH_SERVICE_URL`), asked only when recomputing counters.
    pub graph_service: Peer,
}

impl social_kit::config::ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env("user", "USER_ADDR", "127.0.0.1:50051")?,
            private_key_pem: social_kit::config::optional("AUTH_PRIVATE_KEY"),
            token_ttl: social_kit::config::seconds_or("AUTH_TOKEN_TTL_SECS", 900)?,
            events: EventsConfig::from_env()?,
            graph_service: Peer::from_env(
                "social-graph service",
                "GRAPH_SERVICE_URL",
                "http://127.0.0.1:50053",
            )?,
        })
    }

    /// Local stores, the given database and events, an ephemeral port, development keys.
    pub fn for_tests(mongodb_uri: &str, database: &str, events: EventsConfig) -> Self {
        #[allow(clippy::expect_used)] // a constant URL
        let graph_service = Peer::new(
            "social-graph service",
            "GRAPH_SERVICE_URL",
            "http://127.0.0.1:50053",
            Duration::from_secs(2),
        )
        .expect("valid URL");
        Self {
            common: CommonConfig::for_tests("user", mongodb_uri, database),
            private_key_pem: None,
            token_ttl: Duration::from_secs(900),
            events,
            graph_service,
        }
    }

    fn issuer(&self) -> anyhow::Result<TokenIssuer> {
        match &self.private_key_pem {
            Some(pem) => TokenIssuer::from_pem(pem, self.token_ttl).map_err(|reason| {
                ConfigError {
                    var: "AUTH_PRIVATE_KEY".into(),
                    value: "<redacted>".into(),
                    reason,
                }
                .into()
            }),
            None => {
                tracing::warn!("AUTH_PRIVATE_KEY is unset: signing with the DEVELOPMENT-ONLY key");
                Ok(TokenIssuer::development(self.token_ttl))
            }
        }
    }
}

/// Serves the user service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = store::Store::new(&db);
    let gate = Gate::new(TokenVerifier::from_config(&config.common)?);
    let api = api::Api::new(store.clone(), config.issuer()?, password::Hasher::new()?);
    let routes = Routes::new(UserServiceServer::with_interceptor(api, gate.clone()));
    let mut background = Background::new();
    let (events, handler) = (config.events.clone(), events::handler(store.clone()));
    background
        .spawn(|stop| social_events::consumer::run(events, events::subscription(), handler, stop));
    let spec = ServeSpec {
        config: &config.common,
        grpc_name: SERVICE_NAME,
        db,
        gate,
    };
    serve(spec, listener, routes, store, background, shutdown).await
}
