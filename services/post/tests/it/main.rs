//! PostService through its gRPC surface, with real user and social-graph services.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blocks;
mod cache;
mod feed;
mod posts;
mod timelines;

use std::{collections::HashSet, time::Duration};

use bson::oid::ObjectId;
use prost_types::FieldMask;
use social_proto::{
    common::v1::Media,
    graph::v1::social_graph_service_client::SocialGraphServiceClient,
    post::v1::{
        BatchGetPostsRequest, CreatePostRequest, DeletePostRequest, GetPostRequest,
        ListHomeFeedRequest, ListUserPostsRequest, Post, UpdatePostRequest,
        post_service_client::PostServiceClient,
    },
};
use social_testkit::{Answer, Stack, StackOptions, authed, token_for, violated_fields};
use tonic::{Code, Status, transport::Channel};

struct App {
    stack: Stack,
    graph: SocialGraphServiceClient<Channel>,
    posts: PostServiceClient<Channel>,
}

async fn spawn_with_graph(graph_url: Option<String>) -> App {
    let stack =
        Stack::start_with(StackOptions { graph_url_for_post: graph_url, ..Default::default() })
            .await;
    App { graph: stack.graph().await, posts: stack.posts().await, stack }
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

    /// Registered users' ids and tokens, in the order of `names`.
    async fn register_all<const N: usize>(&self, names: [&str; N]) -> [(String, String); N] {
        self.stack.register_all(names).await
    }

    async fn post(&self, token: &str, content: &str, media: Vec<Media>) -> Result<Post, Status> {
        self.posts
            .clone()
            .create_post(authed(CreatePostRequest { content: content.into(), media }, token))
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
                ListHomeFeedRequest { page_size: size, page_token: page_token.into() },
                token,
            ))
            .await?
            .into_inner();
        Ok((r.posts.into_iter().map(|p| p.content).collect(), r.next_page_token))
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
            .answer();
        (r.posts, r.next_page_token)
    }
}
