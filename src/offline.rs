//! The offline snapshot tool (`nvecd snapshot verify|info <file>`): the same
//! blocks as DUMP VERIFY / DUMP INFO, for any path, without a server.
//! `verify_response` / `info_response` compute the block without printing
//! (tests compare them with the server's); `verify` / `info` print it.

use std::io::Write;
use std::path::Path;

use crate::actors::snapshot::{info_block, verify_block};
use crate::protocol::Response;
use crate::snapshot::{self, LoadOptions, SnapshotError};

fn open(path: &Path) -> Result<std::fs::File, SnapshotError> {
    std::fs::File::open(path).map_err(|e| snapshot::files::map_io(e, path, path))
}

/// A block as the tool prints it: the protocol lines with `\n` endings.
pub fn render_text(r: &Response) -> String {
    let mut out = Vec::new();
    r.render(&mut out);
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}

fn print(r: &Response) {
    let _ = std::io::stdout().write_all(render_text(r).as_bytes());
}

/// The verify block for `path` and whether the file is valid; prints nothing.
/// The same checks and block as DUMP VERIFY.
pub fn verify_response(path: &Path, default_dimension: usize) -> (Response, bool) {
    let opts = LoadOptions {
        default_dimension,
        batch_records: 4096,
    };
    let r = open(path).and_then(|mut f| snapshot::verify_file(&mut f, path, opts));
    (verify_block(&r), r.is_ok())
}

/// The header block for `path` and whether it could be read; prints nothing.
pub fn info_response(path: &Path) -> (Response, bool) {
    let r = open(path).and_then(|mut f| snapshot::read_info(&mut f, path));
    (info_block(&r), r.is_ok())
}

/// Prints the verify block; true when the file is valid.
pub fn verify(path: &Path, default_dimension: usize) -> bool {
    let (block, ok) = verify_response(path, default_dimension);
    print(&block);
    ok
}

/// Prints the header block; true when it could be read.
pub fn info(path: &Path) -> bool {
    let (block, ok) = info_response(path);
    print(&block);
    ok
}
