//! Benchmarks of home timelines (`services/post/src/timelines.rs`): the home feed read
//! from them against merged in MongoDB, and the fan-out's time to every follower.

use std::time::{Duration, Instant};

use bson::{DateTime, doc, oid::ObjectId};
use social_proto::{
    graph::v1::ListFollowingIdsRequest,
    post::v1::{CreatePostRequest, post_service_client::PostServiceClient},
};
use social_testkit::{Stack, StackOptions, TimelineSettings, authed, token_for};

use crate::bench::{SAMPLES, database, feed_page, histogram, report, seed_posts, timed};

/// The key of `reader`'s timeline (and `suffix`) in the test stack's Redis.
fn key(reader: ObjectId, suffix: &str) -> String {
    format!("social-test:home:{{{}}}{suffix}", reader.to_hex())
}

/// A follow of `followee` by `follower`, as Follow stores it.
fn follow(follower: ObjectId, followee: ObjectId) -> bson::Document {
    let at = DateTime::now();
    doc! {
        "_id": ObjectId::new(), "follower_id": follower, "followee_id": followee,
        "created_at": at, "sort_key": social_kit::paging::sort_key(at),
        "state": "active", "active_key": "active", "started_ms": at.timestamp_millis(),
    }
}

/// ListHomeFeed for readers following 10 to 5,000 of 5,000 authors: from their home
/// timelines (warm), and merged in MongoDB by a replica without timelines.
pub async fn feed() -> anyhow::Result<()> {
    let stack = Stack::start().await;
    let db = database(&stack).await?;
    let mut posts = stack.posts().await;
    let merged = stack.post_replica(TimelineSettings { length: 0, ..Default::default() }).await;
    let mut merged = PostServiceClient::new(merged.channel().await);
    let mut graph = stack.graph().await;
    let mut redis = social_testkit::redis().await;

    let authors: Vec<ObjectId> = (0..5000).map(|_| ObjectId::new()).collect();
    // Every author has posted a few times over the last days; 20,000 posts in all.
    let now = DateTime::now().timestamp_millis();
    let seeded = Instant::now();
    let stored = seed_posts(&db, &authors, now).await?;
    println!("seeded {stored} posts in {:?}", seeded.elapsed());

    println!("ListHomeFeed, first page of 20 (then the second page), {SAMPLES} samples each:");
    for n in [10_usize, 100, 1000, 5000] {
        let reader = ObjectId::new();
        // Followees spread over the whole author population.
        let step = authors.len() / n;
        let follows: Vec<_> = (0..n).map(|i| follow(reader, authors[i * step])).collect();
        db.collection("followers").insert_many(follows).await?;
        let token = token_for(reader);
        // The first read is merged in MongoDB and builds the timeline.
        let built = Instant::now();
        posts.list_home_feed(feed_page(&token, String::new())).await?;
        loop {
            let floor: Option<String> =
                redis::cmd("GET").arg(key(reader, ":floor")).query_async(&mut redis).await?;
            if floor.is_some_and(|f| f != "building") {
                break;
            }
            anyhow::ensure!(built.elapsed() < Duration::from_secs(60), "no timeline");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("following {n:>5}: timeline built in {:?}", built.elapsed());
        let (mut first, mut second, mut ids) = (histogram(), histogram(), histogram());
        let (mut merged_first, mut merged_second) = (histogram(), histogram());
        for _ in 0..SAMPLES {
            let following = timed(
                &mut ids,
                graph.list_following_ids(social_testkit::as_service(ListFollowingIdsRequest {
                    user_id: reader.to_hex(),
                    limit: 0,
                    without_muted: false,
                    with_mutes: false,
                    among: Vec::new(),
                })),
            )
            .await?
            .into_inner();
            assert_eq!(following.user_ids.len(), n);
            for (client, page_1, page_2) in [
                (&mut posts, &mut first, &mut second),
                (&mut merged, &mut merged_first, &mut merged_second),
            ] {
                let page = timed(page_1, client.list_home_feed(feed_page(&token, String::new())))
                    .await?
                    .into_inner();
                assert_eq!(page.posts.len(), 20);
                let next = feed_page(&token, page.next_page_token);
                timed(page_2, client.list_home_feed(next)).await?;
            }
        }
        report(&format!("following {n:>5}: ids only"), &ids);
        report(&format!("following {n:>5}: page 1, timeline"), &first);
        report(&format!("following {n:>5}: page 2, timeline"), &second);
        report(&format!("following {n:>5}: page 1, merged"), &merged_first);
        report(&format!("following {n:>5}: page 2, merged"), &merged_second);
    }
    db.drop().await?;
    Ok(())
}

/// The time from CreatePost until the post is in the timeline of every follower (each
/// with a timeline), for authors with 100, 1,000 and 10,000 followers (the fan-out
/// limit); and an author with one more, whose post is pushed nowhere.
pub async fn fanout() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions {
        post_timelines: Some(TimelineSettings::default()),
        // The stand-in reads 10,001 follows of one author in seconds (MongoDB, from the
        // index, in milliseconds): more than the tests' 2-s deadline between services.
        peer_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    })
    .await;
    let db = database(&stack).await?;
    let mut posts = stack.posts().await;
    let mut redis = social_testkit::redis().await;
    let limit = TimelineSettings::default().max_followers;
    println!("fan-out to followers who each have a timeline (limit {limit}):");
    for n in [100_usize, 1_000, 10_000, limit + 1] {
        let author = ObjectId::new();
        let followers: Vec<ObjectId> = (0..n).map(|_| ObjectId::new()).collect();
        for chunk in followers.chunks(5000) {
            let follows: Vec<_> = chunk.iter().map(|f| follow(*f, author)).collect();
            db.collection("followers").insert_many(follows).await?;
        }
        // Each follower's timeline as a rebuild leaves it: empty (but for the sentinel
        // each part has), following the author.
        let mut timelines = redis::pipe();
        for follower in &followers {
            timelines
                .cmd("SET")
                .arg(key(*follower, ":floor"))
                .arg(format!("{:019}", 0))
                .arg("PX")
                .arg(600_000)
                .ignore()
                .cmd("SET")
                .arg(key(*follower, ":gen"))
                .arg(1)
                .ignore()
                .cmd("SADD")
                .arg(key(*follower, ":follows"))
                .arg("~")
                .arg(author.to_hex())
                .ignore()
                .cmd("ZADD")
                .arg(key(*follower, ":muted"))
                .arg(0)
                .arg("~")
                .ignore()
                .cmd("ZADD")
                .arg(key(*follower, ""))
                .arg(0)
                .arg("~")
                .ignore();
        }
        timelines.query_async::<()>(&mut redis).await?;
        let request = CreatePostRequest { content: format!("to {n} followers"), media: vec![] };
        let began = Instant::now();
        posts.create_post(authed(request, &token_for(author))).await?;
        let answered = began.elapsed();
        if n > limit {
            // Pushed nowhere: the author is recorded as pulled instead.
            let pulled = db.collection::<bson::Document>("pulled_authors");
            let recorded = loop {
                // (A find: the stand-in counts no filter holding an ObjectId.)
                if pulled.find_one(doc! { "_id": author }).await?.is_some() {
                    break Some(began.elapsed());
                }
                if began.elapsed() > Duration::from_secs(60) {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let pushed = holding_the_post(&mut redis, &followers).await?;
            println!(
                "{n:>6} followers: CreatePost answered in {answered:?}; the author recorded as \
                 pulled after {recorded:?}; the post pushed to {pushed} timelines"
            );
            forget(&mut redis, &followers).await?;
            continue;
        }
        let reached = loop {
            let reached = holding_the_post(&mut redis, &followers).await?;
            if reached == n || began.elapsed() > Duration::from_secs(120) {
                break reached;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let took = began.elapsed();
        forget(&mut redis, &followers).await?;
        println!(
            "{n:>6} followers: CreatePost answered in {answered:?}; in every timeline after \
             {took:?} ({:.1} µs per follower); {reached} reached",
            took.as_secs_f64() * 1e6 / n as f64
        );
    }
    db.drop().await?;
    Ok(())
}

/// How many of `readers`' timelines hold more than their sentinel (the post).
async fn holding_the_post(
    redis: &mut redis::aio::MultiplexedConnection,
    readers: &[ObjectId],
) -> anyhow::Result<usize> {
    let mut counts = redis::pipe();
    for reader in readers {
        counts.cmd("ZCARD").arg(key(*reader, ""));
    }
    let counts: Vec<i64> = counts.query_async(redis).await?;
    Ok(counts.iter().filter(|c| **c > 1).count())
}

/// Drops the timelines of `readers` the benchmark made.
async fn forget(
    redis: &mut redis::aio::MultiplexedConnection,
    readers: &[ObjectId],
) -> anyhow::Result<()> {
    let mut forget = redis::pipe();
    for reader in readers {
        forget.cmd("DEL");
        for suffix in ["", ":floor", ":gen", ":follows", ":muted"] {
            forget.arg(key(*reader, suffix));
        }
        forget.ignore();
    }
    Ok(forget.query_async::<()>(redis).await?)
}
