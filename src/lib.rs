//! Nvecd: an in-memory recommendation and similarity server.
//!
//! - `protocol/`: line codec, `Command`, the pure parser, `Response` rendering.
//! - `store/`: events, co-occurrence and vectors; cheap `freeze()` images.
//! - `snapshot/`: format v1, streaming writer/reader, path rules, atomic files.
//! - `actors/`: `StoreActor`, `SnapshotActor`, `SchedulerActor`,
//!   `ListenerActor`, one `ConnectionActor` per client (see `actors.md`).
//! - `server.rs` wires them; `config.rs`, `telemetry.rs`, `cli.rs`, `offline.rs`.
//!
//! `protocol`, `store` and `snapshot` never import actix.

pub mod actors;
pub mod cli;
pub mod config;
pub mod error;
pub mod offline;
pub mod protocol;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod telemetry;
