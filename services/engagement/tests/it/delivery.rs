//! Delivery guarantees of the events machinery: consumers that cannot declare back off,
//! an event redelivered after hundreds of newer ones is applied once, the relay keeps
//! what the broker confirmed at shutdown, and a failed "was the post deleted?" check
//! takes nothing back.

use std::{collections::HashSet, net::SocketAddr, sync::Arc, time::Duration};

use bson::{doc, oid::ObjectId};
use futures::{FutureExt, TryStreamExt};
use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions};
use prost::Message;
use social_events::{
    EventsConfig, Payload, consumer::Handler, new_envelope, pb::UserFollowed, topology::QueueSpec,
};
use social_proto::user::v1::GetUserRequest;
use social_testkit::{Answer, TcpProxy, broker, eventually, token_for, unique_name};
use tokio_util::sync::CancellationToken;

use crate::App;

#[tokio::test]
async fn a_consumer_whose_declaration_is_refused_retries_with_growing_delays() {
    let mut config = EventsConfig::for_tests(&unique_name("t"));
    // The exchange exists with another type: every declaration is refused.
    let connection =
        lapin::Connection::connect(&config.amqp_url, lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_declare(
            config.exchange.as_str().into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = TcpProxy::start(rabbit).await;
    config.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let exchange = config.exchange.clone();

    let handler: Handler = Arc::new(|_| async { Ok(()) }.boxed());
    let refused = QueueSpec { service: "refused", routing_keys: &["graph.user.followed"] };
    let shutdown = CancellationToken::new();
    let task =
        tokio::spawn(social_events::consumer::run(config, refused, handler, shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(6)).await;
    shutdown.cancel();
    task.await.unwrap();
    channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await.ok();
    let connections = proxy.connections();
    // Delays of 0.5, 1, 2, 4 s (plus jitter): 3 to 5 attempts in 6 s, where a fixed
    // half second would make twelve.
    assert!((3..=5).contains(&connections.len()), "{} connections in 6 s", connections.len());
    let gaps: Vec<Duration> = connections.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.last() > gaps.first(), "delays grow: {gaps:?}");
}

#[tokio::test]
async fn an_event_redelivered_after_600_newer_ones_on_its_document_counts_once() {
    let app = App::start().await;
    let (celebrity, _) = app.stack.register("celebrity").await;
    let config = app.stack.events.clone();
    let follow = || {
        let follower = ObjectId::new();
        let event = new_envelope(
            follower,
            Payload::UserFollowed(UserFollowed {
                follower_id: follower.to_hex(),
                followee_id: celebrity.clone(),
            }),
        );
        (event.encode_to_vec(), event.event_id)
    };
    let followers = || async {
        app.stack
            .users()
            .await
            .get_user(GetUserRequest { id: celebrity.clone() })
            .await
            .answer()
            .followers_count
    };
    let reaches = |n: i64| async move {
        let reached = eventually(Duration::from_secs(120), || async {
            (followers().await == n).then_some(())
        })
        .await;
        assert!(reached.is_some(), "followers_count {} != {n}", followers().await);
    };

    let first = follow();
    broker::publish_all(&config, "graph.user.followed", std::slice::from_ref(&first)).await;
    reaches(1).await;
    let newer: Vec<_> = (0..600).map(|_| follow()).collect();
    broker::publish_all(&config, "graph.user.followed", &newer).await;
    reaches(601).await;

    // The first event again (a copy re-queued behind a backlog), then one more.
    broker::publish_all(&config, "graph.user.followed", &[first, follow()]).await;
    reaches(602).await;
    let queue = config.queue("user");
    let drained = eventually(Duration::from_secs(10), || async {
        (broker::queue_depth(&config, &queue).await == 0).then_some(())
    })
    .await;
    assert!(drained.is_some());
    // Absence cannot be polled for: give a handler in flight time to finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(followers().await, 602);
}

#[tokio::test]
async fn connections_ask_for_small_frames_unless_the_url_names_a_size() {
    use social_events::connection::{FRAME_MAX, open};
    let url = EventsConfig::for_tests(&unique_name("t")).amqp_url;
    let timeout = Duration::from_secs(10);
    let default = open(&url, "frames", timeout).await.unwrap();
    assert_eq!(default.configuration().frame_max(), FRAME_MAX);
    let sep = if url.contains('?') { '&' } else { '?' };
    let named = open(&format!("{url}{sep}frame_max=65536"), "frames", timeout).await.unwrap();
    assert_eq!(named.configuration().frame_max(), 65536);
    let err = open("http://nowhere", "frames", timeout).await.unwrap_err();
    assert!(err.to_string().contains("AMQP_URL"), "{err:#}");
}

/// A relay publishing the outboxes of `OUTBOX` documents (one follow event each) in a
/// database of their own, through a proxy to the broker, to a queue bound for them.
struct RelayRig {
    proxy: TcpProxy,
    config: EventsConfig,
    db: mongodb::Database,
    things: mongodb::Collection<bson::Document>,
    _drop: social_testkit::DropDatabase,
}

const OUTBOX: usize = 1000;

impl RelayRig {
    async fn start() -> Self {
        let rabbit: SocketAddr = "127.0.0.1:5672".parse().unwrap();
        let proxy = TcpProxy::start(rabbit).await;
        let mut config = EventsConfig::for_tests(&unique_name("t"));
        config.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
        let database = unique_name("relay");
        let drop = social_testkit::DropDatabase(database.clone());
        let db = mongodb::Client::with_uri_str(social_testkit::mongodb_uri())
            .await
            .unwrap()
            .database(&database);
        let docs: Vec<bson::Document> = (0..OUTBOX)
            .map(|_| {
                let event = new_envelope(
                    ObjectId::new(),
                    Payload::UserFollowed(UserFollowed {
                        follower_id: ObjectId::new().to_hex(),
                        followee_id: ObjectId::new().to_hex(),
                    }),
                );
                doc! {
                    "_id": ObjectId::new(), "event_id": &event.event_id,
                    "outbox": [social_events::outbox::entry(&event)], "outbox_pending": 1,
                }
            })
            .collect();
        let things = db.collection::<bson::Document>("things");
        things.insert_many(docs).await.unwrap();
        Self { proxy, config, db, things, _drop: drop }
    }

    fn relay(&self) -> social_events::outbox::Relay {
        let bound = QueueSpec { service: "bound", routing_keys: &["graph.user.followed"] };
        social_events::outbox::Relay::new(self.config.clone(), "test", &self.db, &["things"])
            .declaring(vec![bound])
    }

    /// Waits until some of the events were published and taken out of their outbox.
    async fn under_way(&self) {
        let started = eventually(Duration::from_secs(15), || async {
            let sent = self.things.count_documents(doc! { "outbox_pending": 0 }).await.unwrap();
            (sent > 0).then_some(())
        })
        .await;
        assert!(started.is_some());
    }

    /// Waits until the outbox stops shrinking with events still in it: a batch waits
    /// for the confirms the broker holds back (call after `delay_answers`).
    async fn until_a_batch_waits(&self) {
        let (mut last, mut stuck) = (usize::MAX, false);
        for _ in 0..50 {
            let seen = self.pending().await.len();
            stuck = seen > 0 && seen == last;
            if stuck {
                break;
            }
            last = seen;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(stuck, "the relay published everything before a batch waited");
    }

    /// The ids of the events still in an outbox.
    async fn pending(&self) -> HashSet<String> {
        self.things
            .find(doc! { "outbox_pending": { "$gt": 0 } })
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.get_str("event_id").unwrap().to_owned())
            .collect()
    }

    /// The ids of the events in the bound queue, taken out of it, each once.
    async fn queued(&self) -> Vec<String> {
        broker::take_all(&self.config, &self.config.queue("bound"))
            .await
            .iter()
            .map(|body| social_events::Envelope::decode(body.as_slice()).unwrap().event_id)
            .collect()
    }
}

#[tokio::test]
async fn at_shutdown_the_relay_keeps_the_confirms_in_flight() {
    let rig = RelayRig::start().await;
    let proxy = &rig.proxy;
    let relay = rig.relay();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    // Once the relay is under way, the broker becomes slow to confirm, and the relay is
    // told to stop while a batch waits for its confirms.
    rig.under_way().await;
    proxy.delay_answers(Duration::from_millis(1000));
    rig.until_a_batch_waits().await;
    shutdown.cancel();
    task.await.unwrap();
    proxy.delay_answers(Duration::ZERO);

    let pending = rig.pending().await;
    let mut published = HashSet::new();
    for event_id in rig.queued().await {
        assert!(
            !pending.contains(&event_id),
            "an event the broker took is still pending: the next start would send it again"
        );
        published.insert(event_id);
    }
    assert_eq!(published.len() + pending.len(), OUTBOX, "nothing lost");
}

#[tokio::test]
async fn a_broker_cut_mid_batch_counts_the_batch_failed_and_sends_it_again() {
    let meters = social_testkit::Meters::install();
    let rig = RelayRig::start().await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(rig.relay().run(shutdown.clone()));
    // A batch waits for confirms the broker holds back, and the connection goes: the
    // cut comes once the outbox has stopped shrinking with events still in it.
    rig.under_way().await;
    rig.proxy.delay_answers(Duration::from_secs(30));
    rig.until_a_batch_waits().await;
    rig.proxy.cut().await;
    rig.proxy.delay_answers(Duration::ZERO);
    rig.proxy.restore();

    // The relay reconnects and publishes the whole outbox.
    let drained = eventually(Duration::from_secs(60), || async {
        rig.pending().await.is_empty().then_some(())
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();
    assert!(drained.is_some(), "the outbox never emptied");
    let queued = rig.queued().await;
    let distinct: HashSet<&String> = queued.iter().collect();
    assert_eq!(distinct.len(), OUTBOX, "nothing lost");

    let sent = meters.by("messaging.client.sent.messages", &["outcome"]);
    let count = |outcome: &str| sent.get(&vec![outcome.to_owned()]).copied().unwrap_or(0.0);
    // Every event was confirmed once: those of the cut batch only when sent again.
    assert_eq!(count("confirmed"), OUTBOX as f64, "{sent:?}");
    assert!(count("failed") >= 1.0, "the cut batch was not counted: {sent:?}");
    assert!(count("failed") <= 128.0, "more failed than one batch holds: {sent:?}");
    // The broker may have taken some of the cut batch: those are in the queue twice,
    // never more often than they were counted failed.
    assert!(queued.len() - OUTBOX <= count("failed") as usize, "{sent:?}");
}

#[tokio::test]
async fn a_failed_check_for_a_deleted_post_takes_nothing_back() {
    let app = App::start().await;
    let post = app.post(&token_for(ObjectId::new()), "kept").await;
    let fan = token_for(ObjectId::new());
    let fail_next_check = || fail::cfg("engagement::post_removed", "1*return").unwrap();

    // A new like whose check fails: UNAVAILABLE, and the retry finds it.
    fail_next_check();
    let err = app.like_post(&fan, &post.id).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    app.like_post(&fan, &post.id).await.unwrap();
    assert_eq!(app.likers(&post.id).await.len(), 1);
    app.counters_become(&post.id, (1, 0)).await;

    // An old, counted like was checked when the retry found it: liking again checks
    // nothing, deletes nothing and counts nothing.
    fail_next_check();
    let fired = social_kit::faults::fired("engagement::post_removed");
    app.like_post(&fan, &post.id).await.unwrap();
    assert_eq!(social_kit::faults::fired("engagement::post_removed"), fired, "checked again");
    fail::remove("engagement::post_removed");
    assert_eq!(app.likers(&post.id).await.len(), 1);

    // A new comment: UNAVAILABLE, and it stays with its event.
    fail_next_check();
    let err = app.comment(&fan, &post.id, "stays").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(app.comments(&post.id).await.len(), 1);

    // One more like lands after all of the above: 2 likes, 1 comment, and no more.
    app.like_post(&token_for(ObjectId::new()), &post.id).await.unwrap();
    app.counters_become(&post.id, (2, 1)).await;
    let config = &app.stack.events;
    let drained = eventually(Duration::from_secs(10), || async {
        (broker::queue_depth(config, &config.queue("post")).await == 0).then_some(())
    })
    .await;
    assert!(drained.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = app.get_post(&post.id).await;
    assert_eq!((p.likes_count, p.comments_count), (2, 1));
}

#[tokio::test]
async fn an_unfollow_handled_before_its_follow_never_shows_a_negative_count() {
    let app = App::start().await;
    let (user, _) = app.stack.register("early").await;
    let config = app.stack.events.clone();
    let follower = ObjectId::new();
    let event = |payload| {
        let e = new_envelope(follower, payload);
        (e.encode_to_vec(), e.event_id)
    };
    let pair = || UserFollowed { follower_id: follower.to_hex(), followee_id: user.clone() };
    let stored = || async {
        let db = mongodb::Client::with_uri_str(social_testkit::mongodb_uri())
            .await
            .unwrap()
            .database(&app.stack.database);
        db.collection::<bson::Document>("users")
            .find_one(doc! { "_id": ObjectId::parse_str(&user).unwrap() })
            .await
            .unwrap()
            .unwrap()
            .get("followers_count")
            .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
            .unwrap()
    };
    let shown = || async {
        app.stack
            .users()
            .await
            .get_user(GetUserRequest { id: user.clone() })
            .await
            .answer()
            .followers_count
    };
    let unfollowed = event(Payload::UserUnfollowed(social_events::pb::UserUnfollowed {
        follower_id: follower.to_hex(),
        followee_id: user.clone(),
    }));
    broker::publish_all(&config, "graph.user.unfollowed", &[unfollowed]).await;
    let early =
        eventually(Duration::from_secs(15), || async { (stored().await == -1).then_some(()) })
            .await;
    assert!(early.is_some(), "the unfollow was applied first");
    assert_eq!(shown().await, 0, "never shown below zero");
    broker::publish_all(&config, "graph.user.followed", &[event(Payload::UserFollowed(pair()))])
        .await;
    let settled =
        eventually(Duration::from_secs(15), || async { (stored().await == 0).then_some(()) }).await;
    assert!(settled.is_some(), "the stored count converges");
    assert_eq!(shown().await, 0);
}
