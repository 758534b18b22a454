//! The gateway binary: serves HTTP until SIGTERM.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    social_kit::serve::binary_main(
        "social-gateway",
        social_gateway::Config::from_env,
        |c, l, s| Box::pin(social_gateway::run(c, l, s)),
        Vec::new(),
    )
    .await
}
