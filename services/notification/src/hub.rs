//! The live streams of this replica: who is listening, and pushing each new
//! notification (or removal) to every stream of its recipient.
//!
//! A stream either delivers every notification broadcast while it is open, or ends with
//! an error so that the client resyncs (docs/events.md, "Live notifications"):
//! - streams are accepted only while this replica hears the broadcasts (its listener
//!   queue is bound); when the listener loses its queue, every open stream ends with
//!   `UNAVAILABLE`;
//! - each stream has a small bounded buffer, and pushing never waits: a stream whose
//!   buffer is full has fallen behind; it gets what it had buffered, then ends with
//!   `RESOURCE_EXHAUSTED`. A slow stream never holds up storing or other streams.
//!
//! When the service shuts down, each stream sends what it holds, then ends with
//! `UNAVAILABLE` (reopen it, at another replica: a resume picks up from there), so that
//! a client can tell a replica going away from a stream that is complete.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
};

use bson::oid::ObjectId;
use futures::{Stream, StreamExt};
use prost::Message;
use social_proto::notification::v1::{LiveBatch, Notification};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Why a stream was ended by the hub (kept in `Listener::ended`).
const OPEN: u8 = 0;
const LAGGED: u8 = 1;
const FEED_LOST: u8 = 2;
const ACCOUNT_DELETED: u8 = 3;

struct Listener {
    id: u64,
    tx: mpsc::Sender<Notification>,
    ended: Arc<AtomicU8>,
    /// Whether it asked for group updates.
    groups: bool,
}

/// Removes a stream from the hub when the stream is dropped.
struct Leave {
    hub: Hub,
    user: ObjectId,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        social_kit::metrics::streams_open(-1);
        self.hub.remove(self.user, self.id);
    }
}

#[derive(Default)]
struct State {
    /// Whether this replica hears the broadcasts (its listener queue is bound).
    live: bool,
    listeners: HashMap<ObjectId, Vec<Listener>>,
}

/// The streams of this replica. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    state: Arc<Mutex<State>>,
    next_id: Arc<AtomicU64>,
    buffer: usize,
    shutdown: CancellationToken,
}

impl Hub {
    /// Pushes what another replica broadcast (a [`LiveBatch`]): sessions that ended end
    /// their streams; notifications and groups go to their recipients' streams here.
    pub fn hear(&self, body: &[u8]) {
        let batch = match LiveBatch::decode(body) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable broadcast");
                return;
            }
        };
        for user in &batch.ended_users {
            if let Ok(user) = ObjectId::parse_str(user) {
                self.end_user(user);
            }
        }
        for (user, n) in by_recipient(batch.notifications) {
            self.push(user, &n);
        }
        for g in batch.groups {
            match ObjectId::parse_str(&g.user_id) {
                Ok(user) => self.push_group(user, g),
                Err(_) => tracing::warn!("broadcast group without a valid recipient"),
            }
        }
    }

    /// A hub whose streams buffer `buffer` notifications and end at `shutdown`. It
    /// accepts streams once [`Hub::set_live`] says the broadcasts are heard.
    pub fn new(buffer: usize, shutdown: CancellationToken) -> Self {
        Self { state: Arc::default(), next_id: Arc::default(), buffer: buffer.max(1), shutdown }
    }

    /// Whether this replica hears the broadcasts. When it stops hearing them, every open
    /// stream ends with `UNAVAILABLE` (it would miss what is broadcast meanwhile).
    pub fn set_live(&self, live: bool) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.live = live;
        if !live {
            let ended = state.listeners.values().flatten().count();
            for listener in state.listeners.values().flatten() {
                listener.ended.store(FEED_LOST, Ordering::Release);
            }
            // Dropping the senders ends the streams after what they buffered.
            state.listeners.clear();
            if ended > 0 {
                tracing::warn!(
                    streams = ended,
                    "lost the live broadcasts; ended every open stream"
                );
            }
        }
    }

    /// A new stream of `user`'s notifications; `UNAVAILABLE` while this replica does
    /// not hear the broadcasts.
    pub fn subscribe(
        &self,
        user: ObjectId,
        groups: bool,
    ) -> Result<impl Stream<Item = Result<Notification, Status>> + Send + 'static, Status> {
        let (tx, rx) = mpsc::channel(self.buffer);
        let ended = Arc::new(AtomicU8::new(OPEN));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = self.state.lock().map_err(|_| Status::internal("internal error"))?;
            if !state.live {
                return Err(Status::unavailable(
                    "this replica is not receiving live notifications right now; retry shortly",
                ));
            }
            state.listeners.entry(user).or_default().push(Listener {
                id,
                tx,
                ended: ended.clone(),
                groups,
            });
        }
        // What is buffered first; at shutdown, once it is sent, the error that says so.
        let notifications =
            futures::stream::unfold(Some((rx, self.shutdown.clone())), |open| async move {
                let (mut rx, shutdown) = open?;
                tokio::select! {
                    biased;
                    n = rx.recv() => n.map(|n| (Ok(n), Some((rx, shutdown)))),
                    () = shutdown.cancelled() => Some((
                        Err(Status::unavailable(
                            "this replica is stopping; reopen the stream to resume it",
                        )),
                        None,
                    )),
                }
            });
        // After the buffered ones: an error if the hub ended it, nothing otherwise.
        let tail = futures::stream::once(async move { ended.load(Ordering::Acquire) }).filter_map(
            |ended| async move {
                match ended {
                    LAGGED => Some(Err(Status::resource_exhausted(
                        "this stream fell behind and was closed; resync with ListNotifications \
                         and reopen it",
                    ))),
                    FEED_LOST => Some(Err(Status::unavailable(
                        "this replica lost its live feed; reopen the stream and resync with \
                         ListNotifications",
                    ))),
                    ACCOUNT_DELETED => {
                        Some(Err(Status::unauthenticated("this account was deleted")))
                    }
                    _ => None,
                }
            },
        );
        social_kit::metrics::streams_open(1);
        let leave = Leave { hub: self.clone(), user, id };
        Ok(notifications
            .chain(tail)
            // The guard lives as long as the stream.
            .map(move |item| {
                let _ = &leave;
                item
            }))
    }

    fn remove(&self, user: ObjectId, id: u64) {
        if let Ok(mut state) = self.state.lock()
            && let Some(streams) = state.listeners.get_mut(&user)
        {
            streams.retain(|l| l.id != id);
            if streams.is_empty() {
                state.listeners.remove(&user);
            }
        }
    }

    /// Ends every stream of `user` (their account was deleted) with `UNAUTHENTICATED`.
    pub fn end_user(&self, user: ObjectId) {
        if let Ok(mut state) = self.state.lock()
            && let Some(streams) = state.listeners.remove(&user)
        {
            for listener in streams {
                listener.ended.store(ACCOUNT_DELETED, Ordering::Release);
            }
        }
    }

    /// Pushes `n` to every stream of its recipient, without waiting.
    pub fn push(&self, user: ObjectId, n: &Notification) {
        self.push_to(user, n, false);
    }

    /// Pushes a group update (a message with only `group` set) to the streams of its
    /// recipient that asked for them.
    pub fn push_group(
        &self,
        user: ObjectId,
        group: social_proto::notification::v1::NotificationGroup,
    ) {
        let update = Notification {
            user_id: group.user_id.clone(),
            group: Some(group),
            ..Default::default()
        };
        self.push_to(user, &update, true);
    }

    fn push_to(&self, user: ObjectId, n: &Notification, groups_only: bool) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let Some(streams) = state.listeners.get_mut(&user) else {
            return;
        };
        streams.retain(|l| {
            if groups_only && !l.groups {
                return true; // a group update for a stream that did not ask for them
            }
            match l.tx.try_send(n.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::info!(%user, stream = l.id, "a notification stream fell behind; closing it");
                    l.ended.store(LAGGED, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if streams.is_empty() {
            state.listeners.remove(&user);
        }
    }

    /// How many streams are open.
    #[cfg(test)]
    pub fn open_streams(&self) -> usize {
        self.state.lock().map(|s| s.listeners.values().map(Vec::len).sum()).unwrap_or(0)
    }
}

/// A broadcast's notifications as what each recipient's streams are pushed: the new
/// ones one by one, and a recipient's removals in one message (a deleted post's
/// hundreds would overflow any stream's buffer one by one); one removal alone as it is.
pub fn by_recipient(notifications: Vec<Notification>) -> Vec<(ObjectId, Notification)> {
    let mut pushes = Vec::new();
    let mut removals: HashMap<ObjectId, Vec<Notification>> = HashMap::new();
    for n in notifications {
        let Ok(user) = ObjectId::parse_str(&n.user_id) else {
            tracing::warn!("broadcast notification without a valid recipient");
            continue;
        };
        if n.removed {
            removals.entry(user).or_default().push(n);
        } else {
            pushes.push((user, n));
        }
    }
    for (user, mut removed) in removals {
        if removed.len() == 1
            && let Some(one) = removed.pop()
        {
            pushes.push((user, one));
            continue;
        }
        pushes.push((
            user,
            Notification { user_id: user.to_hex(), removals: removed, ..Default::default() },
        ));
    }
    pushes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(i: usize) -> Notification {
        Notification { id: i.to_string(), ..Default::default() }
    }

    fn live_hub(buffer: usize, shutdown: CancellationToken) -> Hub {
        let hub = Hub::new(buffer, shutdown);
        hub.set_live(true);
        hub
    }

    #[tokio::test]
    async fn a_full_stream_is_closed_with_an_error_and_others_go_on() {
        let hub = live_hub(2, CancellationToken::new());
        let user = ObjectId::new();
        let slow = hub.subscribe(user, false).unwrap();
        let mut fast = Box::pin(hub.subscribe(user, false).unwrap());
        for i in 0..5 {
            hub.push(user, &note(i));
            assert_eq!(fast.next().await.unwrap().unwrap().id, i.to_string());
        }
        let got: Vec<_> = slow.collect().await;
        assert_eq!(got.len(), 3, "two buffered, then the error");
        assert!(got[0].is_ok() && got[1].is_ok());
        assert_eq!(got[2].as_ref().unwrap_err().code(), tonic::Code::ResourceExhausted);
        assert_eq!(hub.open_streams(), 1);
        drop(fast);
        assert_eq!(hub.open_streams(), 0, "a dropped stream leaves the hub");
    }

    #[test]
    fn a_recipients_removals_go_in_one_message_and_a_single_one_as_it_is() {
        let (alice, bob) = (ObjectId::new(), ObjectId::new());
        let removal = |user: ObjectId, i: usize| Notification {
            id: i.to_string(),
            user_id: user.to_hex(),
            removed: true,
            ..Default::default()
        };
        let mut batch: Vec<_> = (0..500).map(|i| removal(alice, i)).collect();
        batch.push(removal(bob, 500));
        batch.push(Notification { user_id: bob.to_hex(), ..note(501) });
        let pushes = by_recipient(batch);
        assert_eq!(pushes.len(), 3, "alice's 500 in one, bob's one, bob's new one");
        let alices = pushes.iter().find(|(u, _)| *u == alice).unwrap();
        assert_eq!(alices.1.removals.len(), 500);
        assert!(!alices.1.removed && alices.1.id.is_empty());
        let bobs: Vec<_> = pushes.iter().filter(|(u, _)| *u == bob).collect();
        assert!(bobs.iter().any(|(_, n)| n.removed && n.id == "500"));
        assert!(bobs.iter().any(|(_, n)| !n.removed && n.id == "501"));
    }

    #[tokio::test]
    async fn at_shutdown_a_stream_sends_what_it_holds_then_ends_unavailable() {
        let shutdown = CancellationToken::new();
        let hub = live_hub(4, shutdown.clone());
        let user = ObjectId::new();
        let stream = hub.subscribe(user, false).unwrap();
        hub.push(user, &note(1));
        hub.push(user, &note(2));
        shutdown.cancel();
        let got: Vec<_> = tokio::time::timeout(std::time::Duration::from_secs(5), stream.collect())
            .await
            .expect("the stream ended at shutdown");
        assert_eq!(got.len(), 3, "both held, then the error: {got:?}");
        assert_eq!(got[1].as_ref().unwrap().id, "2");
        assert_eq!(got[2].as_ref().unwrap_err().code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn streams_need_the_feed_and_end_when_it_is_lost() {
        let hub = Hub::new(4, CancellationToken::new());
        let user = ObjectId::new();
        let refused = hub.subscribe(user, false).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        hub.set_live(true);
        let stream = hub.subscribe(user, false).unwrap();
        hub.push(user, &note(1));
        hub.set_live(false);
        let got: Vec<_> = stream.collect().await;
        assert_eq!(got.len(), 2, "what was pushed, then the error");
        assert_eq!(got[1].as_ref().unwrap_err().code(), tonic::Code::Unavailable);
        assert_eq!(hub.open_streams(), 0);
    }
}
