//! Home timelines in Redis (`services/post/src/timelines.rs`): a warm feed is read from
//! memory alone, answers as the merge in MongoDB would whatever follows, mutes, posts
//! and deletions did, pulls authors above the fan-out limit instead of pushing them, and
//! without Redis is read from MongoDB, catching up once Redis is back.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use social_post::TimelineSettings;
use social_proto::{
    graph::v1::{FollowRequest, MuteUserRequest, UnfollowRequest, UnmuteUserRequest},
    post::v1::{DeletePostRequest, ListHomeFeedRequest, post_service_client::PostServiceClient},
};
use social_testkit::{Answer, Stack, StackOptions, TcpProxy, authed, queries};
use tonic::transport::Channel;

use crate::App;

async fn spawn_with(options: StackOptions) -> App {
    let stack = Stack::start_with(options).await;
    App { graph: stack.graph().await, posts: stack.posts().await, stack }
}

/// Commands a home-feed read sends to MongoDB when it is not answered from memory: the
/// merge's query, the followees and mutes, the posts by id.
fn feed_reads() -> u64 {
    queries::sent("posts", "user_id")
        + queries::sent("posts", "find {_id:")
        + queries::sent("followers", "follower_id: =, state: =")
        + queries::sent("mutes", "muter_id")
}

/// Every post of `token`'s home feed, page by page, as ids.
async fn whole_feed(posts: &PostServiceClient<Channel>, token: &str, size: i32) -> Vec<String> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListHomeFeedRequest { page_size: size, page_token };
        let page = posts.clone().list_home_feed(authed(request, token)).await.answer();
        all.extend(page.posts.into_iter().map(|p| p.content));
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// `token`'s feed, read twice: the second read's answer and how many commands it sent
/// to MongoDB (the first fills the post cache).
async fn warm_feed(app: &App, token: &str) -> (Vec<String>, u64) {
    whole_feed(&app.posts, token, 2).await;
    let before = feed_reads();
    let feed = whole_feed(&app.posts, token, 2).await;
    (feed, feed_reads() - before)
}

#[tokio::test]
async fn a_warm_home_feed_is_read_from_redis_without_the_database() {
    let app = crate::spawn().await;
    let [(_, alice), (bob_id, bob), (carol_id, carol)] =
        app.register_all(["alice", "bob", "carol"]).await;
    app.stack.follow(&alice, &bob_id).await;
    app.stack.follow(&alice, &carol_id).await;
    for (token, text) in [(&bob, "b1"), (&carol, "c1"), (&alice, "a1"), (&bob, "b2")] {
        app.post(token, text, vec![]).await.unwrap();
    }
    // The first read is merged in MongoDB and starts the timeline.
    assert_eq!(app.feed(&alice, 0, "").await.unwrap().0, ["b2", "a1", "c1", "b1"]);
    app.stack.settled().await;
    let (feed, sent) = warm_feed(&app, &alice).await;
    assert_eq!(feed, ["b2", "a1", "c1", "b1"]);
    assert_eq!(sent, 0, "a warm home feed sends nothing to MongoDB");
    // New posts arrive through the fan-out; one's own at once.
    app.post(&carol, "c2", vec![]).await.unwrap();
    app.post(&alice, "a2", vec![]).await.unwrap();
    assert_eq!(app.feed(&alice, 1, "").await.unwrap().0, ["a2"]);
    app.stack.settled().await;
    let (feed, sent) = warm_feed(&app, &alice).await;
    assert_eq!(feed, ["a2", "c2", "b2", "a1", "c1", "b1"]);
    assert_eq!(sent, 0, "the fan-out's posts are read from memory too");
}

/// One change a random run makes.
#[derive(Debug, Clone, Copy)]
enum Change {
    Post(usize),
    Delete(usize),
    Follow(usize, usize),
    Unfollow(usize, usize),
    Mute(usize, usize),
    Unmute(usize, usize),
}

impl Change {
    /// What two changes made at once must not share, so that the expected state does
    /// not depend on their order.
    fn touches(self) -> (usize, usize) {
        match self {
            Self::Post(u) | Self::Delete(u) => (u, u),
            Self::Follow(u, v) | Self::Unfollow(u, v) | Self::Mute(u, v) | Self::Unmute(u, v) => {
                (u, v)
            }
        }
    }

    fn random(rng: &mut StdRng, users: usize) -> Self {
        let u = rng.random_range(0..users);
        let v = (u + rng.random_range(1..users)) % users;
        match rng.random_range(0..10) {
            0..=2 => Self::Post(u),
            3 => Self::Delete(u),
            4..=5 => Self::Follow(u, v),
            6 => Self::Unfollow(u, v),
            7 => Self::Mute(u, v),
            _ => Self::Unmute(u, v),
        }
    }
}

#[tokio::test]
async fn home_timelines_answer_as_the_merge_in_mongodb_over_random_follows_mutes_posts_and_deletions()
 {
    // Ten entries per timeline: trimming, and pages below the floor, happen.
    let timelines = TimelineSettings { length: 10, ..Default::default() };
    let app =
        spawn_with(StackOptions { post_timelines: Some(timelines), ..Default::default() }).await;
    let merged = app.stack.post_replica(TimelineSettings { length: 0, ..Default::default() }).await;
    let merged = PostServiceClient::new(merged.channel().await);
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(app.user(&format!("user{i}")).await);
    }
    for (_, token) in &users {
        whole_feed(&app.posts, token, 3).await;
    }
    // The model: who follows and mutes whom, the posts that stand, by author.
    let mut follows: HashSet<(usize, usize)> = HashSet::new();
    let mut mutes: HashSet<(usize, usize)> = HashSet::new();
    let mut posts: HashMap<usize, Vec<(String, String)>> = HashMap::new();
    let mut from_memory = 0;
    let mut written = 0;
    for seed in [7_u64, 11, 13] {
        let mut rng = StdRng::seed_from_u64(seed);
        for _round in 0..10 {
            let mut round: Vec<Change> = Vec::new();
            while round.len() < 3 {
                let change = Change::random(&mut rng, users.len());
                let (a, b) = change.touches();
                if round.iter().all(|c| {
                    let (x, y) = c.touches();
                    ![x, y].contains(&a) && ![x, y].contains(&b)
                }) {
                    round.push(change);
                }
            }
            let mut calls = Vec::new();
            for change in round {
                let victim = match change {
                    Change::Delete(u) => posts.get_mut(&u).and_then(|p| p.pop()),
                    _ => None,
                };
                written += 1;
                let text = format!("{seed}-{written}");
                let app = &app;
                let users = &users;
                calls.push(async move {
                    let token = |u: usize| users[u].1.clone();
                    let id = |u: usize| users[u].0.clone();
                    let mut graph = app.graph.clone();
                    match change {
                        Change::Post(u) => {
                            let post = app.post(&token(u), &text, vec![]).await.unwrap();
                            Some((u, post.id, text))
                        }
                        Change::Delete(u) => {
                            if let Some((post, _)) = victim {
                                let request = DeletePostRequest { id: post };
                                let mut posts = app.posts.clone();
                                posts.delete_post(authed(request, &token(u))).await.unwrap();
                            }
                            None
                        }
                        Change::Follow(u, v) => {
                            let request = FollowRequest { followee_id: id(v) };
                            graph.follow(authed(request, &token(u))).await.unwrap();
                            None
                        }
                        Change::Unfollow(u, v) => {
                            let request = UnfollowRequest { followee_id: id(v) };
                            graph.unfollow(authed(request, &token(u))).await.unwrap();
                            None
                        }
                        Change::Mute(u, v) => {
                            let request = MuteUserRequest {
                                user_id: id(v),
                                duration_seconds: 0,
                                notifications: None,
                            };
                            graph.mute_user(authed(request, &token(u))).await.unwrap();
                            None
                        }
                        Change::Unmute(u, v) => {
                            let request = UnmuteUserRequest { user_id: id(v) };
                            graph.unmute_user(authed(request, &token(u))).await.unwrap();
                            None
                        }
                    }
                });
                match change {
                    Change::Follow(u, v) => drop(follows.insert((u, v))),
                    Change::Unfollow(u, v) => drop(follows.remove(&(u, v))),
                    Change::Mute(u, v) => drop(mutes.insert((u, v))),
                    Change::Unmute(u, v) => drop(mutes.remove(&(u, v))),
                    _ => {}
                }
            }
            for (author, id, text) in futures::future::join_all(calls).await.into_iter().flatten() {
                posts.entry(author).or_default().push((id, text));
            }
        }
        app.stack.settled().await;
        for (reader, (_, token)) in users.iter().enumerate() {
            let first = whole_feed(&app.posts, token, 3).await;
            // Warm now: a first page above the floor comes from memory alone.
            let before = feed_reads();
            let page = app.feed(token, 3, "").await.unwrap().0;
            if feed_reads() == before {
                from_memory += 1;
            }
            assert_eq!(page, first[..first.len().min(3)], "seed {seed}, reader {reader}");
            let expected: BTreeSet<&String> = posts
                .iter()
                .filter(|(author, _)| {
                    **author == reader
                        || (follows.contains(&(reader, **author))
                            && !mutes.contains(&(reader, **author)))
                })
                .flat_map(|(_, p)| p.iter().map(|(_, text)| text))
                .collect();
            let memory = whole_feed(&app.posts, token, 3).await;
            let pulled = whole_feed(&merged, token, 3).await;
            assert_eq!(memory, pulled, "seed {seed}, reader {reader}");
            assert_eq!(first, pulled, "seed {seed}, reader {reader}");
            assert_eq!(
                memory.iter().collect::<BTreeSet<_>>(),
                expected,
                "seed {seed}, reader {reader}"
            );
        }
    }
    // Fifteen first pages were read; all but a page short of entries above the floor
    // come from memory.
    assert!(from_memory >= 10, "only {from_memory} first pages of 15 were read from memory");
}

#[tokio::test]
async fn an_author_above_the_fan_out_limit_is_pulled_at_read_time_not_pushed() {
    let app = spawn_with(StackOptions {
        post_timelines: Some(TimelineSettings { max_followers: 2, ..Default::default() }),
        ..Default::default()
    })
    .await;
    let [(big_id, big), (small_id, small)] = app.register_all(["big", "small"]).await;
    let mut readers = Vec::new();
    for name in ["follower1", "follower2", "follower3"] {
        let (id, token) = app.user(name).await;
        app.stack.follow(&token, &big_id).await;
        readers.push((id, token));
    }
    app.stack.follow(&readers[0].1, &small_id).await;
    for (_, token) in &readers {
        app.feed(token, 0, "").await.unwrap();
    }
    app.stack.settled().await;
    app.post(&big, "big 1", vec![]).await.unwrap();
    app.post(&small, "small 1", vec![]).await.unwrap();
    app.post(&big, "big 2", vec![]).await.unwrap();
    app.stack.settled().await;

    let mut redis = social_testkit::redis().await;
    for (i, (id, token)) in readers.iter().enumerate() {
        let mut entries: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("social-test:home:{{{id}}}"))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await
            .unwrap();
        entries.retain(|e| e != "~");
        let (feed, _) = warm_feed(&app, token).await;
        if i == 0 {
            assert_eq!(feed, ["big 2", "small 1", "big 1"]);
            assert_eq!(entries.len(), 1, "only the small author's post: {entries:?}");
            assert!(entries[0].ends_with(&small_id), "{entries:?}");
        } else {
            assert_eq!(feed, ["big 2", "big 1"]);
            assert!(entries.is_empty(), "nothing pushed: {entries:?}");
        }
    }
    let pulled = bson::doc! { "_id": bson::oid::ObjectId::parse_str(&big_id).unwrap() };
    assert_eq!(app.stack.count("pulled_authors", pulled).await, 1);
    // Another replica learns it from MongoDB, and pulls the author too.
    let replica = app.stack.post_replica(TimelineSettings::default()).await;
    let replica = PostServiceClient::new(replica.channel().await);
    let pulls = social_testkit::eventually(Duration::from_secs(5), || async {
        let feed = whole_feed(&replica, &readers[1].1, 10).await;
        (feed == ["big 2", "big 1"]).then_some(())
    })
    .await;
    assert!(pulls.is_some(), "{:?}", whole_feed(&replica, &readers[1].1, 10).await);
}

#[tokio::test]
async fn without_redis_feeds_come_from_mongodb_and_timelines_catch_up_once_it_is_back() {
    let proxy = TcpProxy::start("127.0.0.1:6379".parse().unwrap()).await;
    let mut cache = social_kit::cache::Settings::for_tests();
    cache.url = format!("redis://{}", proxy.addr);
    let app = spawn_with(StackOptions { post_cache: Some(cache), ..Default::default() }).await;
    let [(_, alice), (bob_id, bob)] = app.register_all(["alice", "bob"]).await;
    app.stack.follow(&alice, &bob_id).await;
    app.post(&bob, "before", vec![]).await.unwrap();
    app.feed(&alice, 0, "").await.unwrap();
    app.stack.settled().await;
    assert_eq!(warm_feed(&app, &alice).await, (vec!["before".to_owned()], 0));

    proxy.cut().await;
    app.post(&bob, "during 1", vec![]).await.unwrap();
    let reads = (0..10).map(|_| async { app.feed(&alice, 0, "").await.unwrap().0 });
    app.post(&bob, "during 2", vec![]).await.unwrap();
    for feed in futures::future::join_all(reads).await {
        assert_eq!(feed, ["during 2", "during 1", "before"]);
    }
    proxy.restore();
    app.stack.settled().await;
    let caught_up = social_testkit::eventually(Duration::from_secs(10), || async {
        let (feed, sent) = warm_feed(&app, &alice).await;
        (sent == 0).then_some(feed)
    })
    .await;
    assert_eq!(
        caught_up.expect("the feed is read from memory again"),
        ["during 2", "during 1", "before"]
    );
}

#[tokio::test]
async fn a_mute_that_ends_by_itself_lets_the_account_back_into_the_timeline() {
    let app = crate::spawn().await;
    let [(alice_id, alice), (bob_id, bob)] = app.register_all(["alice", "bob"]).await;
    app.stack.follow(&alice, &bob_id).await;
    app.post(&bob, "by bob", vec![]).await.unwrap();
    app.feed(&alice, 0, "").await.unwrap();
    let mute =
        MuteUserRequest { user_id: bob_id.clone(), duration_seconds: 60, notifications: None };
    let mut graph = app.graph.clone();
    graph.mute_user(authed(mute, &alice)).await.unwrap();
    app.stack.settled().await;
    assert_eq!(warm_feed(&app, &alice).await, (Vec::<String>::new(), 0));
    // A minute later (the timeline's copy of the mute's end moved to the past, as time
    // would), bob is back, still read from memory.
    let mut redis = social_testkit::redis().await;
    let ended = bson::DateTime::now().timestamp_millis() - 1000;
    let moved: i64 = redis::cmd("ZADD")
        .arg(format!("social-test:home:{{{alice_id}}}:muted"))
        .arg("XX")
        .arg("CH")
        .arg(ended)
        .arg(&bob_id)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(moved, 1, "the timeline holds the mute");
    assert_eq!(warm_feed(&app, &alice).await, (vec!["by bob".to_owned()], 0));
}

#[tokio::test]
async fn a_timeline_that_lost_a_part_is_built_again_not_read_wrong() {
    let app = crate::spawn().await;
    let [(alice_id, alice), (bob_id, bob)] = app.register_all(["alice", "bob"]).await;
    app.stack.follow(&alice, &bob_id).await;
    app.post(&bob, "by bob", vec![]).await.unwrap();
    app.feed(&alice, 0, "").await.unwrap();
    app.stack.settled().await;
    assert_eq!(warm_feed(&app, &alice).await, (vec!["by bob".to_owned()], 0));
    // Redis evicts one key of alice's timeline (each has a TTL), not the others.
    let mut redis = social_testkit::redis().await;
    let evicted: i64 = redis::cmd("DEL")
        .arg(format!("social-test:home:{{{alice_id}}}:follows"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(evicted, 1);
    assert_eq!(app.feed(&alice, 0, "").await.unwrap().0, ["by bob"]);
    let rebuilt = social_testkit::eventually(Duration::from_secs(10), || async {
        let (feed, sent) = warm_feed(&app, &alice).await;
        (sent == 0).then_some(feed)
    })
    .await;
    assert_eq!(rebuilt.expect("read from memory again"), ["by bob"]);
}

/// A post whose author blocks the reader is absent from the reader's feed whatever the
/// timeline holds: a block reaches the timeline through events, which may lag behind
/// or be lost with a failover, so the feed checks blocks as GetPost does.
#[tokio::test]
async fn a_blockers_posts_leave_the_feed_even_when_the_timeline_missed_the_block() {
    let app = crate::spawn().await;
    let [(alice_id, alice), (bob_id, bob)] = app.register_all(["alice", "bob"]).await;
    app.stack.follow(&alice, &bob_id).await;
    app.post(&bob, "by bob", vec![]).await.unwrap();
    app.stack.settled().await;
    assert_eq!(warm_feed(&app, &alice).await, (vec!["by bob".to_owned()], 0));
    // Alice's timeline as it is now, to be put back after the block: a Redis failover
    // to a replica that had not received what the block's events changed.
    let mut redis = social_testkit::redis().await;
    let base = format!("social-test:home:{{{alice_id}}}");
    let mut saved = Vec::new();
    for key in [base.clone(), format!("{base}:follows"), format!("{base}:floor")] {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query_async(&mut redis).await.unwrap();
        saved.push((key, dump));
    }
    app.stack.block(&bob, &alice_id).await.unwrap();
    app.stack.settled().await;
    assert_eq!(app.feed(&alice, 0, "").await.unwrap().0, Vec::<String>::new());
    for (key, dump) in saved {
        let () = redis::cmd("RESTORE")
            .arg(&key)
            .arg(0)
            .arg(dump)
            .arg("REPLACE")
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    assert_eq!(app.feed(&alice, 0, "").await.unwrap().0, Vec::<String>::new());
}

/// With home timelines off, the post service still takes the events of their queue
/// (every service declares and binds every queue) and drops them: nothing piles up in
/// the broker.
#[tokio::test]
async fn with_timelines_off_their_queue_is_drained_not_left_to_grow() {
    let off = TimelineSettings { length: 0, ..Default::default() };
    let app = spawn_with(StackOptions { post_timelines: Some(off), ..Default::default() }).await;
    let [(_, alice), (bob_id, bob)] = app.register_all(["alice", "bob"]).await;
    app.stack.follow(&alice, &bob_id).await;
    app.post(&bob, "by bob", vec![]).await.unwrap();
    // Every queue empty, the timelines' included.
    app.stack.settled().await;
    assert_eq!(app.feed(&alice, 0, "").await.unwrap().0, ["by bob"]);
}
