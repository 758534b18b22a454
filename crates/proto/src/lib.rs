//! Generated code for every `social.*.v1` package, one module per package, plus the
//! encoded file descriptor set that servers hand to gRPC reflection. Nothing hand-written
//! lives here but the module tree, [`Bounded`], [`Paged`] and [`OfPage`].

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The encoded `FileDescriptorSet` of every package, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// One module per package: `<name>::v1` holds what `<package>` generates.
macro_rules! packages {
    ($($(#[$doc:meta])* $name:ident => $package:literal;)*) => {
        $($(#[$doc])* pub mod $name {
            pub mod v1 {
                tonic::include_proto!($package);
            }
        })*
    };
}

packages! {
    /// `social.common.v1`: messages shared by several services.
    common => "social.common.v1";
    /// `social.user.v1`: UserService.
    user => "social.user.v1";
    /// `social.post.v1`: PostService.
    post => "social.post.v1";
    /// `social.graph.v1`: SocialGraphService.
    graph => "social.graph.v1";
    /// `social.engagement.v1`: EngagementService.
    engagement => "social.engagement.v1";
    /// `social.notification.v1`: NotificationService.
    notification => "social.notification.v1";
    /// `social.events.v1`: the event envelope and its payloads.
    events => "social.events.v1";
}

/// A generated server whose largest accepted request can be set (every service's is).
pub trait Bounded {
    /// The same server, refusing requests larger than `bytes` while decoding them.
    fn bounded(self, bytes: usize) -> Self;
}

macro_rules! bounded {
    ($($server:ident<$service:path>),*) => {
        $(impl<T: $service> Bounded for $server<T> {
            fn bounded(self, bytes: usize) -> Self {
                self.max_decoding_message_size(bytes)
            }
        })*
    };
}

use engagement::v1::engagement_service_server::EngagementServiceServer;
use graph::v1::social_graph_service_server::SocialGraphServiceServer;
use notification::v1::notification_service_server::NotificationServiceServer;
use post::v1::post_service_server::PostServiceServer;
use user::v1::user_service_server::UserServiceServer;

bounded!(
    UserServiceServer<user::v1::user_service_server::UserService>,
    PostServiceServer<post::v1::post_service_server::PostService>,
    SocialGraphServiceServer<graph::v1::social_graph_service_server::SocialGraphService>,
    EngagementServiceServer<engagement::v1::engagement_service_server::EngagementService>,
    NotificationServiceServer<notification::v1::notification_service_server::NotificationService>
);

/// A list request's page, as every list RPC names it: `page_size` (0: the default) and
/// `page_token` (empty: the first page); `kit::paging::PageRequest` reads it.
pub trait Paged {
    /// Items per page asked for.
    fn page_size(&self) -> i32;
    /// The previous page's `next_page_token`, or empty.
    fn page_token(&self) -> &str;
}

/// `(page_size, page_token)`, for a caller holding the two already.
impl Paged for (i32, &str) {
    fn page_size(&self) -> i32 {
        self.0
    }

    fn page_token(&self) -> &str {
        self.1
    }
}

/// A list request made from its page, the rest of its fields left to fill (`Request {
/// user_id, ..Request::of_page(size, token) }`): how the gateway builds one from a
/// list's query string.
pub trait OfPage: Paged + Default {
    fn of_page(page_size: i32, page_token: String) -> Self;
}

macro_rules! paged {
    ($($request:path),* $(,)?) => {
        $(impl Paged for $request {
            fn page_size(&self) -> i32 {
                self.page_size
            }

            fn page_token(&self) -> &str {
                &self.page_token
            }
        }

        impl OfPage for $request {
            fn of_page(page_size: i32, page_token: String) -> Self {
                Self {
                    page_size,
                    page_token,
                    ..Default::default()
                }
            }
        })*
    };
}

paged! {
    user::v1::ListSessionsRequest, user::v1::ListReportsRequest,
    post::v1::ListUserPostsRequest, post::v1::ListHomeFeedRequest,
    graph::v1::ListFollowersRequest, graph::v1::ListFollowingRequest,
    graph::v1::ListBlocksRequest, graph::v1::ListMutesRequest,
    engagement::v1::ListPostLikesRequest, engagement::v1::ListCommentsRequest,
    notification::v1::ListNotificationsRequest, notification::v1::ListNotificationGroupsRequest,
}
