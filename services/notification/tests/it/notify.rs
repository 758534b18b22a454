//! Who each event notifies, once: follows, likes, comments and mentions, a redelivery,
//! and what a deleted post or comment takes with it.

use super::*;
use social_testkit::Answer;

#[tokio::test]
async fn a_follow_notifies_the_followee_once() {
    let app = App::start().await;
    let [(alice, alice_token), (bob, bob_token)] = app.stack.register_all(["alice", "bob"]).await;
    app.follow(&alice_token, &bob).await;
    let got = app.wait_for(&bob_token, 1).await;
    assert_eq!(kind(&got[0]), NotificationType::Follow);
    assert_eq!(got[0].source_user_id, alice);
    assert_eq!(got[0].user_id, bob);
    assert!(!got[0].is_read);

    // Unfollow and follow again: still one.
    app.stack.unfollow(&alice_token, &bob).await;
    app.follow(&alice_token, &bob).await;
    // The unfollow took the first one away; the second follow's is the one left, however
    // the three events interleave.
    let one = eventually(WAIT, || async {
        let got = app.list(&bob_token).await;
        (got.len() == 1).then_some(got)
    })
    .await;
    assert!(one.is_some(), "never exactly one");
    app.drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.list(&bob_token).await.len(), 1);
    assert!(app.list(&alice_token).await.is_empty());
}

#[tokio::test]
async fn a_like_notifies_the_author_once_and_moves_the_counter_and_a_self_like_nothing() {
    let app = App::start().await;
    let [(_, bob), (alice_id, alice)] = app.stack.register_all(["bob", "alice"]).await;
    let post = app.post(&bob, "like me").await;
    app.like(&bob, &post.id).await; // self-like
    app.like(&alice, &post.id).await;
    app.stack.unlike_post(&alice, &post.id).await.unwrap();
    app.like(&alice, &post.id).await;

    let got = app.wait_for(&bob, 1).await;
    assert_eq!(kind(&got[0]), NotificationType::PostLike);
    assert_eq!(got[0].source_user_id, alice_id);
    assert_eq!(got[0].post_id.as_deref(), Some(post.id.as_str()));
    let counted = eventually(WAIT, || async {
        let p =
            app.stack.posts().await.get_post(GetPostRequest { id: post.id.clone() }).await.answer();
        (p.likes_count == 2).then_some(())
    })
    .await;
    assert!(counted.is_some(), "likes_count never reached 2");
    // Like, unlike, like: the last like's notification, however the events interleave.
    let one = eventually(WAIT, || async {
        let got = app.list(&bob).await;
        (got.len() == 1).then_some(got)
    })
    .await;
    assert!(one.is_some(), "never exactly one");
    app.drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.list(&bob).await.len(), 1);
}

#[tokio::test]
async fn a_comment_notifies_the_author_and_each_mentioned_user() {
    let app = App::start().await;
    let [(_, bob), (alice_id, alice), (carol_id, carol), (dave_id, dave)] =
        app.stack.register_all(["bob", "alice", "carol", "dave"]).await;
    let post = app.post(&bob, "what do you think?").await;
    let comment = app
        .stack
        .comment(&alice, &post.id, "@carol and @DAVE, look! (cc @nobody_here @alice @carol)")
        .await
        .unwrap();

    let to_bob = app.wait_for(&bob, 1).await;
    assert_eq!(kind(&to_bob[0]), NotificationType::PostComment);
    assert_eq!(to_bob[0].comment_id.as_deref(), Some(comment.id.as_str()));
    for (token, id) in [(&carol, &carol_id), (&dave, &dave_id)] {
        let got = app.wait_for(token, 1).await;
        assert_eq!(kind(&got[0]), NotificationType::Mention);
        assert_eq!(&got[0].user_id, id);
        assert_eq!(got[0].source_user_id, alice_id);
        assert_eq!(got[0].post_id.as_deref(), Some(post.id.as_str()));
    }
    app.drained().await;
    assert!(app.list(&alice).await.is_empty(), "no notification of one's own mention");

    // A post's mentions notify too.
    let post = app.post(&carol, "thanks @dave").await;
    let got = app.wait_for(&dave, 2).await;
    assert_eq!(kind(&got[0]), NotificationType::Mention);
    assert_eq!(got[0].post_id.as_deref(), Some(post.id.as_str()));
    assert_eq!(got[0].comment_id, None);
}

#[tokio::test]
async fn a_redelivered_event_stores_no_duplicate() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let post = app.post(&bob, "p").await;
    let liker = ObjectId::new();
    let event = new_envelope(
        liker,
        Payload::PostLiked(PostLiked {
            post_id: post.id.clone(),
            post_author_id: bob_id,
            user_id: liker.to_hex(),
        }),
    );
    for _ in 0..3 {
        broker::publish_raw(
            &app.stack.events,
            "engagement.post.liked",
            &event.encode_to_vec(),
            &event.event_id,
        )
        .await;
    }
    app.wait_for(&bob, 1).await;
    app.drained().await;
    assert_eq!(app.list(&bob).await.len(), 1);
}

#[tokio::test]
async fn deleting_a_post_removes_its_notifications() {
    let app = App::start().await;
    let (_, bob) = app.stack.register("bob").await;
    let post = app.post(&bob, "short-lived").await;
    app.like(&token_for(ObjectId::new()), &post.id).await;
    app.wait_for(&bob, 1).await;
    app.stack.delete_post(&bob, &post.id).await;
    let gone = eventually(WAIT, || async { app.list(&bob).await.is_empty().then_some(()) }).await;
    assert!(gone.is_some());
}

#[tokio::test]
async fn an_event_about_a_deleted_comment_notifies_nobody() {
    let app = App::start().await;
    let [(bob_id, bob), (_, carol)] = app.stack.register_all(["bob", "carol"]).await;
    let post = app.post(&bob, "p").await;
    let commenter = ObjectId::new();
    let comment = |id: &str| CommentCreated {
        comment_id: id.into(),
        post_id: post.id.clone(),
        post_author_id: bob_id.clone(),
        author_id: commenter.to_hex(),
        content: "hi @carol".into(),
    };
    let (gone, kept) = (ObjectId::new().to_hex(), ObjectId::new().to_hex());
    // The deletion is handled first (a redelivery, a retry, or a slow handler of the
    // creation): the creation must not bring the notifications back.
    let deleted = CommentDeleted {
        comment_id: gone.clone(),
        post_id: post.id.clone(),
        post_author_id: bob_id.clone(),
        author_id: commenter.to_hex(),
    };
    publish(
        &app,
        "engagement.comment.deleted",
        &new_envelope(commenter, Payload::CommentDeleted(deleted)),
    )
    .await;
    // Handled: its tombstone is stored (the store's own collection, read directly).
    let removed = mongodb::Client::with_uri_str(social_testkit::mongodb_uri())
        .await
        .unwrap()
        .database(&app.stack.database)
        .collection::<bson::Document>("removed_targets");
    let key = format!("comment:{gone}");
    let handled = eventually(WAIT, || async {
        removed.find_one(bson::doc! { "_id": &key }).await.unwrap().map(|_| ())
    })
    .await;
    assert!(handled.is_some(), "the deletion was never handled");
    let created = |id: &str| new_envelope(commenter, Payload::CommentCreated(comment(id)));
    publish(&app, "engagement.comment.created", &created(&gone)).await;
    publish(&app, "engagement.comment.created", &created(&kept)).await;

    // The kept comment's notifications arrive; the deleted one's never stay. (Its
    // handler stores, then checks the tombstone and takes them back: a list read in
    // between shows them for that moment, so the lists are judged once all is handled.)
    for token in [&bob, &carol] {
        let arrived = eventually(WAIT, || async {
            let list = app.list(token).await;
            list.iter().any(|n| n.comment_id.as_deref() == Some(kept.as_str())).then_some(())
        })
        .await;
        assert!(arrived.is_some(), "the kept comment's notification never arrived");
    }
    app.drained().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for token in [&bob, &carol] {
        let list = app.list(token).await;
        assert_eq!(list.len(), 1, "{list:#?}");
        assert_eq!(list[0].comment_id.as_deref(), Some(kept.as_str()));
    }
}
