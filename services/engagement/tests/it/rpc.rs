//! Every EngagementService RPC, its validation and errors.

use bson::oid::ObjectId;
use prost_types::FieldMask;
use social_proto::{
    common::v1::Media,
    engagement::v1::{
        Comment, DeleteCommentRequest, GetCommentRequest, ListCommentsRequest,
        ListPostLikesRequest, UnlikePostRequest, UpdateCommentRequest,
    },
};
use social_testkit::{Answer, Refused, authed, token_for, violated_fields};
use tonic::Code;

use crate::App;

#[tokio::test]
async fn likes_are_idempotent_and_listed_newest_first() {
    let app = App::start().await;
    let author = token_for(ObjectId::new());
    let post = app.post(&author, "hello").await;
    let (alice, bob) = (ObjectId::new(), ObjectId::new());
    app.like_post(&token_for(alice), &post.id).await.unwrap();
    app.like_post(&token_for(alice), &post.id).await.unwrap();
    app.like_post(&token_for(bob), &post.id).await.unwrap();
    assert_eq!(app.likers(&post.id).await, [bob.to_hex(), alice.to_hex()]);

    let mut e = app.engagement.clone();
    for _ in 0..2 {
        e.unlike_post(authed(UnlikePostRequest { post_id: post.id.clone() }, &token_for(alice)))
            .await
            .unwrap();
    }
    assert_eq!(app.likers(&post.id).await, [bob.to_hex()]);
    let err = e
        .unlike_post(authed(
            UnlikePostRequest { post_id: ObjectId::new().to_hex() },
            &token_for(alice),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "unlike of an unknown post");
    // Like again after an unlike.
    app.like_post(&token_for(alice), &post.id).await.unwrap();
    assert_eq!(app.likers(&post.id).await, [alice.to_hex(), bob.to_hex()]);

    app.like_post(&token_for(alice), &ObjectId::new().to_hex()).await.refused(Code::NotFound);
    let err = app.like_post(&token_for(alice), "nope").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["post_id"]);
    e.like_post(social_proto::engagement::v1::LikePostRequest { post_id: post.id.clone() })
        .await
        .refused(Code::Unauthenticated);
    let err = e
        .list_post_likes(ListPostLikesRequest {
            post_id: post.id.clone(),
            page_size: -5,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_size"]);
}

// Several worker threads: the ten calls are handled in parallel, not interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_likes_of_one_post_are_one_like() {
    let app = App::start().await;
    let post = app.post(&token_for(ObjectId::new()), "hot").await;
    let fan = token_for(ObjectId::new());
    let results = futures::future::join_all((0..10).map(|_| app.like_post(&fan, &post.id))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(app.likers(&post.id).await.len(), 1);
    // One like, so one event: the count is one, and stays one once every queue drained.
    app.counters_become(&post.id, (1, 0)).await;
    app.stack.settled().await;
    assert_eq!(app.get_post(&post.id).await.likes_count, 1);
}

fn image() -> Media {
    Media {
        r#type: "gif".into(),
        url: "https://cdn.example.com/party.gif".into(),
        thumbnail_url: String::new(),
        width: 320,
        height: 240,
        duration: Some(2.0),
    }
}

#[tokio::test]
async fn comments_are_validated_listed_oldest_first_and_paged() {
    let app = App::start().await;
    let post = app.post(&token_for(ObjectId::new()), "discuss").await;
    let me = token_for(ObjectId::new());
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.comment(&me, &post.id, &format!("c{i}")).await.unwrap().id);
    }
    let c = app.comment(&me, &post.id, "").await.unwrap_err();
    assert_eq!(violated_fields(&c), ["content"]);
    let c = app.comment(&me, "bad", &"x".repeat(501)).await.unwrap_err();
    assert_eq!(violated_fields(&c), ["post_id", "content"]);
    app.comment(&me, &ObjectId::new().to_hex(), "hi").await.refused(Code::NotFound);
    let with_media = app
        .engagement
        .clone()
        .create_comment(authed(
            social_proto::engagement::v1::CreateCommentRequest {
                post_id: post.id.clone(),
                content: String::new(),
                media: vec![image()],
            },
            &me,
        ))
        .await
        .answer();
    assert_eq!(with_media.media, [image()]);
    ids.push(with_media.id);

    // Oldest first, two pages of 4 and 2.
    let mut e = app.engagement.clone();
    let page = |token: String| ListCommentsRequest {
        post_id: post.id.clone(),
        page_size: 4,
        page_token: token,
    };
    let first = e.list_comments(page(String::new())).await.answer();
    let second = e.list_comments(page(first.next_page_token.clone())).await.answer();
    let seen: Vec<_> =
        first.comments.iter().chain(&second.comments).map(|c| c.id.clone()).collect();
    assert_eq!(seen, ids);
    assert!(second.next_page_token.is_empty());

    let got = e.get_comment(GetCommentRequest { id: ids[0].clone() }).await.answer();
    assert_eq!(got.content, "c0");
    e.get_comment(GetCommentRequest { id: ObjectId::new().to_hex() }).await.refused(Code::NotFound);
}

#[tokio::test]
async fn comments_are_changed_by_their_author_and_deleted_by_either_author() {
    let app = App::start().await;
    let post_author = token_for(ObjectId::new());
    let post = app.post(&post_author, "mine").await;
    let writer = token_for(ObjectId::new());
    let stranger = token_for(ObjectId::new());
    let comment = app.comment(&writer, &post.id, "first!").await.unwrap();
    let mut e = app.engagement.clone();
    let update = |content: &str| UpdateCommentRequest {
        comment: Some(Comment {
            id: comment.id.clone(),
            content: content.into(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask { paths: vec!["content".into()] }),
    };
    e.update_comment(authed(update("hijack"), &post_author)).await.refused(Code::PermissionDenied);
    let err = e.update_comment(authed(update(""), &writer)).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["comment.content"]);
    let updated = e.update_comment(authed(update("edited"), &writer)).await.answer();
    assert_eq!(updated.content, "edited");

    let delete = |id: &str| DeleteCommentRequest { id: id.into() };
    e.delete_comment(authed(delete(&comment.id), &stranger)).await.refused(Code::PermissionDenied);
    e.delete_comment(authed(delete(&comment.id), &post_author)).await.unwrap();
    e.get_comment(GetCommentRequest { id: comment.id.clone() }).await.refused(Code::NotFound);

    let own = app.comment(&writer, &post.id, "again").await.unwrap();
    e.delete_comment(authed(delete(&own.id), &writer)).await.unwrap();
    assert!(app.comments(&post.id).await.is_empty());
    e.delete_comment(authed(delete(&own.id), &writer)).await.refused(Code::NotFound);
}

#[tokio::test]
async fn comment_likes_are_idempotent_and_counted() {
    let app = App::start().await;
    let post = app.post(&token_for(ObjectId::new()), "p").await;
    let comment = app.comment(&token_for(ObjectId::new()), &post.id, "c").await.unwrap();
    let e = app.engagement.clone();
    let fan = token_for(ObjectId::new());
    for _ in 0..3 {
        app.like_comment(&fan, &comment.id).await.unwrap();
    }
    app.like_comment(&token_for(ObjectId::new()), &comment.id).await.unwrap();
    let count = social_testkit::eventually(std::time::Duration::from_secs(15), || async {
        let c = e.clone().get_comment(GetCommentRequest { id: comment.id.clone() }).await.answer();
        (c.likes_count == 2).then_some(())
    })
    .await;
    assert!(count.is_some(), "comment likes_count never reached 2");
    app.unlike_comment(&fan, &comment.id).await.unwrap();
    app.like_comment(&fan, &ObjectId::new().to_hex()).await.refused(Code::NotFound);
    app.unlike_comment(&fan, &ObjectId::new().to_hex()).await.refused(Code::NotFound);
    // The post's like list holds post likes only.
    assert!(app.likers(&post.id).await.is_empty());
}
