//! `GetPost` and `BatchGetPosts` read through Redis (`social_kit::cache`): a warm read
//! sends nothing to MongoDB, every write is seen by the next read, a slow reader cannot
//! put an older post back over a newer one, and without Redis the answers come from
//! MongoDB.

use std::time::Duration;

use social_proto::post::v1::{BatchGetPostsRequest, DeletePostRequest, GetPostRequest, Post};
use social_testkit::{Stack, StackOptions, authed, eventually, queries};
use tonic::{Code, Status};

use crate::{App, posts::update, spawn};

impl App {
    async fn get(&self, id: &str) -> Result<Post, Status> {
        let request = GetPostRequest { id: id.into() };
        Ok(self.posts.clone().get_post(request).await?.into_inner())
    }

    /// The post `id` as BatchGetPosts answers it.
    async fn batch_get(&self, id: &str) -> Option<Post> {
        let ids = vec![id.to_owned()];
        let mut posts = self.posts.clone();
        let batch = posts.batch_get_posts(BatchGetPostsRequest { ids }).await;
        batch.unwrap().into_inner().posts.pop()
    }
}

#[tokio::test]
async fn a_cached_post_is_read_without_the_database_and_every_write_is_seen_at_once() {
    let app = spawn().await;
    let [(_, alice), (_, bob)] = app.register_all(["alice", "bob"]).await;
    let post = app.post(&alice, "first", vec![]).await.unwrap();
    app.get(&post.id).await.unwrap();
    // Warm: neither GetPost nor BatchGetPosts reaches MongoDB's `posts`. (A round is
    // read again if Redis took longer than its wait, 100 ms, as it may on a loaded
    // machine: then the reads go to MongoDB for a second, by design.)
    let by_id = || queries::sent("posts", "find {_id: =");
    let warm = eventually(Duration::from_secs(15), || async {
        let before = by_id();
        for _ in 0..3 {
            assert_eq!(app.get(&post.id).await.unwrap().content, "first");
        }
        assert!(app.batch_get(&post.id).await.is_some());
        (by_id() == before).then_some(())
    })
    .await;
    assert!(warm.is_some(), "warm reads send nothing");
    // An edit, a like's count (once its event landed), a deletion: each read next.
    let edit = update(&post.id, "second", vec![], &["content"]);
    app.posts.clone().update_post(authed(edit, &alice)).await.unwrap();
    assert_eq!(app.get(&post.id).await.unwrap().content, "second");
    assert_eq!(app.batch_get(&post.id).await.unwrap().content, "second");
    app.stack.like_post(&bob, &post.id).await.unwrap();
    let liked = eventually(Duration::from_secs(10), || async {
        let seen = app.get(&post.id).await.unwrap();
        (seen.likes_count == 1).then_some(seen)
    })
    .await;
    assert!(liked.is_some(), "the like's count never showed");
    app.stack.comment(&bob, &post.id, "nice").await.unwrap();
    let commented = eventually(Duration::from_secs(10), || async {
        let seen = app.batch_get(&post.id).await.unwrap();
        (seen.comments_count == 1).then_some(seen)
    })
    .await;
    assert!(commented.is_some(), "the comment's count never showed");
    let delete = DeletePostRequest { id: post.id.clone() };
    app.posts.clone().delete_post(authed(delete, &alice)).await.unwrap();
    assert_eq!(app.get(&post.id).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn a_slow_reader_does_not_put_an_older_post_over_the_edit_that_passed_it() {
    let app = spawn().await;
    let (_, alice) = app.user("alice").await;
    let post = app.post(&alice, "first", vec![]).await.unwrap();
    // Its creation's event handled (the timelines' fan-out reads the post through the
    // cache), then an edit that forgets what that read cached: the read below misses.
    app.stack.settled().await;
    let edit = update(&post.id, "old", vec![], &["content"]);
    app.posts.clone().update_post(authed(edit, &alice)).await.unwrap();
    // The reader misses, reads "old" from MongoDB, then waits before filling the cache
    // while the author edits the post.
    const POINT: &str = "kit::before_cache_fill";
    fail::cfg(POINT, "1*return(1500)").unwrap();
    let reader = app.get(&post.id);
    let edit = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let edit = update(&post.id, "new", vec![], &["content"]);
        let mut posts = app.posts.clone();
        posts.update_post(authed(edit, &alice)).await.unwrap();
    };
    let (read, ()) = tokio::join!(reader, edit);
    assert_eq!(read.unwrap().content, "old", "read before the edit");
    assert_eq!(social_kit::faults::fired(POINT), 1);
    // Its fill found its lease gone with the edit: the cache holds nothing older.
    for _ in 0..2 {
        assert_eq!(app.get(&post.id).await.unwrap().content, "new");
    }
}

#[tokio::test]
async fn a_deleted_post_is_forgotten_by_the_cache_even_when_redis_missed_the_first_forget() {
    let app = spawn().await;
    let (_, alice) = app.user("alice").await;
    let post = app.post(&alice, "regretted", vec![]).await.unwrap();
    assert_eq!(app.get(&post.id).await.unwrap().content, "regretted");
    // Redis does not answer the delete's forget (a pause, a failover): the cached post
    // would be served until it expires.
    const POINT: &str = "kit::cache_forget";
    fail::cfg(POINT, "1*return").unwrap();
    let delete = DeletePostRequest { id: post.id.clone() };
    let mut posts = app.posts.clone();
    posts.delete_post(authed(delete, &alice)).await.unwrap();
    assert_eq!(social_kit::faults::fired(POINT), 1);
    let gone = social_testkit::eventually(Duration::from_secs(5), || async {
        let code = app.get(&post.id).await.err().map(|e| e.code());
        (code == Some(Code::NotFound)).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the deleted post is still served from the cache");
}

#[tokio::test]
async fn without_redis_posts_are_read_from_the_database() {
    let mut cache = social_kit::cache::Settings::for_tests();
    cache.url = "redis://127.0.0.1:1".into();
    let stack =
        Stack::start_with(StackOptions { post_cache: Some(cache), ..Default::default() }).await;
    let app = App { graph: stack.graph().await, posts: stack.posts().await, stack };
    let (_, alice) = app.user("alice").await;
    let post = app.post(&alice, "here", vec![]).await.unwrap();
    for _ in 0..3 {
        assert_eq!(app.get(&post.id).await.unwrap().content, "here");
    }
    let delete = DeletePostRequest { id: post.id.clone() };
    let mut posts = app.posts.clone();
    posts.delete_post(authed(delete, &alice)).await.unwrap();
    assert_eq!(app.get(&post.id).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn a_signed_in_readers_block_check_is_cached_and_a_block_or_unblock_is_seen_once_it_lands() {
    let app = spawn().await;
    let [(_, alice_token), (bob, bob_token)] = app.register_all(["alice", "bob"]).await;
    let post = app.post(&alice_token, "by alice", vec![]).await.unwrap();
    let read = |token: &str| {
        let request = authed(GetPostRequest { id: post.id.clone() }, token);
        let mut posts = app.posts.clone();
        async move { posts.get_post(request).await.map(drop) }
    };
    read(&bob_token).await.unwrap();
    app.stack.settled().await;
    // Warm: whether alice blocks bob is answered without MongoDB.
    // (A round is read again if Redis took longer than its wait, as on a loaded machine.)
    let sent = || queries::sent("post_blocks", "find") + queries::sent("posts", "find {_id:");
    let warm = eventually(Duration::from_secs(15), || async {
        let before = sent();
        for _ in 0..3 {
            read(&bob_token).await.unwrap();
        }
        (sent() == before).then_some(())
    })
    .await;
    assert!(warm.is_some(), "warm signed-in reads send nothing");
    // The block's event forgets who blocks bob: absent within moments (the entry would
    // otherwise live its minute).
    app.stack.block(&alice_token, &bob).await.unwrap();
    let absent = eventually(Duration::from_secs(10), || async {
        (read(&bob_token).await.err()?.code() == Code::NotFound).then_some(())
    })
    .await;
    assert!(absent.is_some(), "alice's post stays visible to bob");
    read(&alice_token).await.unwrap();
    app.stack.unblock(&alice_token, &bob).await.unwrap();
    let back = eventually(Duration::from_secs(10), || async { read(&bob_token).await.ok() }).await;
    assert!(back.is_some(), "alice's post stays absent to bob after the unblock");
}
