//! User timelines and the home feed: newest first, stable pages, a graph service
//! that is down, readers who follow hundreds of accounts.

use super::*;
use social_testkit::Refused;

#[tokio::test]
async fn user_posts_page_newest_first_and_stay_stable_under_inserts() {
    let app = spawn().await;
    let author = ObjectId::new();
    let token = token_for(author);
    let mut original = Vec::new();
    for i in 0..23 {
        original.push(app.post(&token, &format!("post {i}"), vec![]).await.unwrap().id);
    }
    original.reverse();

    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut i = 0;
    loop {
        let (page, next) = app.user_posts(&author.to_hex(), 10, &page_token).await;
        seen.extend(page.into_iter().map(|p| p.id));
        // The author keeps posting while a reader pages.
        app.post(&token, &format!("late {i}"), vec![]).await.unwrap();
        i += 1;
        if next.is_empty() {
            break;
        }
        page_token = next;
    }
    assert_eq!(seen, original);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());

    let (_, page_token) = app.user_posts(&author.to_hex(), 5, "").await;
    let err = app
        .posts
        .clone()
        .list_user_posts(ListUserPostsRequest {
            user_id: ObjectId::new().to_hex(),
            page_size: 5,
            page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
}

#[tokio::test]
async fn home_feed_has_followed_and_own_posts_newest_first() {
    let app = spawn().await;
    let [(_, alice), (bob_id, bob), (_, carol)] = app.register_all(["alice", "bob", "carol"]).await;
    app.stack.follow(&alice, &bob_id).await;

    for (token, text) in
        [(&bob, "bob 1"), (&alice, "alice 1"), (&carol, "carol 1"), (&bob, "bob 2")]
    {
        app.post(token, text, vec![]).await.unwrap();
    }
    let (feed, next) = app.feed(&alice, 0, "").await.unwrap();
    assert_eq!(feed, ["bob 2", "alice 1", "bob 1"]);
    assert!(next.is_empty());

    // Paging through it.
    let (first, next) = app.feed(&alice, 2, "").await.unwrap();
    assert_eq!(first, ["bob 2", "alice 1"]);
    let (rest, last) = app.feed(&alice, 2, &next).await.unwrap();
    assert_eq!(rest, ["bob 1"]);
    assert!(last.is_empty());
    // Another reader cannot reuse alice's token.
    let err = app.feed(&carol, 2, &next).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);

    app.stack.unfollow(&alice, &bob_id).await;
    // Once its event is applied: the home timeline reads whom alice follows from memory.
    let unfollowed = social_testkit::eventually(std::time::Duration::from_secs(10), || async {
        let feed = app.feed(&alice, 0, "").await.unwrap().0;
        (feed == ["alice 1"]).then_some(())
    })
    .await;
    assert!(unfollowed.is_some(), "bob's posts stayed in alice's feed");

    app.posts
        .clone()
        .list_home_feed(ListHomeFeedRequest::default())
        .await
        .refused(Code::Unauthenticated);
}

#[tokio::test]
async fn home_feed_is_unavailable_when_the_graph_is_down() {
    let app = spawn_with_graph(Some("http://127.0.0.1:1".into())).await;
    let err = app.feed(&token_for(ObjectId::new()), 0, "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[tokio::test]
async fn a_reader_following_hundreds_of_accounts_gets_their_posts_and_no_others() {
    let app = spawn().await;
    let (alice_id, alice) = app.user("alice").await;
    let alice_id = bson::oid::ObjectId::parse_str(&alice_id).unwrap();
    // 250 follows, more than a query merges range by range, stored as Follow stores them.
    let authors: Vec<bson::oid::ObjectId> = (0..250).map(|_| bson::oid::ObjectId::new()).collect();
    let follows: Vec<bson::Document> = authors
        .iter()
        .enumerate()
        .map(|(i, author)| {
            let at = bson::DateTime::now();
            bson::doc! {
                "_id": bson::oid::ObjectId::new(), "follower_id": alice_id, "followee_id": author,
                "created_at": at, "sort_key": social_kit::paging::sort_key(at) + i as i64,
                "state": "active", "active_key": "active", "started_ms": at.timestamp_millis(),
                "outbox_pending": 0,
            }
        })
        .collect();
    app.stack
        .database()
        .await
        .collection::<bson::Document>("followers")
        .insert_many(follows)
        .await
        .unwrap();
    for (author, text) in [(0, "first"), (249, "last"), (100, "middle")] {
        app.post(&token_for(authors[author]), text, vec![]).await.unwrap();
    }
    app.post(&token_for(bson::oid::ObjectId::new()), "a stranger's", vec![]).await.unwrap();
    app.post(&alice, "mine", vec![]).await.unwrap();
    let (feed, _) = app.feed(&alice, 10, "").await.unwrap();
    assert_eq!(feed, ["mine", "middle", "last", "first"]);
    let (first, next) = app.feed(&alice, 2, "").await.unwrap();
    assert_eq!(first, ["mine", "middle"]);
    assert_eq!(app.feed(&alice, 2, &next).await.unwrap().0, ["last", "first"]);
}
