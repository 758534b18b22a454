//! PostService through its gRPC surface, with real user and social-graph services.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashSet, time::Duration};

use bson::oid::ObjectId;
use prost_types::FieldMask;
use social_proto::{
    common::v1::Media,
    graph::v1::{
        FollowRequest, UnfollowRequest, social_graph_service_client::SocialGraphServiceClient,
    },
    post::v1::{
        BatchGetPostsRequest, CreatePostRequest, DeletePostRequest, GetPostRequest,
        ListHomeFeedRequest, ListUserPostsRequest, Post, UpdatePostRequest,
        post_service_client::PostServiceClient,
    },
};
use social_testkit::{Stack, StackOptions, authed, token_for, violated_fields};
use tonic::{Code, Status, transport::Channel};

struct App {
    stack: Stack,
    graph: SocialGraphServiceClient<Channel>,
    posts: PostServiceClient<Channel>,
}

async fn spawn_with_graph(graph_url: Option<String>) -> App {
    let stack = Stack::start_with(StackOptions {
        graph_url_for_post: graph_url,
        ..Default::default()
    })
    .await;
    App {
        graph: stack.graph().await,
        posts: stack.posts().await,
        stack,
    }
}

async fn spawn() -> App {
    spawn_with_graph(None).await
}

fn image() -> Media {
    Media {
        r#type: "image".into(),
        url: "https://cdn.example.com/cat.jpg".into(),
        thumbnail_url: "https://cdn.example.com/cat-small.jpg".into(),
        width: 1080,
        height: 1080,
        duration: None,
    }
}

fn video() -> Media {
    Media {
        r#type: "video".into(),
        url: "https://cdn.example.com/clip.mp4".into(),
        thumbnail_url: String::new(),
        width: 1920,
        height: 1080,
        duration: Some(12.5),
    }
}

impl App {
    async fn user(&self, name: &str) -> (String, String) {
        self.stack.register(name).await
    }

    async fn post(&self, token: &str, content: &str, media: Vec<Media>) -> Result<Post, Status> {
        self.posts
            .clone()
            .create_post(authed(
                CreatePostRequest {
                    content: content.into(),
                    media,
                },
                token,
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn feed(
        &self,
        token: &str,
        size: i32,
        page_token: &str,
    ) -> Result<(Vec<String>, String), Status> {
        let r = self
            .posts
            .clone()
            .list_home_feed(authed(
                ListHomeFeedRequest {
                    page_size: size,
                    page_token: page_token.into(),
                },
                token,
            ))
            .await?
            .into_inner();
        Ok((
            r.posts.into_iter().map(|p| p.content).collect(),
            r.next_page_token,
        ))
    }

    async fn user_posts(&self, user: &str, size: i32, page_token: &str) -> (Vec<Post>, String) {
        let r = self
            .posts
            .clone()
            .list_user_posts(ListUserPostsRequest {
                user_id: user.into(),
                page_size: size,
                page_token: page_token.into(),
            })
            .await
            .unwrap()
            .into_inner();
        (r.posts, r.next_page_token)
    }
}

#[tokio::test]
async fn create_and_get_a_post_with_media() {
    let app = spawn().await;
    let me = ObjectId::new();
    let token = token_for(me);
    let post = app
        .post(&token, "  hello 🌍  ", vec![image(), video()])
        .await
        .unwrap();
    assert_eq!(post.content, "hello 🌍");
    assert_eq!(post.user_id, me.to_hex());
    assert_eq!(post.media, [image(), video()]);
    assert_eq!((post.likes_count, post.comments_count), (0, 0));

    let got = app
        .posts
        .clone()
        .get_post(GetPostRequest {
            id: post.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, post);
    // Media alone is a post.
    assert!(app.post(&token, "", vec![image()]).await.is_ok());
    // 500 characters (not bytes) is the limit.
    assert!(app.post(&token, &"é".repeat(500), vec![]).await.is_ok());

    let err = app
        .posts
        .clone()
        .create_post(CreatePostRequest {
            content: "hi".into(),
            media: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut p = app.posts.clone();
    assert_eq!(
        p.get_post(GetPostRequest { id: "zzz".into() })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        p.get_post(GetPostRequest {
            id: ObjectId::new().to_hex()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn post_validation_names_every_bad_field() {
    let app = spawn().await;
    let token = token_for(ObjectId::new());
    let err = app.post(&token, "   ", vec![]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["content"]);
    let err = app
        .post(&token, &"é".repeat(501), vec![])
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["content"]);

    let bad_image = Media {
        duration: Some(3.0),
        width: 0,
        url: "ftp://x.y/z".into(),
        ..image()
    };
    let bad_video = Media {
        duration: None,
        height: 16385,
        ..video()
    };
    let bad_type = Media {
        r#type: "audio".into(),
        ..image()
    };
    let gif_zero = Media {
        r#type: "gif".into(),
        duration: Some(0.0),
        ..image()
    };
    let err = app
        .post(
            &token,
            "x",
            vec![bad_image, bad_video, bad_type, gif_zero, image()],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
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

fn update(id: &str, content: &str, media: Vec<Media>, paths: &[&str]) -> UpdatePostRequest {
    UpdatePostRequest {
        post: Some(Post {
            id: id.into(),
            content: content.into(),
            media,
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    }
}

#[tokio::test]
async fn only_the_author_updates_and_deletes() {
    let app = spawn().await;
    let (author, other) = (token_for(ObjectId::new()), token_for(ObjectId::new()));
    let post = app.post(&author, "first", vec![image()]).await.unwrap();
    let mut p = app.posts.clone();

    let err = p
        .update_post(authed(
            update(&post.id, "mine now", vec![], &["content"]),
            &other,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = p
        .update_post(authed(update(&post.id, "x", vec![], &["user_id"]), &author))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["update_mask.paths"]);
    // Removing the media from a post whose text is empty would leave nothing.
    let media_only = app.post(&author, "", vec![image()]).await.unwrap();
    let err = p
        .update_post(authed(
            update(&media_only.id, "", vec![], &["media"]),
            &author,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["post.content"]);
    let err = p
        .update_post(authed(
            update(&ObjectId::new().to_hex(), "x", vec![], &["content"]),
            &author,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    tokio::time::sleep(Duration::from_millis(5)).await;
    let updated = p
        .update_post(authed(
            update(&post.id, "edited", vec![video()], &["content", "media"]),
            &author,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.content, "edited");
    assert_eq!(updated.media, [video()]);
    assert_eq!(updated.created_at, post.created_at);
    assert_ne!(updated.updated_at, post.updated_at);
    let got = p
        .get_post(GetPostRequest {
            id: post.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.content, "edited");

    let delete = |id: &str| DeletePostRequest { id: id.into() };
    let err = p
        .delete_post(authed(delete(&post.id), &other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    p.delete_post(authed(delete(&post.id), &author))
        .await
        .unwrap();
    let err = p
        .get_post(GetPostRequest {
            id: post.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = p
        .delete_post(authed(delete(&post.id), &author))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
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
        let failures: Vec<Status> = [clear_text, clear_media]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        assert_eq!(failures.len(), 1, "round {round}: exactly one edit wins");
        assert_eq!(violated_fields(&failures[0]), ["post.content"]);
        let stored = p
            .clone()
            .get_post(GetPostRequest { id: post.id })
            .await
            .unwrap()
            .into_inner();
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
        .unwrap()
        .into_inner()
        .posts;
    assert_eq!(got, [b, a]);
    let err = app
        .posts
        .clone()
        .batch_get_posts(BatchGetPostsRequest {
            ids: vec!["nope".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["ids[0]"]);
}

#[tokio::test]
async fn user_posts_page_newest_first_and_stay_stable_under_inserts() {
    let app = spawn().await;
    let author = ObjectId::new();
    let token = token_for(author);
    let mut original = Vec::new();
    for i in 0..23 {
        original.push(
            app.post(&token, &format!("post {i}"), vec![])
                .await
                .unwrap()
                .id,
        );
    }
    original.reverse();

    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut i = 0;
    loop {
        let (page, next) = app.user_posts(&author.to_hex(), 10, &page_token).await;
        seen.extend(page.into_iter().map(|p| p.id));
        // The author keeps posting while a reader pages.
        app.post(&token, &format!("late {i}"), vec![])
            .await
            .unwrap();
        i += 1;
        if next.is_empty() {
            break;
        }
        page_token = next;
    }
    assert_eq!(seen, original);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());

    let (_, page_token) = app.user_posts(&author.to_hex(), 5, "").await;
    let err = app
        .posts
        .clone()
        .list_user_posts(ListUserPostsRequest {
            user_id: ObjectId::new().to_hex(),
            page_size: 5,
            page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
}

#[tokio::test]
async fn home_feed_has_followed_and_own_posts_newest_first() {
    let app = spawn().await;
    let (_, alice) = app.user("alice").await;
    let (bob_id, bob) = app.user("bob").await;
    let (_, carol) = app.user("carol").await;
    app.graph
        .clone()
        .follow(authed(
            FollowRequest {
                followee_id: bob_id.clone(),
            },
            &alice,
        ))
        .await
        .unwrap();

    for (token, text) in [
        (&bob, "bob 1"),
        (&alice, "alice 1"),
        (&carol, "carol 1"),
        (&bob, "bob 2"),
    ] {
        app.post(token, text, vec![]).await.unwrap();
    }
    let (feed, next) = app.feed(&alice, 0, "").await.unwrap();
    assert_eq!(feed, ["bob 2", "alice 1", "bob 1"]);
    assert!(next.is_empty());

    // Paging through it.
    let (first, next) = app.feed(&alice, 2, "").await.unwrap();
    assert_eq!(first, ["bob 2", "alice 1"]);
    let (rest, last) = app.feed(&alice, 2, &next).await.unwrap();
    assert_eq!(rest, ["bob 1"]);
    assert!(last.is_empty());
    // Another reader cannot reuse alice's token.
    let err = app.feed(&carol, 2, &next).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);

    app.graph
        .clone()
        .unfollow(authed(
            UnfollowRequest {
                followee_id: bob_id,
            },
            &alice,
        ))
        .await
        .unwrap();
    assert_eq!(app.feed(&alice, 0, "").await.unwrap().0, ["alice 1"]);

    let err = app
        .posts
        .clone()
        .list_home_feed(ListHomeFeedRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn home_feed_is_unavailable_when_the_graph_is_down() {
    let app = spawn_with_graph(Some("http://127.0.0.1:1".into())).await;
    let err = app
        .feed(&token_for(ObjectId::new()), 0, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[tokio::test]
async fn a_reader_following_hundreds_of_accounts_gets_their_posts_and_no_others() {
    let app = spawn().await;
    let (alice_id, alice) = app.user("alice").await;
    let alice_id = bson::oid::ObjectId::parse_str(&alice_id).unwrap();
    // 250 follows, more than a query merges range by range, stored as Follow stores them.
    let authors: Vec<bson::oid::ObjectId> = (0..250).map(|_| bson::oid::ObjectId::new()).collect();
    let follows: Vec<bson::Document> = authors
        .iter()
        .enumerate()
        .map(|(i, author)| {
            let at = bson::DateTime::now();
            bson::doc! {
                "_id": bson::oid::ObjectId::new(), "follower_id": alice_id, "followee_id": author,
                "created_at": at, "sort_key": social_kit::paging::sort_key(at) + i as i64,
                "state": "active", "active_key": "active", "started_ms": at.timestamp_millis(),
                "outbox_pending": 0,
            }
        })
        .collect();
    app.stack
        .database()
        .await
        .collection::<bson::Document>("followers")
        .insert_many(follows)
        .await
        .unwrap();
    for (author, text) in [(0, "first"), (249, "last"), (100, "middle")] {
        app.post(&token_for(authors[author]), text, vec![])
            .await
            .unwrap();
    }
    app.post(
        &token_for(bson::oid::ObjectId::new()),
        "a stranger's",
        vec![],
    )
    .await
    .unwrap();
    app.post(&alice, "mine", vec![]).await.unwrap();
    let (feed, _) = app.feed(&alice, 10, "").await.unwrap();
    assert_eq!(feed, ["mine", "middle", "last", "first"]);
    let (first, next) = app.feed(&alice, 2, "").await.unwrap();
    assert_eq!(first, ["mine", "middle"]);
    assert_eq!(
        app.feed(&alice, 2, &next).await.unwrap().0,
        ["last", "first"]
    );
}
