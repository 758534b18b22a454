//! Blocks: what the blocked caused leaves the blocker's list and groups, and nothing new
//! between the two is told, even by an event in flight when the block lands.

use std::time::Duration;

use social_events::{
    Payload, new_envelope,
    pb::{UserBlocked, UserUnblocked},
};
use social_proto::notification::v1::NotificationType;

use crate::{App, kind};

#[tokio::test]
async fn a_block_takes_back_what_the_blocked_caused_and_nothing_new_between_them_is_told() {
    let app = App::start().await;
    let [(alice, alice_token), (bob, bob_token), (_, carol_token)] =
        app.stack.register_all(["alice", "bob", "carol"]).await;
    let post = app.post(&alice_token, "alice's").await;
    let bobs = app.post(&bob_token, "bob's").await;
    app.like(&bob_token, &post.id).await;
    app.like(&carol_token, &post.id).await;
    app.follow(&bob_token, &alice).await;
    app.stack.comment(&bob_token, &post.id, "nice @alice").await.unwrap();
    app.like(&alice_token, &bobs.id).await;
    // Bob's like, follow, comment and mention; carol's like.
    app.wait_for(&alice_token, 5).await;
    app.wait_for(&bob_token, 1).await;
    app.groups_until(&alice_token, |g| g.iter().any(|g| g.notifications_count == 2)).await;

    app.stack.block(&alice_token, &bob).await.unwrap();

    // Only carol's like is left, in a group that counts her alone; bob keeps what he
    // was told before (alice's like).
    let left = social_testkit::eventually(crate::WAIT, || async {
        let list = app.list(&alice_token).await;
        (list.len() == 1).then_some(list)
    })
    .await
    .expect("bob's notifications leave alice's list");
    assert_eq!(kind(&left[0]), NotificationType::PostLike);
    assert_ne!(left[0].source_user_id, bob);
    app.groups_until(&alice_token, |g| g.len() == 1 && g[0].notifications_count == 1).await;
    app.stack.settled().await;
    assert_eq!(app.list(&bob_token).await.len(), 1);

    // A mention from bob now tells alice nothing (his post is allowed; its mention is not).
    app.post(&bob_token, "hey @alice").await;
    app.stack.settled().await;
    assert_eq!(app.list(&alice_token).await.len(), 1);
}

#[tokio::test]
async fn a_mention_in_flight_when_the_block_lands_tells_nobody() {
    let app = App::start().await;
    let [(_, alice_token), (bob, bob_token)] = app.stack.register_all(["alice", "bob"]).await;
    // The mention's event is handled up to its store, and waits there while the block is
    // handled whole.
    fail::cfg("notification::before_store", "return(1500)").unwrap();
    app.post(&bob_token, "hey @alice").await;
    let paused = social_testkit::eventually(crate::WAIT, || async {
        (social_kit::faults::fired("notification::before_store") == 1).then_some(())
    })
    .await;
    assert!(paused.is_some(), "the mention never reached its store");
    fail::remove("notification::before_store");
    app.stack.block(&alice_token, &bob).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.stack.settled().await;
    assert!(app.list(&alice_token).await.is_empty());
}

#[tokio::test]
async fn a_block_whose_unblock_came_first_takes_nothing_back() {
    let app = App::start().await;
    let [(alice, alice_token), (bob, bob_token)] = app.stack.register_all(["alice", "bob"]).await;
    let post = app.post(&alice_token, "alice's").await;
    app.like(&bob_token, &post.id).await;
    app.wait_for(&alice_token, 1).await;

    // A block and its unblock, the unblock handled first (the block's event was late).
    let actor = bson::oid::ObjectId::parse_str(&alice).unwrap();
    let block_id = bson::oid::ObjectId::new().to_hex();
    let (blocker_id, blocked_id) = (alice.clone(), bob.clone());
    let unblocked = new_envelope(
        actor,
        Payload::UserUnblocked(UserUnblocked {
            block_id: block_id.clone(),
            blocker_id: blocker_id.clone(),
            blocked_id: blocked_id.clone(),
        }),
    );
    let blocked =
        new_envelope(actor, Payload::UserBlocked(UserBlocked { block_id, blocker_id, blocked_id }));
    app.publish(&[unblocked]).await;
    app.stack.settled().await;
    app.publish(&[blocked]).await;
    app.stack.settled().await;

    // The block does not hold: bob's like stays, and his mention still tells alice.
    assert_eq!(app.list(&alice_token).await.len(), 1);
    app.post(&bob_token, "hey @alice").await;
    app.wait_for(&alice_token, 2).await;
}
