//! Ended sessions, as every service learns them, so that an access token stops working
//! everywhere within seconds of its session's end (a logout, a revocation, a new
//! password, a deleted account), not when it expires.
//!
//! The user service broadcasts each ending ([`ENDED`], a `SessionsEnded`); every replica
//! of every service hears it on a queue of its own ([`crate::live`]) and refuses the
//! session's tokens from then on (its gate's `Revocations`). A replica also asks the user
//! service for the recent endings (`ListEndedSessions`) when it starts, whenever its
//! queue is bound again (it may have missed broadcasts meanwhile), and every
//! [`RESYNC`]: a broadcast lost between the user service and the broker reaches every
//! replica within that.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bson::oid::ObjectId;
use futures::future::BoxFuture;
use prost::Message;
use social_kit::{auth::Revocations, client::Peer};
use social_proto::{
    events::v1::SessionsEnded,
    user::v1::{ListEndedSessionsRequest, user_service_client::UserServiceClient},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{config::EventsConfig, live::Broadcaster};

/// The routing key of the broadcast.
pub const ENDED: &str = "user.sessions.ended";
/// How often a replica asks for the endings it may have missed.
pub const RESYNC: Duration = Duration::from_secs(60);

/// One ended session: when it ended (ms) and when its last token expires.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub session: ObjectId,
    pub ended_ms: i64,
    pub tokens_expire: SystemTime,
}

/// Where a page of endings starts: after `ended_ms`, or, with `after`, after that
/// session among those that ended at `ended_ms` (the last one of the previous page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub ended_ms: i64,
    pub after: Option<ObjectId>,
}

/// Where a replica reads the recent endings: a page of those after `since` (all the
/// recent ones when `None`), oldest first (by time, then session), and whether there
/// may be more.
pub trait Source: Send + Sync + 'static {
    fn ended_since(
        &self,
        since: Option<Cursor>,
    ) -> BoxFuture<'_, anyhow::Result<(Vec<Ended>, bool)>>;
}

/// The user service, asked over gRPC.
pub struct FromUserService(pub Peer);

impl Source for FromUserService {
    fn ended_since(
        &self,
        since: Option<Cursor>,
    ) -> BoxFuture<'_, anyhow::Result<(Vec<Ended>, bool)>> {
        Box::pin(async move {
            let peer = &self.0;
            let request = ListEndedSessionsRequest {
                since: since.map(|c| {
                    social_kit::time::to_timestamp(bson::DateTime::from_millis(c.ended_ms))
                }),
                after_session_id: since
                    .and_then(|c| c.after)
                    .map(|id| id.to_hex())
                    .unwrap_or_default(),
            };
            let page = social_kit::call!(peer, UserServiceClient.list_ended_sessions(request))
                .map_err(|status| anyhow::Error::new(peer.error(status)))?;
            let ended = page
                .sessions
                .into_iter()
                .filter_map(|s| {
                    let at =
                        |t: Option<prost_types::Timestamp>| t.map(|t| social_kit::time::millis(&t));
                    Some(Ended {
                        session: ObjectId::parse_str(&s.session_id).ok()?,
                        ended_ms: at(s.ended_at)?,
                        tokens_expire: SystemTime::UNIX_EPOCH
                            + Duration::from_millis(u64::try_from(at(s.tokens_expire_at)?).ok()?),
                    })
                })
                .collect();
            Ok((ended, page.more))
        })
    }
}

/// Tells every replica of every service that `sessions` ended and that their tokens
/// expire by `tokens_expire_ms`. Best effort, in the background, bounded: a replica that
/// misses it learns it from its next [`RESYNC`].
pub fn announce(broadcaster: &Broadcaster, sessions: &[ObjectId], tokens_expire_ms: i64) {
    if sessions.is_empty() {
        return;
    }
    let body = SessionsEnded {
        session_ids: sessions.iter().map(|s| s.to_hex()).collect(),
        tokens_expire_ms,
    }
    .encode_to_vec();
    let broadcaster = broadcaster.clone();
    tokio::spawn(async move {
        if let Err(e) = broadcaster.publish(ENDED, &body).await {
            tracing::warn!(error = %format!("{e:#}"), "could not broadcast ended sessions; replicas learn them within a minute");
        }
    });
}

/// Spawns in `background` the follower of ended sessions (see [`follow`]) of a service
/// whose gate is `gate`, asking the user service at `users`.
pub fn refuse_ended_sessions(
    background: &mut social_kit::serve::Background,
    events: &EventsConfig,
    service: &str,
    gate: &social_kit::serve::Gate,
    users: Peer,
) {
    let (events, revocations) = (events.clone(), gate.revocations());
    let name = format!("{service}-{}-sessions", ObjectId::new().to_hex());
    background.spawn(|stop| follow(events, name, revocations, FromUserService(users), stop));
}

/// Until `stop`: keeps `revocations` up to date with the sessions that end, from the
/// broadcast and from `source` (see the module docs). `name` names this replica's
/// connection to the broker.
pub async fn follow(
    config: EventsConfig,
    name: String,
    revocations: Revocations,
    source: impl Source,
    stop: CancellationToken,
) {
    let resync = Arc::new(Notify::new());
    let heard = {
        let revocations = revocations.clone();
        move |body: Vec<u8>| match SessionsEnded::decode(body.as_slice()) {
            Ok(ended) => {
                let expire = SystemTime::UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(ended.tokens_expire_ms).unwrap_or(0));
                for id in ended.session_ids {
                    if let Ok(id) = ObjectId::parse_str(&id) {
                        revocations.revoke(id, expire);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "undecodable ended sessions"),
        }
    };
    let bound = {
        let resync = resync.clone();
        move |live: bool| {
            if live {
                resync.notify_one();
            }
        }
    };
    let listening = crate::live::listen(config, name, ENDED, heard, bound, stop.clone());
    let asking = async {
        let mut since: Option<i64> = None;
        loop {
            match sync(&source, &revocations, since).await {
                Ok(last) => since = last.or(since),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not ask the user service for ended sessions; retrying")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = resync.notified() => {}
                () = tokio::time::sleep(RESYNC) => {}
            }
        }
    };
    tokio::join!(listening, asking);
}

/// Reads every ending after `since` into `revocations`; the last one's time. Starts a
/// little before `since`: an ending stored a moment later than another with an earlier
/// time is not skipped.
async fn sync(
    source: &impl Source,
    revocations: &Revocations,
    since: Option<i64>,
) -> anyhow::Result<Option<i64>> {
    let mut since = since.map(|ms| Cursor { ended_ms: ms - 5_000, after: None });
    let mut last = None;
    loop {
        let (page, more) = source.ended_since(since).await?;
        for e in &page {
            revocations.revoke(e.session, e.tokens_expire);
        }
        if let Some(e) = page.last() {
            last = Some(e.ended_ms);
            since = Some(Cursor { ended_ms: e.ended_ms, after: Some(e.session) });
        }
        if !more || page.is_empty() {
            return Ok(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Endings paged two at a time, as the user service pages them.
    struct TwoAPage(Vec<Ended>);

    impl Source for TwoAPage {
        fn ended_since(
            &self,
            since: Option<Cursor>,
        ) -> BoxFuture<'_, anyhow::Result<(Vec<Ended>, bool)>> {
            let after = |e: &Ended| match since {
                None => true,
                Some(Cursor { ended_ms, after: None }) => e.ended_ms > ended_ms,
                Some(Cursor { ended_ms, after: Some(id) }) => {
                    (e.ended_ms, e.session) > (ended_ms, id)
                }
            };
            let page: Vec<Ended> = self.0.iter().filter(|e| after(e)).take(2).copied().collect();
            let more = page.len() == 2;
            Box::pin(async move { Ok((page, more)) })
        }
    }

    #[tokio::test]
    async fn a_page_ending_inside_a_group_ended_together_skips_none_of_it() {
        let now = bson::DateTime::now().timestamp_millis();
        let expire = SystemTime::now() + Duration::from_secs(900);
        // Three sessions ended by one call (one time), then another.
        let mut ended: Vec<Ended> = [now, now, now, now + 1]
            .into_iter()
            .map(|ended_ms| Ended { session: ObjectId::new(), ended_ms, tokens_expire: expire })
            .collect();
        ended.sort_by_key(|e| (e.ended_ms, e.session));
        let revocations = Revocations::default();
        let last = sync(&TwoAPage(ended.clone()), &revocations, Some(now - 1)).await.unwrap();
        assert_eq!(last, Some(now + 1));
        for e in &ended {
            assert!(revocations.is_revoked(e.session), "{e:?} skipped");
        }
    }
}
