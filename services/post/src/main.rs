//! The post service binary: serves until SIGTERM.
//!
//! `social-post recompute-counters` instead recomputes the counters it keeps from events, from
//! their source documents, and exits.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    social_kit::serve::binary_main(
        "social-post",
        social_post::Config::from_env,
        |c, l, s| Box::pin(social_post::run(c, l, s)),
        Some(|c| Box::pin(async move { social_post::recompute_counters(&c).await })),
    )
    .await
}
