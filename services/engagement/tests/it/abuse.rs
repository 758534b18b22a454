//! What a hostile client tries: inflating a count through the other kind of unlike, and
//! requests far larger than any valid one.

use std::time::Duration;

use bson::oid::ObjectId;
use social_proto::{
    engagement::v1::{GetCommentRequest, UnlikePostRequest},
    post::v1::BatchGetPostsRequest,
};
use social_testkit::{Answer, Refused, authed, broker, eventually, token_for, violated_fields};
use tonic::Code;

use crate::App;

#[tokio::test]
async fn a_like_of_one_kind_is_never_ended_through_the_other() {
    let app = App::start().await;
    let post = app.post(&token_for(ObjectId::new()), "p").await;
    let comment = app.comment(&token_for(ObjectId::new()), &post.id, "c").await.unwrap();
    let fan = token_for(ObjectId::new());
    let mut engagement = app.engagement.clone();
    let comment_likes = || {
        let (mut engagement, id) = (app.engagement.clone(), comment.id.clone());
        async move { engagement.get_comment(GetCommentRequest { id }).await.answer().likes_count }
    };
    app.like_post(&fan, &post.id).await.unwrap();
    app.like_comment(&fan, &comment.id).await.unwrap();
    app.counters_become(&post.id, (1, 1)).await;
    let liked = eventually(Duration::from_secs(15), || async {
        (comment_likes().await == 1).then_some(())
    })
    .await;
    assert!(liked.is_some());

    // Over and over: unlike the comment as if it were a post, and the post as if it
    // were a comment, then like both again (a no-op, they are liked).
    for _ in 0..3 {
        let err = engagement
            .unlike_post(authed(UnlikePostRequest { post_id: comment.id.clone() }, &fan))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "no post has the comment's id");
        let err = app.unlike_comment(&fan, &post.id).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "no comment has the post's id");
        app.like_post(&fan, &post.id).await.unwrap();
        app.like_comment(&fan, &comment.id).await.unwrap();
    }
    let config = &app.stack.events;
    let drained = eventually(Duration::from_secs(15), || async {
        let post_queue = broker::queue_depth(config, &config.queue("post")).await;
        let own_queue = broker::queue_depth(config, &config.queue("engagement")).await;
        (post_queue == 0 && own_queue == 0).then_some(())
    })
    .await;
    assert!(drained.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = app.get_post(&post.id).await;
    assert_eq!((p.likes_count, p.comments_count), (1, 1));
    assert_eq!(comment_likes().await, 1);
    assert_eq!(app.likers(&post.id).await.len(), 1);
}

#[tokio::test]
async fn oversized_requests_are_refused_before_any_work() {
    let app = App::start().await;
    let mut posts = app.posts.clone();
    // Over the batch limit: one violation for the size, none per element.
    let ids = vec!["not an id".to_owned(); 1000];
    let err =
        posts.batch_get_posts(BatchGetPostsRequest { ids }).await.refused(Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["ids"]);
    // Far larger than any valid request: refused while decoding.
    let ids = vec!["65f0c0ffee0123456789abcd".to_owned(); 150_000];
    let err = posts.batch_get_posts(BatchGetPostsRequest { ids }).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
}
