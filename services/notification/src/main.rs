//! The notification service binary: serves until SIGTERM.
//!
//! `social-notification group-existing` instead puts the notifications stored before
//! groups existed into their groups, and exits.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut commands =
        social_events::admin::commands("notification", |c: &social_notification::Config| &c.events);
    commands.push(social_kit::serve::Command::new(
        "group-existing",
        "put the notifications stored before groups existed into their groups (safe while \
         the service runs, and to rerun)",
        |c| Box::pin(async move { social_notification::group_existing(&c).await.map(drop) }),
    ));
    social_kit::serve::binary_main(
        "social-notification",
        social_notification::Config::from_env,
        |c, l, s| Box::pin(social_notification::run(c, l, s)),
        commands,
    )
    .await
}
