//! Blocks as readers see them: to the blocked account, the blocker's profile, posts and
//! comments are absent (the blocker still sees the blocked); neither sees the other in
//! the home feed; anyone else sees both.

use std::time::Duration;

use social_proto::{
    engagement::v1::{GetCommentRequest, ListCommentsRequest},
    post::v1::{BatchGetPostsRequest, GetPostRequest, ListUserPostsRequest},
    user::v1::{BatchGetUsersRequest, GetUserByUsernameRequest, GetUserRequest},
};
use social_testkit::{Answer, Refused, authed, eventually, queries};
use tonic::Code;

use crate::{App, spawn};

/// Whether `token`'s home feed (first page) holds a post saying `want`.
async fn feed_holds(app: &App, token: &str, want: &str) -> bool {
    let (feed, _) = app.feed(token, 10, "").await.unwrap();
    feed.iter().any(|c| c == want)
}

#[tokio::test]
async fn to_a_blocked_reader_the_blockers_profile_posts_and_comments_are_absent() {
    let app = spawn().await;
    let [(alice, alice_token), (bob, bob_token), (_, carol_token)] =
        app.register_all(["alice", "bob", "carol"]).await;
    app.stack.follow(&alice_token, &bob).await;
    app.stack.follow(&bob_token, &alice).await;
    let alices = app.post(&alice_token, "by alice", vec![]).await.unwrap();
    let bobs = app.post(&bob_token, "by bob", vec![]).await.unwrap();
    let comment = app.stack.comment(&alice_token, &alices.id, "alice's comment").await.unwrap();
    assert!(feed_holds(&app, &bob_token, "by alice").await);
    assert!(feed_holds(&app, &alice_token, "by bob").await);

    app.stack.block(&alice_token, &bob).await.unwrap();

    // Neither sees the other in the home feed: the follows ended, which home timelines
    // apply from their `unfollowed` events, within moments.
    let apart = eventually(Duration::from_secs(10), || async {
        let apart = !feed_holds(&app, &bob_token, "by alice").await
            && !feed_holds(&app, &alice_token, "by bob").await;
        apart.then_some(())
    })
    .await;
    assert!(apart.is_some(), "the two still see each other's posts in their feeds");

    // Each service keeps its copy of the block from its event: within moments, to bob,
    // alice's post is absent.
    let mut posts = app.posts.clone();
    let get = |token: &str| authed(GetPostRequest { id: alices.id.clone() }, token);
    let absent = eventually(Duration::from_secs(10), || {
        let mut posts = posts.clone();
        let request = get(&bob_token);
        async move {
            let err = posts.get_post(request).await.err()?;
            (err.code() == Code::NotFound).then_some(())
        }
    })
    .await;
    assert!(absent.is_some(), "alice's post stays visible to bob");
    app.stack.settled().await;

    // Posts: one, in batches, in alice's list.
    let batch = |token: &str| {
        let ids = vec![alices.id.clone(), bobs.id.clone()];
        authed(BatchGetPostsRequest { ids }, token)
    };
    let seen: Vec<String> = posts
        .batch_get_posts(batch(&bob_token))
        .await
        .answer()
        .posts
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(seen, std::slice::from_ref(&bobs.id));
    let list = |token: &str| {
        let request = ListUserPostsRequest {
            user_id: alice.clone(),
            page_size: 10,
            page_token: String::new(),
        };
        authed(request, token)
    };
    let listed = posts.list_user_posts(list(&bob_token)).await.unwrap();
    assert!(listed.into_inner().posts.is_empty());

    // The profile, by id, by username and in batches.
    let mut users = app.stack.users().await;
    users
        .get_user(authed(GetUserRequest { id: alice.clone() }, &bob_token))
        .await
        .refused(Code::NotFound);
    let by_name = GetUserByUsernameRequest { username: "alice".into() };
    users.get_user_by_username(authed(by_name, &bob_token)).await.refused(Code::NotFound);
    let both = || BatchGetUsersRequest { ids: vec![alice.clone(), bob.clone()] };
    let seen = users.batch_get_users(authed(both(), &bob_token)).await.answer().users;
    assert_eq!(seen.iter().map(|u| &u.id).collect::<Vec<_>>(), [&bob]);

    // Comments: alice's own, and anything under her post.
    let mut engagement = app.stack.engagement().await;
    engagement
        .get_comment(authed(GetCommentRequest { id: comment.id.clone() }, &bob_token))
        .await
        .refused(Code::NotFound);
    let comments = |token: &str| {
        let request = ListCommentsRequest {
            post_id: alices.id.clone(),
            page_size: 10,
            page_token: String::new(),
        };
        authed(request, token)
    };
    let listed = engagement.list_comments(comments(&bob_token)).await.unwrap();
    assert!(listed.into_inner().comments.is_empty());

    // Nor does a write show that they exist: to bob, changing or deleting alice's post or
    // comment is NOT_FOUND; to carol, who sees them, PERMISSION_DENIED.
    let stack = &app.stack;
    for (token, code) in [(&bob_token, Code::NotFound), (&carol_token, Code::PermissionDenied)] {
        stack.edit_post(token, &alices.id, "changed").await.refused(code);
        stack.try_delete_post(token, &alices.id).await.refused(code);
        stack.edit_comment(token, &comment.id, "changed").await.refused(code);
        stack.delete_comment(token, &comment.id).await.refused(code);
    }
    // Nor an unlike with nothing to undo (to carol it is done: she liked nothing).
    stack.unlike_post(&bob_token, &alices.id).await.refused(Code::NotFound);
    stack.unlike_comment(&bob_token, &comment.id).await.refused(Code::NotFound);
    stack.unlike_post(&carol_token, &alices.id).await.unwrap();
    stack.unlike_comment(&carol_token, &comment.id).await.unwrap();

    // Likes of alice's post, and alice's followers and followees, as an unknown user's.
    app.stack.like_post(&alice_token, &alices.id).await.unwrap();
    let likes = |token: &str| {
        let request = social_proto::engagement::v1::ListPostLikesRequest {
            post_id: alices.id.clone(),
            page_size: 10,
            page_token: String::new(),
        };
        authed(request, token)
    };
    let listed = engagement.list_post_likes(likes(&bob_token)).await.unwrap();
    assert!(listed.into_inner().likes.is_empty());
    let listed = engagement.list_post_likes(likes(&carol_token)).await.unwrap();
    assert_eq!(listed.into_inner().likes.len(), 1);
    app.stack.follow(&carol_token, &alice).await;
    let followers = |token: &str| {
        let request = social_proto::graph::v1::ListFollowersRequest {
            user_id: alice.clone(),
            page_size: 10,
            page_token: String::new(),
        };
        authed(request, token)
    };
    let mut graph = app.graph.clone();
    let listed = graph.list_followers(followers(&bob_token)).await.unwrap();
    assert!(listed.into_inner().follows.is_empty());
    let listed = graph.list_followers(followers(&carol_token)).await.unwrap();
    assert_eq!(listed.into_inner().follows.len(), 1);

    // The blocker and everyone else still see it all.
    for token in [&alice_token, &carol_token] {
        posts.get_post(get(token)).await.unwrap();
        assert_eq!(posts.batch_get_posts(batch(token)).await.answer().posts.len(), 2);
        assert_eq!(posts.list_user_posts(list(token)).await.answer().posts.len(), 1);
        assert_eq!(users.batch_get_users(authed(both(), token)).await.answer().users.len(), 2);
        let listed = engagement.list_comments(comments(token)).await.unwrap();
        assert_eq!(listed.into_inner().comments.len(), 1);
    }
    users.get_user(authed(GetUserRequest { id: bob.clone() }, &alice_token)).await.unwrap();
}

#[tokio::test]
async fn a_reader_blocked_by_more_accounts_than_the_cache_holds_is_checked_in_the_database() {
    use social_events::blocks::BLOCKERS_CACHED;
    let app = spawn().await;
    let [(_, alice_token), (bob, bob_token), (_, carol_token)] =
        app.register_all(["alice", "bob", "carol"]).await;
    let alices = app.post(&alice_token, "by alice", vec![]).await.unwrap();
    let carols = app.post(&carol_token, "by carol", vec![]).await.unwrap();
    // More accounts than the cache holds block bob (copies as their events would leave
    // them), and then alice.
    let bob_id = bson::oid::ObjectId::parse_str(&bob).unwrap();
    let copies: Vec<bson::Document> = (0..=BLOCKERS_CACHED)
        .map(|_| {
            bson::doc! {
                "_id": bson::oid::ObjectId::new(),
                "blocker_id": bson::oid::ObjectId::new(),
                "blocked_id": bob_id,
                "state": "active",
            }
        })
        .collect();
    let database = app.stack.database().await;
    let collection = database.collection::<bson::Document>("post_blocks");
    collection.insert_many(copies).await.unwrap();
    app.stack.block(&alice_token, &bob).await.unwrap();
    let read = |id: &str| {
        let request = authed(GetPostRequest { id: id.into() }, &bob_token);
        let mut posts = app.posts.clone();
        async move { posts.get_post(request).await.map(drop) }
    };
    let absent = eventually(Duration::from_secs(10), || async {
        (read(&alices.id).await.err()?.code() == Code::NotFound).then_some(())
    })
    .await;
    assert!(absent.is_some(), "alice's post stays visible to bob");
    // Every read asks MongoDB which of the authors block bob.
    let asked = || queries::sent("post_blocks", "blocker_id: =");
    let before = asked();
    read(&carols.id).await.unwrap();
    assert_eq!(read(&alices.id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(asked(), before + 2);
}
