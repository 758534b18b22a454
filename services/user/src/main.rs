//! The user service binary: serves until SIGTERM.
//!
//! `social-user recompute-counters` instead recomputes the counters it keeps from events, from
//! their source documents, and exits.

social_events::service_main!(
    social_kit::peers::USER,
    social_user,
    recount,
    social_kit::serve::Command::new(
        "set-role",
        "<user id or username> <user|moderator|admin>: what the account may do (moderators resolve reports)",
        |c| {
            Box::pin(async move {
                let who = std::env::args().nth(2).unwrap_or_default();
                let role = std::env::args().nth(3).unwrap_or_default();
                println!("{}", social_user::set_role(&c, &who, &role).await?);
                Ok(())
            })
        },
    ),
    social_kit::serve::Command::new(
        "reserve-names",
        ": gives accounts stored before reservations theirs and retires the unique indexes on users (once, after upgrading every replica)",
        |c| {
            Box::pin(async move {
                println!("{}", social_user::reserve_names(&c).await?);
                Ok(())
            })
        },
    ),
    social_kit::serve::Command::new(
        "deletion-status",
        "<user id>: where the deletion of an account stands (JSON)",
        |c| {
            Box::pin(async move {
                let user = std::env::args().nth(2).unwrap_or_default();
                println!("{}", social_user::deletion_status(&c, &user).await?);
                Ok(())
            })
        },
    ),
);
