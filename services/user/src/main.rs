//! The user service binary: serves until SIGTERM.
//!
//! `social-user recompute-counters` instead recomputes the counters it keeps from events, from
//! their source documents, and exits.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    social_kit::serve::binary_main(
        "social-user",
        social_user::Config::from_env,
        |c, l, s| Box::pin(social_user::run(c, l, s)),
        Some(|c| Box::pin(async move { social_user::recompute_counters(&c).await })),
    )
    .await
}
