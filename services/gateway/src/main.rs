//! The gateway binary: serves HTTP until SIGTERM; `social-gateway openapi` prints the
//! OpenAPI document (for client generators, without starting anything).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("openapi") {
        return match social_gateway::openapi().to_pretty_json() {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot write the OpenAPI document: {e}");
                ExitCode::FAILURE
            }
        };
    }
    social_kit::serve::binary_main(
        "social-gateway",
        social_gateway::Config::from_env,
        |c, l, s| Box::pin(social_gateway::run(c, l, s)),
        Vec::new(),
    )
    .await
}
