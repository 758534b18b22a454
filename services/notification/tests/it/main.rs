//! NotificationService end to end: every service started in-process by testkit, real
//! RabbitMQ, real driver. Actions go through the other services' RPCs; notifications
//! are read through this one's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blocks;
mod deployment;
mod groups;
mod live;
mod streams;

use std::time::Duration;

use bson::oid::ObjectId;
use prost::Message;
use social_events::{
    Envelope, Payload, new_envelope,
    pb::{CommentCreated, CommentDeleted, PostLiked},
};
use social_proto::{
    engagement::v1::{CreateCommentRequest, UnlikePostRequest},
    graph::v1::UnfollowRequest,
    notification::v1::{
        GetUnreadCountRequest, ListNotificationsRequest, MarkAllNotificationsReadRequest,
        MarkNotificationsReadRequest, Notification, NotificationType, StreamNotificationsRequest,
        notification_service_client::NotificationServiceClient,
    },
    post::v1::{DeletePostRequest, GetPostRequest, Post},
};
use social_testkit::{
    Stack, authed, broker, eventually, token_expiring_in, token_for, violated_fields,
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
        Self {
            notifications: stack.notifications().await,
            stack,
        }
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
                ListNotificationsRequest {
                    page_size: 100,
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
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
    broker::publish_raw(
        &app.stack.events,
        routing_key,
        &event.encode_to_vec(),
        &event.event_id,
    )
    .await;
}

fn kind(n: &Notification) -> NotificationType {
    NotificationType::try_from(n.r#type).unwrap()
}

async fn next(stream: &mut Streaming<Notification>, within: Duration) -> Option<Notification> {
    tokio::time::timeout(within, stream.message())
        .await
        .ok()?
        .ok()?
}

#[tokio::test]
async fn a_follow_notifies_the_followee_once() {
    let app = App::start().await;
    let (alice, alice_token) = app.stack.register("alice").await;
    let (bob, bob_token) = app.stack.register("bob").await;
    app.follow(&alice_token, &bob).await;
    let got = app.wait_for(&bob_token, 1).await;
    assert_eq!(kind(&got[0]), NotificationType::Follow);
    assert_eq!(got[0].source_user_id, alice);
    assert_eq!(got[0].user_id, bob);
    assert!(!got[0].is_read);

    // Unfollow and follow again: still one.
    let mut graph = app.stack.graph().await;
    graph
        .unfollow(authed(
            UnfollowRequest {
                followee_id: bob.clone(),
            },
            &alice_token,
        ))
        .await
        .unwrap();
    app.follow(&alice_token, &bob).await;
    // The unfollow took the first one away; the second follow's is the one left, however
    // the three events interleave.
    let one = eventually(WAIT, || async {
        let got = app.list(&bob_token).await;
        (got.len() == 1).then_some(got)
    })
    .await;
    assert!(one.is_some(), "never exactly one");
    app.drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.list(&bob_token).await.len(), 1);
    assert!(app.list(&alice_token).await.is_empty());
}

#[tokio::test]
async fn a_like_notifies_the_author_once_and_moves_the_counter_and_a_self_like_nothing() {
    let app = App::start().await;
    let (_, bob) = app.stack.register("bob").await;
    let (alice_id, alice) = app.stack.register("alice").await;
    let post = app.post(&bob, "like me").await;
    app.like(&bob, &post.id).await; // self-like
    app.like(&alice, &post.id).await;
    let mut engagement = app.stack.engagement().await;
    engagement
        .unlike_post(authed(
            UnlikePostRequest {
                post_id: post.id.clone(),
            },
            &alice,
        ))
        .await
        .unwrap();
    app.like(&alice, &post.id).await;

    let got = app.wait_for(&bob, 1).await;
    assert_eq!(kind(&got[0]), NotificationType::PostLike);
    assert_eq!(got[0].source_user_id, alice_id);
    assert_eq!(got[0].post_id.as_deref(), Some(post.id.as_str()));
    let counted = eventually(WAIT, || async {
        let p = app
            .stack
            .posts()
            .await
            .get_post(GetPostRequest {
                id: post.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        (p.likes_count == 2).then_some(())
    })
    .await;
    assert!(counted.is_some(), "likes_count never reached 2");
    // Like, unlike, like: the last like's notification, however the events interleave.
    let one = eventually(WAIT, || async {
        let got = app.list(&bob).await;
        (got.len() == 1).then_some(got)
    })
    .await;
    assert!(one.is_some(), "never exactly one");
    app.drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.list(&bob).await.len(), 1);
}

#[tokio::test]
async fn a_comment_notifies_the_author_and_each_mentioned_user() {
    let app = App::start().await;
    let (_, bob) = app.stack.register("bob").await;
    let (alice_id, alice) = app.stack.register("alice").await;
    let (carol_id, carol) = app.stack.register("carol").await;
    let (dave_id, dave) = app.stack.register("dave").await;
    let post = app.post(&bob, "what do you think?").await;
    let comment = app
        .stack
        .engagement()
        .await
        .create_comment(authed(
            CreateCommentRequest {
                post_id: post.id.clone(),
                content: "@carol and @DAVE, look! (cc @nobody_here @alice @carol)".into(),
                media: vec![],
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();

    let to_bob = app.wait_for(&bob, 1).await;
    assert_eq!(kind(&to_bob[0]), NotificationType::PostComment);
    assert_eq!(to_bob[0].comment_id.as_deref(), Some(comment.id.as_str()));
    for (token, id) in [(&carol, &carol_id), (&dave, &dave_id)] {
        let got = app.wait_for(token, 1).await;
        assert_eq!(kind(&got[0]), NotificationType::Mention);
        assert_eq!(&got[0].user_id, id);
        assert_eq!(got[0].source_user_id, alice_id);
        assert_eq!(got[0].post_id.as_deref(), Some(post.id.as_str()));
    }
    app.drained().await;
    assert!(
        app.list(&alice).await.is_empty(),
        "no notification of one's own mention"
    );

    // A post's mentions notify too.
    let post = app.post(&carol, "thanks @dave").await;
    let got = app.wait_for(&dave, 2).await;
    assert_eq!(kind(&got[0]), NotificationType::Mention);
    assert_eq!(got[0].post_id.as_deref(), Some(post.id.as_str()));
    assert_eq!(got[0].comment_id, None);
}

#[tokio::test]
async fn a_redelivered_event_stores_no_duplicate() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let post = app.post(&bob, "p").await;
    let liker = ObjectId::new();
    let event = new_envelope(
        liker,
        Payload::PostLiked(PostLiked {
            post_id: post.id.clone(),
            post_author_id: bob_id,
            user_id: liker.to_hex(),
        }),
    );
    for _ in 0..3 {
        broker::publish_raw(
            &app.stack.events,
            "engagement.post.liked",
            &event.encode_to_vec(),
            &event.event_id,
        )
        .await;
    }
    app.wait_for(&bob, 1).await;
    app.drained().await;
    assert_eq!(app.list(&bob).await.len(), 1);
}

#[tokio::test]
async fn lists_counts_and_read_state_are_the_callers_own() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let (carol_id, carol) = app.stack.register("carol").await;
    let post = app.post(&bob, "p").await;
    for _ in 0..5 {
        app.follow(&token_for(ObjectId::new()), &bob_id).await;
    }
    for _ in 0..3 {
        app.like(&token_for(ObjectId::new()), &post.id).await;
    }
    app.follow(&bob, &carol_id).await;
    let all = app.wait_for(&bob, 8).await;
    app.wait_for(&carol, 1).await;
    // Newest first.
    let times: Vec<_> = all.iter().map(|n| n.created_at.unwrap()).collect();
    assert!(
        times
            .windows(2)
            .all(|w| (w[0].seconds, w[0].nanos) >= (w[1].seconds, w[1].nanos))
    );

    let mut n = app.notifications.clone();
    let counter = n.clone();
    let unread = |token: &str| {
        let mut n = counter.clone();
        let token = token.to_owned();
        async move {
            n.get_unread_count(authed(GetUnreadCountRequest {}, &token))
                .await
                .unwrap()
                .into_inner()
                .count
        }
    };
    assert_eq!(unread(&bob).await, 8);

    let likes = n
        .list_notifications(authed(
            ListNotificationsRequest {
                types: vec![NotificationType::PostLike as i32],
                ..Default::default()
            },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(likes.len(), 3);

    // Marking: carol's id among bob's changes nothing of carol's.
    let carols = app.list(&carol).await;
    let ids = vec![all[0].id.clone(), all[1].id.clone(), carols[0].id.clone()];
    let changed = n
        .mark_notifications_read(authed(
            MarkNotificationsReadRequest { ids: ids.clone() },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner()
        .updated_count;
    assert_eq!(changed, 2);
    let again = n
        .mark_notifications_read(authed(MarkNotificationsReadRequest { ids }, &bob))
        .await
        .unwrap()
        .into_inner()
        .updated_count;
    assert_eq!(again, 0);
    assert_eq!(unread(&bob).await, 6);
    assert_eq!(unread(&carol).await, 1);

    // Unread only, in pages of four, stable.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = n
            .list_notifications(authed(
                ListNotificationsRequest {
                    page_size: 4,
                    page_token: token.clone(),
                    unread_only: true,
                    types: vec![],
                },
                &bob,
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.notifications.into_iter().map(|x| x.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<_> = all[2..].iter().map(|x| x.id.clone()).collect();
    assert_eq!(seen, expected);

    let all_read = n
        .mark_all_notifications_read(authed(MarkAllNotificationsReadRequest {}, &bob))
        .await
        .unwrap()
        .into_inner()
        .updated_count;
    assert_eq!(all_read, 6);
    assert_eq!(unread(&bob).await, 0);
    assert!(app.list(&bob).await.iter().all(|x| x.is_read));

    // Errors.
    let err = n
        .get_unread_count(GetUnreadCountRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = n
        .list_notifications(authed(
            ListNotificationsRequest {
                types: vec![0, 42],
                ..Default::default()
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["types[0]", "types[1]"]);
    let err = n
        .mark_notifications_read(authed(MarkNotificationsReadRequest { ids: vec![] }, &bob))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["ids"]);
    // A page token from one filter does not fit another.
    let first = n
        .list_notifications(authed(
            ListNotificationsRequest {
                page_size: 2,
                ..Default::default()
            },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner();
    let err = n
        .list_notifications(authed(
            ListNotificationsRequest {
                page_size: 2,
                page_token: first.next_page_token,
                unread_only: true,
                types: vec![],
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
}

#[tokio::test]
async fn deleting_a_post_removes_its_notifications() {
    let app = App::start().await;
    let (_, bob) = app.stack.register("bob").await;
    let post = app.post(&bob, "short-lived").await;
    app.like(&token_for(ObjectId::new()), &post.id).await;
    app.wait_for(&bob, 1).await;
    app.stack
        .posts()
        .await
        .delete_post(authed(
            DeletePostRequest {
                id: post.id.clone(),
            },
            &bob,
        ))
        .await
        .unwrap();
    let gone = eventually(WAIT, || async {
        app.list(&bob).await.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some());
}

#[tokio::test]
async fn an_event_about_a_deleted_comment_notifies_nobody() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let (_, carol) = app.stack.register("carol").await;
    let post = app.post(&bob, "p").await;
    let commenter = ObjectId::new();
    let comment = |id: &str| CommentCreated {
        comment_id: id.into(),
        post_id: post.id.clone(),
        post_author_id: bob_id.clone(),
        author_id: commenter.to_hex(),
        content: "hi @carol".into(),
    };
    let (gone, kept) = (ObjectId::new().to_hex(), ObjectId::new().to_hex());
    // The deletion is handled first (a redelivery, a retry, or a slow handler of the
    // creation): the creation must not bring the notifications back.
    let deleted = CommentDeleted {
        comment_id: gone.clone(),
        post_id: post.id.clone(),
        post_author_id: bob_id.clone(),
        author_id: commenter.to_hex(),
    };
    publish(
        &app,
        "engagement.comment.deleted",
        &new_envelope(commenter, Payload::CommentDeleted(deleted)),
    )
    .await;
    // Handled: its tombstone is stored (the store's own collection, read directly).
    let removed = mongodb::Client::with_uri_str(social_testkit::mongodb_uri())
        .await
        .unwrap()
        .database(&app.stack.database)
        .collection::<bson::Document>("removed_targets");
    let key = format!("comment:{gone}");
    let handled = eventually(WAIT, || async {
        removed
            .find_one(bson::doc! { "_id": &key })
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
    assert!(handled.is_some(), "the deletion was never handled");
    let created = |id: &str| new_envelope(commenter, Payload::CommentCreated(comment(id)));
    publish(&app, "engagement.comment.created", &created(&gone)).await;
    publish(&app, "engagement.comment.created", &created(&kept)).await;

    // The kept comment's notifications arrive; the deleted one's never stay. (Its
    // handler stores, then checks the tombstone and takes them back: a list read in
    // between shows them for that moment, so the lists are judged once all is handled.)
    for token in [&bob, &carol] {
        let arrived = eventually(WAIT, || async {
            let list = app.list(token).await;
            list.iter()
                .any(|n| n.comment_id.as_deref() == Some(kept.as_str()))
                .then_some(())
        })
        .await;
        assert!(
            arrived.is_some(),
            "the kept comment's notification never arrived"
        );
    }
    app.drained().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for token in [&bob, &carol] {
        let list = app.list(token).await;
        assert_eq!(list.len(), 1, "{list:#?}");
        assert_eq!(list[0].comment_id.as_deref(), Some(kept.as_str()));
    }
}
