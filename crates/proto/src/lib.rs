//! Generated code for every `social.*.v1` package, one module per package, plus the
//! encoded file descriptor set that servers hand to gRPC reflection. Nothing hand-written
//! lives here but the module tree.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The encoded `FileDescriptorSet` of every package, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// `social.common.v1`: messages shared by several services.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("social.common.v1");
    }
}

/// `social.user.v1`: UserService.
pub mod user {
    pub mod v1 {
        tonic::include_proto!("social.user.v1");
    }
}

/// `social.post.v1`: PostService.
pub mod post {
    pub mod v1 {
        tonic::include_proto!("social.post.v1");
    }
}

/// `social.graph.v1`: SocialGraphService.
pub mod graph {
    pub mod v1 {
        tonic::include_proto!("social.graph.v1");
    }
}

/// `social.engagement.v1`: EngagementService.
pub mod engagement {
    pub mod v1 {
        tonic::include_proto!("social.engagement.v1");
    }
}

/// `social.notification.v1`: NotificationService.
pub mod notification {
    pub mod v1 {
        tonic::include_proto!("social.notification.v1");
    }
}

/// `social.events.v1`: the event envelope and its payloads.
pub mod events {
    pub mod v1 {
        tonic::include_proto!("social.events.v1");
    }
}
