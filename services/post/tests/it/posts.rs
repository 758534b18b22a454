//! Posts: creation with media, validation, updates and deletion by the author alone,
//! concurrent updates, batch reads.

use super::*;
use social_testkit::{Answer, Refused};

#[tokio::test]
async fn create_and_get_a_post_with_media() {
    let app = spawn().await;
    let me = ObjectId::new();
    let token = token_for(me);
    let post = app.post(&token, "  hello 🌍  ", vec![image(), video()]).await.unwrap();
    assert_eq!(post.content, "hello 🌍");
    assert_eq!(post.user_id, me.to_hex());
    assert_eq!(post.media, [image(), video()]);
    assert_eq!((post.likes_count, post.comments_count), (0, 0));

    let got = app.posts.clone().get_post(GetPostRequest { id: post.id.clone() }).await.answer();
    assert_eq!(got, post);
    // Media alone is a post.
    assert!(app.post(&token, "", vec![image()]).await.is_ok());
    // 500 characters (not bytes) is the limit.
    assert!(app.post(&token, &"é".repeat(500), vec![]).await.is_ok());

    app.posts
        .clone()
        .create_post(CreatePostRequest { content: "hi".into(), media: vec![] })
        .await
        .refused(Code::Unauthenticated);
    let mut p = app.posts.clone();
    assert_eq!(
        p.get_post(GetPostRequest { id: "zzz".into() }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        p.get_post(GetPostRequest { id: ObjectId::new().to_hex() }).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn post_validation_names_every_bad_field() {
    let app = spawn().await;
    let token = token_for(ObjectId::new());
    let err = app.post(&token, "   ", vec![]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["content"]);
    let err = app.post(&token, &"é".repeat(501), vec![]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["content"]);

    let bad_image = Media { duration: Some(3.0), width: 0, url: "ftp://x.y/z".into(), ..image() };
    let bad_video = Media { duration: None, height: 16385, ..video() };
    let bad_type = Media { r#type: "audio".into(), ..image() };
    let gif_zero = Media { r#type: "gif".into(), duration: Some(0.0), ..image() };
    let err = app
        .post(&token, "x", vec![bad_image, bad_video, bad_type, gif_zero, image()])
        .await
        .refused(Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        [
            "media",
            "media[0].duration",
            "media[0].url",
            "media[0].width",
            "media[1].duration",
            "media[1].height",
            "media[2].type",
            "media[3].duration",
        ]
    );
}

#[tokio::test]
async fn a_flood_of_media_items_or_mask_paths_costs_what_a_few_do() {
    let app = spawn().await;
    let token = token_for(ObjectId::new());
    // A thousand empty media items: the count is refused, and only the first four items
    // are looked at (four violations each), not a thousand.
    let err =
        app.post(&token, "x", vec![Media::default(); 1000]).await.refused(Code::InvalidArgument);
    let mut expected = vec!["media".to_owned()];
    for i in 0..4 {
        for name in ["type", "url", "width", "height"] {
            expected.push(format!("media[{i}].{name}"));
        }
    }
    assert_eq!(violated_fields(&err), expected);
    // A mask of a thousand paths: one violation, not one per path.
    let post = app.post(&token, "x", vec![]).await.unwrap();
    let paths = vec!["nonsense"; 1000];
    let err = app
        .posts
        .clone()
        .update_post(authed(update(&post.id, "y", vec![], &paths), &token))
        .await
        .refused(Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["update_mask.paths"]);
    // One path of 60,000 characters: the answer names it by its start, not whole.
    let long = "x".repeat(60_000);
    let err = app
        .posts
        .clone()
        .update_post(authed(update(&post.id, "y", vec![], &[&long]), &token))
        .await
        .refused(Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["update_mask.paths"]);
    assert!(err.message().len() < 200, "{}", err.message());
}

#[tokio::test]
async fn streams_left_unread_leave_the_other_calls_of_their_connection_answering() {
    use social_proto::post::v1::ExportUserPostsRequest;
    let app = spawn().await;
    // 5.4 MB of posts by one author (18 KB each: 500 four-byte characters and four
    // media items of two 2,000-byte addresses), more than two streams' usual windows
    // (2 MiB each).
    let author = ObjectId::new();
    let text = "𝕏".repeat(500);
    let url = format!("https://cdn.example.com/{}", "m".repeat(1976));
    let media = bson::doc! {
        "type": "image", "url": &url, "thumbnail_url": &url, "width": 640, "height": 480,
    };
    let now = bson::DateTime::now();
    let posts: Vec<bson::Document> = (0..300_i64)
        .map(|i| {
            bson::doc! {
                "_id": ObjectId::new(), "user_id": author, "content": &text,
                "media": [&media, &media, &media, &media],
                "likes_count": 0_i64, "comments_count": 0_i64, "created_at": now,
                "updated_at": now, "sort_key": now.timestamp_millis() * 1000 + i,
                "state": "active", "recount_ms": 0_i64, "counter_version": 0_i64,
                "outbox_pending": 0,
            }
        })
        .collect();
    let database = app.stack.database().await;
    database.collection("posts").insert_many(posts).await.unwrap();
    let post = app.post(&token_for(author), "a post to read", vec![]).await.unwrap();
    // Three exports of them on one connection to the post service, opened and not read.
    let peer = social_testkit::peer(
        "post service",
        &format!("http://{}", app.stack.post.addr),
        Duration::from_secs(5),
    );
    let mut unread = Vec::new();
    for _ in 0..3 {
        let request = peer.request(ExportUserPostsRequest { user_id: author.to_hex() });
        let mut client = PostServiceClient::new(peer.channel());
        unread.push(client.export_user_posts(request).await.answer());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Another call on that connection is answered.
    let mut client = PostServiceClient::new(peer.channel());
    let request = peer.request(GetPostRequest { id: post.id });
    let answered = tokio::time::timeout(Duration::from_secs(5), client.get_post(request)).await;
    assert!(answered.is_ok(), "the connection's window is taken by unread streams");
    drop(unread);
}

pub(crate) fn update(
    id: &str,
    content: &str,
    media: Vec<Media>,
    paths: &[&str],
) -> UpdatePostRequest {
    UpdatePostRequest {
        post: Some(Post { id: id.into(), content: content.into(), media, ..Default::default() }),
        update_mask: Some(FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
    }
}

#[tokio::test]
async fn only_the_author_updates_and_deletes() {
    let app = spawn().await;
    let (author, other) = (token_for(ObjectId::new()), token_for(ObjectId::new()));
    let post = app.post(&author, "first", vec![image()]).await.unwrap();
    let mut p = app.posts.clone();

    p.update_post(authed(update(&post.id, "mine now", vec![], &["content"]), &other))
        .await
        .refused(Code::PermissionDenied);
    let err = p
        .update_post(authed(update(&post.id, "x", vec![], &["user_id"]), &author))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["update_mask.paths"]);
    // Removing the media from a post whose text is empty would leave nothing.
    let media_only = app.post(&author, "", vec![image()]).await.unwrap();
    let err = p
        .update_post(authed(update(&media_only.id, "", vec![], &["media"]), &author))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["post.content"]);
    p.update_post(authed(update(&ObjectId::new().to_hex(), "x", vec![], &["content"]), &author))
        .await
        .refused(Code::NotFound);

    tokio::time::sleep(Duration::from_millis(5)).await;
    let updated = p
        .update_post(authed(
            update(&post.id, "edited", vec![video()], &["content", "media"]),
            &author,
        ))
        .await
        .answer();
    assert_eq!(updated.content, "edited");
    assert_eq!(updated.media, [video()]);
    assert_eq!(updated.created_at, post.created_at);
    assert_ne!(updated.updated_at, post.updated_at);
    let got = p.get_post(GetPostRequest { id: post.id.clone() }).await.answer();
    assert_eq!(got.content, "edited");

    let delete = |id: &str| DeletePostRequest { id: id.into() };
    p.delete_post(authed(delete(&post.id), &other)).await.refused(Code::PermissionDenied);
    p.delete_post(authed(delete(&post.id), &author)).await.unwrap();
    p.get_post(GetPostRequest { id: post.id.clone() }).await.refused(Code::NotFound);
    p.delete_post(authed(delete(&post.id), &author)).await.refused(Code::NotFound);
}

#[tokio::test]
async fn two_devices_emptying_one_half_each_cannot_empty_a_post() {
    let app = spawn().await;
    let author = token_for(ObjectId::new());
    let p = app.posts.clone();
    for round in 0..8 {
        let post = app.post(&author, "text", vec![image()]).await.unwrap();
        // One device clears the text, the other the media, at the same time: each
        // alone is allowed, both together would leave nothing.
        let (mut a, mut b) = (p.clone(), p.clone());
        let (clear_text, clear_media) = tokio::join!(
            a.update_post(authed(update(&post.id, "", vec![], &["content"]), &author)),
            b.update_post(authed(update(&post.id, "", vec![], &["media"]), &author)),
        );
        let failures: Vec<Status> =
            [clear_text, clear_media].into_iter().filter_map(Result::err).collect();
        assert_eq!(failures.len(), 1, "round {round}: exactly one edit wins");
        assert_eq!(violated_fields(&failures[0]), ["post.content"]);
        let stored = p.clone().get_post(GetPostRequest { id: post.id }).await.answer();
        assert!(
            !stored.content.is_empty() || !stored.media.is_empty(),
            "round {round}: the post was emptied"
        );
    }
}

#[tokio::test]
async fn batch_get_keeps_order_and_omits_missing() {
    let app = spawn().await;
    let token = token_for(ObjectId::new());
    let a = app.post(&token, "a", vec![]).await.unwrap();
    let b = app.post(&token, "b", vec![]).await.unwrap();
    let got = app
        .posts
        .clone()
        .batch_get_posts(BatchGetPostsRequest {
            ids: vec![b.id.clone(), ObjectId::new().to_hex(), a.id.clone()],
        })
        .await
        .answer()
        .posts;
    assert_eq!(got, [b, a]);
    let err = app
        .posts
        .clone()
        .batch_get_posts(BatchGetPostsRequest { ids: vec!["nope".into()] })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["ids[0]"]);
}
