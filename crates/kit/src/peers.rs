//! The five services as their peers and operators know them: each one's name, the
//! variables that say where it listens and where it is reached, and its local default
//! port. Defined once here for the services, the gateway and the load generator.

use std::time::Duration;

use crate::{
    client::Peer,
    config::{CommonConfig, ConfigError},
};

/// One service of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Its short name (`post`): logs, metrics, its bookkeeping collections.
    pub service: &'static str,
    /// How errors and logs name it (`post service`).
    pub name: &'static str,
    /// Where it listens (`POST_ADDR`).
    pub addr_var: &'static str,
    /// Where its peers reach it (`POST_SERVICE_URL`).
    pub url_var: &'static str,
    /// Where it listens on one machine (`scripts/up`, the default of `*_ADDR`).
    pub local_addr: &'static str,
    /// Where it is reached on one machine (the default of `*_SERVICE_URL`).
    pub local_url: &'static str,
    /// Its binary (`social-post`).
    pub binary: &'static str,
    /// Its gRPC service, whose health a balancing caller asks each address for.
    pub grpc: &'static str,
}

/// Every service.
pub const ALL: [Known; 5] = [USER, POST, GRAPH, ENGAGEMENT, NOTIFICATION];

/// The gRPC service of the peer that errors and logs call `name` (`post service`), if
/// it is one of the system's.
pub fn grpc_of(name: &str) -> Option<&'static str> {
    ALL.iter().find(|k| k.name == name).map(|k| k.grpc)
}

/// The user service.
pub const USER: Known = Known {
    service: "user",
    name: "user service",
    addr_var: "USER_ADDR",
    url_var: "USER_SERVICE_URL",
    local_addr: "127.0.0.1:50051",
    local_url: "http://127.0.0.1:50051",
    binary: "social-user",
    grpc: "social.user.v1.UserService",
};
/// The post service.
pub const POST: Known = Known {
    service: "post",
    name: "post service",
    addr_var: "POST_ADDR",
    url_var: "POST_SERVICE_URL",
    local_addr: "127.0.0.1:50052",
    local_url: "http://127.0.0.1:50052",
    binary: "social-post",
    grpc: "social.post.v1.PostService",
};
/// The social-graph service.
pub const GRAPH: Known = Known {
    service: "social-graph",
    name: "social-graph service",
    addr_var: "GRAPH_ADDR",
    url_var: "GRAPH_SERVICE_URL",
    local_addr: "127.0.0.1:50053",
    local_url: "http://127.0.0.1:50053",
    binary: "social-graph",
    grpc: "social.graph.v1.SocialGraphService",
};
/// The engagement service.
pub const ENGAGEMENT: Known = Known {
    service: "engagement",
    name: "engagement service",
    addr_var: "ENGAGEMENT_ADDR",
    url_var: "ENGAGEMENT_SERVICE_URL",
    local_addr: "127.0.0.1:50054",
    local_url: "http://127.0.0.1:50054",
    binary: "social-engagement",
    grpc: "social.engagement.v1.EngagementService",
};
/// The notification service.
pub const NOTIFICATION: Known = Known {
    service: "notification",
    name: "notification service",
    addr_var: "NOTIFICATION_ADDR",
    url_var: "NOTIFICATION_SERVICE_URL",
    local_addr: "127.0.0.1:50055",
    local_url: "http://127.0.0.1:50055",
    binary: "social-notification",
    grpc: "social.notification.v1.NotificationService",
};

impl Known {
    /// Its own settings: it listens on its `*_ADDR` (default its local port).
    pub fn config_from_env(&self) -> Result<CommonConfig, ConfigError> {
        CommonConfig::from_env(self.service, self.addr_var, self.local_addr)
    }

    /// It as a peer: at its `*_SERVICE_URL` (default its local URL), with the service
    /// credential ([`Peer::from_env`]).
    pub fn peer_from_env(&self) -> Result<Peer, ConfigError> {
        Peer::from_env(self.name, self.url_var, self.local_url)
    }

    /// It as a peer at `url`, with the development service credential (tests).
    #[allow(clippy::expect_used)] // tests give it a well-formed URL
    pub fn peer_at(&self, url: &str) -> Peer {
        Peer::new(self.name, self.url_var, url, Duration::from_secs(2))
            .and_then(|p| p.with_credential(crate::auth::DEV_SERVICE_TOKEN))
            .expect("a well-formed peer URL")
    }

    /// It as a peer at its local URL (tests of a service that never calls it).
    pub fn local_peer(&self) -> Peer {
        self.peer_at(self.local_url)
    }
}

#[cfg(test)]
mod tests {
    use social_proto::{
        engagement::v1::engagement_service_server, graph::v1::social_graph_service_server,
        notification::v1::notification_service_server, post::v1::post_service_server,
        user::v1::user_service_server,
    };

    /// The names the balancer asks health for are the servers' own.
    #[test]
    fn each_peer_names_its_generated_service() {
        let generated = [
            user_service_server::SERVICE_NAME,
            post_service_server::SERVICE_NAME,
            social_graph_service_server::SERVICE_NAME,
            engagement_service_server::SERVICE_NAME,
            notification_service_server::SERVICE_NAME,
        ];
        let named: Vec<&str> = super::ALL.iter().map(|k| k.grpc).collect();
        assert_eq!(named, generated);
        assert_eq!(super::grpc_of("post service"), Some(generated[1]));
        assert_eq!(super::grpc_of("health"), None);
    }
}
