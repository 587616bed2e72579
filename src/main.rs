//! `nvecd`: parse arguments, load configuration, start logging, run the server
//! until SIGINT/SIGTERM, or run an offline snapshot tool.

use clap::Parser;
use std::process::ExitCode;

use nvecd::cli::{Cli, CliCommand, SnapshotAction};
use nvecd::config::{Config, ConfigSource};
use nvecd::{offline, server, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = cli
        .config
        .clone()
        .map(ConfigSource::Path)
        .unwrap_or(ConfigSource::WorkingDir);
    if let Some(CliCommand::Snapshot { action }) = cli.command {
        let default_dimension = match Config::load(&source) {
            Ok(c) => c.vectors.default_dimension,
            Err(_) if cli.config.is_none() => 0,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let ok = match action {
            SnapshotAction::Verify { file } => offline::verify(&file, default_dimension),
            SnapshotAction::Info { file } => offline::info(&file),
        };
        return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let config = match Config::load(&source) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nvecd: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        if let Err(source) = nvecd::snapshot::files::SnapshotDir::check(&config.snapshot.dir) {
            let e = nvecd::error::ServerError::SnapshotDir {
                path: config.snapshot.dir.display().to_string(),
                source,
            };
            eprintln!("nvecd: {e}");
            return ExitCode::from(2);
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    telemetry::init(&config.logging);
    let system = actix_rt::System::new();
    let result = system.block_on(async move {
        let handle = server::start(config).await?;
        wait_for_signal().await;
        handle.shutdown().await;
        Ok::<(), nvecd::error::ServerError>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            eprintln!("nvecd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
