//! Recomputing counters while traffic flows: events still in an outbox or a queue are
//! neither counted twice nor lost, a user with many followers is recounted, and a batch
//! that fails is reported while the others go on.

use std::{net::SocketAddr, time::Duration};

use bson::{doc, oid::ObjectId};
use social_proto::user::v1::GetUserRequest;
use social_testkit::{Answer, Stack, StackOptions, TcpProxy, broker, eventually, token_for};

use crate::App;

fn peer(addr: SocketAddr) -> social_kit::client::Peer {
    social_testkit::peer("social-graph service", &format!("http://{addr}"), Duration::from_secs(5))
}

#[tokio::test]
async fn a_recount_while_follows_wait_in_an_outbox_and_a_queue_ends_exact() {
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let (everyone, user_side) = (TcpProxy::start(rabbit).await, TcpProxy::start(rabbit).await);
    let url = |p: &TcpProxy| format!("amqp://guest:guest@{}/%2f", p.addr);
    let app = App::with(
        Stack::start_with(StackOptions {
            amqp_url: Some(url(&everyone)),
            user_amqp_url: Some(url(&user_side)),
            ..Default::default()
        })
        .await,
    )
    .await;
    let (star, _) = app.stack.register("star").await;
    let (a, b, c) =
        (token_for(ObjectId::new()), token_for(ObjectId::new()), token_for(ObjectId::new()));
    let follow = |token: String| {
        let (stack, star) = (&app.stack, star.clone());
        async move { stack.follow(&token, &star).await }
    };
    let followers = || async {
        app.stack
            .users()
            .await
            .get_user(GetUserRequest { id: star.clone() })
            .await
            .answer()
            .followers_count
    };
    follow(a.clone()).await;
    let counted =
        eventually(Duration::from_secs(15), || async { (followers().await == 1).then_some(()) })
            .await;
    assert!(counted.is_some());

    // The user service's consumer goes away: b's follow waits in its queue. Once the
    // social-graph service's outbox is empty, b's follow was confirmed, so it is in the
    // queue. The queue may also hold a's follow again: when the cut came between its
    // count and its ack, the broker hands it out again (and it must not count twice).
    user_side.cut().await;
    follow(b).await;
    let config = app.stack.events.clone();
    let follows = app.stack.database().await.collection::<bson::Document>("followers");
    let seen = std::sync::Mutex::new((0, 0));
    let queued = eventually(Duration::from_secs(30), || async {
        let pending =
            follows.count_documents(doc! { "outbox_pending": { "$gt": 0 } }).await.unwrap();
        let depth = broker::queue_depth(&config, &config.queue("user")).await;
        *seen.lock().unwrap() = (pending, depth);
        (pending == 0 && (1..=2).contains(&depth)).then_some(())
    })
    .await;
    let (pending, depth) = *seen.lock().unwrap();
    assert!(
        queued.is_some(),
        "{pending} follows still in the outbox, {depth} events in the user queue"
    );
    // The broker goes away for the social-graph service: c's follow and a's unfollow
    // wait in its outbox.
    everyone.cut().await;
    follow(c).await;
    app.stack.unfollow(&a, &star).await;

    // Recount now: b and c follow, a does not.
    let mut user_config = social_user::Config::for_tests(
        &social_testkit::mongodb_uri(),
        &app.stack.database,
        config.clone(),
    );
    user_config.graph_service = peer(app.stack.graph.addr);
    let recounted = social_user::recompute_counters(&user_config, Duration::ZERO).await.unwrap();
    assert!(recounted >= 1);
    assert_eq!(followers().await, 2);

    // Everything lands: none of it counts again.
    user_side.restore();
    everyone.restore();
    let landed = eventually(Duration::from_secs(30), || async {
        let pending =
            follows.count_documents(doc! { "outbox_pending": { "$gt": 0 } }).await.unwrap();
        let queued = broker::queue_depth(&config, &config.queue("user")).await;
        (pending == 0 && queued == 0).then_some(())
    })
    .await;
    assert!(landed.is_some());
    // Absence cannot be polled for: give the handlers in flight time to finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(followers().await, 2);
}

#[tokio::test]
async fn a_user_with_many_followers_is_recounted_and_a_failing_batch_is_reported() {
    let app = App::start().await;
    let (star, _) = app.stack.register("star").await;
    let star = ObjectId::parse_str(&star).unwrap();
    let db = app.stack.database().await;
    // 3,000 followers, written straight into the social-graph service's collection.
    let now = bson::DateTime::now();
    let started = now.timestamp_millis() - 60_000;
    let follows: Vec<bson::Document> = (0..3000)
        .map(|_| {
            doc! {
                "_id": ObjectId::new(), "follower_id": ObjectId::new(), "followee_id": star,
                "created_at": now, "sort_key": social_kit::paging::fresh_sort_key(),
                "state": "active", "active_key": "active", "started_ms": started,
                "outbox_pending": 0,
            }
        })
        .collect();
    db.collection::<bson::Document>("followers").insert_many(follows).await.unwrap();
    // And 150 more users (two batches of recounting), straight into the user service's.
    let users: Vec<bson::Document> = (0..150)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(), "username": format!("u{i}"),
                "username_lower": format!("u{i}"), "email": format!("u{i}@example.com"),
                "password_hash": "x", "created_at": now, "updated_at": now,
            }
        })
        .collect();
    db.collection::<bson::Document>("users").insert_many(users).await.unwrap();

    let uri = social_testkit::mongodb_uri();
    let mut config =
        social_user::Config::for_tests(&uri, &app.stack.database, app.stack.events.clone());
    config.graph_service = peer(app.stack.graph.addr);
    let recounted = social_user::recompute_counters(&config, Duration::ZERO).await.unwrap();
    assert_eq!(recounted, 151);
    let got = app.stack.users().await.get_user(GetUserRequest { id: star.to_hex() }).await.answer();
    assert_eq!(got.followers_count, 3000);

    // The social-graph service is unreachable: every batch fails, each is reported, and
    // the command goes through all of them.
    let unreachable: SocketAddr = "127.0.0.1:9".parse().unwrap();
    config.graph_service = peer(unreachable);
    let err = social_user::recompute_counters(&config, Duration::ZERO).await.unwrap_err();
    assert!(format!("{err:#}").contains("2 batch(es) of follow counters"), "{err:#}");
}

#[tokio::test]
async fn a_recount_stays_exact_when_a_purge_falls_in_the_middle_of_it() {
    let app = App::start().await;
    let (star, _) = app.stack.register("star").await;
    let (stays, leaves) = (token_for(ObjectId::new()), token_for(ObjectId::new()));
    for token in [&stays, &leaves] {
        app.stack.follow(token, &star).await;
    }
    app.stack.unfollow(&leaves, &star).await;
    app.stack.settled().await;
    // The recount is held after its count (where it counted the follows started, before
    // it counted the ended ones); meanwhile the ended follow is purged, as its TTL
    // index would a month later.
    fail::cfg("kit::count_as_of", "return(1000)").unwrap();
    let purge = async {
        let held = eventually(Duration::from_secs(15), || async {
            (social_kit::faults::fired("kit::count_as_of") > 0).then_some(())
        })
        .await;
        assert!(held.is_some(), "the recount was not held");
        app.stack
            .database()
            .await
            .collection::<bson::Document>("followers")
            .delete_many(doc! { "state": "ended" })
            .await
            .unwrap();
    };
    let mut config = social_user::Config::for_tests(
        &social_testkit::mongodb_uri(),
        &app.stack.database,
        app.stack.events.clone(),
    );
    config.graph_service = peer(app.stack.graph.addr);
    let (recounted, ()) =
        tokio::join!(social_user::recompute_counters(&config, Duration::ZERO), purge);
    fail::remove("kit::count_as_of");
    recounted.unwrap();
    let user = app.stack.users().await.get_user(GetUserRequest { id: star }).await.answer();
    assert_eq!(user.followers_count, 1);
}

/// An unlike or an unfollow stamped by a replica whose clock is behind the one that
/// stamped its like or follow still ends after it (its `ended_ms`, the time of its
/// event): recounts and the notifications an undo takes back order the two by these
/// times.
#[tokio::test]
async fn an_ending_stamped_by_a_clock_behind_its_start_is_still_later_than_it() {
    let app = App::start().await;
    let [(author, author_token), (_, fan)] = app.stack.register_all(["author", "fan"]).await;
    let post = app.post(&author_token, "hello").await;
    app.like_post(&fan, &post.id).await.unwrap();
    app.stack.follow(&fan, &author).await;
    // As if a replica whose clock is a minute ahead had stamped both.
    let db = app.stack.database().await;
    let ahead = bson::DateTime::now().timestamp_millis() + 60_000;
    for collection in ["likes", "followers"] {
        let moved = doc! { "$set": { "started_ms": ahead } };
        db.collection::<bson::Document>(collection).update_many(doc! {}, moved).await.unwrap();
    }
    app.stack.unlike_post(&fan, &post.id).await.unwrap();
    app.stack.unfollow(&fan, &author).await;
    for collection in ["likes", "followers"] {
        let ended = db
            .collection::<bson::Document>(collection)
            .find_one(doc! { "state": "ended" })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the {collection} ended"));
        assert_eq!(ended.get_i64("ended_ms").ok(), Some(ahead + 1), "{collection}");
    }
}
