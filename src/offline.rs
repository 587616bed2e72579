//! The offline snapshot tool (`nvecd snapshot verify|info <file>`): the same
//! blocks as DUMP VERIFY / DUMP INFO, for any path, without a server.

use std::io::Write;
use std::path::Path;

use crate::actors::snapshot::{info_block, verify_block};
use crate::protocol::Response;
use crate::snapshot::{self, LoadOptions, SnapshotError};

fn open(path: &Path) -> Result<std::fs::File, SnapshotError> {
    std::fs::File::open(path).map_err(|e| snapshot::files::map_io(e, path, path))
}

fn print(r: &Response) {
    let mut out = Vec::new();
    r.render(&mut out);
    let text = String::from_utf8_lossy(&out).replace("\r\n", "\n");
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// Prints the verify block; true when the file is valid.
pub fn verify(path: &Path, default_dimension: usize) -> bool {
    let opts = LoadOptions {
        default_dimension,
        batch_records: 4096,
    };
    let r = open(path).and_then(|mut f| snapshot::verify_file(&mut f, path, opts));
    print(&verify_block(&r));
    r.is_ok()
}

/// Prints the header block; true when it could be read.
pub fn info(path: &Path) -> bool {
    let r = open(path).and_then(|mut f| snapshot::read_header(&mut f, path));
    print(&info_block(&r));
    r.is_ok()
}
