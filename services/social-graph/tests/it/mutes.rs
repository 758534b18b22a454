//! Mutes: the muted account leaves the muter's home feed (and, if chosen, stops
//! notifying), notices nothing, and a mute with a duration ends by itself.

use std::time::Duration;

use social_proto::{
    graph::v1::{ListMutesRequest, Mute, MuteUserRequest, UnmuteUserRequest},
    notification::v1::ListNotificationsRequest,
    post::v1::ListHomeFeedRequest,
};
use social_testkit::{PASSWORD, Refused, authed, eventually, violated_fields};
use tonic::Code;

use crate::{App, spawn};

impl App {
    async fn mute(
        &self,
        token: &str,
        user: &str,
        duration_seconds: i64,
        notifications: Option<bool>,
    ) -> Result<Mute, tonic::Status> {
        let request = MuteUserRequest { user_id: user.into(), duration_seconds, notifications };
        self.graph.clone().mute_user(authed(request, token)).await.map(tonic::Response::into_inner)
    }

    async fn muted_by_me(&self, token: &str) -> Vec<String> {
        let request = ListMutesRequest { page_size: 0, page_token: String::new() };
        let page = self.graph.clone().list_mutes(authed(request, token)).await;
        page.unwrap().into_inner().mutes.into_iter().map(|m| m.muted_id).collect()
    }

    /// The contents of `token`'s home feed, first page.
    async fn feed(&self, token: &str) -> Vec<String> {
        let request = ListHomeFeedRequest { page_size: 20, page_token: String::new() };
        let mut posts = self.stack.posts().await;
        let page = posts.list_home_feed(authed(request, token)).await.unwrap();
        page.into_inner().posts.into_iter().map(|p| p.content).collect()
    }

    /// Waits (up to 10 s) until `token`'s home feed is `expected`: home timelines apply
    /// a mute once its event arrives.
    async fn feed_becomes(&self, token: &str, expected: &[&str]) {
        let seen = eventually(Duration::from_secs(10), || async {
            let feed = self.feed(token).await;
            (feed == expected).then_some(())
        })
        .await;
        assert!(seen.is_some(), "the feed never became {expected:?}: {:?}", self.feed(token).await);
    }

    /// How many notifications `token`'s account has.
    async fn notified(&self, token: &str) -> usize {
        let request = ListNotificationsRequest { page_size: 100, ..Default::default() };
        let mut n = self.stack.notifications().await;
        let page = n.list_notifications(authed(request, token)).await.unwrap();
        page.into_inner().notifications.len()
    }
}

#[tokio::test]
async fn a_muted_account_leaves_the_feed_and_the_notifications_and_notices_nothing() {
    let app = spawn().await;
    let [(alice, alice_token), (bob, bob_token), (carol, carol_token)] =
        app.register_all(["alice", "bob", "carol"]).await;
    app.follow(&alice_token, &bob).await.unwrap();
    app.follow(&alice_token, &carol).await.unwrap();
    app.stack.post(&bob_token, "by bob").await;
    app.stack.post(&carol_token, "by carol").await;
    assert_eq!(app.feed(&alice_token).await, ["by carol", "by bob"]);

    // Alice mutes bob, notifications too (the default), and carol for the feed only.
    let mute = app.mute(&alice_token, &bob, 0, None).await.unwrap();
    assert!(mute.notifications && mute.expires_at.is_none(), "{mute:?}");
    let again = app.mute(&alice_token, &bob, 0, None).await.unwrap();
    assert_eq!(again.created_at, mute.created_at, "muting again changes nothing");
    app.mute(&alice_token, &carol, 0, Some(false)).await.unwrap();
    assert_eq!(app.muted_by_me(&alice_token).await, [carol.clone(), bob.clone()]);
    app.feed_becomes(&alice_token, &[]).await;

    // Bob notices nothing: the follow holds, the relationship says nothing to him.
    assert_eq!(app.followers(&bob, 0, "").await.0, std::slice::from_ref(&alice));
    let r = app.relationship(&bob, &alice, Some(&bob_token)).await;
    assert!(r.followed_by && !r.muting && !r.blocked_by, "{r:?}");
    let r = app.relationship(&alice, &bob, Some(&alice_token)).await;
    assert!(r.muting && r.following, "{r:?}");

    // What bob does no longer notifies alice; what carol does still does.
    app.stack.post(&bob_token, "hey @alice").await;
    app.stack.post(&carol_token, "hi @alice").await;
    app.stack.settled().await;
    assert_eq!(app.notified(&alice_token).await, 1);

    // Unmuted, bob is back in the feed.
    let unmute = UnmuteUserRequest { user_id: bob.clone() };
    let mut graph = app.graph.clone();
    graph.unmute_user(authed(unmute, &alice_token)).await.unwrap();
    assert_eq!(app.muted_by_me(&alice_token).await, [carol]);
    app.feed_becomes(&alice_token, &["hey @alice", "by bob"]).await;
}

#[tokio::test]
async fn a_mute_with_a_duration_ends_by_itself() {
    // Its end is moved in MongoDB below; home timelines keep a copy of it in Redis (the
    // post service's timelines tests move that one), so this reads feeds merged in
    // MongoDB.
    let stack = social_testkit::Stack::start_with(social_testkit::StackOptions {
        post_timelines: Some(social_testkit::TimelineSettings { length: 0, ..Default::default() }),
        ..Default::default()
    })
    .await;
    let app = App { graph: stack.graph().await, stack };
    let [(alice, alice_token), (bob, bob_token)] = app.register_all(["alice", "bob"]).await;
    app.follow(&alice_token, &bob).await.unwrap();
    app.stack.post(&bob_token, "by bob").await;
    let mute = app.mute(&alice_token, &bob, 60, None).await.unwrap();
    assert!(mute.expires_at.is_some());
    assert!(app.feed(&alice_token).await.is_empty());

    // A minute later (the mute's end moved to the past, as time would), bob is back.
    let mutes = app.stack.database().await.collection::<bson::Document>("mutes");
    let past = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 1000);
    mutes.update_many(bson::doc! {}, bson::doc! { "$set": { "expires_at": past } }).await.unwrap();
    assert_eq!(app.feed(&alice_token).await, ["by bob"]);
    assert!(app.muted_by_me(&alice_token).await.is_empty());
    let r = app.relationship(&alice, &bob, Some(&alice_token)).await;
    assert!(!r.muting, "{r:?}");
    // Muting again makes a new mute.
    let renewed = app.mute(&alice_token, &bob, 0, None).await.unwrap();
    assert!(renewed.expires_at.is_none());
    let gone = eventually(Duration::from_secs(5), || async {
        app.feed(&alice_token).await.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some());
}

#[tokio::test]
async fn mutes_are_validated() {
    let app = spawn().await;
    let [(alice, alice_token), (bob, _)] = app.register_all(["alice", "bob"]).await;
    let err = app.mute(&alice_token, &alice, 0, None).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["user_id"]);
    for seconds in [-1, 59, 365 * 24 * 3600 + 1] {
        let err = app.mute(&alice_token, &bob, seconds, None).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["duration_seconds"], "{seconds}");
    }
    app.mute(&alice_token, &bson::oid::ObjectId::new().to_hex(), 0, None)
        .await
        .refused(Code::NotFound);
    app.graph.clone().list_mutes(ListMutesRequest::default()).await.refused(Code::Unauthenticated);
}

#[tokio::test]
async fn a_deleted_accounts_token_mutes_nobody() {
    let app = spawn().await;
    let [(alice, alice_token), (bob, _)] = app.register_all(["alice", "bob"]).await;
    app.stack.delete_account(&alice_token, PASSWORD).await.unwrap();
    app.stack.settled().await;
    // A token of the account still valid at the gate (not of an ended session).
    let token = social_testkit::token_for(bson::oid::ObjectId::parse_str(&alice).unwrap());
    let err = app.mute(&token, &bob, 0, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let active = bson::doc! { "state": "active" };
    assert_eq!(app.stack.count("mutes", active).await, 0);
}
