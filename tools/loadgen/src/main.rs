//! `social-loadgen`: see `--help`.

use clap::{Parser, Subcommand};
use social_loadgen::{bench, check, load, seed};

/// Load for the social network: seed a running system, drive it at a fixed rate (open
/// loop, HDR percentiles), find its highest sustainable rate, and check that what the
/// load caused has landed. Defaults address `scripts/up`'s ports.
#[derive(Parser)]
#[command(name = "social-loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create users (a power-law follow graph) and posts with media through the API;
    /// rerunning creates only what is missing.
    Seed(seed::SeedArgs),
    /// Open-loop load at a fixed rate for a duration; per-operation percentiles, errors by
    /// code, each process's CPU and memory; a JSON report.
    Run(load::RunArgs),
    /// Raise the rate step by step; report the highest rate whose p99 stays under a
    /// bound with no errors.
    Sweep(load::SweepArgs),
    /// After a run: wait until its counters and notifications have landed, say how long
    /// that took, and check that counters equal the documents.
    Check(check::CheckArgs),
    /// The in-process micro-benchmarks (`scripts/bench <name>`; needs MONGODB_URI).
    Bench {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(bench::NAMES))]
        name: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Seed(args) => {
            let seeded = seed::seed(&args).await?;
            let posts: usize = seeded.users.iter().map(|u| u.posts.len()).sum();
            println!(
                "seeded {} users, {} follows, {posts} posts; wrote {}",
                seeded.users.len(),
                seeded.follows,
                args.out.display()
            );
        }
        Command::Run(args) => {
            let report = load::run(&args).await?;
            report.print();
            println!("report: {}", args.report.display());
        }
        Command::Sweep(args) => {
            let sweep = load::sweep(&args).await?;
            match sweep.max_rate {
                Some(rate) => println!(
                    "highest rate with p99 under {} ms and no errors: {rate:.0}/s",
                    args.p99_ms
                ),
                None => println!("even {:.0}/s went over the bound", args.start),
            }
            if let Some(step) = sweep.steps.iter().rev().find(|s| s.passed) {
                step.report.print();
            }
            println!("report: {}", args.report.display());
        }
        Command::Check(args) => {
            let checked = check::check(&args).await?;
            println!("{}", serde_json::to_string_pretty(&checked)?);
            if !checked.settled {
                anyhow::bail!("the run's effects did not all land within {} s", args.wait_secs);
            }
        }
        Command::Bench { name } => bench::run(&name).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand's options parse (no two with one name, as `check` once had).
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
