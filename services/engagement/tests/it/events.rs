//! Events and counters: storms of concurrent likes, redeliveries, a broker outage, a
//! poison message, a dependency outage, and the cascade of a deleted post.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use bson::oid::ObjectId;
use futures::FutureExt;
use prost::Message;
use social_events::{
    EventsConfig, Payload,
    consumer::Handler,
    new_envelope,
    pb::{PostDeleted, PostLiked},
    topology::QueueSpec,
};
use social_proto::{
    engagement::v1::{DeleteCommentRequest, GetCommentRequest},
    graph::v1::{FollowRequest, ListFollowersRequest},
    user::v1::GetUserRequest,
};
use social_testkit::{
    Answer, Stack, StackOptions, TcpProxy, authed, broker, eventually, token_for, unique_name,
};

use crate::App;

// Several worker threads: the racing calls are handled in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_equal_the_documents_after_a_storm() {
    let app = App::start().await;
    let (target_id, target) = app.stack.register("target").await;
    let post = app.post(&target, "storm").await;

    // Eight fans like and unlike at once, several times each; comments come and go.
    let fans: Vec<String> = (0..8).map(|_| token_for(ObjectId::new())).collect();
    let storm = fans.iter().enumerate().map(|(i, fan)| {
        let (app, post_id) = (&app, post.id.clone());
        async move {
            let mut e = app.engagement.clone();
            for round in 0..(3 + i % 3) {
                app.like_post(fan, &post_id).await.unwrap();
                if (round + i) % 2 == 0 {
                    app.stack.unlike_post(fan, &post_id).await.unwrap();
                }
            }
            let c = app.comment(fan, &post_id, "hi").await.unwrap();
            if i % 3 == 0 {
                e.delete_comment(authed(DeleteCommentRequest { id: c.id }, fan)).await.unwrap();
            }
        }
    });
    // Follows and unfollows of one user at the same time.
    let follows = fans.iter().enumerate().map(|(i, fan)| {
        let (stack, target_id) = (&app.stack, target_id.clone());
        async move {
            stack.follow(fan, &target_id).await;
            if i % 2 == 0 {
                stack.unfollow(fan, &target_id).await;
                stack.follow(fan, &target_id).await;
            }
            if i % 4 == 0 {
                stack.unfollow(fan, &target_id).await;
            }
        }
    });
    futures::future::join(futures::future::join_all(storm), futures::future::join_all(follows))
        .await;

    let likes = app.likers(&post.id).await.len() as i64;
    let comments = app.comments(&post.id).await.len() as i64;
    assert!(likes > 0 && comments > 0);
    app.counters_become(&post.id, (likes, comments)).await;

    let followers = app
        .stack
        .graph()
        .await
        .list_followers(ListFollowersRequest {
            user_id: target_id.clone(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .answer()
        .follows
        .len() as i64;
    assert_eq!(followers, 6);
    let mut users = app.stack.users().await;
    let reached = eventually(Duration::from_secs(15), || {
        let mut users = users.clone();
        let id = target_id.clone();
        async move {
            let u = users.get_user(GetUserRequest { id }).await.answer();
            (u.followers_count == followers).then_some(())
        }
    })
    .await;
    let u = users.get_user(GetUserRequest { id: target_id }).await.answer();
    assert!(reached.is_some(), "followers_count {} != {followers}", u.followers_count);
}

#[tokio::test]
async fn a_redelivered_event_changes_nothing_twice() {
    let app = App::start().await;
    let author = ObjectId::new();
    let post = app.post(&token_for(author), "once").await;
    let liker = ObjectId::new();
    let event = new_envelope(
        liker,
        Payload::PostLiked(PostLiked {
            post_id: post.id.clone(),
            post_author_id: author.to_hex(),
            user_id: liker.to_hex(),
        }),
    );
    let body = event.encode_to_vec();
    let config = &app.stack.events;
    for _ in 0..3 {
        broker::publish_raw(config, "engagement.post.liked", &body, &event.event_id).await;
    }
    app.counters_become(&post.id, (1, 0)).await;
    // A later, different event lands after the copies were consumed: the count is 2,
    // never 3 or 4.
    app.like_post(&token_for(ObjectId::new()), &post.id).await.unwrap();
    app.counters_become(&post.id, (2, 0)).await;
    let queue = config.queue("post");
    let drained = eventually(Duration::from_secs(10), || async {
        (broker::queue_depth(config, &queue).await == 0).then_some(())
    })
    .await;
    assert!(drained.is_some());
    assert_eq!(app.get_post(&post.id).await.likes_count, 2);
}

#[tokio::test]
async fn a_broker_outage_delays_events_and_loses_none() {
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = TcpProxy::start(rabbit).await;
    let stack = Stack::start_with(StackOptions {
        amqp_url: Some(format!("amqp://guest:guest@{}/%2f", proxy.addr)),
        ..Default::default()
    })
    .await;
    let app = App::with(stack).await;
    let (target_id, target) = app.stack.register("outage").await;
    let post = app.post(&target, "before the outage").await;
    // Consumers must have declared their queues before events are routed.
    let ready = eventually(Duration::from_secs(15), || async {
        let ok = broker::queue_depth(&app.stack.events, &app.stack.events.queue("user")).await == 0
            && broker::queue_depth(&app.stack.events, &app.stack.events.queue("post")).await == 0;
        ok.then_some(())
    })
    .await;
    assert!(ready.is_some());

    proxy.cut().await;
    let mut graph = app.stack.graph().await;
    for _ in 0..3 {
        let fan = token_for(ObjectId::new());
        app.like_post(&fan, &post.id).await.expect("likes succeed while the broker is away");
        graph
            .follow(authed(FollowRequest { followee_id: target_id.clone() }, &fan))
            .await
            .expect("follows succeed while the broker is away");
    }
    assert_eq!(app.get_post(&post.id).await.likes_count, 0);
    proxy.restore();

    app.counters_become(&post.id, (3, 0)).await;
    let mut users = app.stack.users().await;
    let followers = eventually(Duration::from_secs(20), || {
        let (mut users, id) = (users.clone(), target_id.clone());
        async move {
            let u = users.get_user(GetUserRequest { id }).await.answer();
            (u.followers_count == 3).then_some(())
        }
    })
    .await;
    assert!(followers.is_some(), "followers_count never reached 3");
    // None twice: once the queues are drained the counts are still exact.
    let config = app.stack.events.clone();
    let drained = eventually(Duration::from_secs(10), || async {
        let ok = broker::queue_depth(&config, &config.queue("user")).await == 0
            && broker::queue_depth(&config, &config.queue("post")).await == 0;
        ok.then_some(())
    })
    .await;
    assert!(drained.is_some());
    assert_eq!(app.get_post(&post.id).await.likes_count, 3);
    let u = users.get_user(GetUserRequest { id: target_id }).await.answer();
    assert_eq!(u.followers_count, 3);
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_consuming_goes_on() {
    // The consumers' metrics, read at the end.
    let meters = social_testkit::Meters::install();
    // On quorum queues, as in production.
    let app = App::with(
        Stack::start_with(StackOptions {
            queue_type: Some(social_events::QueueType::Quorum),
            ..Default::default()
        })
        .await,
    )
    .await;
    let config = app.stack.events.clone();
    let post = app.post(&token_for(ObjectId::new()), "p").await;
    let comment = app.comment(&token_for(ObjectId::new()), &post.id, "c").await.unwrap();
    broker::publish_raw(&config, "post.post.deleted", b"\xff\xfenot protobuf", "poison-1").await;

    let dlq = config.dead_letter_queue("engagement");
    let dead = eventually(Duration::from_secs(15), || async {
        (broker::queue_depth(&config, &dlq).await == 1).then_some(())
    })
    .await;
    assert!(dead.is_some(), "the poison message never reached {dlq}");
    assert_eq!(
        broker::take_one(&config, &dlq).await.as_deref(),
        Some(&b"\xff\xfenot protobuf"[..])
    );

    // The consumer goes on: a comment like still moves the comment's counter.
    let e = app.engagement.clone();
    app.like_comment(&token_for(ObjectId::new()), &comment.id).await.unwrap();
    let counted = eventually(Duration::from_secs(15), || {
        let (mut e, id) = (e.clone(), comment.id.clone());
        async move {
            let c = e.get_comment(GetCommentRequest { id }).await.answer();
            (c.likes_count == 1).then_some(())
        }
    })
    .await;
    assert!(counted.is_some());

    // Counted: the poison message dead-lettered by each consumer that binds its key
    // (engagement's and notification's, both in this process), the like processed.
    let key_outcome = ["messaging.rabbitmq.destination.routing_key", "outcome"];
    let poison = vec!["post.post.deleted".to_owned(), "dead_lettered".to_owned()];
    let liked = |outcome: &str| vec!["engagement.comment.liked".to_owned(), outcome.to_owned()];
    // Each is recorded after its effect is visible (a handler's outcome after its ack, a
    // publish after every confirm of its batch), and the notification consumer's copy
    // of the poison may still be on its way: wait for all of them.
    eventually(Duration::from_secs(15), || async {
        let handled = meters.by("messaging.process.duration", &key_outcome);
        let sent = meters.by("messaging.client.sent.messages", &key_outcome);
        (handled.get(&poison) == Some(&2.0)
            && handled.get(&liked("processed")).is_some_and(|n| *n >= 1.0)
            && sent.get(&liked("confirmed")).is_some_and(|n| *n >= 1.0))
        .then_some(())
    })
    .await;
    let handled = meters.by("messaging.process.duration", &key_outcome);
    let count = |key: &str, outcome: &str| {
        handled.get(&vec![key.to_owned(), outcome.to_owned()]).copied().unwrap_or(0.0)
    };
    assert_eq!(count("post.post.deleted", "dead_lettered"), 2.0, "{handled:?}");
    assert_eq!(count("post.post.deleted", "processed"), 0.0, "{handled:?}");
    assert!(count("engagement.comment.liked", "processed") >= 1.0, "{handled:?}");
    // The like's event was published and confirmed by the engagement relay.
    let sent = meters.by("messaging.client.sent.messages", &key_outcome);
    assert!(
        sent.get(&vec!["engagement.comment.liked".into(), "confirmed".into()])
            .is_some_and(|n| *n >= 1.0),
        "{sent:?}"
    );
    // Each relay measured its outbox backlog (an idle one holds none).
    let backlog = meters.by("outbox.pending.events", &["outbox.collection"]);
    assert!(backlog.contains_key(&vec!["likes".to_owned()]), "{backlog:?}");
}

#[tokio::test]
async fn deleting_a_post_removes_its_comments_and_likes() {
    let app = App::start().await;
    let author = token_for(ObjectId::new());
    let post = app.post(&author, "soon gone").await;
    app.comment(&token_for(ObjectId::new()), &post.id, "c").await.unwrap();
    app.like_post(&token_for(ObjectId::new()), &post.id).await.unwrap();
    app.stack.delete_post(&author, &post.id).await;
    let gone = eventually(Duration::from_secs(15), || async {
        (app.comments(&post.id).await.is_empty() && app.likers(&post.id).await.is_empty())
            .then_some(())
    })
    .await;
    assert!(gone.is_some());
}

#[tokio::test]
async fn drifted_counters_are_recomputed_from_the_documents() {
    let app = App::start().await;
    let (target_id, target) = app.stack.register("drift").await;
    let post = app.post(&target, "p").await;
    let comment = app.comment(&token_for(ObjectId::new()), &post.id, "c").await.unwrap();
    app.like_post(&token_for(ObjectId::new()), &post.id).await.unwrap();
    app.stack.follow(&token_for(ObjectId::new()), &target_id).await;
    app.counters_become(&post.id, (1, 1)).await;

    // Something went wrong: the counters drifted.
    let db = mongodb::Client::with_uri_str(social_testkit::mongodb_uri())
        .await
        .unwrap()
        .database(&app.stack.database);
    let id = |s: &str| ObjectId::parse_str(s).unwrap();
    db.collection::<bson::Document>("posts")
        .update_one(
            bson::doc! { "_id": id(&post.id) },
            bson::doc! { "$set": { "likes_count": 42_i64, "comments_count": -3_i64 } },
        )
        .await
        .unwrap();
    db.collection::<bson::Document>("users")
        .update_one(
            bson::doc! { "_id": id(&target_id) },
            bson::doc! { "$set": { "followers_count": 7_i64 } },
        )
        .await
        .unwrap();
    db.collection::<bson::Document>("comments")
        .update_one(
            bson::doc! { "_id": id(&comment.id) },
            bson::doc! { "$set": { "likes_count": 9_i64 } },
        )
        .await
        .unwrap();

    let peer = |name, addr: SocketAddr| {
        social_testkit::peer(name, &format!("http://{addr}"), Duration::from_secs(5))
    };
    let uri = social_testkit::mongodb_uri();
    let mut post_config = social_post::Config::for_tests(
        &uri,
        &app.stack.database,
        peer("graph", app.stack.graph.addr),
        app.stack.events.clone(),
    );
    post_config.engagement_service = peer("engagement", app.stack.engagement.addr);
    assert!(
        social_post::recompute_counters(&post_config, Duration::from_secs(120)).await.unwrap() >= 1
    );
    let mut user_config =
        social_user::Config::for_tests(&uri, &app.stack.database, app.stack.events.clone());
    user_config.graph_service = peer("graph", app.stack.graph.addr);
    assert!(
        social_user::recompute_counters(&user_config, Duration::from_secs(120)).await.unwrap() >= 1
    );
    let engagement_config = social_engagement::Config::for_tests(
        &uri,
        &app.stack.database,
        peer("post", app.stack.post.addr),
        app.stack.events.clone(),
    );
    assert!(
        social_engagement::recompute_counters(&engagement_config, Duration::from_secs(120))
            .await
            .unwrap()
            >= 1
    );

    let p = app.get_post(&post.id).await;
    assert_eq!((p.likes_count, p.comments_count), (1, 1));
    let u = app.stack.users().await.get_user(GetUserRequest { id: target_id }).await.answer();
    assert_eq!(u.followers_count, 1);
    let c = app.engagement.clone().get_comment(GetCommentRequest { id: comment.id }).await.answer();
    assert_eq!(c.likes_count, 0);
}

#[tokio::test]
async fn a_crash_before_the_publish_delays_the_event_and_loses_none() {
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    // The engagement service's own link to the broker, which the test cuts.
    let link = TcpProxy::start(rabbit).await;
    let stack = Stack::start_with(StackOptions {
        engagement_amqp_url: Some(format!("amqp://guest:guest@{}/%2f", link.addr)),
        ..Default::default()
    })
    .await;
    let mut app = App::with(stack).await;
    let post = app.post(&token_for(ObjectId::new()), "p").await;
    let config = app.stack.events.clone();
    let ready = eventually(Duration::from_secs(15), || async {
        (broker::queue_depth(&config, &config.queue("post")).await == 0).then_some(())
    })
    .await;
    assert!(ready.is_some());

    // The like is acknowledged while the broker is away, so its event waits in the
    // outbox; then the engagement service dies before it could publish it.
    link.cut().await;
    app.like_post(&token_for(ObjectId::new()), &post.id).await.unwrap();
    let crashed = app.crash_and_restart_engagement().await;
    link.restore();

    // The new instance's relay finds the event and publishes it: once. The old one
    // never comes back, so the new one did it.
    app.counters_become(&post.id, (1, 0)).await;
    crashed.stays_dead(&link).await;
    let drained = eventually(Duration::from_secs(10), || async {
        (broker::queue_depth(&config, &config.queue("post")).await == 0).then_some(())
    })
    .await;
    assert!(drained.is_some());
    assert_eq!(app.get_post(&post.id).await.likes_count, 1);
}

#[tokio::test]
async fn a_like_or_comment_racing_the_deletion_of_its_post_is_taken_back() {
    let app = App::start().await;
    let author = ObjectId::new();
    let post = app.post(&token_for(author), "going").await;
    app.comment(&token_for(ObjectId::new()), &post.id, "first").await.unwrap();
    // The deletion's event is handled while the post service still answers for the
    // post: exactly the window in which a like checked the post and then inserted.
    let event = new_envelope(
        author,
        Payload::PostDeleted(PostDeleted { post_id: post.id.clone(), author_id: author.to_hex() }),
    );
    broker::publish_raw(
        &app.stack.events,
        "post.post.deleted",
        &event.encode_to_vec(),
        &event.event_id,
    )
    .await;
    let cascaded = eventually(Duration::from_secs(15), || async {
        app.comments(&post.id).await.is_empty().then_some(())
    })
    .await;
    assert!(cascaded.is_some(), "the cascade never ran");

    let late = token_for(ObjectId::new());
    let err = app.like_post(&late, &post.id).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = app.comment(&late, &post.id, "too late").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(app.likers(&post.id).await.is_empty());
    assert!(app.comments(&post.id).await.is_empty());
}

/// A consumer of its own queue whose handler fails its first `failures` tries with
/// `error`, and counts its tries.
struct FlakyConsumer {
    config: EventsConfig,
    tries: Arc<AtomicU32>,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyConsumer {
    async fn start(failures: u32, error: fn() -> anyhow::Error) -> Self {
        Self::start_with(EventsConfig::for_tests(&unique_name("t")), failures, error).await
    }

    async fn start_with(config: EventsConfig, failures: u32, error: fn() -> anyhow::Error) -> Self {
        let tries = Arc::new(AtomicU32::new(0));
        let handler: Handler = {
            let tries = tries.clone();
            Arc::new(move |_| {
                let tries = tries.clone();
                async move {
                    if tries.fetch_add(1, Ordering::SeqCst) < failures {
                        return Err(error());
                    }
                    Ok(())
                }
                .boxed()
            })
        };
        Self::around(config, handler, tries).await
    }

    /// A consumer with `handler`, which counts its tries in `tries`.
    async fn around(config: EventsConfig, handler: Handler, tries: Arc<AtomicU32>) -> Self {
        let subscription = QueueSpec {
            service: "flaky",
            routing_keys: &["graph.user.followed", "user.user.deleted"],
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(social_events::consumer::run(
            config.clone(),
            subscription,
            handler,
            shutdown.clone(),
        ));
        let queue = config.queue("flaky");
        let declared = eventually(Duration::from_secs(10), || async {
            broker::queue_exists(&config, &queue).await.then_some(())
        })
        .await;
        assert!(declared.is_some());
        Self { config, tries, shutdown, task }
    }

    async fn publish_one(&self) {
        self.publish_follow_by(&ObjectId::new().to_hex()).await;
    }

    async fn publish_follow_by(&self, follower_id: &str) {
        let event = new_envelope(
            ObjectId::new(),
            Payload::UserFollowed(social_events::pb::UserFollowed {
                follower_id: follower_id.to_owned(),
                followee_id: ObjectId::new().to_hex(),
            }),
        );
        broker::publish_raw(
            &self.config,
            "graph.user.followed",
            &event.encode_to_vec(),
            &event.event_id,
        )
        .await;
    }

    /// An account's deletion that waited 31 days to be published (safe to apply late).
    async fn publish_late_deletion(&self) {
        let user = ObjectId::new();
        let mut event = new_envelope(
            user,
            Payload::UserDeleted(social_events::pb::UserDeleted { user_id: user.to_hex() }),
        );
        let month_ago = bson::DateTime::now().timestamp_millis() - 31 * 86_400_000;
        event.occurred_at =
            Some(social_kit::time::to_timestamp(bson::DateTime::from_millis(month_ago)));
        broker::publish_raw(
            &self.config,
            "user.user.deleted",
            &event.encode_to_vec(),
            &event.event_id,
        )
        .await;
    }

    fn tries(&self) -> u32 {
        self.tries.load(Ordering::SeqCst)
    }

    /// Waits until the handler was tried `n` times.
    async fn tried(&self, n: u32) {
        let reached =
            eventually(Duration::from_secs(30), || async { (self.tries() >= n).then_some(()) })
                .await;
        assert!(reached.is_some(), "tried {} times, not {n}", self.tries());
    }

    async fn depths(&self) -> (u32, u32) {
        let queue = self.config.queue("flaky");
        let dlq = self.config.dead_letter_queue("flaky");
        (
            broker::queue_depth(&self.config, &queue).await,
            broker::queue_depth(&self.config, &dlq).await,
        )
    }

    /// Stops the consumer; how often the handler was tried, and what is left in the
    /// queue and the dead-letter queue (a message taken but not acknowledged would be
    /// back in the queue by then).
    async fn stop(mut self) -> (u32, (u32, u32)) {
        self.shutdown.cancel();
        (&mut self.task).await.unwrap();
        (self.tries(), self.depths().await)
    }
}

/// What a handler returns while its database is down.
fn database_down() -> anyhow::Error {
    anyhow::Error::new(social_kit::Error::Unavailable("the database is unavailable".into()))
}

/// Publishes one message to a consumer that fails its first `outage` tries with a
/// dependency failure: it is handled once after them, acknowledged, never dead-lettered.
async fn handled_once_after(consumer: FlakyConsumer, outage: u32) {
    consumer.publish_one().await;
    consumer.tried(outage + 1).await;
    let (tries, depths) = consumer.stop().await;
    assert_eq!(tries, outage + 1, "handled once it could be");
    assert_eq!(depths, (0, 0), "acknowledged, and nothing dead-lettered");
}

#[tokio::test]
async fn a_dependency_outage_delays_a_message_and_never_dead_letters_it() {
    // The handler's database is "down" for more tries than a message is allowed.
    let outage = EventsConfig::for_tests("x").max_attempts + 2;
    let consumer = FlakyConsumer::start(outage, database_down).await;
    handled_once_after(consumer, outage).await;
}

#[tokio::test]
async fn a_message_waiting_past_the_hold_limit_is_requeued_and_handled_once() {
    let mut config = EventsConfig::for_tests(&unique_name("t"));
    config.hold_limit = Duration::from_millis(500);
    // Down for ~3 s of backoff: the message is re-queued as a copy on the way.
    let outage = 5;
    let consumer = FlakyConsumer::start_with(config, outage, database_down).await;
    handled_once_after(consumer, outage).await;
}

#[tokio::test]
async fn a_late_deletion_requeued_on_its_way_is_still_applied() {
    let mut config = EventsConfig::for_tests(&unique_name("t"));
    config.hold_limit = Duration::from_millis(500);
    // Its copy, re-queued while the database is down, reaches the queue by the queue's
    // name: it is still a deletion, applied however late.
    let outage = 5;
    let consumer = FlakyConsumer::start_with(config, outage, database_down).await;
    consumer.publish_late_deletion().await;
    consumer.tried(outage + 1).await;
    let (tries, depths) = consumer.stop().await;
    assert_eq!((tries, depths), (outage + 1, (0, 0)), "applied, not dead-lettered");
}

/// A consumer whose handler hangs (a query that never ends) on the follows of
/// `hanging`, and on every follow for its first `follows` tries (deletions always go
/// through); it counts the hangs (as its tries) and the follows handled.
async fn hanging_consumer(hanging: &str, follows: u32) -> (FlakyConsumer, Arc<AtomicU32>) {
    let mut config = EventsConfig::for_tests(&unique_name("t"));
    config.handler_timeout = Duration::from_millis(300);
    let (hangs, handled) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let handler: Handler = {
        let (hangs, handled, hanging) = (hangs.clone(), handled.clone(), hanging.to_owned());
        let tries = Arc::new(AtomicU32::new(0));
        Arc::new(move |event: social_events::Envelope| {
            let follow = match &event.payload {
                Some(Payload::UserFollowed(f)) => Some(f.follower_id == hanging),
                _ => None,
            };
            let hang =
                follow.is_some_and(|own| own || tries.fetch_add(1, Ordering::SeqCst) < follows);
            let (hangs, handled) = (hangs.clone(), handled.clone());
            async move {
                if hang {
                    hangs.fetch_add(1, Ordering::SeqCst);
                    futures::future::pending::<()>().await;
                }
                if follow.is_some() {
                    handled.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
            .boxed()
        })
    };
    (FlakyConsumer::around(config, handler, hangs).await, handled)
}

#[tokio::test]
async fn a_message_whose_handler_hangs_while_others_go_through_is_dead_lettered() {
    let poison = ObjectId::new().to_hex();
    let (consumer, _) = hanging_consumer(&poison, 0).await;
    consumer.publish_follow_by(&poison).await;
    // Others keep arriving, and are handled, while it hangs: the fault is its own.
    let dead = eventually(Duration::from_secs(30), || async {
        consumer.publish_one().await;
        (consumer.depths().await.1 == 1).then_some(())
    })
    .await;
    assert!(dead.is_some(), "hung {} times and was never dead-lettered", consumer.tries());
    let max = EventsConfig::for_tests("x").max_attempts;
    let (hangs, (left, dead)) = consumer.stop().await;
    assert!(hangs >= max, "dead-lettered after {hangs} hangs");
    assert_eq!((left, dead), (0, 1), "the others were all handled");
}

#[tokio::test]
async fn a_dependency_that_hangs_for_one_type_of_event_delays_them_and_dead_letters_none() {
    let max = EventsConfig::for_tests("x").max_attempts;
    // Every follow hangs, more times than a message is allowed, while deletions (what
    // the hanging dependency does not serve) go through: no follow is at fault.
    let (consumer, handled) = hanging_consumer("nobody", 2 * max + 2).await;
    consumer.publish_one().await;
    consumer.publish_one().await;
    let drained = eventually(Duration::from_secs(60), || async {
        consumer.publish_late_deletion().await;
        (handled.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    // The last deletion published may still be on its way: the queue empties first (a
    // dead-lettered follow never leaves the dead-letter queue, and fails below).
    eventually(Duration::from_secs(30), || async {
        (consumer.depths().await == (0, 0)).then_some(())
    })
    .await;
    let (hangs, depths) = consumer.stop().await;
    assert!(drained.is_some(), "after {hangs} hangs: {depths:?}");
    assert_eq!(depths, (0, 0), "both handled, none dead-lettered");
}

#[tokio::test]
async fn a_failing_message_is_retried_then_dead_lettered() {
    let max = EventsConfig::for_tests("x").max_attempts;
    // Fails fewer times than allowed: handled on a later attempt.
    let consumer = FlakyConsumer::start(max - 1, || anyhow::anyhow!("a bug")).await;
    consumer.publish_one().await;
    consumer.tried(max).await;
    assert_eq!(consumer.stop().await, (max, (0, 0)));

    // Fails every time: dead-lettered after the last attempt, and only then.
    let consumer = FlakyConsumer::start(u32::MAX, || anyhow::anyhow!("a bug")).await;
    consumer.publish_one().await;
    let dead = eventually(Duration::from_secs(30), || async {
        (consumer.depths().await.1 == 1).then_some(())
    })
    .await;
    assert!(dead.is_some(), "never dead-lettered");
    assert_eq!(consumer.stop().await, (max, (0, 1)));
}

#[tokio::test]
async fn the_relay_sends_routable_events_once_and_keeps_unroutable_ones() {
    let config = EventsConfig::for_tests(&unique_name("t"));
    let database = unique_name("relay");
    let _drop = social_testkit::DropDatabase(database.clone());
    let db = mongodb::Client::with_uri_str(social_testkit::mongodb_uri())
        .await
        .unwrap()
        .database(&database);
    // A queue bound to follows only: unfollows have nowhere to go (mandatory returns).
    let bound = QueueSpec { service: "bound", routing_keys: &["graph.user.followed"] };
    let connection =
        lapin::Connection::connect(&config.amqp_url, lapin::ConnectionProperties::default())
            .await
            .unwrap();
    social_events::topology::declare(&connection, &config, &[bound]).await.unwrap();
    let queue = config.queue("bound");

    // One batch alternating routable and unroutable events, one per document.
    let mut followed = std::collections::HashSet::new();
    let docs: Vec<bson::Document> = (0..60)
        .map(|i| {
            let (a, b) = (ObjectId::new().to_hex(), ObjectId::new().to_hex());
            let payload = if i % 2 == 0 {
                Payload::UserFollowed(social_events::pb::UserFollowed {
                    follower_id: a,
                    followee_id: b,
                })
            } else {
                Payload::UserUnfollowed(social_events::pb::UserUnfollowed {
                    follower_id: a,
                    followee_id: b,
                })
            };
            let event = new_envelope(ObjectId::new(), payload);
            if i % 2 == 0 {
                followed.insert(event.event_id.clone());
            }
            bson::doc! {
                "_id": ObjectId::new(), "followed": i % 2 == 0,
                "outbox": [social_events::outbox::entry(&event)], "outbox_pending": 1,
            }
        })
        .collect();
    let things = db.collection::<bson::Document>("things");
    things.insert_many(docs).await.unwrap();

    let relay = social_events::outbox::Relay::new(config.clone(), "test", &db, &["things"])
        .declaring(vec![bound]);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    let pending = || async {
        let all: Vec<bson::Document> =
            futures::TryStreamExt::try_collect(things.find(bson::doc! {}).await.unwrap())
                .await
                .unwrap();
        all.into_iter()
            .filter(|d| d.get_i32("outbox_pending").unwrap_or(1) > 0)
            .map(|d| d.get_bool("followed").unwrap())
            .collect::<Vec<bool>>()
    };
    let settled = eventually(Duration::from_secs(15), || async {
        (pending().await.len() == 30).then_some(())
    })
    .await;
    assert!(settled.is_some(), "pending: {:?}", pending().await);
    shutdown.cancel();
    task.await.unwrap();

    // Every routable event arrived exactly once; every unroutable one is still kept.
    assert!(pending().await.iter().all(|followed| !followed), "only unroutable events wait");
    let mut arrived = std::collections::HashSet::new();
    for body in broker::take_all(&config, &queue).await {
        let event = social_events::Envelope::decode(body.as_slice()).unwrap();
        assert!(arrived.insert(event.event_id), "delivered twice");
    }
    assert_eq!(arrived, followed);
}

#[tokio::test]
async fn an_event_older_than_what_the_consumers_remember_is_dead_lettered_not_applied() {
    let app = App::start().await;
    let post = app.post(&token_for(ObjectId::new()), "p").await;
    let config = app.stack.events.clone();
    let liker = ObjectId::new();
    // A like's event that waited 31 days (an outbox or a queue held up for a month): its
    // consumers no longer remember whether they applied it.
    let mut late = new_envelope(
        liker,
        Payload::PostLiked(PostLiked {
            post_id: post.id.clone(),
            post_author_id: post.user_id.clone(),
            user_id: liker.to_hex(),
        }),
    );
    let month_ago = bson::DateTime::now().timestamp_millis() - 31 * 86_400_000;
    late.occurred_at = Some(social_kit::time::to_timestamp(bson::DateTime::from_millis(month_ago)));
    broker::publish_raw(&config, "engagement.post.liked", &late.encode_to_vec(), &late.event_id)
        .await;
    let dlq = config.dead_letter_queue("post");
    let dead = eventually(Duration::from_secs(15), || async {
        (broker::queue_depth(&config, &dlq).await == 1).then_some(())
    })
    .await;
    assert!(dead.is_some(), "the late event never reached {dlq}");
    // Not applied; a like of now still is.
    app.like_post(&token_for(ObjectId::new()), &post.id).await.unwrap();
    app.counters_become(&post.id, (1, 0)).await;
}
