//! The body of every service binary: signals, telemetry, the listener, and the
//! operator's subcommands.

use std::{future::Future, process::ExitCode};

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{config::CommonConfig, telemetry};

/// A token cancelled on SIGTERM or SIGINT (Ctrl-C).
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

/// The body of a service's `main()`: telemetry, bind, run until a signal, flush. `run`
/// gets the bound listener and the shutdown token.
pub async fn main<R, F>(config: &CommonConfig, run: R) -> ExitCode
where
    R: FnOnce(TcpListener, CancellationToken) -> F,
    F: Future<Output = anyhow::Result<()>>,
{
    main_once(config, async {
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen_addr))?;
        run(listener, shutdown_on_signals()).await
    })
    .await
}

/// Loads a configuration or exits with a message naming the bad variable.
pub fn load_config<C, E: std::fmt::Display>(
    load: impl FnOnce() -> Result<C, E>,
) -> Result<C, ExitCode> {
    load().map_err(|e| {
        eprintln!("configuration error: {e}");
        ExitCode::from(2)
    })
}

/// The body of a one-shot command (an operator's subcommand): telemetry, run, flush.
pub async fn main_once<F>(config: &CommonConfig, run: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let telemetry = match telemetry::init(config.service, config.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot start telemetry: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

/// An operator's subcommand of a service binary (`<binary> <name>`): runs once with the
/// service's configuration and exits.
pub struct Command<C> {
    /// What the operator types.
    pub name: &'static str,
    /// One line for the usage message.
    pub about: &'static str,
    /// What it does.
    pub run: Box<dyn FnOnce(C) -> BoxFuture<'static, anyhow::Result<()>>>,
}

impl<C> Command<C> {
    /// A command `name` that runs `run`.
    pub fn new(
        name: &'static str,
        about: &'static str,
        run: impl FnOnce(C) -> BoxFuture<'static, anyhow::Result<()>> + 'static,
    ) -> Self {
        Self { name, about, run: Box::new(run) }
    }
}

/// Runs a service binary: `<binary> [serve]` serves until SIGTERM; `<binary> <command>`
/// runs one of `commands` (recompute counters, declare the events topology, ...) and
/// exits. A bad environment variable exits with status 2 and its name.
pub async fn binary_main<C: crate::config::ServiceConfig>(
    binary: &str,
    load: impl FnOnce() -> Result<C, crate::config::ConfigError>,
    serve: impl FnOnce(C, TcpListener, CancellationToken) -> BoxFuture<'static, anyhow::Result<()>>,
    commands: Vec<Command<C>>,
) -> ExitCode {
    let asked = std::env::args().nth(1);
    let usage = || {
        let mut text = format!(
            "usage: {binary} [COMMAND]\n\n  serve                serve until SIGTERM (the default)\n"
        );
        for c in &commands {
            text.push_str(&format!("  {:<20} {}\n", c.name, c.about));
        }
        text.push_str("\nSettings come from environment variables (docs/configuration.md).");
        text
    };
    match asked.as_deref() {
        Some("help" | "--help" | "-h") => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        None | Some("serve") => {}
        Some(other) if commands.iter().any(|c| c.name == other) => {}
        Some(other) => {
            eprintln!("unknown command {other:?}\n{}", usage());
            return ExitCode::from(2);
        }
    }
    let config = match load_config(load) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let common = config.common().clone();
    match asked.as_deref() {
        None | Some("serve") => main(&common, |l, s| serve(config, l, s)).await,
        Some(name) => {
            let Some(command) = commands.into_iter().find(|c| c.name == name) else {
                return ExitCode::from(2);
            };
            main_once(&common, (command.run)(config)).await
        }
    }
}
