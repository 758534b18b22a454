//! The engagement service binary: serves until SIGTERM.
//!
//! `social-engagement recompute-counters` instead recomputes the counters it keeps from events, from
//! their source documents, and exits.

social_events::service_main!(social_kit::peers::ENGAGEMENT, social_engagement, recount);
