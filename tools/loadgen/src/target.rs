//! The running system the load generator drives: its addresses, and clients to it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use social_kit::peers;
use social_proto::{
    engagement::v1::engagement_service_client::EngagementServiceClient,
    graph::v1::social_graph_service_client::SocialGraphServiceClient,
    notification::v1::notification_service_client::NotificationServiceClient,
    post::v1::post_service_client::PostServiceClient,
    user::v1::user_service_client::UserServiceClient,
};
use tonic::{
    Request,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::health_client::HealthClient;

/// Where the services listen (defaults: `scripts/up`'s ports).
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// The user service.
    #[arg(long, env = peers::USER.url_var, default_value = peers::USER.local_url)]
    pub user: String,
    /// The post service.
    #[arg(long, env = peers::POST.url_var, default_value = peers::POST.local_url)]
    pub post: String,
    /// The social-graph service.
    #[arg(long, env = peers::GRAPH.url_var, default_value = peers::GRAPH.local_url)]
    pub graph: String,
    /// The engagement service.
    #[arg(long, env = peers::ENGAGEMENT.url_var, default_value = peers::ENGAGEMENT.local_url)]
    pub engagement: String,
    /// The notification service.
    #[arg(long, env = peers::NOTIFICATION.url_var, default_value = peers::NOTIFICATION.local_url)]
    pub notification: String,
    /// HTTP/2 connections to each service (requests are spread over them).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Deadline of every request.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

/// The five services, in this order in [`Clients::health`] and the reports.
pub const SERVICES: [&str; 5] = [
    peers::USER.service,
    peers::POST.service,
    peers::GRAPH.service,
    peers::ENGAGEMENT.service,
    peers::NOTIFICATION.service,
];

/// Connections to every service. Cheap to clone; each call takes the next connection.
#[derive(Clone)]
pub struct Clients {
    channels: Arc<[Vec<Channel>; 5]>,
    next: Arc<AtomicUsize>,
}

impl Clients {
    /// Connects to every service of `target` (fails if one does not answer).
    pub async fn connect(target: &Target) -> anyhow::Result<Self> {
        let urls =
            [&target.user, &target.post, &target.graph, &target.engagement, &target.notification];
        let mut channels: [Vec<Channel>; 5] = Default::default();
        for (i, url) in urls.iter().enumerate() {
            for _ in 0..target.connections.max(1) {
                let channel = Endpoint::from_shared((*url).clone())
                    .with_context(|| format!("{} service URL {url}", SERVICES[i]))?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(target.timeout_secs))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .connect()
                    .await
                    .with_context(|| {
                        format!("connecting to the {} service at {url}", SERVICES[i])
                    })?;
                channels[i].push(channel);
            }
        }
        Ok(Self { channels: Arc::new(channels), next: Arc::default() })
    }

    fn channel(&self, service: usize) -> Channel {
        let all = &self.channels[service];
        all[self.next.fetch_add(1, Ordering::Relaxed) % all.len()].clone()
    }

    pub fn user(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel(0))
    }

    pub fn post(&self) -> PostServiceClient<Channel> {
        PostServiceClient::new(self.channel(1))
    }

    pub fn graph(&self) -> SocialGraphServiceClient<Channel> {
        SocialGraphServiceClient::new(self.channel(2))
    }

    pub fn engagement(&self) -> EngagementServiceClient<Channel> {
        EngagementServiceClient::new(self.channel(3))
    }

    pub fn notification(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel(4))
    }

    /// The health service of service `i` (in [`SERVICES`] order).
    pub fn health(&self, i: usize) -> HealthClient<Channel> {
        HealthClient::new(self.channel(i % 5))
    }
}

/// `message` with the service credential internal RPCs need.
pub fn as_service<T>(message: T, service_token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = service_token.parse() {
        request.metadata_mut().insert("x-service-token", value);
    }
    request
}
