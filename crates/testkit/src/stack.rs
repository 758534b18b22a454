//! Every service started in-process against one fresh database and one fresh set of
//! exchange and queue names, wired to each other like `scripts/up` wires them.

use std::time::Duration;

use social_events::EventsConfig;
use social_proto::{
    engagement::v1::{
        Comment, CreateCommentRequest, LikePostRequest,
        engagement_service_client::EngagementServiceClient,
    },
    graph::v1::{FollowRequest, social_graph_service_client::SocialGraphServiceClient},
    notification::v1::notification_service_client::NotificationServiceClient,
    post::v1::{CreatePostRequest, Post, post_service_client::PostServiceClient},
    user::v1::{RegisterRequest, user_service_client::UserServiceClient},
};
use tonic::{Status, transport::Channel};

use crate::{DropDatabase, Running, mongodb_uri, start, unique_name};

/// Overrides for a [`Stack`].
#[derive(Default)]
pub struct StackOptions {
    /// Where the social-graph service finds the user service (default: the real one).
    pub user_url_for_graph: Option<String>,
    /// Where the post service finds the social-graph service (default: the real one).
    pub graph_url_for_post: Option<String>,
    /// RabbitMQ for every service (default: `AMQP_URL`), e.g. through a `TcpProxy`.
    pub amqp_url: Option<String>,
    /// RabbitMQ for the user service alone (default: as the others), e.g. through a
    /// `TcpProxy` of its own.
    pub user_amqp_url: Option<String>,
    /// RabbitMQ for the engagement service alone (default: as the others).
    pub engagement_amqp_url: Option<String>,
    /// Deadline of calls between services.
    pub peer_timeout: Option<Duration>,
    /// The consumers' queue type (default: classic, see `EventsConfig::for_tests`).
    pub queue_type: Option<social_events::QueueType>,
    /// The notification service's `stray_after` (default: as configured for tests).
    pub notification_stray_after: Option<Duration>,
    /// The post service's cache (default: the local Redis, see
    /// `social_kit::cache::Settings::for_tests`).
    pub post_cache: Option<social_kit::cache::Settings>,
    /// The post service's home timelines (default: on, as configured for tests).
    pub post_timelines: Option<social_post::TimelineSettings>,
}

/// The running services.
pub struct Stack {
    /// The database they share (each owns its collections).
    pub database: String,
    /// Their exchange and queue names.
    pub events: EventsConfig,
    pub user: Running,
    pub graph: Running,
    pub post: Running,
    pub engagement: Running,
    pub notification: Running,
    /// Last, so that the services stop before their database goes.
    _database: DropDatabase,
}

impl Stack {
    /// Starts everything with the defaults.
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    /// Starts everything with `options`.
    pub async fn start_with(options: StackOptions) -> Self {
        let database = unique_name("stack");
        let mut events = EventsConfig::for_tests(&unique_name("t"));
        if let Some(url) = options.amqp_url {
            events.amqp_url = url;
        }
        if let Some(queue_type) = options.queue_type {
            events.queue_type = queue_type;
        }
        let uri = mongodb_uri();
        let timeout = options.peer_timeout.unwrap_or(Duration::from_secs(2));
        let peer = |name: &'static str, url: String| crate::peer(name, &url, timeout);

        let mut user_events = events.clone();
        if let Some(url) = options.user_amqp_url {
            user_events.amqp_url = url;
        }
        // The others' addresses first: the user service asks them for an account's
        // export, as they ask it for accounts.
        let (graph_at, post_at, engagement_at) =
            (crate::bind().await, crate::bind().await, crate::bind().await);
        let url =
            |l: &tokio::net::TcpListener| format!("http://{}", l.local_addr().expect("bound"));
        let mut config = social_user::Config::for_tests(&uri, &database, user_events);
        config.graph_service = peer("social-graph service", url(&graph_at));
        config.post_service = peer("post service", url(&post_at));
        config.engagement_service = peer("engagement service", url(&engagement_at));
        let user = crate::start(|l, s| social_user::run(config, l, s)).await;
        let user_url =
            options.user_url_for_graph.unwrap_or_else(|| format!("http://{}", user.addr));
        let config = social_graph::Config::for_tests(
            &uri,
            &database,
            peer("user service", user_url),
            events.clone(),
        );
        let graph = crate::start_on(graph_at, |l, s| social_graph::run(config, l, s)).await;
        let url = options.graph_url_for_post.unwrap_or_else(|| format!("http://{}", graph.addr));
        let mut config = social_post::Config::for_tests(
            &uri,
            &database,
            peer("social-graph service", url),
            events.clone(),
        );
        config.user_service = peer("user service", format!("http://{}", user.addr));
        if let Some(timelines) = options.post_timelines.clone() {
            config.timelines = timelines;
        }
        if let Some(cache) = options.post_cache.clone() {
            config.cache = cache;
        }
        let post = crate::start_on(post_at, |l, s| social_post::run(config, l, s)).await;
        let mut engagement_events = events.clone();
        if let Some(url) = options.engagement_amqp_url {
            engagement_events.amqp_url = url;
        }
        let mut config = social_engagement::Config::for_tests(
            &uri,
            &database,
            peer("post service", format!("http://{}", post.addr)),
            engagement_events,
        );
        config.user_service = peer("user service", format!("http://{}", user.addr));
        config.graph_service = peer("social-graph service", format!("http://{}", graph.addr));
        let engagement =
            crate::start_on(engagement_at, |l, s| social_engagement::run(config, l, s)).await;
        let stray_after = options.notification_stray_after;
        let notification = start_notification_with(&database, &events, user.addr, timeout, |c| {
            c.stray_after = stray_after.unwrap_or(c.stray_after);
        })
        .await;
        Self {
            events,
            user,
            graph,
            post,
            engagement,
            notification,
            _database: DropDatabase(database.clone()),
            database,
        }
    }

    /// Kills the engagement service as a crash would (its server, relay and consumers
    /// stop at once, nothing flushed) and starts a new one on the same database and
    /// exchange, reaching RabbitMQ at `amqp_url`: a URL other than the old instance's
    /// lets a test tell which instance talks to the broker afterwards.
    /// Returns when the old instance was killed.
    pub async fn crash_and_restart_engagement(&mut self, amqp_url: &str) -> std::time::Instant {
        let mut events = self.events.clone();
        events.amqp_url = amqp_url.to_owned();
        let mut config = social_engagement::Config::for_tests(
            &mongodb_uri(),
            &self.database,
            crate::peer(
                "post service",
                &format!("http://{}", self.post.addr),
                Duration::from_secs(2),
            ),
            events,
        );
        config.user_service = crate::peer(
            "user service",
            &format!("http://{}", self.user.addr),
            Duration::from_secs(2),
        );
        config.graph_service = crate::peer(
            "social-graph service",
            &format!("http://{}", self.graph.addr),
            Duration::from_secs(2),
        );
        self.engagement.kill();
        let killed_at = std::time::Instant::now();
        self.engagement = start(|l, s| social_engagement::run(config, l, s)).await;
        killed_at
    }

    /// Another replica of the notification service on the same database and broker;
    /// with `consume_events` false it only serves reads and streams.
    pub async fn notification_replica(&self, consume_events: bool) -> Running {
        start_notification(
            &self.database,
            &self.events,
            self.user.addr,
            consume_events,
            Duration::from_secs(2),
        )
        .await
    }

    /// Another replica of the post service on the same database, broker and services,
    /// keeping home timelines as `timelines` say (length 0: none, every home feed is
    /// merged in MongoDB); it serves requests and leaves the events to the first.
    pub async fn post_replica(&self, timelines: social_post::TimelineSettings) -> Running {
        let url = |r: &Running| format!("http://{}", r.addr);
        let timeout = Duration::from_secs(2);
        let graph = crate::peer("social-graph service", &url(&self.graph), timeout);
        let uri = mongodb_uri();
        let mut config =
            social_post::Config::for_tests(&uri, &self.database, graph, self.events.clone());
        config.user_service = crate::peer("user service", &url(&self.user), timeout);
        config.timelines = timelines;
        config.consume_events = false;
        crate::start(|l, s| social_post::run(config, l, s)).await
    }

    /// A gateway in front of these services, configured by `change`; it answers once
    /// its port is open (it has no gRPC health of its own).
    pub async fn gateway(
        &self,
        change: impl FnOnce(&mut social_gateway::Config),
    ) -> crate::Running {
        let url = |r: &Running| format!("http://{}", r.addr);
        let peer = |name, r: &Running| {
            social_kit::client::Peer::new(name, "URL", &url(r), Duration::from_secs(2))
                .expect("peer URL")
        };
        let mut config = social_gateway::Config::for_tests([
            peer("user service", &self.user),
            peer("post service", &self.post),
            peer("social-graph service", &self.graph),
            peer("engagement service", &self.engagement),
            peer("notification service", &self.notification),
        ]);
        change(&mut config);
        crate::start_http(|l, s| social_gateway::run(config, l, s)).await
    }

    /// The database the services share, through a client of the test's own.
    pub async fn database(&self) -> mongodb::Database {
        mongodb::Client::with_uri_str(mongodb_uri())
            .await
            .expect("MongoDB")
            .database(&self.database)
    }

    /// How many documents of `collection` match `filter`, counted from a find, which both
    /// servers answer alike (the stand-in answers `count_documents` with 0 whenever the
    /// filter holds an ObjectId).
    pub async fn count(&self, collection: &str, filter: bson::Document) -> u64 {
        use futures::TryStreamExt;
        let found: Vec<bson::Document> = self
            .database()
            .await
            .collection::<bson::Document>(collection)
            .find(filter)
            .projection(bson::doc! { "_id": 1 })
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("read");
        found.len() as u64
    }

    /// Deletes what MongoDB's TTL monitor would have deleted by `at` from the services'
    /// collections (the stand-in purges nothing): every document a TTL index holds whose
    /// date lies more than the index's delay before `at`. A test's way to see what is
    /// left a month from now.
    pub async fn expire_as_of(&self, at: bson::DateTime) {
        use futures::TryStreamExt;
        let db = self.database().await;
        for (collection, index) in social_kit::mongo::declared_in(&self.database) {
            let Some(delay) = index.expire_after else {
                continue;
            };
            let Some(field) = index.keys.keys().next().cloned() else {
                continue;
            };
            let cutoff = at.timestamp_millis() - delay.as_millis() as i64;
            let collection = db.collection::<bson::Document>(&collection);
            let mut filter = index.partial.clone().unwrap_or_default();
            filter.insert(&field, bson::doc! { "$exists": true });
            // Read in Rust: the stand-in stores a date written by `$set` as text.
            let docs: Vec<bson::Document> = collection
                .find(filter)
                .projection(bson::doc! { "_id": 1, field.as_str(): 1 })
                .await
                .expect("find")
                .try_collect()
                .await
                .expect("read");
            for d in docs {
                let Some(when) = d.get(&field).and_then(stored_time) else {
                    continue;
                };
                if when.timestamp_millis() < cutoff {
                    collection
                        .delete_one(bson::doc! { "_id": d.get("_id").cloned() })
                        .await
                        .expect("delete");
                }
            }
        }
    }

    /// Waits (up to 60 s) until no event waits anywhere: every consumer queue and every
    /// outbox is empty; then a moment for the handlers in flight to finish.
    pub async fn settled(&self) {
        let outboxes = [
            "posts",
            "likes",
            "comments",
            "followers",
            "blocks",
            "mutes",
            "users",
            "post_removed_users",
            "social_graph_removed_users",
            "engagement_removed_users",
            "notification_removed_users",
        ];
        let quiet = crate::eventually(Duration::from_secs(60), || async {
            for q in social_events::topology::QUEUES {
                let queue = self.events.queue(q.service);
                if crate::broker::queue_depth(&self.events, &queue).await > 0 {
                    return None;
                }
            }
            for c in outboxes {
                let pending = bson::doc! { "outbox_pending": { "$gt": 0 } };
                if self.count(c, pending).await > 0 {
                    return None;
                }
            }
            Some(())
        })
        .await;
        assert!(quiet.is_some(), "events still waiting after 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    pub async fn notifications(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.notification.channel().await)
    }

    pub async fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.user.channel().await)
    }

    pub async fn graph(&self) -> SocialGraphServiceClient<Channel> {
        SocialGraphServiceClient::new(self.graph.channel().await)
    }

    pub async fn posts(&self) -> PostServiceClient<Channel> {
        PostServiceClient::new(self.post.channel().await)
    }

    pub async fn engagement(&self) -> EngagementServiceClient<Channel> {
        EngagementServiceClient::new(self.engagement.channel().await)
    }

    /// Registers `name`; returns its id and access token.
    pub async fn register(&self, name: &str) -> (String, String) {
        let r = self
            .users()
            .await
            .register(RegisterRequest {
                username: name.into(),
                email: format!("{name}@example.com"),
                password: crate::PASSWORD.into(),
                full_name: String::new(),
                device: String::new(),
            })
            .await
            .expect("register")
            .into_inner();
        (r.user.expect("user").id, r.access_token)
    }

    /// Registers each of `names`, one after the other; their ids and access tokens, in
    /// order.
    pub async fn register_all<const N: usize>(&self, names: [&str; N]) -> [(String, String); N] {
        let mut users = [const { (String::new(), String::new()) }; N];
        for (user, name) in users.iter_mut().zip(names) {
            *user = self.register(name).await;
        }
        users
    }

    /// `token`'s account deletes itself, giving `password` (its own: [`crate::PASSWORD`]).
    pub async fn delete_account(&self, token: &str, password: &str) -> Result<(), tonic::Status> {
        let request = social_proto::user::v1::DeleteAccountRequest { password: password.into() };
        self.users().await.delete_account(crate::authed(request, token)).await.map(drop)
    }

    /// `token`'s account posts `content` (no media).
    pub async fn post(&self, token: &str, content: &str) -> Post {
        let request = CreatePostRequest { content: content.into(), media: vec![] };
        PostServiceClient::new(self.post.shared_channel().await)
            .create_post(crate::authed(request, token))
            .await
            .expect("create a post")
            .into_inner()
    }

    /// `token`'s account deletes its post `post`.
    pub async fn delete_post(&self, token: &str, post: &str) {
        let request = social_proto::post::v1::DeletePostRequest { id: post.into() };
        PostServiceClient::new(self.post.shared_channel().await)
            .delete_post(crate::authed(request, token))
            .await
            .expect("delete a post");
    }

    /// `token`'s account changes the text of post `post` to `content`, as the service
    /// answers.
    pub async fn edit_post(&self, token: &str, post: &str, content: &str) -> Result<Post, Status> {
        use social_proto::post::v1::UpdatePostRequest;
        let post = Post { id: post.into(), content: content.into(), ..Default::default() };
        let request = UpdatePostRequest { post: Some(post), update_mask: None };
        PostServiceClient::new(self.post.shared_channel().await)
            .update_post(crate::authed(request, token))
            .await
            .map(tonic::Response::into_inner)
    }

    /// `token`'s account deletes post `post`, as the service answers.
    pub async fn try_delete_post(&self, token: &str, post: &str) -> Result<(), Status> {
        let request = social_proto::post::v1::DeletePostRequest { id: post.into() };
        PostServiceClient::new(self.post.shared_channel().await)
            .delete_post(crate::authed(request, token))
            .await
            .map(drop)
    }

    /// `token`'s account follows `followee`.
    pub async fn follow(&self, token: &str, followee: &str) {
        let request = FollowRequest { followee_id: followee.into() };
        SocialGraphServiceClient::new(self.graph.shared_channel().await)
            .follow(crate::authed(request, token))
            .await
            .expect("follow");
    }

    /// `token`'s account stops following `followee`.
    pub async fn unfollow(&self, token: &str, followee: &str) {
        let request = social_proto::graph::v1::UnfollowRequest { followee_id: followee.into() };
        SocialGraphServiceClient::new(self.graph.shared_channel().await)
            .unfollow(crate::authed(request, token))
            .await
            .expect("unfollow");
    }

    /// `token`'s account blocks `user`, as the service answers.
    pub async fn block(
        &self,
        token: &str,
        user: &str,
    ) -> Result<social_proto::graph::v1::Block, tonic::Status> {
        let request = social_proto::graph::v1::BlockUserRequest { user_id: user.into() };
        SocialGraphServiceClient::new(self.graph.shared_channel().await)
            .block_user(crate::authed(request, token))
            .await
            .map(tonic::Response::into_inner)
    }

    /// `token`'s account stops blocking `user`, as the service answers.
    pub async fn unblock(&self, token: &str, user: &str) -> Result<(), tonic::Status> {
        let request = social_proto::graph::v1::UnblockUserRequest { user_id: user.into() };
        SocialGraphServiceClient::new(self.graph.shared_channel().await)
            .unblock_user(crate::authed(request, token))
            .await
            .map(drop)
    }

    /// `token`'s account likes `post`, as the service answers.
    pub async fn like_post(&self, token: &str, post: &str) -> Result<(), tonic::Status> {
        let request = LikePostRequest { post_id: post.into() };
        EngagementServiceClient::new(self.engagement.shared_channel().await)
            .like_post(crate::authed(request, token))
            .await
            .map(drop)
    }

    /// `token`'s account likes `comment`, as the service answers.
    pub async fn like_comment(&self, token: &str, comment: &str) -> Result<(), tonic::Status> {
        let request =
            social_proto::engagement::v1::LikeCommentRequest { comment_id: comment.into() };
        EngagementServiceClient::new(self.engagement.shared_channel().await)
            .like_comment(crate::authed(request, token))
            .await
            .map(drop)
    }

    /// `token`'s account stops liking `comment`, as the service answers.
    pub async fn unlike_comment(&self, token: &str, comment: &str) -> Result<(), tonic::Status> {
        let request =
            social_proto::engagement::v1::UnlikeCommentRequest { comment_id: comment.into() };
        EngagementServiceClient::new(self.engagement.shared_channel().await)
            .unlike_comment(crate::authed(request, token))
            .await
            .map(drop)
    }

    /// `token`'s account stops liking `post`, as the service answers.
    pub async fn unlike_post(&self, token: &str, post: &str) -> Result<(), tonic::Status> {
        let request = social_proto::engagement::v1::UnlikePostRequest { post_id: post.into() };
        EngagementServiceClient::new(self.engagement.shared_channel().await)
            .unlike_post(crate::authed(request, token))
            .await
            .map(drop)
    }

    /// `token`'s account comments `content` on `post`, as the service answers.
    pub async fn comment(
        &self,
        token: &str,
        post: &str,
        content: &str,
    ) -> Result<Comment, tonic::Status> {
        let request =
            CreateCommentRequest { post_id: post.into(), content: content.into(), media: vec![] };
        EngagementServiceClient::new(self.engagement.shared_channel().await)
            .create_comment(crate::authed(request, token))
            .await
            .map(tonic::Response::into_inner)
    }

    /// `token`'s account changes the text of comment `comment` to `content`, as the
    /// service answers.
    pub async fn edit_comment(
        &self,
        token: &str,
        comment: &str,
        content: &str,
    ) -> Result<Comment, Status> {
        use social_proto::engagement::v1::UpdateCommentRequest;
        let comment = Comment { id: comment.into(), content: content.into(), ..Default::default() };
        let request = UpdateCommentRequest { comment: Some(comment), update_mask: None };
        EngagementServiceClient::new(self.engagement.shared_channel().await)
            .update_comment(crate::authed(request, token))
            .await
            .map(tonic::Response::into_inner)
    }

    /// `token`'s account deletes comment `comment`, as the service answers.
    pub async fn delete_comment(&self, token: &str, comment: &str) -> Result<(), Status> {
        let request = social_proto::engagement::v1::DeleteCommentRequest { id: comment.into() };
        EngagementServiceClient::new(self.engagement.shared_channel().await)
            .delete_comment(crate::authed(request, token))
            .await
            .map(drop)
    }
}

/// The user service alone, on `database` and `events`.
pub async fn start_user(database: &str, events: &EventsConfig) -> Running {
    let config = social_user::Config::for_tests(&mongodb_uri(), database, events.clone());
    start(|l, s| social_user::run(config, l, s)).await
}

/// The social-graph service alone, asking the user service at `user_url`.
pub async fn start_graph(
    database: &str,
    events: &EventsConfig,
    user_url: &str,
    timeout: Duration,
) -> Running {
    let peer = crate::peer("user service", user_url, timeout);
    let config = social_graph::Config::for_tests(&mongodb_uri(), database, peer, events.clone());
    start(|l, s| social_graph::run(config, l, s)).await
}

/// The notification service alone, asking the user service at `user`; with
/// `consume_events` false it only serves reads and streams.
pub async fn start_notification(
    database: &str,
    events: &EventsConfig,
    user: std::net::SocketAddr,
    consume_events: bool,
    timeout: Duration,
) -> Running {
    start_notification_with(database, events, user, timeout, |c| {
        c.consume_events = consume_events;
    })
    .await
}

/// A notification service as [`start_notification`] starts one (consuming events),
/// its configuration changed by `change`.
pub async fn start_notification_with(
    database: &str,
    events: &EventsConfig,
    user: std::net::SocketAddr,
    timeout: Duration,
    change: impl FnOnce(&mut social_notification::Config),
) -> Running {
    let peer = crate::peer("user service", &format!("http://{user}"), timeout);
    let mut config =
        social_notification::Config::for_tests(&mongodb_uri(), database, peer, events.clone());
    change(&mut config);
    start(|l, s| social_notification::run(config, l, s)).await
}

/// A stored date, as MongoDB keeps it or as the stand-in keeps one written by `$set`.
fn stored_time(value: &bson::Bson) -> Option<bson::DateTime> {
    #[derive(serde::Deserialize)]
    struct Time(#[serde(deserialize_with = "social_kit::mongo::lenient::date")] bson::DateTime);
    bson::deserialize_from_bson::<Time>(value.clone()).ok().map(|t| t.0)
}
