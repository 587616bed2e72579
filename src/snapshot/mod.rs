//! Snapshot files: format version 1 (`format`), streaming writer and reader with
//! CRCs on the way through, path rules and atomic file handling (`files`).
//! Plain Rust: no actix here; the offline `nvecd snapshot ...` tool reuses it as is.
//!
//! The byte layout is documented in `docs/snapshot-format.md` and repeated in
//! `format.rs`; golden files in `snapshots-testdata/` pin it.
// PUBLIC API CONTRACT — actors and the CLI depend on these items.
#![warn(missing_docs)]

pub mod direct;
pub mod error;
pub mod files;
pub mod format;
pub mod parts;
pub mod reader;
mod split;
#[doc(hidden)]
pub mod testkit;
pub mod writer;

#[cfg(test)]
mod tests;

pub use error::SnapshotError;
pub use format::Header;
pub use parts::{Encode, PairRows};
pub use reader::{load_file, read_header, read_info, verify_file, LoadOptions, VerifyReport};
pub use writer::{write_snapshot, write_source, write_source_with, SnapshotSource, WriteSummary};
