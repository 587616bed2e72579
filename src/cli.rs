//! Command-line arguments (clap): serve (default), `--check-config`, and the
//! offline snapshot tool `nvecd snapshot verify|info <file>`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "nvecd",
    version,
    about = "In-memory recommendation and similarity server"
)]
pub struct Cli {
    /// Configuration file or directory (default: ./config/default.yaml + local.yaml).
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
    #[command(subcommand)]
    pub command: Option<CliCommand>,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Offline snapshot tools (no server needed).
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotAction {
    /// Check a snapshot file fully (header, size, every CRC, every record);
    /// exits 1 when it is not valid.
    Verify { file: PathBuf },
    /// Print a snapshot file's header; exits 1 when it cannot be read.
    Info { file: PathBuf },
}
