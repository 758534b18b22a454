//! Likes and comments across a block: refused before they are stored, and undone (their
//! counts back where they were) when they race the block.

use std::time::Duration;

use social_proto::engagement::v1::LikeCommentRequest;
use social_testkit::{Answer, Refused, authed};
use tonic::Code;

use crate::App;

#[tokio::test]
async fn no_like_or_comment_crosses_a_block_either_way() {
    let app = App::start().await;
    let [(alice, alice_token), (bob, bob_token)] = app.stack.register_all(["alice", "bob"]).await;
    let alices = app.post(&alice_token, "alice's").await;
    let bobs = app.post(&bob_token, "bob's").await;
    let bobs_comment = app.comment(&bob_token, &alices.id, "bob here").await.unwrap();
    app.stack.block(&alice_token, &bob).await.unwrap();

    // To bob, what alice made is absent.
    let err = app.like_post(&bob_token, &alices.id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = app.comment(&bob_token, &alices.id, "hi").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // Alice must unblock bob before she acts on what he made.
    let err = app.like_post(&alice_token, &bobs.id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = app.comment(&alice_token, &bobs.id, "hi").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let like = LikeCommentRequest { comment_id: bobs_comment.id.clone() };
    let err = app.engagement.clone().like_comment(authed(like, &alice_token)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Nothing was stored, nothing counted.
    app.stack.settled().await;
    assert!(app.likers(&alices.id).await.is_empty());
    assert!(app.likers(&bobs.id).await.is_empty());
    assert_eq!(app.comments(&alices.id).await.len(), 1);
    app.counters_become(&alices.id, (0, 1)).await;
    app.counters_become(&bobs.id, (0, 0)).await;
    let _ = alice;
}

#[tokio::test]
async fn under_their_own_post_an_author_sees_every_comment_and_none_is_edited_across_a_block() {
    let app = App::start().await;
    let [(alice, alice_token), (_, bob_token)] = app.stack.register_all(["alice", "bob"]).await;
    let post = app.post(&alice_token, "alice's").await;
    let comment = app.comment(&bob_token, &post.id, "rude").await.unwrap();
    // Bob blocks alice: she must still see (and may delete) what he wrote under her post,
    // and he can no longer change it.
    app.stack.block(&bob_token, &alice).await.unwrap();
    app.stack.settled().await;
    let request = social_proto::engagement::v1::ListCommentsRequest {
        post_id: post.id.clone(),
        page_size: 10,
        page_token: String::new(),
    };
    let listed = app.engagement.clone().list_comments(authed(request, &alice_token)).await.answer();
    assert_eq!(listed.comments.len(), 1);
    app.stack
        .edit_comment(&bob_token, &comment.id, "ruder")
        .await
        .refused(Code::FailedPrecondition);
    // She sees it, so changing it is not hers to do (not absent).
    app.stack
        .edit_comment(&alice_token, &comment.id, "kinder")
        .await
        .refused(Code::PermissionDenied);
    app.stack.delete_comment(&alice_token, &comment.id).await.unwrap();
}

#[tokio::test]
async fn a_like_and_a_comment_racing_a_block_are_undone_and_the_counts_come_back() {
    let app = App::start().await;
    let [(_, alice_token), (bob, bob_token)] = app.stack.register_all(["alice", "bob"]).await;
    let post = app.post(&alice_token, "alice's").await;
    // Bob's like and comment pass their checks, then wait before their inserts while
    // alice blocks him.
    const POINTS: [&str; 2] =
        ["engagement::before_like_insert", "engagement::before_comment_insert"];
    for point in POINTS {
        fail::cfg(point, "return(1500)").unwrap();
    }
    let block = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        POINTS.into_iter().for_each(fail::remove);
        app.stack.block(&alice_token, &bob).await.unwrap();
    };
    let (liked, commented, ()) = tokio::join!(
        app.stack.like_post(&bob_token, &post.id),
        app.stack.comment(&bob_token, &post.id, "bob here"),
        block
    );
    for err in [liked.unwrap_err(), commented.unwrap_err()] {
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }
    for point in POINTS {
        assert_eq!(social_kit::faults::fired(point), 1, "{point}");
    }

    // Their created and deleted events all went out: the counts are back at zero.
    app.stack.settled().await;
    assert!(app.likers(&post.id).await.is_empty());
    assert!(app.comments(&post.id).await.is_empty());
    app.counters_become(&post.id, (0, 0)).await;
}
