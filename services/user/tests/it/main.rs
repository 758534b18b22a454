//! UserService through its gRPC surface: every validation rule and error row of API.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod cache;
mod guessing;
mod lifetime;
mod names;
mod reports;
mod service;
mod sessions;

use bson::oid::ObjectId;
use prost_types::FieldMask;
use social_proto::user::v1::{
    BatchGetUsersByUsernameRequest, BatchGetUsersRequest, ChangePasswordRequest,
    GetUserByUsernameRequest, GetUserRequest, LoginRequest, RegisterRequest, UpdateUserRequest,
    User, user_service_client::UserServiceClient,
};
use social_testkit::{
    Answer, Running, authed, expired_token_for, mongodb_uri, start, token_for, unique_name,
    violated_fields,
};
use tonic::{Code, Request, transport::Channel};

struct App {
    running: Running,
    client: UserServiceClient<Channel>,
    _database: social_testkit::DropDatabase,
}

async fn spawn() -> App {
    spawn_with(|_| {}).await
}

async fn spawn_with(change: impl FnOnce(&mut social_user::Config)) -> App {
    let database = unique_name("user_it");
    let mut config = social_user::Config::for_tests(
        &mongodb_uri(),
        &database,
        social_events::EventsConfig::for_tests(&unique_name("t")),
    );
    change(&mut config);
    let running = start(|listener, shutdown| social_user::run(config, listener, shutdown)).await;
    let client = UserServiceClient::new(running.channel().await);
    App { running, client, _database: social_testkit::DropDatabase(database) }
}

fn registration(username: &str) -> RegisterRequest {
    RegisterRequest {
        username: username.into(),
        email: format!("{username}@example.com"),
        password: "correct horse battery".into(),
        full_name: "Test User".into(),
        device: String::new(),
    }
}

impl App {
    async fn register(&self, username: &str) -> (User, String) {
        let r = self.client.clone().register(registration(username)).await.answer();
        (r.user.unwrap(), r.access_token)
    }
}
