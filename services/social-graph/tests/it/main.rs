//! SocialGraphService through its gRPC surface, with a real user service beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashSet, time::Duration};

use bson::oid::ObjectId;
use social_proto::graph::v1::{
    FollowRequest, GetRelationshipRequest, ListFollowerIdsRequest, ListFollowersRequest,
    ListFollowingIdsRequest, ListFollowingRequest, UnfollowRequest,
    social_graph_service_client::SocialGraphServiceClient,
};
use social_testkit::{Answer, Stack, StackOptions, authed, token_for, violated_fields};
use tonic::{Code, transport::Channel};

mod blocks;
mod follows;
mod mutes;
mod peers;
mod sort_keys;

struct App {
    stack: Stack,
    graph: SocialGraphServiceClient<Channel>,
}

async fn spawn_with_user_service(user_url: Option<String>, timeout: Duration) -> App {
    let stack = Stack::start_with(StackOptions {
        user_url_for_graph: user_url,
        peer_timeout: Some(timeout),
        ..Default::default()
    })
    .await;
    App { graph: stack.graph().await, stack }
}

async fn spawn() -> App {
    spawn_with_user_service(None, Duration::from_secs(2)).await
}

impl App {
    /// A registered user's id and token.
    async fn user(&self, name: &str) -> (String, String) {
        self.stack.register(name).await
    }

    /// Registered users' ids and tokens, in the order of `names`.
    async fn register_all<const N: usize>(&self, names: [&str; N]) -> [(String, String); N] {
        self.stack.register_all(names).await
    }

    async fn follow(
        &self,
        token: &str,
        followee: &str,
    ) -> Result<social_proto::graph::v1::Follow, tonic::Status> {
        self.graph
            .clone()
            .follow(authed(FollowRequest { followee_id: followee.into() }, token))
            .await
            .map(|r| r.into_inner())
    }

    /// The user's `followers_count`, as the user service shows it.
    async fn followers_count(&self, user: &str) -> i64 {
        self.stack
            .users()
            .await
            .get_user(social_proto::user::v1::GetUserRequest { id: user.into() })
            .await
            .answer()
            .followers_count
    }

    async fn following(&self, user: &str, size: i32, token: &str) -> (Vec<String>, String) {
        self.follows_page(false, user, size, token).await
    }

    async fn followers(&self, user: &str, size: i32, token: &str) -> (Vec<String>, String) {
        self.follows_page(true, user, size, token).await
    }

    /// A page of `user`'s followers' ids (`followers`) or of its followees' ids.
    async fn follows_page(
        &self,
        followers: bool,
        user: &str,
        size: i32,
        token: &str,
    ) -> (Vec<String>, String) {
        let (user_id, page_size, page_token) = (user.to_owned(), size, token.to_owned());
        let mut graph = self.graph.clone();
        let (follows, next) = if followers {
            let request = ListFollowersRequest { user_id, page_size, page_token };
            let r = graph.list_followers(request).await.answer();
            (r.follows, r.next_page_token)
        } else {
            let request =
                social_proto::graph::v1::ListFollowingRequest { user_id, page_size, page_token };
            let r = graph.list_following(request).await.answer();
            (r.follows, r.next_page_token)
        };
        let other = |f: social_proto::graph::v1::Follow| {
            if followers { f.follower_id } else { f.followee_id }
        };
        (follows.into_iter().map(other).collect(), next)
    }
}
