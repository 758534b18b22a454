//! The notification service binary: serves until SIGTERM.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let commands =
        social_events::admin::commands("notification", |c: &social_notification::Config| &c.events);
    social_kit::serve::binary_main(
        "social-notification",
        social_notification::Config::from_env,
        |c, l, s| Box::pin(social_notification::run(c, l, s)),
        commands,
    )
    .await
}
