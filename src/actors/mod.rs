//! The actors (see `actors.md` at the repository root for each one's messages,
//! states and supervisor). Actors are thin: they own state, turn messages into
//! calls on `store`, `snapshot` and `protocol`, and sequence I/O.

pub mod connection;
pub mod listener;
mod reserve;
pub mod scheduler;
pub mod snapshot;
pub mod store;

use actix::{Addr, Message};
use std::sync::Arc;

use crate::config::Config;

/// Taken by the listener and every connection: stop (the listener stops
/// accepting; a connection closes after the reply it is writing).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The addresses a connection talks to, handed down by `server.rs` through the
/// listener. Immutable; cloned per connection.
#[derive(Clone)]
pub struct Peers {
    pub store: Addr<store::StoreActor>,
    pub snapshot: Addr<snapshot::SnapshotActor>,
    pub scheduler: Addr<scheduler::SchedulerActor>,
    pub config: Arc<Config>,
}

/// Milliseconds since the Unix epoch (event timestamps).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
