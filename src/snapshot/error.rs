//! `SnapshotError`: every error a snapshot command can give. `Display` is exactly
//! the text after `(error) `; `detail_lines` gives the extra block lines.
use std::path::PathBuf;

/// Every error of the snapshot layer. Variant fields are the values the
/// message shows.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Shorter than 4 bytes, or the first 4 bytes are not `NVEC`.
    #[error("Not a snapshot file: bad magic")]
    BadMagic,
    /// The header's version is not 1.
    #[error("Version mismatch: expected 1, got {found}")]
    VersionMismatch { found: u32 },
    /// The file is shorter than the header (`expected` 40) or its length
    /// differs from the header's `file_size` (also when longer).
    #[error("Snapshot truncated: header says {expected} bytes, file has {actual} bytes")]
    Truncated { expected: u64, actual: u64 },
    /// The file CRC: `expected` is the footer's value, `actual` the computed one.
    #[error("CRC mismatch: file may be corrupted")]
    CrcMismatch { expected: u32, actual: u32 },
    /// A section CRC; `section` is `events`, `co_occurrence` or `vectors`.
    #[error("CRC mismatch in {section} section: file may be corrupted")]
    SectionCrcMismatch { section: &'static str },
    /// Anything else wrong inside a file whose CRCs match; says what.
    #[error("Corrupt snapshot: {0}")]
    Corrupt(String),
    /// A user path with a `..` component.
    #[error("Invalid path: '..' is not allowed")]
    DotDot,
    /// A path outside `snapshot.dir` (`dir` as configured), directly or
    /// through a symbolic link.
    #[error("Invalid path: must be inside {dir}")]
    OutsideDir { dir: String },
    /// Empty, NUL or control characters, the directory itself, a directory,
    /// a trailing `/`, or a temp-file name.
    #[error("Invalid path")]
    InvalidPath,
    /// DUMP SAVE to a name of the automatic snapshot pattern.
    #[error("Invalid path: auto_ names are reserved for automatic snapshots")]
    ReservedName,
    /// ENOENT (missing file or parent directory); `path` is absolute.
    #[error("File not found: {path}")]
    NotFound { path: String },
    /// EACCES or EPERM.
    #[error("Permission denied: {path}")]
    PermissionDenied { path: String },
    /// Any other I/O failure; the message carries the OS reason
    /// (for example `No space left on device (os error 28)`).
    #[error("I/O error on {path}: {source}", path = path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// DUMP SAVE while a load runs.
    #[error("Cannot save snapshot: read-only mode")]
    ReadOnly,
    /// A second DUMP LOAD while one runs.
    #[error("Snapshot load already in progress")]
    LoadInProgress,
    /// A save to a path another save is writing.
    #[error("Snapshot save already in progress: {path}")]
    SaveInProgress { path: String },
    /// A count or dimension of the state does not fit the format's `u32` field.
    #[error("Snapshot too large: {what} exceeds the format's u32 limit")]
    TooLarge { what: &'static str },
    /// The state handed to the writer breaks an invariant the reader checks
    /// (order, ranges, finiteness), so the file would not load: refused before
    /// it replaces anything.
    #[error("Cannot save snapshot: {0}")]
    InvalidImage(String),
    /// A no-replace write (auto names, `dump_` names) found its target taken.
    #[error("File already exists: {path}")]
    AlreadyExists { path: String },
}

impl SnapshotError {
    /// The `key: value` lines of the error block (only the CRC mismatch has any).
    pub fn detail_lines(&self) -> Vec<(String, String)> {
        match self {
            SnapshotError::CrcMismatch { expected, actual } => vec![
                ("expected".to_string(), format!("0x{expected:08X}")),
                ("actual".to_string(), format!("0x{actual:08X}")),
            ],
            _ => Vec::new(),
        }
    }
}
