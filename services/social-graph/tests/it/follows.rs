//! Follows: make, end, list and page them; what is refused; two at once.

use super::*;
use social_testkit::{Answer, Refused};

#[tokio::test]
async fn follow_unfollow_lists_and_relationship() {
    let app = spawn().await;
    let [(alice, alice_token), (bob, bob_token), (carol, carol_token)] =
        app.register_all(["alice", "bob", "carol"]).await;

    let first = app.follow(&alice_token, &bob).await.unwrap();
    assert_eq!(
        (first.follower_id.as_str(), first.followee_id.as_str()),
        (alice.as_str(), bob.as_str())
    );
    // Idempotent: the same follow comes back.
    let again = app.follow(&alice_token, &bob).await.unwrap();
    assert_eq!(again.created_at, first.created_at);
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.follow(&carol_token, &bob).await.unwrap();
    app.follow(&bob_token, &alice).await.unwrap();

    assert_eq!(app.followers(&bob, 0, "").await.0, [carol.clone(), alice.clone()]);
    let following = app
        .graph
        .clone()
        .list_following(ListFollowingRequest {
            user_id: alice.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .answer();
    assert_eq!(following.follows.len(), 1);
    assert_eq!(following.follows[0].followee_id, bob);

    let rel =
        |a: &str, b: &str| GetRelationshipRequest { user_id: a.into(), other_user_id: b.into() };
    let r = app.graph.clone().get_relationship(rel(&alice, &bob)).await.answer();
    assert!(r.following && r.followed_by);
    let r = app.graph.clone().get_relationship(rel(&carol, &alice)).await.answer();
    assert!(!r.following && !r.followed_by);
    let err = app.graph.clone().get_relationship(rel("x", "y")).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["user_id", "other_user_id"]);

    let mut g = app.graph.clone();
    g.unfollow(authed(UnfollowRequest { followee_id: bob.clone() }, &alice_token)).await.unwrap();
    g.unfollow(authed(UnfollowRequest { followee_id: bob.clone() }, &alice_token)).await.unwrap();
    assert_eq!(app.followers(&bob, 0, "").await.0, [carol]);
    let ids = g
        .list_following_ids(social_testkit::as_service(ListFollowingIdsRequest {
            user_id: bob.clone(),
            limit: 0,
            without_muted: false,
            with_mutes: false,
            among: Vec::new(),
        }))
        .await
        .answer();
    assert_eq!(ids.user_ids, std::slice::from_ref(&alice));
    assert!(!ids.truncated);

    // The home timelines' questions: bob's followers, at most one of them at a time,
    // and whether bob follows each of a few accounts.
    let followers = |limit| {
        social_testkit::as_service(ListFollowerIdsRequest { user_id: alice.clone(), limit })
    };
    let some = g.list_follower_ids(followers(1)).await.answer();
    assert_eq!((some.user_ids, some.truncated), (vec![bob.clone()], false));
    let err = g.list_follower_ids(followers(-1)).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["limit"]);
    let among = |among: Vec<String>| {
        social_testkit::as_service(ListFollowingIdsRequest {
            user_id: bob.clone(),
            with_mutes: true,
            among,
            ..Default::default()
        })
    };
    let unknown = bson::oid::ObjectId::new().to_hex();
    let answer = g.list_following_ids(among(vec![unknown.clone(), alice.clone()])).await.answer();
    assert_eq!(answer.user_ids, std::slice::from_ref(&alice));
    assert!(answer.mutes.is_empty());
    let answer = g.list_following_ids(among(vec![unknown])).await.unwrap();
    assert!(answer.into_inner().user_ids.is_empty());
    let err = g.list_following_ids(among(vec!["nope".into()])).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["among[0]"]);
    // Others may not ask.
    g.list_follower_ids(ListFollowerIdsRequest { user_id: alice.clone(), limit: 0 })
        .await
        .refused(Code::PermissionDenied);
}

#[tokio::test]
async fn follow_is_validated() {
    let app = spawn().await;
    let (alice, alice_token) = app.user("alice").await;
    let mut g = app.graph.clone();
    g.follow(FollowRequest { followee_id: alice.clone() }).await.refused(Code::Unauthenticated);
    let err = app.follow(&alice_token, "not-an-id").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["followee_id"]);
    let err = app.follow(&alice_token, &alice).await.refused(Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["followee_id"]);
    app.follow(&alice_token, &ObjectId::new().to_hex()).await.refused(Code::NotFound);
    g.unfollow(UnfollowRequest { followee_id: alice.clone() }).await.refused(Code::Unauthenticated);
    let err = g
        .list_followers(ListFollowersRequest {
            user_id: alice,
            page_size: -1,
            page_token: "bogus".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_size", "page_token"]);
}

// Several worker threads: the eight calls are handled in parallel, not interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_follows_of_one_pair_make_one_follow() {
    let app = spawn().await;
    let (bob, _) = app.user("bob").await;
    let follower = ObjectId::new();
    let token = token_for(follower);
    let results = futures::future::join_all((0..8).map(|_| app.follow(&token, &bob))).await;
    // Every call answers with the one follow, to the nanosecond.
    let created: HashSet<_> = results
        .into_iter()
        .map(|r| {
            let at = r.unwrap().created_at.unwrap();
            (at.seconds, at.nanos)
        })
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(app.followers(&bob, 100, "").await.0, [follower.to_hex()]);
    // One follow, so one event: bob's count is one, and stays one once it all drained.
    let counted = social_testkit::eventually(Duration::from_secs(15), || async {
        (app.followers_count(&bob).await == 1).then_some(())
    })
    .await;
    assert!(counted.is_some(), "followers_count never became 1");
    app.stack.settled().await;
    assert_eq!(app.followers_count(&bob).await, 1);
}

#[tokio::test]
async fn pages_are_stable_while_new_follows_arrive() {
    let app = spawn().await;
    let (bob, _) = app.user("bob").await;
    let mut original = Vec::new();
    for _ in 0..25 {
        let follower = ObjectId::new();
        app.follow(&token_for(follower), &bob).await.unwrap();
        original.push(follower.to_hex());
    }
    original.reverse(); // newest first

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = app.followers(&bob, 10, &token).await;
        seen.extend(page);
        // New followers arrive while the client pages.
        app.follow(&token_for(ObjectId::new()), &bob).await.unwrap();
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(seen, original);

    // A token is bound to its query.
    let (_, token) = app.followers(&bob, 5, "").await;
    let err = app
        .graph
        .clone()
        .list_following(ListFollowingRequest { user_id: bob, page_size: 5, page_token: token })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
}
