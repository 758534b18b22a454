//! NotificationService end to end: every service started in-process by testkit, real
//! RabbitMQ, real driver. Actions go through the other services' RPCs; notifications
//! are read through this one's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blocks;
mod deployment;
mod groups;
mod live;
mod notify;
mod reading;
mod streams;

use std::time::Duration;

use bson::oid::ObjectId;
use prost::Message;
use social_events::{
    Envelope, Payload, new_envelope,
    pb::{CommentCreated, CommentDeleted, PostLiked},
};
use social_proto::{
    notification::v1::{
        GetUnreadCountRequest, ListNotificationsRequest, MarkAllNotificationsReadRequest,
        MarkNotificationsReadRequest, Notification, NotificationType, StreamNotificationsRequest,
        notification_service_client::NotificationServiceClient,
    },
    post::v1::{GetPostRequest, Post},
};
use social_testkit::{
    Answer, Stack, authed, broker, eventually, token_expiring_in, token_for, violated_fields,
};
use tonic::{Code, Streaming, transport::Channel};

/// How long a test waits for something asynchronous (generous: a loaded 2-core CI
/// machine is slow, and a passing test never waits it out).
const WAIT: Duration = Duration::from_secs(30);

struct App {
    stack: Stack,
    notifications: NotificationServiceClient<Channel>,
}

impl App {
    async fn start() -> Self {
        let stack = Stack::start().await;
        Self { notifications: stack.notifications().await, stack }
    }

    async fn post(&self, token: &str, content: &str) -> Post {
        self.stack.post(token, content).await
    }

    async fn follow(&self, token: &str, followee: &str) {
        self.stack.follow(token, followee).await
    }

    async fn like(&self, token: &str, post: &str) {
        self.stack.like_post(token, post).await.unwrap();
    }

    async fn list(&self, token: &str) -> Vec<Notification> {
        self.notifications
            .clone()
            .list_notifications(authed(
                ListNotificationsRequest { page_size: 100, ..Default::default() },
                token,
            ))
            .await
            .answer()
            .notifications
    }

    /// Waits until `token`'s notifications number `n`; returns them.
    async fn wait_for(&self, token: &str, n: usize) -> Vec<Notification> {
        let got = eventually(WAIT, || async {
            let list = self.list(token).await;
            (list.len() >= n).then_some(list)
        })
        .await;
        let list = got.unwrap_or_default();
        assert_eq!(list.len(), n, "{list:#?}");
        list
    }

    /// Waits until the notification service's queue is empty.
    async fn drained(&self) {
        let config = &self.stack.events;
        let queue = config.queue("notification");
        let done = eventually(WAIT, || async {
            (broker::queue_depth(config, &queue).await == 0).then_some(())
        })
        .await;
        assert!(done.is_some());
    }

    async fn stream(
        &self,
        client: &mut NotificationServiceClient<Channel>,
        token: &str,
    ) -> Streaming<Notification> {
        open_stream(client, token).await
    }
}

/// Opens a stream, retrying while the replica does not hear the broadcasts yet (it
/// answers UNAVAILABLE until its listener is bound, just after start-up).
async fn open_stream(
    client: &mut NotificationServiceClient<Channel>,
    token: &str,
) -> Streaming<Notification> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client
            .stream_notifications(authed(StreamNotificationsRequest::default(), token))
            .await
        {
            Ok(stream) => return stream.into_inner(),
            Err(e) if e.code() == Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot open a stream: {e:?}"),
        }
    }
}

async fn publish(app: &App, routing_key: &str, event: &Envelope) {
    broker::publish_raw(&app.stack.events, routing_key, &event.encode_to_vec(), &event.event_id)
        .await;
}

fn kind(n: &Notification) -> NotificationType {
    NotificationType::try_from(n.r#type).unwrap()
}

async fn next(stream: &mut Streaming<Notification>, within: Duration) -> Option<Notification> {
    tokio::time::timeout(within, stream.message()).await.ok()?.ok()?
}
