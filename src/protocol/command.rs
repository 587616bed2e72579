//! `Command`: one variant per protocol command, with typed arguments.
//!
//! Values here are already validated by `parse` as far as the protocol alone
//! can tell (counts, number formats, score range, `top_k >= 1`); limits that
//! depend on configuration or state (`max_top_k`, vector dimension) are the
//! store's to check.
// PUBLIC API CONTRACT — actors depend on these types.

use crate::store::{EventKind, SimMode};

/// One parsed request.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `PING` -> `OK PONG`.
    Ping,
    /// `QUIT` -> `OK`, then the connection closes.
    Quit,
    /// `AUTH <password>`.
    Auth { password: String },
    /// `INFO`: the server's statistics block.
    Info,
    /// `CONFIG SHOW [section]`
    ConfigShow { section: Option<String> },
    /// `EVENT <ctx> ADD|SET|DEL <id> [<score>]`.
    Event(EventArgs),
    /// `VECSET <id> <f1> ... <fN>`: at least one value, all finite.
    VecSet { id: String, values: Vec<f32> },
    /// `VECDEL <id>`.
    VecDel { id: String },
    /// `SIM <id> <top_k> [using=...] [min_score=...]`.
    Sim(SimArgs),
    /// `SIMV <top_k> [min_score=...] <f1> ... <fN>`.
    SimV(SimVArgs),
    /// `DUMP SAVE|LOAD|VERIFY|INFO|STATUS ...`.
    Dump(DumpCommand),
}

/// Arguments of `EVENT`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventArgs {
    /// The context (user, session), case-sensitive.
    pub ctx: String,
    /// ADD, SET or DEL.
    pub kind: EventKind,
    /// The item id, case-sensitive.
    pub id: String,
    /// 0..=100; 0 for DEL.
    pub score: u8,
}

/// Arguments of `SIM`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimArgs {
    /// The query item.
    pub id: String,
    /// >= 1; the upper bound (`similarity.max_top_k`) is checked by the store.
    pub top_k: usize,
    /// Fusion when not given.
    pub mode: SimMode,
    /// Results scoring below this are dropped; finite when present.
    pub min_score: Option<f32>,
}

/// Arguments of `SIMV`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimVArgs {
    /// >= 1; the upper bound is checked by the store.
    pub top_k: usize,
    /// Results scoring below this are dropped; finite when present.
    pub min_score: Option<f32>,
    /// The query vector: at least one value, all finite.
    pub values: Vec<f32>,
}

/// The `DUMP` subcommands (SPEC section 4.1). Paths are single tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum DumpCommand {
    /// `DUMP SAVE [path]`; without a path the server picks a `dump_*.nvec` name.
    Save { path: Option<String> },
    /// `DUMP LOAD <path>`.
    Load { path: String },
    /// `DUMP VERIFY <path>`.
    Verify { path: String },
    /// `DUMP INFO <path>`.
    Info { path: String },
    /// `DUMP STATUS`.
    Status,
}

impl Command {
    /// Write and admin commands: refused with NOAUTH before AUTH when a password is set.
    pub fn needs_auth(&self) -> bool {
        matches!(
            self,
            Command::Event(_) | Command::VecSet { .. } | Command::VecDel { .. } | Command::Dump(_)
        )
    }
}
