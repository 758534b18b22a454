//! The post service binary: reads its configuration and serves until SIGTERM.
//!
//! `social-post recompute-counters` instead recomputes every post's like and
//! comment counts from the engagement service and exits.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match social_kit::serve::load_config(social_post::Config::from_env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let common = config.common.clone();
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            social_kit::serve::main(&common, |listener, shutdown| {
                social_post::run(config, listener, shutdown)
            })
            .await
        }
        Some("recompute-counters") => {
            social_kit::serve::main_once(&common, async {
                let n = social_post::recompute_counters(&config).await?;
                tracing::info!(posts = n, "counters recomputed");
                Ok(())
            })
            .await
        }
        Some(other) => {
            eprintln!("unknown command {other:?}; usage: social-post [serve|recompute-counters]");
            ExitCode::from(2)
        }
    }
}
