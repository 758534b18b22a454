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
            "must be set to {what} (see the README's security section); only on a development \
             machine, DEVELOPMENT_KEYS=true uses the published development keys instead"
        ),
    }
}

/// DEVELOPMENT ONLY: the service credential used with `DEVELOPMENT_KEYS=true`.
pub const DEV_SERVICE_TOKEN: &str = "DEVELOPMENT-ONLY-service-token";

/// The credential services present to each other's internal RPCs (`x-service-token`):
/// `SERVICE_TOKEN`, or the development one when it is unset and `DEVELOPMENT_KEYS=true`.
pub fn service_token(config: &crate::config::CommonConfig) -> Result<String, ConfigError> {
    match &config.service_token {
        Some(token) => Ok(token.clone()),
        None if config.development_keys => Ok(DEV_SERVICE_TOKEN.to_owned()),
        None => Err(missing_key(
            "SERVICE_TOKEN",
            "a random secret shared by the services",
        )),
    }
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
            None => Err(missing_key(
                "AUTH_PUBLIC_KEY",
                "the PEM of the Ed25519 public key",
            )),
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
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CACHE)
                .build(),
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
        Ok(Caller {
            user,
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(exp),
            session,
        })
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
        assert_eq!(
            verifier
                .verify_header(&format!("Bearer {token}"))
                .unwrap()
                .user,
            user
        );

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
