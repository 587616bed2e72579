//! `ServerError`: what can stop the server from starting or running.

use crate::config::ConfigError;
use crate::snapshot::SnapshotError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot prepare snapshot.dir {path}: {source}")]
    SnapshotDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// An actor's mailbox is gone: an internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<actix::MailboxError> for ServerError {
    fn from(e: actix::MailboxError) -> Self {
        ServerError::Internal(e.to_string())
    }
}
