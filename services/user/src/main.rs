//! The user service binary: reads its configuration and serves until SIGTERM.
//!
//! `social-user recompute-counters` instead recomputes every user's follower and
//! following counts from the social-graph service and exits.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match social_kit::serve::load_config(social_user::Config::from_env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let common = config.common.clone();
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            social_kit::serve::main(&common, |listener, shutdown| {
                social_user::run(config, listener, shutdown)
            })
            .await
        }
        Some("recompute-counters") => {
            social_kit::serve::main_once(&common, async {
                let n = social_user::recompute_counters(&config).await?;
                tracing::info!(users = n, "counters recomputed");
                Ok(())
            })
            .await
        }
        Some(other) => {
            eprintln!("unknown command {other:?}; usage: social-user [serve|recompute-counters]");
            ExitCode::from(2)
        }
    }
}
