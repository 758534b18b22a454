//! The notification service binary: serves until SIGTERM.
//!
//! `social-notification group-existing` instead puts the notifications stored before
//! groups existed into their groups, and exits.

social_events::service_main!(
    social_kit::peers::NOTIFICATION,
    social_notification,
    social_kit::serve::Command::new(
        "group-existing",
        "put the notifications stored before groups existed into their groups (safe while \
         the service runs, and to rerun)",
        |c| Box::pin(async move { social_notification::group_existing(&c).await.map(drop) }),
    ),
);
