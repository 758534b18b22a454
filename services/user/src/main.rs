//! The user service binary: serves until SIGTERM.
//!
//! `social-user recompute-counters` instead recomputes the counters it keeps from events, from
//! their source documents, and exits.

use std::process::ExitCode;

use social_kit::serve::Command;

#[tokio::main]
async fn main() -> ExitCode {
    let mut commands = social_events::admin::commands("user", |c: &social_user::Config| &c.events);
    commands.push(Command::new(
        "recompute-counters",
        "recompute the counters this service keeps from events, from their source documents",
        |c| {
            Box::pin(async move {
                let margin = social_kit::recount::margin_from_env()?;
                social_user::recompute_counters(&c, margin).await.map(drop)
            })
        },
    ));
    commands.push(Command::new(
        "deletion-status",
        "<user id>: where the deletion of an account stands (JSON)",
        |c| {
            Box::pin(async move {
                let user = std::env::args().nth(2).unwrap_or_default();
                println!("{}", social_user::deletion_status(&c, &user).await?);
                Ok(())
            })
        },
    ));
    social_kit::serve::binary_main(
        "social-user",
        social_user::Config::from_env,
        |c, l, s| Box::pin(social_user::run(c, l, s)),
        commands,
    )
    .await
}
