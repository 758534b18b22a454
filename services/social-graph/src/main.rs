//! The social-graph service binary: serves until SIGTERM.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let commands =
        social_events::admin::commands("social-graph", |c: &social_graph::Config| &c.events);
    social_kit::serve::binary_main(
        "social-graph",
        social_graph::Config::from_env,
        |c, l, s| Box::pin(social_graph::run(c, l, s)),
        commands,
    )
    .await
}
