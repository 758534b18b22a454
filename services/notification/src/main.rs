//! The notification service binary: reads its configuration and serves until SIGTERM.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match social_kit::serve::load_config(social_notification::Config::from_env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let common = config.common.clone();
    social_kit::serve::main(&common, |listener, shutdown| {
        social_notification::run(config, listener, shutdown)
    })
    .await
}
