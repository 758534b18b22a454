//! Blocks: what they end, what they forbid, who is told of them, and a follow racing one.

use std::time::Duration;

use bson::oid::ObjectId;
use social_proto::graph::v1::{
    CheckBlocksRequest, GetRelationshipRequest, ListBlocksRequest, ListFollowersRequest,
    ListFollowingRequest, Relationship, UnblockUserRequest,
};
use social_testkit::{Answer, Refused, as_service, authed, eventually, violated_fields};
use tonic::Code;

use crate::{App, spawn};

impl App {
    /// The relationship of `user` to `other`, asked with `token` (none: anonymously).
    pub(crate) async fn relationship(
        &self,
        user: &str,
        other: &str,
        token: Option<&str>,
    ) -> Relationship {
        let request = GetRelationshipRequest { user_id: user.into(), other_user_id: other.into() };
        let request = match token {
            Some(t) => authed(request, t),
            None => tonic::Request::new(request),
        };
        self.graph.clone().get_relationship(request).await.answer()
    }

    /// Whom `token`'s account blocks, newest first.
    async fn blocked_by_me(&self, token: &str) -> Vec<String> {
        let request = ListBlocksRequest { page_size: 0, page_token: String::new() };
        self.graph
            .clone()
            .list_blocks(authed(request, token))
            .await
            .answer()
            .blocks
            .into_iter()
            .map(|b| b.blocked_id)
            .collect()
    }

    /// Waits until `user`'s `followers_count` is `n` (the follow events are in).
    async fn followers_count_becomes(&self, user: &str, n: i64) {
        let reached = eventually(Duration::from_secs(10), || async {
            (self.followers_count(user).await == n).then_some(())
        })
        .await;
        assert!(reached.is_some(), "{user}'s followers_count never became {n}");
    }
}

#[tokio::test]
async fn a_block_ends_follows_both_ways_and_no_follow_crosses_it_until_unblocked() {
    let app = spawn().await;
    let [(alice, alice_token), (bob, bob_token), (carol, carol_token)] =
        app.register_all(["alice", "bob", "carol"]).await;
    app.follow(&alice_token, &bob).await.unwrap();
    app.follow(&bob_token, &alice).await.unwrap();
    app.follow(&carol_token, &alice).await.unwrap();
    app.followers_count_becomes(&alice, 2).await;
    app.followers_count_becomes(&bob, 1).await;

    let block = app.stack.block(&alice_token, &bob).await.unwrap();
    assert_eq!(
        (block.blocker_id.as_str(), block.blocked_id.as_str()),
        (alice.as_str(), bob.as_str())
    );
    // Idempotent: the block that holds comes back.
    let again = app.stack.block(&alice_token, &bob).await.unwrap();
    assert_eq!(again.created_at, block.created_at);

    // Both follows ended through their events: every count is true.
    assert_eq!(app.followers(&alice, 0, "").await.0, std::slice::from_ref(&carol));
    assert!(app.followers(&bob, 0, "").await.0.is_empty());
    app.followers_count_becomes(&alice, 1).await;
    app.followers_count_becomes(&bob, 0).await;

    // Neither can follow the other: to bob, alice is absent; alice must unblock first.
    let err = app.follow(&bob_token, &alice).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = app.follow(&alice_token, &bob).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Each of the two is told of its own side; nobody else is told anything.
    let r = app.relationship(&alice, &bob, Some(&alice_token)).await;
    assert!(r.blocking && !r.blocked_by && !r.following && !r.followed_by, "{r:?}");
    let r = app.relationship(&bob, &alice, Some(&bob_token)).await;
    assert!(!r.blocking && r.blocked_by, "{r:?}");
    for token in [Some(carol_token.as_str()), None] {
        let r = app.relationship(&alice, &bob, token).await;
        assert!(!r.blocking && !r.blocked_by, "{r:?}");
    }
    assert_eq!(app.blocked_by_me(&alice_token).await, std::slice::from_ref(&bob));
    assert!(app.blocked_by_me(&bob_token).await.is_empty());

    // The authoritative check is for services only, and says which way.
    let check = CheckBlocksRequest {
        user_id: bob.clone(),
        other_user_ids: vec![alice.clone(), carol.clone()],
    };
    app.graph
        .clone()
        .check_blocks(authed(check.clone(), &bob_token))
        .await
        .refused(Code::PermissionDenied);
    let found = app.graph.clone().check_blocks(as_service(check)).await.answer();
    assert_eq!((found.blocking, found.blocked_by), (vec![], vec![alice.clone()]));

    // Unblocking restores nothing by itself, and then a follow is a follow again.
    let unblock = UnblockUserRequest { user_id: bob.clone() };
    let mut graph = app.graph.clone();
    graph.unblock_user(authed(unblock.clone(), &alice_token)).await.unwrap();
    graph.unblock_user(authed(unblock, &alice_token)).await.unwrap();
    assert!(app.blocked_by_me(&alice_token).await.is_empty());
    assert_eq!(app.followers(&alice, 0, "").await.0, [carol]);
    app.follow(&bob_token, &alice).await.unwrap();
    app.followers_count_becomes(&alice, 2).await;
}

#[tokio::test]
async fn who_blocks_the_reader_is_left_out_of_anyones_follow_lists() {
    let app = spawn().await;
    let [(alice, alice_token), (bob, bob_token), (carol, carol_token), (dave, dave_token)] =
        app.register_all(["alice", "bob", "carol", "dave"]).await;
    // carol's followers: bob, then dave; whom carol follows: bob.
    app.follow(&bob_token, &carol).await.unwrap();
    app.follow(&dave_token, &carol).await.unwrap();
    app.follow(&carol_token, &bob).await.unwrap();
    app.stack.block(&bob_token, &alice).await.unwrap();
    let lists = async |token: &str| {
        let mut graph = app.graph.clone();
        let followers = ListFollowersRequest {
            user_id: carol.clone(),
            page_size: 0,
            page_token: String::new(),
        };
        let following = ListFollowingRequest {
            user_id: carol.clone(),
            page_size: 0,
            page_token: String::new(),
        };
        let followers = graph.list_followers(authed(followers, token)).await.answer();
        let following = graph.list_following(authed(following, token)).await.answer();
        (
            followers.follows.into_iter().map(|f| f.follower_id).collect::<Vec<_>>(),
            following.follows.into_iter().map(|f| f.followee_id).collect::<Vec<_>>(),
        )
    };
    // To alice, whom bob blocks, bob is in neither of carol's lists...
    assert_eq!(lists(&alice_token).await, (vec![dave.clone()], vec![]));
    // ... to anybody else he is.
    assert_eq!(lists(&dave_token).await, (vec![dave.clone(), bob.clone()], vec![bob.clone()]));
    // Page by page, one a page: nothing skipped, nothing twice, bob left out for alice.
    let walk = async |token: &str| {
        let (mut seen, mut page_token) = (Vec::new(), String::new());
        loop {
            let request = ListFollowersRequest { user_id: carol.clone(), page_size: 1, page_token };
            let page = app.graph.clone().list_followers(authed(request, token)).await;
            let page = page.answer();
            seen.extend(page.follows.into_iter().map(|f| f.follower_id));
            if page.next_page_token.is_empty() {
                return seen;
            }
            page_token = page.next_page_token;
        }
    };
    assert_eq!(walk(&alice_token).await, std::slice::from_ref(&dave));
    assert_eq!(walk(&dave_token).await, [dave.clone(), bob.clone()]);
}

#[tokio::test]
async fn blocks_are_validated() {
    let app = spawn().await;
    let (alice, alice_token) = app.user("alice").await;
    let err = app.stack.block(&alice_token, &alice).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["user_id"]);
    let err = app.stack.block(&alice_token, "nope").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["user_id"]);
    app.stack.block(&alice_token, &ObjectId::new().to_hex()).await.refused(Code::NotFound);
    app.graph
        .clone()
        .list_blocks(ListBlocksRequest { page_size: -1, page_token: String::new() })
        .await
        .refused(Code::Unauthenticated);
    let err = app
        .graph
        .clone()
        .check_blocks(as_service(CheckBlocksRequest { user_id: alice, other_user_ids: vec![] }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["other_user_ids"]);
}

impl App {
    /// `token`'s follow of `followee`, running on its own while the test goes on.
    fn follow_in_background(
        &self,
        token: &str,
        followee: &str,
    ) -> tokio::task::JoinHandle<
        Result<tonic::Response<social_proto::graph::v1::Follow>, tonic::Status>,
    > {
        let mut graph = self.graph.clone();
        let request = social_proto::graph::v1::FollowRequest { followee_id: followee.to_owned() };
        let request = authed(request, token);
        tokio::spawn(async move { graph.follow(request).await })
    }
}

#[tokio::test]
async fn a_follow_racing_a_block_is_undone_and_every_count_stays_true() {
    let app = spawn().await;
    let [(alice, alice_token), (bob, bob_token)] = app.register_all(["alice", "bob"]).await;
    // Bob's follow passes its checks, then waits before its insert while alice blocks.
    fail::cfg("graph::before_follow_insert", "return(1500)").unwrap();
    let racing = app.follow_in_background(&bob_token, &alice);
    tokio::time::sleep(Duration::from_millis(500)).await;
    fail::remove("graph::before_follow_insert");
    app.stack.block(&alice_token, &bob).await.unwrap();
    let err = racing.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(social_kit::faults::fired("graph::before_follow_insert"), 1);

    assert!(app.followers(&alice, 0, "").await.0.is_empty());
    // Its followed and unfollowed events both went out: the count comes back to zero.
    app.stack.settled().await;
    assert_eq!(app.followers_count(&alice).await, 0);
    let page = ListFollowersRequest { user_id: alice, page_size: 0, page_token: String::new() };
    let follows = app.graph.clone().list_followers(page).await.answer();
    assert!(follows.follows.is_empty());
}

#[tokio::test]
async fn a_late_event_of_a_block_that_ended_ends_no_follow_made_since() {
    let app = spawn().await;
    let [(alice, alice_token), (bob, bob_token)] = app.register_all(["alice", "bob"]).await;
    app.stack.block(&alice_token, &bob).await.unwrap();
    let unblock = UnblockUserRequest { user_id: bob.clone() };
    let mut graph = app.graph.clone();
    graph.unblock_user(authed(unblock, &alice_token)).await.unwrap();
    app.follow(&bob_token, &alice).await.unwrap();
    app.followers_count_becomes(&alice, 1).await;

    // The block's event comes again, late (a redelivery, a replay).
    let blocks = app.stack.database().await.collection::<bson::Document>("blocks");
    let block = blocks.find_one(bson::doc! {}).await.unwrap().unwrap();
    let event = social_events::new_envelope(
        ObjectId::parse_str(&alice).unwrap(),
        social_events::Payload::UserBlocked(social_events::pb::UserBlocked {
            block_id: block.get_object_id("_id").unwrap().to_hex(),
            blocker_id: alice.clone(),
            blocked_id: bob.clone(),
        }),
    );
    let body = prost::Message::encode_to_vec(&event);
    social_testkit::broker::publish_raw(
        &app.stack.events,
        "graph.user.blocked",
        &body,
        &event.event_id,
    )
    .await;
    app.stack.settled().await;
    assert_eq!(app.followers(&alice, 0, "").await.0, [bob]);
    assert_eq!(app.followers_count(&alice).await, 1);
}

#[tokio::test]
async fn a_follow_whose_checks_failed_across_a_block_is_undone_in_the_background() {
    let app = spawn().await;
    let [(alice, alice_token), (bob, bob_token)] = app.register_all(["alice", "bob"]).await;
    // Bob's follow passes its first check and waits while alice blocks him (her block's
    // sweep of follows finds none); then its own checks fail once, as an unreachable
    // database would make them: the call fails and the follow stays, marked.
    fail::cfg("graph::before_follow_insert", "return(1500)").unwrap();
    fail::cfg("graph::follow_checks", "1*return").unwrap();
    let racing = app.follow_in_background(&bob_token, &alice);
    tokio::time::sleep(Duration::from_millis(500)).await;
    fail::remove("graph::before_follow_insert");
    app.stack.block(&alice_token, &bob).await.unwrap();
    let err = racing.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(social_kit::faults::fired("graph::follow_checks"), 1);

    // Nobody retries: the background check undoes it, and the counts come back.
    let undone = eventually(Duration::from_secs(15), || async {
        app.followers(&alice, 0, "").await.0.is_empty().then_some(())
    })
    .await;
    assert!(undone.is_some(), "the follow stayed across the block");
    app.followers_count_becomes(&alice, 0).await;
}
