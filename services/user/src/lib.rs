//! The user service: accounts, profiles, Argon2id passwords and access tokens. Owns the
//! `users` collection. [`run`] is what `main` and the tests call.

mod api;
mod events;
mod moderation;
mod names;
mod password;
mod recompute;
mod reports;
mod sessions;
mod store;
mod throttle;

pub use recompute::recompute_counters;
pub use sessions::Limits as SessionLimits;
pub use throttle::Policy as LoginThrottle;

use std::time::Duration;

use social_events::service::prelude::*;
use social_kit::{
    auth::TokenIssuer,
    peers::{ENGAGEMENT, GRAPH, POST, USER},
};
use social_proto::user::v1::user_service_server::UserServiceServer;

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
    /// The social-graph service (`GRAPH_SERVICE_URL`), asked when recomputing counters
    /// and exporting an account.
    pub graph_service: Peer,
    /// The post service (`POST_SERVICE_URL`), asked when exporting an account.
    pub post_service: Peer,
    /// The engagement service (`ENGAGEMENT_SERVICE_URL`), asked when exporting an
    /// account.
    pub engagement_service: Peer,
    /// `PASSWORD_HASH_MEMORY_MIB` (default 64): memory for password hashes at once (19
    /// MiB each); keep it well under the pod's memory limit.
    pub hash_memory_mib: u64,
    /// `PASSWORD_HASH_WAIT_MS` (default 500): longest a login waits for a hashing slot
    /// before it is refused with `UNAVAILABLE`.
    pub hash_wait: Duration,
    /// `SESSION_IDLE_DAYS` (30), `SESSION_MAX_DAYS` (90), `SESSIONS_PER_ACCOUNT` (100, at
    /// most 65535).
    pub sessions: sessions::Limits,
    /// `LOGIN_FREE_FAILURES` (5), `LOGIN_FAILURE_WINDOW_SECS` (86400), `LOGIN_BLOCK_SECS`
    /// (30), `LOGIN_MAX_BLOCK_SECS` (900), `LOGIN_ACCOUNT_FAILURES` (100).
    pub login_throttle: throttle::Policy,
    /// `USERNAME_QUARANTINE_DAYS` (30): how long a deleted account's username stays
    /// reserved.
    pub quarantine: Duration,
    /// `REFRESH_REUSE_GRACE_SECS` (10): how soon after an exchange the refresh token just
    /// exchanged gets the same successor again instead of ending its session.
    pub refresh_grace: Duration,
    /// The cache GetUser and BatchGetUsers read others' profiles through (`REDIS_URL`,
    /// `REDIS_KEY_PREFIX`, `USER_CACHE_TTL_SECS`: 60, 0 turns it off).
    pub cache: social_kit::cache::Settings,
    /// `EXPORT_WITHIN_SECS` (600): how long an account's export may stream.
    pub export_within: Duration,
}

/// `LOGIN_*`: the failure window must outlast the longest block, or a block would end
/// with its count forgotten.
fn login_throttle() -> Result<throttle::Policy, ConfigError> {
    let policy = throttle::Policy {
        free: social_kit::config::at_least_one_or("LOGIN_FREE_FAILURES", 5)?,
        window: social_kit::config::seconds_or("LOGIN_FAILURE_WINDOW_SECS", 86_400)?,
        first_block: social_kit::config::seconds_or("LOGIN_BLOCK_SECS", 30)?,
        max_block: social_kit::config::seconds_or("LOGIN_MAX_BLOCK_SECS", 900)?,
        account_failures: social_kit::config::at_least_one_or("LOGIN_ACCOUNT_FAILURES", 100)?,
    };
    if std::env::var_os("LOGIN_ACCOUNT_SLOWDOWN").is_some() {
        return Err(ConfigError {
            var: "LOGIN_ACCOUNT_SLOWDOWN".into(),
            value: std::env::var("LOGIN_ACCOUNT_SLOWDOWN").unwrap_or_default(),
            reason: "no longer read: past LOGIN_ACCOUNT_FAILURES failures the networks an \
                     account did not sign in from are counted as one (docs/security.md)"
                .into(),
        });
    }
    if policy.window <= policy.max_block {
        return Err(ConfigError {
            var: "LOGIN_FAILURE_WINDOW_SECS".into(),
            value: policy.window.as_secs().to_string(),
            reason: format!(
                "must be longer than LOGIN_MAX_BLOCK_SECS ({} s): failures are forgotten \
                 only after the longest block",
                policy.max_block.as_secs()
            ),
        });
    }
    Ok(policy)
}

fn days_or(var: &str, default: u64) -> Result<Duration, ConfigError> {
    social_kit::config::parse_or(var, default).map(|d: u64| Duration::from_secs(d * 24 * 3600))
}

social_kit::service_config!(Config);

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: USER.config_from_env()?,
            private_key_pem: social_kit::config::secret("AUTH_PRIVATE_KEY")?,
            token_ttl: social_kit::config::seconds_or("AUTH_TOKEN_TTL_SECS", 900)?,
            events: EventsConfig::from_env()?,
            graph_service: GRAPH.peer_from_env()?,
            post_service: POST.peer_from_env()?,
            engagement_service: ENGAGEMENT.peer_from_env()?,
            hash_memory_mib: social_kit::config::parse_or("PASSWORD_HASH_MEMORY_MIB", 64)?,
            hash_wait: social_kit::config::millis_or("PASSWORD_HASH_WAIT_MS", 500)?,
            sessions: sessions::Limits {
                idle: days_or("SESSION_IDLE_DAYS", 30)?,
                max: days_or("SESSION_MAX_DAYS", 90)?,
                per_account: social_kit::config::at_least_one_or::<u16>(
                    "SESSIONS_PER_ACCOUNT",
                    100,
                )?
                .into(),
            },
            login_throttle: login_throttle()?,
            quarantine: days_or("USERNAME_QUARANTINE_DAYS", 30)?,
            refresh_grace: social_kit::config::seconds_or("REFRESH_REUSE_GRACE_SECS", 10)?,
            cache: social_kit::cache::Settings::from_env("USER_CACHE_TTL_SECS", 60)?,
            export_within: social_kit::config::seconds_or("EXPORT_WITHIN_SECS", 600)?
                .max(Duration::from_secs(1)),
        })
    }

    /// Local stores, the given database and events, an ephemeral port, development keys.
    pub fn for_tests(mongodb_uri: &str, database: &str, events: EventsConfig) -> Self {
        Self {
            common: CommonConfig::for_tests(USER.service, mongodb_uri, database),
            private_key_pem: None,
            token_ttl: Duration::from_secs(900),
            events,
            post_service: POST.local_peer(),
            engagement_service: ENGAGEMENT.local_peer(),
            graph_service: GRAPH.local_peer(),
            hash_memory_mib: 64,
            hash_wait: Duration::from_millis(500),
            sessions: sessions::Limits {
                idle: Duration::from_secs(30 * 24 * 3600),
                max: Duration::from_secs(90 * 24 * 3600),
                per_account: 100,
            },
            login_throttle: throttle::Policy {
                free: 5,
                window: Duration::from_secs(86_400),
                first_block: Duration::from_secs(30),
                max_block: Duration::from_secs(900),
                account_failures: 100,
            },
            quarantine: Duration::from_secs(30 * 24 * 3600),
            refresh_grace: Duration::from_secs(10),
            cache: social_kit::cache::Settings::for_tests(),
            export_within: Duration::from_secs(600),
        }
    }

    /// The key refresh tokens' successors are derived with: from the signing key, which
    /// only this service holds (a development one with the development keys).
    fn successor_secret(&self) -> Vec<u8> {
        use sha2::Digest;
        let key =
            self.private_key_pem.as_deref().unwrap_or("DEVELOPMENT-ONLY refresh token successors");
        sha2::Sha256::digest(format!("social refresh token successors\n{key}")).to_vec()
    }

    fn issuer(&self) -> anyhow::Result<TokenIssuer> {
        match &self.private_key_pem {
            Some(pem) => TokenIssuer::from_pem(pem, self.token_ttl).map_err(|reason| {
                ConfigError { var: "AUTH_PRIVATE_KEY".into(), value: "<redacted>".into(), reason }
                    .into()
            }),
            None if self.common.development_keys => {
                tracing::warn!(
                    "AUTH_PRIVATE_KEY is unset and DEVELOPMENT_KEYS=true: signing with the \
                     published DEVELOPMENT-ONLY key; anyone can mint tokens"
                );
                Ok(TokenIssuer::development(self.token_ttl))
            }
            None => Err(social_kit::auth::missing_key(
                "AUTH_PRIVATE_KEY",
                "the PEM of the Ed25519 private key that signs access tokens",
            )
            .into()),
        }
    }
}

/// Serves the user service on `on` until `stop` is cancelled.
pub async fn run(config: Config, on: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
    let mut wiring = Wiring::new(&config.common, &config.events).await?;
    // What the configuration can still refuse, before anything is started.
    let tokens = config.issuer()?;
    let hasher = password::Hasher::new(config.hash_memory_mib, config.hash_wait)?;
    let store = store::Store::new(wiring.db()).with_caches(&config.cache)?;
    let sessions = sessions::Sessions::new(
        wiring.db(),
        config.sessions,
        &config.successor_secret(),
        config.token_ttl,
        social_events::live::Broadcaster::new(config.events.clone(), &wiring.replica()),
    );
    let throttle = throttle::Throttle::new(wiring.db(), config.login_throttle);
    // Publishes `user.user.deleted` from the deleted account's document.
    let relay = wiring.relay_of(&[store::COLLECTION]);
    // This service checks its own store where a session matters (the account's RPCs,
    // a profile update, the account's own email): it follows no broadcast of endings.
    wiring.consume(
        social_events::topology::USER,
        social_events::consumer::handler(store.clone(), events::apply),
    );
    wiring.internal(api::INTERNAL);
    wiring.authenticating(api::AUTHENTICATING);
    let api = api::Api {
        store: store.clone(),
        sessions: sessions.clone(),
        throttle: throttle.clone(),
        tokens,
        hasher,
        relay,
        quarantine: config.quarantine,
        refresh_grace: config.refresh_grace,
        export_within: config.export_within,
        peers: api::Peers {
            posts: config.post_service.clone(),
            engagement: config.engagement_service.clone(),
            graph: config.graph_service.clone(),
        },
    };
    let startup = Startup { store, sessions, throttle };
    wiring.serve(UserServiceServer::new(api), startup, on, stop).await
}

/// What the user service does before it serves: ping, and every collection's indexes.
struct Startup {
    store: store::Store,
    sessions: sessions::Sessions,
    throttle: throttle::Throttle,
}

impl social_kit::serve::Startup for Startup {
    async fn startup(&self) -> anyhow::Result<()> {
        self.store.init().await?;
        self.sessions.init().await?;
        self.throttle.init().await?;
        Ok(())
    }
}

/// `social-user set-role <user id or username> <user|moderator|admin>`: what the account
/// may do (moderators and admins resolve reports); answers the account and its role.
pub async fn set_role(config: &Config, who: &str, role: &str) -> anyhow::Result<String> {
    if !reports::ROLES.contains(&role) {
        anyhow::bail!("{role:?} is not a role: user, moderator or admin");
    }
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = store::Store::new(&db);
    store.names.init().await?;
    let account = match bson::oid::ObjectId::parse_str(who) {
        Ok(id) => store.by_id(id).await?,
        Err(_) => store.by_username(&who.to_lowercase()).await?,
    };
    let Some(account) = account else {
        anyhow::bail!("no account {who:?} (a user id or a username)");
    };
    if !store.set_role(account.id, role).await? {
        anyhow::bail!("the account {who:?} was deleted meanwhile");
    }
    Ok(serde_json::json!({ "user_id": account.id.to_hex(), "username": account.username, "role": role })
        .to_string())
}

/// `social-user reserve-names`: gives every account stored before usernames and emails
/// had reservations its two, then retires the unique indexes on `users` they replace
/// (see `names`); run once no replica of an older release is left. Idempotent; answers
/// what it did (JSON).
pub async fn reserve_names(config: &Config) -> anyhow::Result<String> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let names = names::Names::new(&db, store::COLLECTION);
    let made = names.reserve_existing().await?;
    Ok(serde_json::json!({ "reservations_made": made, "retired_unique_indexes_on": names::LEGACY_INDEXES })
        .to_string())
}

/// `social-user deletion-status <user id>`: where the deletion of an account stands, as
/// one JSON object (requested, which services have cleared it, finished).
pub async fn deletion_status(config: &Config, user: &str) -> anyhow::Result<String> {
    let id = bson::oid::ObjectId::parse_str(user)
        .map_err(|_| anyhow::anyhow!("{user:?} is not a user id (24 hex characters)"))?;
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = store::Store::new(&db);
    let Some(doc) = store.any_by_id(id).await? else {
        return Ok(serde_json::json!({ "user_id": user, "state": "unknown or purged" }).to_string());
    };
    let time = |ms: Option<i64>| ms.map(|ms| bson::DateTime::from_millis(ms).to_string());
    let state = match (doc.deleted_ms, doc.deletion_finished_ms) {
        (None, _) => "not deleted",
        (Some(_), None) => "requested",
        (Some(_), Some(_)) => "finished",
    };
    let waiting: Vec<&str> = store::CLEARING_SERVICES
        .iter()
        .copied()
        .filter(|s| doc.deleted_ms.is_some() && !doc.cleared_by.iter().any(|c| c == s))
        .collect();
    Ok(serde_json::json!({
        "user_id": user,
        "state": state,
        "requested_at": time(doc.deleted_ms),
        "cleared_by": doc.cleared_by,
        "waiting_for": waiting,
        "finished_at": time(doc.deletion_finished_ms),
    })
    .to_string())
}
