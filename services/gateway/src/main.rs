//! The gateway binary: serves HTTP until SIGTERM; `social-gateway openapi` prints the
//! OpenAPI document (for client generators, without starting anything).

use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: under post reads glibc's malloc and free
/// took 12% of the gateway's CPU; with mimalloc's per-thread pages a read costs about
/// 12% less CPU, for about 4 MiB more memory idle (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
