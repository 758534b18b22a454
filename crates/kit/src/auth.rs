//! Access tokens: Ed25519-signed JWTs (EdDSA). The user service holds the private key and
//! issues them; every service verifies them locally with the public key alone, so no
//! other service can mint one. The interceptor in [`crate::serve`] puts the verified
//! caller into the request; handlers read it with [`caller`], never from a field.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bson::oid::ObjectId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{
    config::ConfigError,
    error::{Error, Result},
};

const ISSUER: &str = "social-user";
const AUDIENCE: &str = "social";

/// DEVELOPMENT ONLY: a published key pair so that a fresh checkout runs with no set-up.
/// See `crates/kit/dev-keys/README.md`. Never used when `AUTH_*` keys are set.
const DEV_PRIVATE_KEY: &str = include_str!("../dev-keys/DEVELOPMENT-ONLY-ed25519-private.pem");
const DEV_PUBLIC_KEY: &str = include_str!("../dev-keys/DEVELOPMENT-ONLY-ed25519-public.pem");

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
    /// The session the token was issued for (none for tokens minted by tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
}

/// The authenticated caller of an RPC, set by the auth interceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Who the token was issued to.
    pub user: ObjectId,
    /// When the token expires: a long-lived call (a stream) ends then.
    pub expires_at: SystemTime,
    /// The session the token belongs to, if any.
    pub session: Option<ObjectId>,
}

/// The caller's user id, or `UNAUTHENTICATED` when the request carried no token.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<ObjectId> {
    session(request).map(|c| c.user)
}

/// The caller and when their token expires, or `UNAUTHENTICATED` without a token.
pub fn session<T>(request: &tonic::Request<T>) -> Result<Caller> {
    request
        .extensions()
        .get::<Caller>()
        .copied()
        .ok_or(Error::Unauthenticated("this call needs an access token"))
}

/// The caller's user id when the request carried a token.
pub fn optional_caller<T>(request: &tonic::Request<T>) -> Option<ObjectId> {
    request.extensions().get::<Caller>().map(|c| c.user)
}

/// The error of a key or secret that must be set.
pub fn missing_key(var: &str, what: &str) -> ConfigError {
    ConfigError {
        var: var.into(),
        value: String::new(),
        reason: format!(
            "must be set to {what} (see docs/security.md); only on a development \
             machine, DEVELOPMENT_KEYS=true uses the published development keys instead"
        ),
    }
}

/// DEVELOPMENT ONLY: the service credential used with `DEVELOPMENT_KEYS=true`.
pub const DEV_SERVICE_TOKEN: &str = "DEVELOPMENT-ONLY-service-token";
/// DEVELOPMENT ONLY: the gateway's credential used with `DEVELOPMENT_KEYS=true`.
pub const DEV_GATEWAY_TOKEN: &str = "DEVELOPMENT-ONLY-gateway-token";

/// The credential services present to each other's internal RPCs (`x-service-token`):
/// `SERVICE_TOKEN`, or the development one when it is unset and `DEVELOPMENT_KEYS=true`.
pub fn service_token(config: &crate::config::CommonConfig) -> Result<String, ConfigError> {
    secret_or_development(
        config,
        "SERVICE_TOKEN",
        config.service_token.as_ref(),
        DEV_SERVICE_TOKEN,
        "a random secret shared by the services",
    )
}

/// The gateway's credential (`x-gateway-token`), which vouches for the client address
/// it reports: `GATEWAY_TOKEN`, or the development one as for [`service_token`].
pub fn gateway_token(config: &crate::config::CommonConfig) -> Result<String, ConfigError> {
    secret_or_development(
        config,
        "GATEWAY_TOKEN",
        config.gateway_token.as_ref(),
        DEV_GATEWAY_TOKEN,
        "a random secret the gateway holds (not SERVICE_TOKEN)",
    )
}

/// `set`, or `development` when it is unset, `DEVELOPMENT_KEYS=true` and no real key is
/// configured: where real keys are set, a missing secret is an error, never the
/// published one in silence.
fn secret_or_development(
    config: &crate::config::CommonConfig,
    var: &str,
    set: Option<&String>,
    development: &str,
    what: &str,
) -> Result<String, ConfigError> {
    match set {
        Some(token) => Ok(token.clone()),
        None if config.development_keys && config.auth_public_key_pem.is_none() => {
            Ok(development.to_owned())
        }
        None if config.development_keys => Err(ConfigError {
            var: var.into(),
            value: String::new(),
            reason: format!(
                "must be set to {what}: AUTH_PUBLIC_KEY is set, so the published \
                 development secret is not used even with DEVELOPMENT_KEYS=true"
            ),
        }),
        None => Err(missing_key(var, what)),
    }
}

/// Sessions that ended while their access tokens may still be unexpired: the gate
/// refuses those tokens. Each entry lasts until the session's last token expires, so
/// the set holds only the sessions ended within one token lifetime (bounded by
/// [`REVOKED_CACHE`] besides). Cheap to clone: clones share the set.
#[derive(Clone)]
pub struct Revocations(moka::sync::Cache<ObjectId, SystemTime>);

/// The most ended sessions a service remembers at once (a few dozen bytes each).
pub const REVOKED_CACHE: u64 = 1_000_000;

struct UntilTokensExpire;

impl moka::Expiry<ObjectId, SystemTime> for UntilTokensExpire {
    fn expire_after_create(
        &self,
        _: &ObjectId,
        expires: &SystemTime,
        _: std::time::Instant,
    ) -> Option<Duration> {
        // Past the leeway a token is refused anyway.
        let until = *expires + Duration::from_secs(LEEWAY_SECS);
        Some(until.duration_since(SystemTime::now()).unwrap_or_default())
    }
}

impl Default for Revocations {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(REVOKED_CACHE)
                .expire_after(UntilTokensExpire)
                .build(),
        )
    }
}

impl Revocations {
    /// Refuses the tokens of `session` from now on, until `tokens_expire`.
    pub fn revoke(&self, session: ObjectId, tokens_expire: SystemTime) {
        if tokens_expire + Duration::from_secs(LEEWAY_SECS) > SystemTime::now() {
            self.0.insert(session, tokens_expire);
        }
    }

    /// Whether `session` has ended.
    pub fn is_revoked(&self, session: ObjectId) -> bool {
        self.0.contains_key(&session)
    }
}

/// The address of the client an RPC acts for: the one the gateway reports (with its
/// credential), else the connection's peer. Set by the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub std::net::IpAddr);

/// The address of the client an RPC acts for, if known.
pub fn client_address<T>(request: &tonic::Request<T>) -> Option<std::net::IpAddr> {
    request.extensions().get::<ClientAddress>().map(|a| a.0)
}

/// Signs access tokens. Only the user service has one.
pub struct TokenIssuer {
    key: EncodingKey,
    ttl: Duration,
}

impl TokenIssuer {
    /// From an Ed25519 private key in PKCS#8 PEM.
    pub fn from_pem(pem: &str, ttl: Duration) -> Result<Self, String> {
        let key = EncodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|e| format!("not an Ed25519 private key in PEM: {e}"))?;
        Ok(Self { key, ttl })
    }

    /// The development key, for tests.
    pub fn development(ttl: Duration) -> Self {
        #[allow(clippy::expect_used)] // a constant that is checked by the tests
        Self::from_pem(DEV_PRIVATE_KEY, ttl).expect("development key parses")
    }

    /// A token for `user` and the time it expires.
    pub fn issue(&self, user: ObjectId) -> Result<(String, bson::DateTime)> {
        self.issue_at(user, None, bson::DateTime::now())
    }

    /// A token for `user` in `session` and the time it expires.
    pub fn issue_for(&self, user: ObjectId, session: ObjectId) -> Result<(String, bson::DateTime)> {
        self.issue_at(user, Some(session), bson::DateTime::now())
    }

    /// A token for `user` (in `session`) as if issued at `now` (tests use it to mint
    /// expired tokens).
    pub fn issue_at(
        &self,
        user: ObjectId,
        session: Option<ObjectId>,
        now: bson::DateTime,
    ) -> Result<(String, bson::DateTime)> {
        let iat = now.timestamp_millis() / 1000;
        let exp = iat + self.ttl.as_secs() as i64;
        let claims = Claims {
            sub: user.to_hex(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat,
            exp,
            sid: session.map(|s| s.to_hex()),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .map_err(Error::internal)?;
        Ok((token, bson::DateTime::from_millis(exp * 1000)))
    }
}

/// Verifies access tokens with the public key. Cheap to clone (clones share the cache).
///
/// A token is a signed statement that does not change: once its signature is verified,
/// it is remembered (up to [`VERIFIED_CACHE`] tokens) and a later request with the same
/// token only checks its expiry, which answers exactly as verifying again would. The
/// Ed25519 verification was an eighth of a service's CPU per cheap read (a profile of
/// the post service under `GetPost`, docs/BENCHMARKS.md).
#[derive(Clone)]
pub struct TokenVerifier {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
    verified: moka::sync::Cache<String, Caller>,
}

/// The answer to a token that is forged, malformed or expired.
const INVALID: Error = Error::Unauthenticated("the access token is invalid or expired");

/// How many verified tokens a service remembers (about 0.5 KiB each).
pub const VERIFIED_CACHE: u64 = 10_000;
/// Seconds past `exp` a token is still accepted (clock skew between services).
const LEEWAY_SECS: u64 = 30;

impl TokenVerifier {
    /// From `AUTH_PUBLIC_KEY` (PEM) in `config`; the development key only when it is
    /// unset and `DEVELOPMENT_KEYS=true`, else an error naming the variable.
    pub fn from_config(config: &crate::config::CommonConfig) -> Result<Self, ConfigError> {
        match &config.auth_public_key_pem {
            Some(pem) => Self::from_pem(pem).map_err(|reason| ConfigError {
                var: "AUTH_PUBLIC_KEY".into(),
                value: pem.clone(),
                reason,
            }),
            None if config.development_keys => {
                tracing::warn!(
                    "AUTH_PUBLIC_KEY is unset and DEVELOPMENT_KEYS=true: verifying with the \
                     published DEVELOPMENT-ONLY key; anyone can mint tokens"
                );
                Ok(Self::development())
            }
            None => Err(missing_key("AUTH_PUBLIC_KEY", "the PEM of the Ed25519 public key")),
        }
    }

    /// From an Ed25519 public key in PEM.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let key = DecodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|e| format!("not an Ed25519 public key in PEM: {e}"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        Ok(Self {
            key: Arc::new(key),
            validation: Arc::new(validation),
            verified: moka::sync::Cache::builder().max_capacity(VERIFIED_CACHE).build(),
        })
    }

    /// The development key, for tests and local runs.
    pub fn development() -> Self {
        #[allow(clippy::expect_used)] // a constant that is checked by the tests
        Self::from_pem(DEV_PUBLIC_KEY).expect("development key parses")
    }

    /// Who a token was issued to and when it expires, if it is genuine and unexpired.
    pub fn verify(&self, token: &str) -> Result<Caller> {
        if let Some(caller) = self.verified.get(token) {
            // As `jsonwebtoken` judges `exp`: expired once now is past it plus the leeway.
            let deadline = caller.expires_at + Duration::from_secs(LEEWAY_SECS);
            if SystemTime::now() > deadline {
                self.verified.invalidate(token);
                return Err(INVALID);
            }
            return Ok(caller);
        }
        let caller = self.verify_signature(token)?;
        self.verified.insert(token.to_owned(), caller);
        Ok(caller)
    }

    fn verify_signature(&self, token: &str) -> Result<Caller> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|_| INVALID)?;
        let user = ObjectId::parse_str(&data.claims.sub).map_err(|_| INVALID)?;
        let exp = u64::try_from(data.claims.exp).map_err(|_| INVALID)?;
        let session = match &data.claims.sid {
            Some(sid) => Some(ObjectId::parse_str(sid).map_err(|_| INVALID)?),
            None => None,
        };
        Ok(Caller { user, expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(exp), session })
    }

    /// Verifies an `authorization` header value of the form `Bearer <token>`.
    pub fn verify_header(&self, value: &str) -> Result<Caller> {
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Error::Unauthenticated(
                "the authorization header must be `Bearer <access token>`",
            ))?;
        self.verify(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_forgeries_do_not() {
        let issuer = TokenIssuer::development(Duration::from_secs(60));
        let verifier = TokenVerifier::development();
        let user = ObjectId::new();
        let (token, expires_at) = issuer.issue(user).unwrap();
        let verified = verifier.verify(&token).unwrap();
        assert_eq!(verified.user, user);
        assert_eq!(
            verified.expires_at,
            SystemTime::UNIX_EPOCH
                + Duration::from_millis(expires_at.timestamp_millis().try_into().unwrap())
        );
        assert_eq!(verifier.verify_header(&format!("Bearer {token}")).unwrap().user, user);

        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(verifier.verify(&forged).is_err());
        assert!(verifier.verify_header(&token).is_err());
    }

    #[test]
    fn expired_tokens_fail() {
        let issuer = TokenIssuer::development(Duration::from_secs(60));
        let long_ago =
            bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 3_600_000);
        let (token, _) = issuer.issue_at(ObjectId::new(), None, long_ago).unwrap();
        assert!(TokenVerifier::development().verify(&token).is_err());
    }

    #[test]
    fn a_remembered_token_answers_as_verifying_again_would() {
        let issuer = TokenIssuer::development(Duration::from_secs(60));
        let verifier = TokenVerifier::development();
        let (token, _) = issuer.issue(ObjectId::new()).unwrap();
        let first = verifier.verify(&token).unwrap();
        // Remembered, also by clones (every interceptor holds one).
        assert_eq!(verifier.clone().verify(&token).unwrap(), first);
        assert_eq!(verifier.verified.get(&token), Some(first));
        // Once past its expiry (and the leeway), a remembered token is refused and
        // forgotten, as a fresh verification would refuse it.
        let expired = Caller {
            expires_at: SystemTime::now() - Duration::from_secs(LEEWAY_SECS + 1),
            ..first
        };
        verifier.verified.insert(token.clone(), expired);
        assert!(verifier.verify(&token).is_err());
        assert_eq!(verifier.verified.get(&token), None);
        // Within the leeway it is still accepted, as `jsonwebtoken` accepts it.
        let late = Caller {
            expires_at: SystemTime::now() - Duration::from_secs(LEEWAY_SECS - 5),
            ..first
        };
        verifier.verified.insert(token.clone(), late);
        assert_eq!(verifier.verify(&token).unwrap(), late);
        // Refusals are not remembered: a forgery costs a verification every time.
        let forged = format!("{token}x");
        assert!(verifier.verify(&forged).is_err());
        assert_eq!(verifier.verified.get(&forged), None);
    }
}
