//! Operating the events: services started in any order on a fresh broker, and a queue
//! moved to another type while events flow. Nothing is lost either way.

use std::time::Duration;

use social_events::{EventsConfig, QueueType};
use social_proto::{
    notification::v1::{
        ListNotificationsRequest, notification_service_client::NotificationServiceClient,
    },
    user::v1::{RegisterRequest, user_service_client::UserServiceClient},
};
use social_testkit::{
    Answer, DropDatabase, authed, broker, eventually, start_graph, start_notification, start_user,
    token_for, unique_name,
};

use crate::{App, WAIT};

#[tokio::test]
async fn a_notification_service_started_after_the_others_misses_no_event() {
    // A fresh exchange and database: nothing has declared anything yet.
    let database = unique_name("late");
    let _drop = DropDatabase(database.clone());
    let events = EventsConfig::for_tests(&unique_name("t"));
    let user = start_user(&database, &events).await;
    let graph =
        start_graph(&database, &events, &format!("http://{}", user.addr), Duration::from_secs(2))
            .await;
    let mut users = UserServiceClient::new(user.channel().await);
    let mut register = async |name: &str| {
        let r = users
            .register(RegisterRequest {
                username: name.into(),
                email: format!("{name}@example.com"),
                password: "correct horse battery".into(),
                full_name: String::new(),
                device: String::new(),
            })
            .await
            .answer();
        (r.user.unwrap().id, r.access_token)
    };
    let (_, alice) = register("alice").await;
    let (bob_id, bob) = register("bob").await;
    social_proto::graph::v1::social_graph_service_client::SocialGraphServiceClient::new(
        graph.channel().await,
    )
    .follow(authed(social_proto::graph::v1::FollowRequest { followee_id: bob_id }, &alice))
    .await
    .unwrap();
    // The broker confirmed the event (it left the outbox) before the notification
    // service ever ran.
    let db = mongodb::Client::with_uri_str(social_testkit::mongodb_uri())
        .await
        .unwrap()
        .database(&database);
    let follows = db.collection::<bson::Document>("followers");
    let published = eventually(WAIT, || async {
        let pending =
            follows.count_documents(bson::doc! { "outbox_pending": { "$gt": 0 } }).await.unwrap();
        (pending == 0).then_some(())
    })
    .await;
    assert!(published.is_some());

    let notification = start_notification(&database, &events, user.addr, true, WAIT).await;
    let client = NotificationServiceClient::new(notification.channel().await);
    let arrived = eventually(WAIT, || async {
        let list = client
            .clone()
            .list_notifications(authed(ListNotificationsRequest::default(), &bob))
            .await
            .answer()
            .notifications;
        (list.len() == 1).then_some(())
    })
    .await;
    assert!(arrived.is_some(), "the FOLLOW notification never arrived");
}

#[tokio::test]
async fn a_queue_moved_to_another_type_by_the_documented_procedure_loses_nothing() {
    let app = App::start().await;
    let (_, bob) = app.stack.register("bob").await;
    let posts: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(app.post(&bob, &format!("post {i}")).await.id);
        }
        ids
    };
    let classic = app.stack.events.clone();
    let queue = classic.queue("notification");
    assert!(broker::declared_as(&classic, "notification").await);

    // 1. The service's consumers stop (scaled to 0); events pile up in its queue.
    app.stack.notification.shutdown.cancel();
    let stopped = eventually(WAIT, || async {
        (broker::consumer_count(&classic, &queue).await == 0).then_some(())
    })
    .await;
    assert!(stopped.is_some());
    let likes = |from: usize, to: usize| {
        let (engagement, posts) = (app.stack.engagement(), posts.clone());
        async move {
            let mut engagement = engagement.await;
            for i in from..to {
                let like = social_proto::engagement::v1::LikePostRequest {
                    post_id: posts[i % posts.len()].clone(),
                };
                engagement
                    .like_post(authed(like, &token_for(bson::oid::ObjectId::new())))
                    .await
                    .unwrap();
            }
        }
    };
    likes(0, 20).await;

    // 2. The queue moves to the new type while likes keep coming.
    let mut quorum = classic.clone();
    quorum.queue_type = QueueType::Quorum;
    let (moved, ()) =
        tokio::join!(social_events::admin::migrate_queue(&quorum, "notification"), likes(20, 40),);
    moved.unwrap();
    assert!(broker::declared_as(&quorum, "notification").await);
    assert!(!broker::declared_as(&classic, "notification").await);

    // 3. The service starts again on the new settings: every like notifies bob once.
    let notification =
        start_notification(&app.stack.database, &quorum, app.stack.user.addr, true, WAIT).await;
    let client = NotificationServiceClient::new(notification.channel().await);
    let count = || {
        let mut client = client.clone();
        let bob = bob.clone();
        async move {
            client
                .list_notifications(authed(
                    ListNotificationsRequest { page_size: 100, ..Default::default() },
                    &bob,
                ))
                .await
                .answer()
                .notifications
                .len()
        }
    };
    let all =
        eventually(Duration::from_secs(30), || async { (count().await == 40).then_some(()) }).await;
    assert!(all.is_some(), "{} of 40 notifications", count().await);
}

#[tokio::test]
async fn purge_queues_empties_the_queues_and_only_on_a_development_machine() {
    let config = EventsConfig::for_tests(&social_testkit::unique_name("t"));
    social_events::admin::declare_topology(&config).await.unwrap();
    let queue = config.queue("notification");
    // Bound to the notification service's queue and the post service's home
    // timelines'.
    broker::publish_raw(&config, "post.post.created", b"left over", "m1").await;
    let held = eventually(WAIT, || async {
        (broker::queue_depth(&config, &queue).await == 1).then_some(())
    })
    .await;
    assert!(held.is_some(), "the message reached the queue");

    // A system that serves: refused, and nothing is dropped.
    let refused = social_events::admin::purge_queues(&config, false).await;
    assert!(refused.is_err());
    assert_eq!(broker::queue_depth(&config, &queue).await, 1);

    let purged = social_events::admin::purge_queues(&config, true).await.unwrap();
    assert_eq!(purged, 2);
    assert_eq!(broker::queue_depth(&config, &queue).await, 0);
}
