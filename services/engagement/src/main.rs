//! The engagement service binary: serves until SIGTERM.
//!
//! `social-engagement recompute-counters` instead recomputes the counters it keeps from events, from
//! their source documents, and exits.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    social_kit::serve::binary_main(
        "social-engagement",
        social_engagement::Config::from_env,
        |c, l, s| Box::pin(social_engagement::run(c, l, s)),
        Some(|c| Box::pin(async move { social_engagement::recompute_counters(&c).await })),
    )
    .await
}
