//! The post service binary: serves until SIGTERM.
//!
//! `social-post recompute-counters` instead recomputes the counters it keeps from events, from
//! their source documents, and exits.

social_events::service_main!(social_kit::peers::POST, social_post, recount);
