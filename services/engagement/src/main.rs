//! The engagement service binary: reads its configuration and serves until SIGTERM.
//!
//! `social-engagement recompute-counters` instead recomputes every comment's like
//! count from the likes and exits.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match social_kit::serve::load_config(social_engagement::Config::from_env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let common = config.common.clone();
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            social_kit::serve::main(&common, |listener, shutdown| {
                social_engagement::run(config, listener, shutdown)
            })
            .await
        }
        Some("recompute-counters") => {
            social_kit::serve::main_once(&common, async {
                let n = social_engagement::recompute_counters(&config).await?;
                tracing::info!(comments = n, "counters recomputed");
                Ok(())
            })
            .await
        }
        Some(other) => {
            eprintln!(
                "unknown command {other:?}; usage: social-engagement [serve|recompute-counters]"
            );
            ExitCode::from(2)
        }
    }
}
