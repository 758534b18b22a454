//! The live streams of this replica: who is listening, and pushing each new
//! notification to every stream of its recipient.
//!
//! Each stream has a small bounded buffer. Pushing never waits: a stream whose buffer
//! is full has fallen behind; it is dropped from the hub, gets what it had buffered,
//! then ends with `RESOURCE_EXHAUSTED` so that the client resyncs with
//! ListNotifications. A slow stream therefore never holds up storing or other streams.
//! Streams end cleanly when the service shuts down.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use bson::oid::ObjectId;
use futures::{Stream, StreamExt};
use social_proto::notification::v1::Notification;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

struct Listener {
    id: u64,
    tx: mpsc::Sender<Notification>,
    lagged: Arc<AtomicBool>,
}

/// Removes a stream from the hub when the stream is dropped.
struct Leave {
    hub: Hub,
    user: ObjectId,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.hub.remove(self.user, self.id);
    }
}

/// The streams of this replica. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    listeners: Arc<Mutex<HashMap<ObjectId, Vec<Listener>>>>,
    next_id: Arc<AtomicU64>,
    buffer: usize,
    shutdown: CancellationToken,
}

impl Hub {
    /// A hub whose streams buffer `buffer` notifications and end at `shutdown`.
    pub fn new(buffer: usize, shutdown: CancellationToken) -> Self {
        Self {
            listeners: Arc::default(),
            next_id: Arc::default(),
            buffer: buffer.max(1),
            shutdown,
        }
    }

    /// A new stream of `user`'s notifications.
    pub fn subscribe(
        &self,
        user: ObjectId,
    ) -> impl Stream<Item = Result<Notification, Status>> + Send + 'static {
        let (tx, rx) = mpsc::channel(self.buffer);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.entry(user).or_default().push(Listener {
                id,
                tx,
                lagged: lagged.clone(),
            });
        }
        let shutdown = self.shutdown.clone();
        let notifications = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok);
        // After the buffered ones: an error if it fell behind, nothing otherwise.
        let tail = futures::stream::once(async move { lagged.load(Ordering::Acquire) }).filter_map(|lagged| async move {
            lagged.then(|| {
                Status::resource_exhausted(
                    "this stream fell behind and was closed; resync with ListNotifications and reopen it",
                )
            })
            .map(Err)
        });
        let leave = Leave {
            hub: self.clone(),
            user,
            id,
        };
        notifications
            .chain(tail)
            .take_until(async move { shutdown.cancelled().await })
            // The guard lives as long as the stream.
            .map(move |item| {
                let _ = &leave;
                item
            })
    }

    fn remove(&self, user: ObjectId, id: u64) {
        if let Ok(mut listeners) = self.listeners.lock()
            && let Some(streams) = listeners.get_mut(&user)
        {
            streams.retain(|l| l.id != id);
            if streams.is_empty() {
                listeners.remove(&user);
            }
        }
    }

    /// Pushes `n` to every stream of its recipient, without waiting.
    pub fn push(&self, user: ObjectId, n: &Notification) {
        let Ok(mut listeners) = self.listeners.lock() else {
            return;
        };
        let Some(streams) = listeners.get_mut(&user) else {
            return;
        };
        streams.retain(|l| match l.tx.try_send(n.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(%user, stream = l.id, "a notification stream fell behind; closing it");
                l.lagged.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if streams.is_empty() {
            listeners.remove(&user);
        }
    }

    /// How many streams are open.
    #[cfg(test)]
    pub fn open_streams(&self) -> usize {
        self.listeners
            .lock()
            .map(|l| l.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(i: usize) -> Notification {
        Notification {
            id: i.to_string(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_full_stream_is_closed_with_an_error_and_others_go_on() {
        let hub = Hub::new(2, CancellationToken::new());
        let user = ObjectId::new();
        let slow = hub.subscribe(user);
        let mut fast = Box::pin(hub.subscribe(user));
        for i in 0..5 {
            hub.push(user, &note(i));
            assert_eq!(fast.next().await.unwrap().unwrap().id, i.to_string());
        }
        let got: Vec<_> = slow.collect().await;
        assert_eq!(got.len(), 3, "two buffered, then the error");
        assert!(got[0].is_ok() && got[1].is_ok());
        assert_eq!(
            got[2].as_ref().unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(hub.open_streams(), 1);
        drop(fast);
        assert_eq!(hub.open_streams(), 0, "a dropped stream leaves the hub");
    }

    #[tokio::test]
    async fn streams_end_at_shutdown() {
        let shutdown = CancellationToken::new();
        let hub = Hub::new(4, shutdown.clone());
        let stream = hub.subscribe(ObjectId::new());
        shutdown.cancel();
        assert_eq!(stream.collect::<Vec<_>>().await.len(), 0);
    }
}
