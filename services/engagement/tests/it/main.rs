//! EngagementService through its gRPC surface with every service started in-process,
//! real RabbitMQ and the real driver: the RPCs (`rpc`), and the events and counters
//! (`events`), and the writes blocks forbid (`blocks`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod blocks;
mod deletion;
mod delivery;
mod events;
mod recount;
mod rpc;

use std::time::Duration;

use social_proto::{
    engagement::v1::{
        Comment, ListCommentsRequest, ListPostLikesRequest,
        engagement_service_client::EngagementServiceClient,
    },
    post::v1::{GetPostRequest, Post, post_service_client::PostServiceClient},
};
use social_testkit::{Answer, Stack, TcpProxy, eventually};
use tonic::{Status, transport::Channel};

/// The stack and clients of one test.
struct App {
    stack: Stack,
    engagement: EngagementServiceClient<Channel>,
    posts: PostServiceClient<Channel>,
}

impl App {
    async fn start() -> Self {
        Self::with(Stack::start().await).await
    }

    async fn with(stack: Stack) -> Self {
        Self { engagement: stack.engagement().await, posts: stack.posts().await, stack }
    }

    /// Kills the engagement service as a crash would and starts a new one that reaches
    /// RabbitMQ directly, not through the old one's link; `Crashed` tells afterwards
    /// whether anything of the old instance came back.
    async fn crash_and_restart_engagement(&mut self) -> Crashed {
        let direct = social_events::EventsConfig::for_tests("direct").amqp_url;
        let killed_at = self.stack.crash_and_restart_engagement(&direct).await;
        self.engagement = self.stack.engagement().await;
        Crashed { killed_at }
    }

    async fn post(&self, token: &str, content: &str) -> Post {
        self.stack.post(token, content).await
    }

    async fn comment(&self, token: &str, post_id: &str, content: &str) -> Result<Comment, Status> {
        self.stack.comment(token, post_id, content).await
    }

    async fn like_post(&self, token: &str, post_id: &str) -> Result<(), Status> {
        self.stack.like_post(token, post_id).await
    }

    async fn like_comment(&self, token: &str, comment_id: &str) -> Result<(), Status> {
        self.stack.like_comment(token, comment_id).await
    }

    async fn unlike_comment(&self, token: &str, comment_id: &str) -> Result<(), Status> {
        self.stack.unlike_comment(token, comment_id).await
    }

    async fn likers(&self, post_id: &str) -> Vec<String> {
        self.engagement
            .clone()
            .list_post_likes(ListPostLikesRequest {
                post_id: post_id.into(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .answer()
            .likes
            .into_iter()
            .map(|l| l.user_id)
            .collect()
    }

    async fn comments(&self, post_id: &str) -> Vec<Comment> {
        self.engagement
            .clone()
            .list_comments(ListCommentsRequest {
                post_id: post_id.into(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .answer()
            .comments
    }

    async fn get_post_err(&self, id: &str) -> Status {
        self.posts.clone().get_post(GetPostRequest { id: id.into() }).await.unwrap_err()
    }

    async fn get_post(&self, id: &str) -> Post {
        self.posts.clone().get_post(GetPostRequest { id: id.into() }).await.answer()
    }

    /// Waits until the post's counters are `(likes, comments)`; panics after 15 s.
    async fn counters_become(&self, post_id: &str, want: (i64, i64)) {
        let got = eventually(Duration::from_secs(15), || async {
            let p = self.get_post(post_id).await;
            ((p.likes_count, p.comments_count) == want).then_some(())
        })
        .await;
        let p = self.get_post(post_id).await;
        assert!(
            got.is_some(),
            "counters stayed at {:?}, want {want:?}",
            (p.likes_count, p.comments_count)
        );
    }
}

/// A crashed engagement instance (see [`App::crash_and_restart_engagement`]).
struct Crashed {
    killed_at: std::time::Instant,
}

impl Crashed {
    /// Asserts that the killed instance stays dead: its broker link carries nothing and
    /// accepts no connection, for longer than a live relay or consumer would take to
    /// reconnect (their backoff starts at 100 ms and is capped at 5 s), so that whatever
    /// was recovered, the new instance recovered.
    async fn stays_dead(&self, old_link: &TcpProxy) {
        let came_back = eventually(Duration::from_secs(6), || async {
            let reconnected = old_link
                .connections()
                .into_iter()
                // A connection the old instance opened as it was killed is accepted
                // a moment later; one that came back would come again and again.
                .filter(|at| *at > self.killed_at + Duration::from_millis(300))
                .count();
            let open = old_link.open_connections();
            (reconnected > 0 || open > 0).then_some((reconnected, open))
        })
        .await;
        assert_eq!(
            came_back, None,
            "the killed instance still talks to the broker (connections since, open)"
        );
    }
}
