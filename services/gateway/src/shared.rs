//! What every gateway replica must see alike, kept in Redis (`REDIS_URL`): the browsers'
//! single-use stream tickets and the answers remembered for `Idempotency-Key`s.
//!
//! Nothing here is the only copy of anything: losing Redis loses open tickets (a browser
//! asks for another) and remembered answers (a retry after the loss runs again: the post
//! and engagement services still store a post or comment once per key, see
//! `crate::idempotency`). Keys are HMACs under the gateway's secret (`GATEWAY_TOKEN`),
//! and remembered answers are sealed (ChaCha20-Poly1305) under a key derived from it:
//! what Redis holds names no account's key and reveals no token, even to someone who can
//! read it.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, Mac};
use redis::{
    AsyncCommands, ExistenceCheck, SetExpiry, SetOptions,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use sha2::Sha256;
use tonic::Code;

use crate::error::{ApiError, ApiResult};

/// How long a stream ticket may wait for its stream.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// The longest wait for one Redis command (connecting included).
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// Redis, as the gateway uses it. Cheap to clone (one multiplexed connection that
/// reconnects by itself).
#[derive(Clone)]
pub struct Shared {
    redis: ConnectionManager,
    /// Every key starts with it (`REDIS_KEY_PREFIX`).
    prefix: String,
    /// Derives key names and sealing keys from the gateway's secret.
    secret: Hmac<Sha256>,
}

fn unavailable(e: &redis::RedisError) -> ApiError {
    tracing::warn!(error = %e, "Redis failed");
    ApiError::new(Code::Unavailable, "the gateway's shared store is unavailable; retry shortly")
}

impl Shared {
    /// Redis at `url`, connected on first use; names under `prefix`, derived from
    /// `secret`.
    pub fn new(url: &str, prefix: &str, secret: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(ANSWER_WITHIN))
            .set_response_timeout(Some(ANSWER_WITHIN))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        Ok(Self {
            redis: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.to_owned(),
            secret: Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .unwrap_or_else(|_| Hmac::<Sha256>::new(&Default::default())),
        })
    }

    /// HMAC-SHA256 under the secret of `parts`, each length-prefixed (no two lists
    /// of parts give the same input).
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.secret.clone();
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The Redis key of `kind` named by `parts`.
    fn key(&self, kind: &str, parts: &[&[u8]]) -> String {
        let mut all: Vec<&[u8]> = vec![kind.as_bytes()];
        all.extend_from_slice(parts);
        // 16 bytes name a key well enough.
        let name = hex::encode(&self.mac(&all)[..16]);
        format!("{}{kind}:{name}", self.prefix)
    }

    /// A new single-use ticket that stands for `token` for [`TICKET_TTL`]. Redis holds
    /// the token sealed under a key derived from the ticket, which it does not hold.
    pub async fn issue_ticket(&self, token: &str) -> ApiResult<String> {
        let ticket = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let sealed = BASE64.encode(self.seal(&[ticket.as_bytes()], b"ticket", token.as_bytes()));
        // 244 random bits: never taken.
        self.put("ticket", &[ticket.as_bytes()], &sealed, TICKET_TTL, true).await?;
        Ok(ticket)
    }

    /// The token `ticket` stands for, if it is known and unused; it is used from now on.
    pub async fn redeem_ticket(&self, ticket: &str) -> ApiResult<Option<String>> {
        let key = self.key("ticket", &[ticket.as_bytes()]);
        let sealed: Option<String> =
            self.redis.clone().get_del(key).await.map_err(|e| unavailable(&e))?;
        Ok(sealed
            .and_then(|s| BASE64.decode(s).ok())
            .and_then(|s| self.open(&[ticket.as_bytes()], b"ticket", &s))
            .and_then(|token| String::from_utf8(token).ok()))
    }

    /// Stores `value` at the key of `kind` named by `parts` for `ttl`, unless it exists
    /// (`only_new`) or only if it exists (otherwise); whether it did.
    pub async fn put(
        &self,
        kind: &str,
        parts: &[&[u8]],
        value: &str,
        ttl: Duration,
        only_new: bool,
    ) -> ApiResult<bool> {
        let check = if only_new { ExistenceCheck::NX } else { ExistenceCheck::XX };
        let options = SetOptions::default()
            .conditional_set(check)
            .with_expiration(SetExpiry::PX(ttl.as_millis().try_into().unwrap_or(u64::MAX)));
        let set: Option<String> = self
            .redis
            .clone()
            .set_options(self.key(kind, parts), value, options)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(set.is_some())
    }

    /// The value at the key of `kind` named by `parts`.
    pub async fn get(&self, kind: &str, parts: &[&[u8]]) -> ApiResult<Option<String>> {
        self.redis.clone().get(self.key(kind, parts)).await.map_err(|e| unavailable(&e))
    }

    /// Forgets the key of `kind` named by `parts`.
    pub async fn forget(&self, kind: &str, parts: &[&[u8]]) -> ApiResult<()> {
        let _: i64 =
            self.redis.clone().del(self.key(kind, parts)).await.map_err(|e| unavailable(&e))?;
        Ok(())
    }

    /// The sealing key for the record named by `parts`.
    fn sealing_key(&self, parts: &[&[u8]]) -> LessSafeKey {
        let mut all: Vec<&[u8]> = vec![b"seal"];
        all.extend_from_slice(parts);
        let key = self.mac(&all);
        let Ok(unbound) = UnboundKey::new(&aead::CHACHA20_POLY1305, &key) else {
            unreachable!("a ChaCha20-Poly1305 key is 32 bytes")
        };
        LessSafeKey::new(unbound)
    }

    /// `plain`, sealed under the key of `parts` with a random nonce (sent first); `aad`
    /// is what must come with it unchanged (it is not sealed, only checked).
    pub fn seal(&self, parts: &[&[u8]], aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let random = uuid::Uuid::new_v4().into_bytes();
        let mut nonce = [0; aead::NONCE_LEN];
        nonce.copy_from_slice(&random[..aead::NONCE_LEN]);
        let mut sealed = plain.to_vec();
        // Sealing fails only for inputs beyond 256 GiB.
        if self
            .sealing_key(parts)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .is_err()
        {
            return Vec::new();
        }
        [nonce.as_slice(), &sealed].concat()
    }

    /// What [`Self::seal`] sealed for `parts` with `aad`, if it was.
    pub fn open(&self, parts: &[&[u8]], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, sealed) = sealed.split_at_checked(aead::NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = sealed.to_vec();
        let plain =
            self.sealing_key(parts).open_in_place(nonce, Aad::from(aad), &mut buffer).ok()?;
        Some(plain.to_vec())
    }
}
