//! Snapshot files on disk: the path rules of SPEC 4.2, atomic writes (temp
//! file, fsync, rename, directory fsync), auto and dump names, pruning, and
//! stray temp-file cleanup.
//!
//! Everything here works inside one `SnapshotDir`. User paths are resolved to an
//! absolute path whose parent is canonical and inside the directory, so neither
//! `..` nor a symbolic link can lead a save or a load outside it. Resolution and
//! use are two steps: a directory entry swapped for a symlink in between is not
//! defended against (only the server and its operators write there).
//!
//! Every filesystem step of a write goes through `FileOps`, so fault-injection
//! tests can fail each one. Plain std I/O: no actix, no tokio.
use super::SnapshotError;
use chrono::{DateTime, Utc};
use std::fs::{self, File};
use std::io::{self, Seek, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Prefix of automatic snapshot names.
pub const AUTO_PREFIX: &str = "auto_";
/// Extension of automatic snapshot names.
pub const AUTO_EXT: &str = ".snapshot";
/// Prefix of `DUMP SAVE` names chosen by the server.
pub const DUMP_PREFIX: &str = "dump_";
/// Extension of `DUMP SAVE` names chosen by the server.
pub const DUMP_EXT: &str = ".nvec";
/// Marker inside temp-file names: `.<name>.tmp.<pid>.<counter>`.
const TEMP_MARKER: &str = ".tmp.";

/// Highest `_<n>` suffix `next_free_name` tries before giving up.
const MAX_SUFFIX: u32 = 10_000;

/// The filesystem steps of an atomic write; one real implementation, and a
/// seam for tests that make a given step fail. The data itself reaches the
/// temp file through `write`, so a test can also fail the k-th write call or
/// run out of space after n bytes.
pub trait FileOps: Send + Sync {
    /// Creates `path` exclusively (`O_EXCL`), mode 0600, for reading and
    /// writing.
    fn create_temp(&self, path: &Path) -> io::Result<File>;
    /// One `write(2)` of snapshot data into the temp file made by
    /// `create_temp` (through `TempFile`); may write less than `buf`.
    fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<usize> {
        file.write(buf)
    }
    /// `fsync` of the file's data and metadata.
    fn sync_file(&self, file: &File) -> io::Result<()>;
    /// Renames `from` to `to`; with `no_replace`, fails with `AlreadyExists`
    /// instead of replacing an existing `to`.
    fn rename(&self, from: &Path, to: &Path, no_replace: bool) -> io::Result<()>;
    /// `fsync` of a directory, so a rename in it is durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Deletes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFileOps;

/// The temp file `write_atomically` hands to its closure: a `File` whose
/// writes go through `FileOps::write`; seeks and flushes go to the file.
pub struct TempFile<'a> {
    file: File,
    ops: &'a dyn FileOps,
}

impl TempFile<'_> {
    /// The file itself, for what is not a write (reads, flags, length).
    pub fn as_file(&self) -> &File {
        &self.file
    }
}

impl Write for TempFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ops.write(&mut self.file, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for TempFile<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl FileOps for RealFileOps {
    fn create_temp(&self, path: &Path) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        // Readable too: a direct write reads a block back to change it.
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    }
    fn sync_file(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path, no_replace: bool) -> io::Result<()> {
        if no_replace {
            rename_no_replace(from, to)
        } else {
            fs::rename(from, to)
        }
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

/// `renameat2(RENAME_NOREPLACE)`; where the kernel or filesystem lacks it, a
/// hard link (which never replaces) followed by unlinking the source.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: both pointers are valid NUL-terminated strings for the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ENOTSUP) => {}
            _ => return Err(err),
        }
    }
    fs::hard_link(from, to)?;
    fs::remove_file(from)
}

/// `snapshot.dir`: the only directory snapshots are read from and written to.
#[derive(Clone)]
pub struct SnapshotDir {
    root: PathBuf,
    /// `snapshot.dir` as configured, for messages.
    configured: String,
    /// The configured form made absolute (lexically): absolute user paths may
    /// name the directory this way too.
    configured_abs: PathBuf,
    ops: Arc<dyn FileOps>,
}

impl std::fmt::Debug for SnapshotDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotDir")
            .field("root", &self.root)
            .field("configured", &self.configured)
            .finish()
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes `.` components and applies `..` lexically.
fn lexical_normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Maps an I/O error: ENOENT and EACCES/EPERM get their own variants (named by
/// `user_path`), anything else keeps the OS error (named by `io_path`).
pub fn map_io(err: io::Error, user_path: &Path, io_path: &Path) -> SnapshotError {
    match err.kind() {
        io::ErrorKind::NotFound => SnapshotError::NotFound {
            path: user_path.display().to_string(),
        },
        io::ErrorKind::PermissionDenied => SnapshotError::PermissionDenied {
            path: user_path.display().to_string(),
        },
        _ => SnapshotError::Io {
            path: io_path.to_path_buf(),
            source: err,
        },
    }
}

fn not_a_directory(path: &Path) -> io::Error {
    io::Error::other(format!("{} is not a directory", path.display()))
}

impl SnapshotDir {
    /// Opens `dir`, creating it (and its parents) with mode 0700 if missing.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::with_ops(dir, Arc::new(RealFileOps))
    }

    /// What `open` would find wrong with `dir`, without creating anything
    /// (`nvecd --check-config`): an existing path must be a directory, and a
    /// missing one must have a directory as its nearest existing ancestor.
    /// Permissions are left to the start itself.
    pub fn check(dir: &Path) -> io::Result<()> {
        let mut at = dir;
        loop {
            match fs::metadata(at) {
                Ok(m) if m.is_dir() => return Ok(()),
                Ok(_) => return Err(not_a_directory(at)),
                // Missing, or under a file: the ancestors tell which.
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {}
                Err(e) => return Err(e),
            }
            match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                // A relative path's first component: created in the
                // working directory.
                _ => return Ok(()),
            }
        }
    }

    /// `open` with another `FileOps` (fault-injection tests).
    pub fn with_ops(dir: &Path, ops: Arc<dyn FileOps>) -> io::Result<Self> {
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let root = fs::canonicalize(dir)?;
        if !root.is_dir() {
            return Err(not_a_directory(dir));
        }
        let configured_abs = if dir.is_absolute() {
            lexical_normalize(dir)
        } else {
            lexical_normalize(&std::env::current_dir()?.join(dir))
        };
        Ok(SnapshotDir {
            root,
            configured: dir.display().to_string(),
            configured_abs,
            ops,
        })
    }

    /// The canonical directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn outside(&self) -> SnapshotError {
        SnapshotError::OutsideDir {
            dir: self.configured.clone(),
        }
    }

    /// Resolves a user path (DUMP LOAD/VERIFY/INFO/SAVE) to an absolute path
    /// inside the directory: parent canonical, file name as given. See the
    /// module doc and SPEC 4.2 for the rules; a path naming the directory
    /// itself, ending in `/`, or naming a directory is `InvalidPath`.
    pub fn resolve(&self, user_path: &str) -> Result<PathBuf, SnapshotError> {
        if user_path.is_empty() || user_path.chars().any(char::is_control) {
            return Err(SnapshotError::InvalidPath);
        }
        let p = Path::new(user_path);
        if p.components().any(|c| c == Component::ParentDir) {
            return Err(SnapshotError::DotDot);
        }
        // An absolute path outside the directory is refused as such first,
        // also when it ends in `/` (`/`, `/etc/`).
        let rel: PathBuf = if p.is_absolute() {
            let clean = lexical_normalize(p);
            if let Ok(r) = clean.strip_prefix(&self.root) {
                r.to_path_buf()
            } else if let Ok(r) = clean.strip_prefix(&self.configured_abs) {
                r.to_path_buf()
            } else {
                return Err(self.outside());
            }
        } else {
            lexical_normalize(p)
        };
        if user_path.ends_with('/') {
            return Err(SnapshotError::InvalidPath);
        }
        let Some(name) = rel.file_name().map(|n| n.to_os_string()) else {
            return Err(SnapshotError::InvalidPath);
        };
        let lexical = self.root.join(&rel);
        let parent = lexical.parent().unwrap_or(&self.root);
        let parent = fs::canonicalize(parent).map_err(|e| map_io(e, &lexical, parent))?;
        if !parent.is_dir() {
            return Err(SnapshotError::NotFound {
                path: lexical.display().to_string(),
            });
        }
        if !parent.starts_with(&self.root) {
            return Err(self.outside());
        }
        let target = parent.join(&name);
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() => {
                match fs::canonicalize(&target) {
                    Ok(real) => {
                        if !real.starts_with(&self.root) {
                            return Err(self.outside());
                        }
                        if real.is_dir() {
                            return Err(SnapshotError::InvalidPath);
                        }
                    }
                    Err(_) => {
                        // Dangling: judge where it would point, lexically.
                        let link = fs::read_link(&target).map_err(|e| map_io(e, &target, &target))?;
                        let dest = lexical_normalize(&parent.join(link));
                        if !dest.starts_with(&self.root) {
                            return Err(self.outside());
                        }
                    }
                }
            }
            Ok(meta) if meta.is_dir() => return Err(SnapshotError::InvalidPath),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(map_io(e, &target, &target)),
        }
        Ok(target)
    }

    /// `resolve` for DUMP SAVE: also refuses the names reserved for automatic
    /// snapshots (`ReservedName`) and for temp files (`InvalidPath`; they would
    /// be deleted as strays at the next start).
    pub fn resolve_for_save(&self, user_path: &str) -> Result<PathBuf, SnapshotError> {
        let path = self.resolve(user_path)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if parse_auto_name(name).is_some() {
            return Err(SnapshotError::ReservedName);
        }
        if is_temp_name(name) {
            return Err(SnapshotError::InvalidPath);
        }
        Ok(path)
    }

    /// Opens a resolved path for reading; a directory is `InvalidPath`.
    pub fn open_for_read(&self, path: &Path) -> Result<File, SnapshotError> {
        let file = File::open(path).map_err(|e| map_io(e, path, path))?;
        let meta = file.metadata().map_err(|e| map_io(e, path, path))?;
        if !meta.is_file() {
            return Err(SnapshotError::InvalidPath);
        }
        Ok(file)
    }

    /// `base` (a file name) in the directory if no entry has that name, else
    /// the first free `<stem>_<n><ext>` with n = 2, 3, ... Another writer may
    /// take the name before it is used: write it with `no_replace` and retry
    /// on `AlreadyExists`.
    pub fn next_free_name(&self, base: &str) -> Result<PathBuf, SnapshotError> {
        let (stem, ext) = match base.rfind('.') {
            Some(i) if i > 0 => base.split_at(i),
            _ => (base, ""),
        };
        for n in 1..=MAX_SUFFIX {
            let name = if n == 1 {
                base.to_string()
            } else {
                format!("{stem}_{n}{ext}")
            };
            let path = self.root.join(&name);
            match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(path),
                Err(e) => return Err(map_io(e, &path, &path)),
                Ok(_) => {}
            }
        }
        Err(SnapshotError::AlreadyExists {
            path: self.root.join(base).display().to_string(),
        })
    }

    /// Automatic snapshots in the directory (regular files whose names match
    /// the pattern exactly), newest first by (time in the name, suffix).
    pub fn list_auto(&self) -> io::Result<Vec<(PathBuf, (u64, u32))>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let name = entry.file_name();
            let Some(key) = name.to_str().and_then(parse_auto_name) else {
                continue;
            };
            out.push((entry.path(), key));
        }
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        Ok(out)
    }

    /// Deletes the automatic snapshots beyond the newest `retain`; returns the
    /// deleted paths. Only exact pattern matches are candidates. A file that
    /// is already gone is skipped; any other failure stops and is returned.
    pub fn prune_auto(&self, retain: usize) -> Result<Vec<PathBuf>, SnapshotError> {
        let all = self.list_auto().map_err(|e| map_io(e, &self.root, &self.root))?;
        let mut deleted = Vec::new();
        for (path, _) in all.into_iter().skip(retain) {
            match self.ops.remove(&path) {
                Ok(()) => deleted.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(map_io(e, &path, &path)),
            }
        }
        Ok(deleted)
    }

    /// Deletes leftover temp files (`.<name>.tmp.<pid>.<n>`) in the directory;
    /// call at start, before any save. Returns how many were removed.
    pub fn remove_stray_temp_files(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if entry.file_name().to_str().is_some_and(is_temp_name) {
                match self.ops.remove(&entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }

    /// Writes `target` atomically: `f` fills a new temp file (mode 0600, `O_EXCL`)
    /// in the target's directory, which is fsynced and renamed over `target`;
    /// then the directory is fsynced. With `no_replace` an existing target is
    /// never replaced (`AlreadyExists`). On any error the temp file is removed
    /// and `target` is as it was (except after a failed directory fsync, when
    /// the new file is in place but its durability is not confirmed).
    pub fn write_atomically<T>(
        &self,
        target: &Path,
        no_replace: bool,
        f: impl FnOnce(&mut TempFile<'_>) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(SnapshotError::InvalidPath);
        };
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(temp_name(&name.to_string_lossy(), std::process::id(), n));
        // Errors name the target the user asked for, never the temp file: it
        // is gone by the time the reply is read.
        let file = self
            .ops
            .create_temp(&tmp)
            .map_err(|e| map_io(e, target, target))?;
        let mut file = TempFile {
            file,
            ops: self.ops.as_ref(),
        };
        let result = (|| {
            let value = f(&mut file)?;
            self.ops
                .sync_file(&file.file)
                .map_err(|e| map_io(e, target, target))?;
            drop(file);
            self.ops
                .rename(&tmp, target, no_replace)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists if no_replace => SnapshotError::AlreadyExists {
                        path: target.display().to_string(),
                    },
                    _ => map_io(e, target, target),
                })?;
            Ok(value)
        })();
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                // Best effort: the temp file may not exist any more.
                let _ = self.ops.remove(&tmp);
                return Err(e);
            }
        };
        self.ops.sync_dir(dir).map_err(|e| map_io(e, dir, dir))?;
        Ok(value)
    }
}

/// Longest file name the filesystems we support accept (Linux `NAME_MAX`).
const NAME_MAX: usize = 255;

/// `.<name>.tmp.<pid>.<n>`, with `<name>` shortened (on a character boundary)
/// so the whole name fits in `NAME_MAX` bytes: a target name of up to 255
/// bytes is legal, and its temp file must be creatable too.
fn temp_name(name: &str, pid: u32, n: u64) -> String {
    let tail = format!("{TEMP_MARKER}{pid}.{n}");
    let room = NAME_MAX.saturating_sub(1 + tail.len()).max(1);
    let mut end = name.len().min(room);
    while end > 1 && !name.is_char_boundary(end) {
        end -= 1;
    }
    let base = name.get(..end).filter(|b| !b.is_empty()).unwrap_or("x");
    format!(".{base}{tail}")
}

/// Is `name` a temp-file name of `write_atomically`: `.<name>.tmp.<pid>.<n>`?
pub fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some(i) = rest.rfind(TEMP_MARKER) else {
        return false;
    };
    let (base, tail) = rest.split_at(i);
    let Some(tail) = tail.strip_prefix(TEMP_MARKER) else {
        return false;
    };
    let mut parts = tail.split('.');
    let digits = |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    !base.is_empty() && digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// Parses `auto_<YYYYMMDD>_<HHMMSS>[_<n>].snapshot` (n ≥ 2, no leading zero).
/// Returns `(YYYYMMDDHHMMSS as a number, n)` with n = 1 when absent, so tuples
/// order oldest to newest. Anything else, even close, is `None`.
pub fn parse_auto_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix(AUTO_PREFIX)?.strip_suffix(AUTO_EXT)?;
    let bytes = rest.as_bytes();
    let all_digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    let date = bytes.get(0..8)?;
    let time = bytes.get(9..15)?;
    if bytes.get(8) != Some(&b'_') || !all_digits(date) || !all_digits(time) {
        return None;
    }
    let key: u64 = rest.get(0..8)?.parse::<u64>().ok()? * 1_000_000 + rest.get(9..15)?.parse::<u64>().ok()?;
    let suffix = match bytes.get(15..)? {
        [] => 1,
        [b'_', n @ ..] => {
            if n.is_empty() || !all_digits(n) || n.first() == Some(&b'0') {
                return None;
            }
            let v: u32 = std::str::from_utf8(n).ok()?.parse().ok()?;
            if v < 2 {
                return None;
            }
            v
        }
        _ => return None,
    };
    Some((key, suffix))
}

/// `auto_YYYYMMDD_HHMMSS.snapshot` (UTC), with `_<suffix>` before the
/// extension when `suffix` ≥ 2.
pub fn auto_name(now: DateTime<Utc>, suffix: u32) -> String {
    let stamp = now.format("%Y%m%d_%H%M%S");
    if suffix >= 2 {
        format!("{AUTO_PREFIX}{stamp}_{suffix}{AUTO_EXT}")
    } else {
        format!("{AUTO_PREFIX}{stamp}{AUTO_EXT}")
    }
}

/// `dump_YYYYMMDD_HHMMSS.nvec` (UTC): the base name of a `DUMP SAVE` without a
/// path; pass it to `next_free_name` for the `_2`, `_3`, ... variants.
pub fn dump_name(now: DateTime<Utc>) -> String {
    format!("{DUMP_PREFIX}{}{DUMP_EXT}", now.format("%Y%m%d_%H%M%S"))
}

/// Real filesystem steps with faults, for tests of the write path.
#[cfg(test)]
pub(crate) mod faults {
    use super::{FileOps, RealFileOps};
    use std::fs::File;
    use std::io::{self, Write};
    use std::path::Path;
    use std::sync::Mutex;

    /// Real operations, except that the step named `fail` returns EIO and
    /// writes fail with ENOSPC once `budget` bytes are written.
    pub(crate) struct Failing {
        fail: &'static str,
        budget: Mutex<u64>,
        /// The steps taken, in order.
        pub(crate) calls: Mutex<Vec<&'static str>>,
    }

    impl Failing {
        pub(crate) fn step_fails(fail: &'static str) -> Self {
            Failing {
                fail,
                budget: Mutex::new(u64::MAX),
                calls: Mutex::new(Vec::new()),
            }
        }
        pub(crate) fn full_after(bytes: u64) -> Self {
            Failing {
                budget: Mutex::new(bytes),
                ..Failing::step_fails("")
            }
        }
        fn step(&self, name: &'static str) -> io::Result<()> {
            self.calls.lock().unwrap().push(name);
            if self.fail == name {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                Ok(())
            }
        }
    }

    impl FileOps for Failing {
        fn create_temp(&self, path: &Path) -> io::Result<File> {
            self.step("create_temp")?;
            RealFileOps.create_temp(path)
        }
        fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<usize> {
            let mut left = self.budget.lock().unwrap();
            let n = buf.len() as u64;
            if *left < n {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            *left -= n;
            file.write(buf)
        }
        fn sync_file(&self, file: &File) -> io::Result<()> {
            self.step("sync_file")?;
            RealFileOps.sync_file(file)
        }
        fn rename(&self, from: &Path, to: &Path, no_replace: bool) -> io::Result<()> {
            self.step("rename")?;
            RealFileOps.rename(from, to, no_replace)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.step("sync_dir")?;
            RealFileOps.sync_dir(dir)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            self.step("remove")?;
            RealFileOps.remove(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::faults::Failing;
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn setup() -> (tempfile::TempDir, SnapshotDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(&tmp.path().join("snaps")).unwrap();
        (tmp, dir)
    }

    fn err(d: &SnapshotDir, p: &str) -> String {
        d.resolve(p).unwrap_err().to_string()
    }

    #[test]
    fn open_creates_the_directory_with_mode_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let d = SnapshotDir::open(&tmp.path().join("a/b/snaps")).unwrap();
        let mode = fs::metadata(d.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(d.root().is_absolute());
        // opening again keeps it
        SnapshotDir::open(&tmp.path().join("a/b/snaps")).unwrap();
    }

    #[test]
    fn relative_and_inside_absolute_paths_resolve_inside() {
        let (_t, d) = setup();
        let root = d.root().to_path_buf();
        assert_eq!(d.resolve("x.nvec").unwrap(), root.join("x.nvec"));
        assert_eq!(d.resolve("./x.nvec").unwrap(), root.join("x.nvec"));
        fs::create_dir(root.join("sub")).unwrap();
        assert_eq!(d.resolve("sub/x.nvec").unwrap(), root.join("sub/x.nvec"));
        let abs = root.join("sub/y.nvec");
        assert_eq!(d.resolve(abs.to_str().unwrap()).unwrap(), abs);
    }

    #[test]
    fn configured_form_of_the_directory_is_accepted() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        symlink(&real, &link).unwrap();
        let d = SnapshotDir::open(&link).unwrap();
        let via_link = link.join("x.nvec");
        let canon = fs::canonicalize(&real).unwrap();
        assert_eq!(
            d.resolve(via_link.to_str().unwrap()).unwrap(),
            canon.join("x.nvec")
        );
        assert_eq!(
            d.resolve(canon.join("x.nvec").to_str().unwrap()).unwrap(),
            canon.join("x.nvec")
        );
        let outside = tmp.path().join("x.nvec");
        assert_eq!(
            err(&d, outside.to_str().unwrap()),
            format!("Invalid path: must be inside {}", link.display())
        );
    }

    #[test]
    fn bad_characters_and_empty_paths_are_invalid() {
        let (_t, d) = setup();
        for p in ["", "a\0b", "a\nb", "a\rb", "a\tb", "\u{7f}x", "x\u{85}"] {
            assert_eq!(err(&d, p), "Invalid path", "{p:?}");
        }
    }

    #[test]
    fn dotdot_is_refused_anywhere() {
        let (_t, d) = setup();
        let abs = format!("{}/../x", d.root().display());
        for p in ["../x", "a/../x", "..", abs.as_str(), "a/b/.."] {
            assert_eq!(err(&d, p), "Invalid path: '..' is not allowed", "{p}");
        }
    }

    #[test]
    fn paths_outside_the_directory_are_refused() {
        let (t, d) = setup();
        let want = format!(
            "Invalid path: must be inside {}",
            t.path().join("snaps").display()
        );
        assert_eq!(err(&d, "/etc/passwd"), want);
        assert_eq!(err(&d, t.path().join("x.nvec").to_str().unwrap()), want);
        // a sibling whose name extends the root's is outside
        let sibling = format!("{}2/x.nvec", d.root().display());
        assert_eq!(err(&d, &sibling), want);
    }

    #[test]
    fn symlinks_leading_outside_are_refused() {
        let (t, d) = setup();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret.nvec"), b"x").unwrap();
        let want = format!(
            "Invalid path: must be inside {}",
            t.path().join("snaps").display()
        );
        symlink(&outside, d.root().join("dirlink")).unwrap();
        assert_eq!(err(&d, "dirlink/secret.nvec"), want);
        assert_eq!(err(&d, "dirlink/new.nvec"), want);
        symlink(outside.join("secret.nvec"), d.root().join("filelink.nvec")).unwrap();
        assert_eq!(err(&d, "filelink.nvec"), want);
        symlink(outside.join("missing.nvec"), d.root().join("dangling.nvec")).unwrap();
        assert_eq!(err(&d, "dangling.nvec"), want);
        // a link that stays inside is fine
        fs::write(d.root().join("real.nvec"), b"x").unwrap();
        symlink(d.root().join("real.nvec"), d.root().join("inside.nvec")).unwrap();
        assert_eq!(d.resolve("inside.nvec").unwrap(), d.root().join("inside.nvec"));
    }

    #[test]
    fn directories_and_trailing_slashes_are_invalid() {
        let (_t, d) = setup();
        fs::create_dir(d.root().join("sub")).unwrap();
        let root = d.root().display().to_string();
        let root_slash = format!("{root}/");
        for p in [
            ".",
            "./",
            "sub",
            "sub/",
            "x.nvec/",
            root.as_str(),
            root_slash.as_str(),
        ] {
            assert_eq!(err(&d, p), "Invalid path", "{p}");
        }
    }

    #[test]
    fn missing_parent_is_not_found() {
        let (_t, d) = setup();
        assert_eq!(
            err(&d, "nope/x.nvec"),
            format!("File not found: {}", d.root().join("nope/x.nvec").display())
        );
        let missing = d.resolve("missing.nvec").unwrap();
        assert_eq!(
            d.open_for_read(&missing).unwrap_err().to_string(),
            format!("File not found: {}", missing.display())
        );
    }

    #[test]
    fn open_for_read_maps_permission_denied() {
        // root bypasses file modes: nothing to check there
        if unsafe { libc::geteuid() } == 0 {
            return;
        }
        let (_t, d) = setup();
        let p = d.root().join("locked.nvec");
        fs::write(&p, b"x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
        assert_eq!(
            d.open_for_read(&p).unwrap_err().to_string(),
            format!("Permission denied: {}", p.display())
        );
    }

    #[test]
    fn save_refuses_reserved_and_temp_names() {
        let (_t, d) = setup();
        fs::create_dir(d.root().join("sub")).unwrap();
        for p in [
            "auto_20240101_120000.snapshot",
            "auto_20240101_120000_2.snapshot",
            "sub/auto_20240101_120000.snapshot",
        ] {
            assert_eq!(
                d.resolve_for_save(p).unwrap_err().to_string(),
                "Invalid path: auto_ names are reserved for automatic snapshots"
            );
            // loading one is fine
            d.resolve(p).unwrap();
        }
        assert_eq!(
            d.resolve_for_save(".x.nvec.tmp.12.3").unwrap_err().to_string(),
            "Invalid path"
        );
        for p in ["auto_notes.txt", "auto_20240101_120000.snapshot.bak", "mine.nvec"] {
            d.resolve_for_save(p).unwrap();
        }
    }

    #[test]
    fn auto_names_parse_exactly() {
        assert_eq!(
            parse_auto_name("auto_20240102_030405.snapshot"),
            Some((20240102030405, 1))
        );
        assert_eq!(
            parse_auto_name("auto_20240102_030405_2.snapshot"),
            Some((20240102030405, 2))
        );
        assert_eq!(
            parse_auto_name("auto_20240102_030405_17.snapshot"),
            Some((20240102030405, 17))
        );
        for bad in [
            "auto_20240102_030405_1.snapshot",
            "auto_20240102_030405_02.snapshot",
            "auto_20240102_030405_.snapshot",
            "auto_20240102_030405_x.snapshot",
            "auto_2024010_030405.snapshot",
            "auto_20240102_0304056.snapshot",
            "auto_20240102-030405.snapshot",
            "auto_20240102_030405.snapshot.bak",
            "auto_20240102_030405.nvec",
            "Auto_20240102_030405.snapshot",
            "auto_notes.txt",
            "auto_２0240102_030405.snapshot",
            "auto_20240102_030405_99999999999.snapshot",
        ] {
            assert_eq!(parse_auto_name(bad), None, "{bad}");
        }
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(auto_name(t, 1), "auto_20231114_221320.snapshot");
        assert_eq!(auto_name(t, 3), "auto_20231114_221320_3.snapshot");
        assert_eq!(parse_auto_name(&auto_name(t, 3)), Some((20231114221320, 3)));
        assert_eq!(dump_name(t), "dump_20231114_221320.nvec");
    }

    #[test]
    fn next_free_name_adds_suffixes_before_the_extension() {
        let (_t, d) = setup();
        let base = "dump_20231114_221320.nvec";
        assert_eq!(d.next_free_name(base).unwrap(), d.root().join(base));
        fs::write(d.root().join(base), b"").unwrap();
        assert_eq!(
            d.next_free_name(base).unwrap(),
            d.root().join("dump_20231114_221320_2.nvec")
        );
        fs::write(d.root().join("dump_20231114_221320_2.nvec"), b"").unwrap();
        assert_eq!(
            d.next_free_name(base).unwrap(),
            d.root().join("dump_20231114_221320_3.nvec")
        );
        let auto = "auto_20231114_221320.snapshot";
        fs::write(d.root().join(auto), b"").unwrap();
        let next = d.next_free_name(auto).unwrap();
        assert_eq!(next, d.root().join("auto_20231114_221320_2.snapshot"));
        assert!(parse_auto_name(next.file_name().unwrap().to_str().unwrap()).is_some());
    }

    #[test]
    fn pruning_deletes_only_old_auto_snapshots() {
        let (_t, d) = setup();
        let r = d.root().to_path_buf();
        // created newest-name first, so mtimes run the other way
        let autos = [
            "auto_20210101_000000.snapshot",
            "auto_20200101_000000_2.snapshot",
            "auto_20200101_000000.snapshot",
            "auto_20190101_000000.snapshot",
        ];
        for a in autos {
            fs::write(r.join(a), b"x").unwrap();
        }
        let foreign = [
            "auto_notes.txt",
            "auto_20200101_000000.snapshot.bak",
            "auto_20000101_000000_1.snapshot",
            "manual.nvec",
            "dump_20000101_000000.nvec",
        ];
        for f in foreign {
            fs::write(r.join(f), b"x").unwrap();
        }
        fs::create_dir(r.join("auto_19990101_000000.snapshot")).unwrap();
        symlink(r.join("manual.nvec"), r.join("auto_19980101_000000.snapshot")).unwrap();

        let listed: Vec<String> = d
            .list_auto()
            .unwrap()
            .into_iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(listed, autos);

        let deleted = d.prune_auto(2).unwrap();
        assert_eq!(deleted, vec![r.join(autos[2]), r.join(autos[3])]);
        for a in &autos[..2] {
            assert!(r.join(a).exists());
        }
        for f in foreign {
            assert!(r.join(f).exists(), "{f}");
        }
        assert!(r.join("auto_19990101_000000.snapshot").is_dir());
        assert!(fs::symlink_metadata(r.join("auto_19980101_000000.snapshot")).is_ok());
        assert!(d.prune_auto(2).unwrap().is_empty());
        assert_eq!(d.prune_auto(0).unwrap().len(), 2);
    }

    fn entries(d: &SnapshotDir) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_creates_a_0600_file_and_leaves_no_temp() {
        let (_t, d) = setup();
        let target = d.resolve_for_save("a.nvec").unwrap();
        let n = d
            .write_atomically(&target, false, |f| {
                f.write_all(b"hello").map_err(|e| map_io(e, &target, &target))?;
                Ok(5)
            })
            .unwrap();
        assert_eq!(n, 5);
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(entries(&d), ["a.nvec"]);
        // replacing is the default
        d.write_atomically(&target, false, |f| {
            f.write_all(b"second").map_err(|e| map_io(e, &target, &target))
        })
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"second");
        assert_eq!(entries(&d), ["a.nvec"]);
    }

    #[test]
    fn atomic_write_error_removes_the_temp_and_keeps_the_target() {
        let (_t, d) = setup();
        let target = d.root().join("a.nvec");
        fs::write(&target, b"old").unwrap();
        let e = d
            .write_atomically(&target, false, |f| -> Result<(), SnapshotError> {
                f.write_all(b"partial").unwrap();
                Err(SnapshotError::Corrupt("boom".into()))
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "Corrupt snapshot: boom");
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(entries(&d), ["a.nvec"]);
    }

    #[test]
    fn no_replace_refuses_an_existing_target() {
        let (_t, d) = setup();
        let target = d.root().join("a.nvec");
        fs::write(&target, b"old").unwrap();
        let e = d
            .write_atomically(&target, true, |f| {
                f.write_all(b"new").map_err(|e| map_io(e, &target, &target))
            })
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("File already exists: {}", target.display())
        );
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(entries(&d), ["a.nvec"]);
        let fresh = d.root().join("b.nvec");
        d.write_atomically(&fresh, true, |f| {
            f.write_all(b"new").map_err(|e| map_io(e, &fresh, &fresh))
        })
        .unwrap();
        assert_eq!(fs::read(&fresh).unwrap(), b"new");
        assert_eq!(entries(&d), ["a.nvec", "b.nvec"]);
    }

    #[test]
    fn rename_no_replace_fallback_never_replaces() {
        let (_t, d) = setup();
        let (a, b) = (d.root().join("a"), d.root().join("b"));
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        assert_eq!(
            rename_no_replace(&a, &b).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        fs::remove_file(&b).unwrap();
        rename_no_replace(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read(&b).unwrap(), b"a");
    }

    #[test]
    fn each_failing_step_leaves_the_previous_file_and_no_temp() {
        for fail in ["create_temp", "write", "sync_file", "rename", "sync_dir"] {
            let tmp = tempfile::tempdir().unwrap();
            let ops = Arc::new(Failing::step_fails(fail));
            let d = SnapshotDir::with_ops(tmp.path(), ops.clone()).unwrap();
            let target = d.root().join("a.nvec");
            fs::write(&target, b"old").unwrap();
            let r = d.write_atomically(&target, false, |f| {
                if fail == "write" {
                    return Err(map_io(
                        io::Error::from_raw_os_error(libc::ENOSPC),
                        &target,
                        &target,
                    ));
                }
                f.write_all(b"new").map_err(|e| map_io(e, &target, &target))
            });
            let e = r.unwrap_err().to_string();
            if fail == "write" {
                assert!(e.contains("No space left on device"), "{e}");
            } else {
                assert!(e.contains("Input/output error"), "{fail}: {e}");
            }
            let content = fs::read(&target).unwrap();
            if fail == "sync_dir" {
                // renamed already: the new file is complete, only durability is unknown
                assert_eq!(content, b"new");
            } else {
                assert_eq!(content, b"old", "{fail}");
            }
            assert_eq!(entries(&d), ["a.nvec"], "{fail}: {:?}", ops.calls.lock().unwrap());
        }
    }

    #[test]
    fn failing_cleanup_still_returns_the_first_error() {
        let tmp = tempfile::tempdir().unwrap();
        let ops = Arc::new(Failing::step_fails("remove"));
        let d = SnapshotDir::with_ops(tmp.path(), ops).unwrap();
        let target = d.root().join("a.nvec");
        let e = d
            .write_atomically(&target, false, |_| -> Result<(), SnapshotError> {
                Err(SnapshotError::Corrupt("first".into()))
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "Corrupt snapshot: first");
        // the stray temp is what remove_stray_temp_files is for
        let d2 = SnapshotDir::open(tmp.path()).unwrap();
        assert_eq!(d2.remove_stray_temp_files().unwrap(), 1);
        assert!(entries(&d2).is_empty());
    }

    #[test]
    fn stray_temp_files_are_removed_and_nothing_else() {
        let (_t, d) = setup();
        let r = d.root();
        for n in [".a.nvec.tmp.123.0", ".auto_20200101_000000.snapshot.tmp.9.17"] {
            fs::write(r.join(n), b"x").unwrap();
        }
        let keep = [
            ".a.nvec.tmp.x.0",
            ".a.nvec.tmp.1",
            "a.nvec.tmp.1.2",
            ".tmp.1.2",
            ".a.nvec.tmp.1.2.bak",
            "a.nvec",
        ];
        for n in keep {
            fs::write(r.join(n), b"x").unwrap();
        }
        fs::create_dir(r.join(".d.tmp.1.2")).unwrap();
        assert_eq!(d.remove_stray_temp_files().unwrap(), 2);
        let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        want.push(".d.tmp.1.2".into());
        want.sort();
        assert_eq!(entries(&d), want);
    }

    /// Regression: DUMP SAVE to a legal 255-byte name failed with `File name
    /// too long`, because its temp name `.<name>.tmp.<pid>.<n>` exceeded
    /// NAME_MAX. The temp name now shortens `<name>` to fit.
    #[test]
    fn regression_a_255_byte_target_name_can_be_written() {
        let (_t, d) = setup();
        for name in ["a".repeat(250) + ".nvec", "é".repeat(125) + "xyzab"] {
            assert_eq!(name.len(), 255);
            let target = d.resolve_for_save(&name).unwrap();
            d.write_atomically(&target, false, |f| {
                f.write_all(b"data").map_err(|e| map_io(e, &target, &target))
            })
            .unwrap();
            assert_eq!(fs::read(&target).unwrap(), b"data");
            assert_eq!(entries(&d), vec![name.clone()]);
            fs::remove_file(&target).unwrap();
        }
        for (name, pid, n) in [
            ("a".repeat(255), u32::MAX, u64::MAX),
            ("é".repeat(127), 1, 2),
            ("x".into(), 7, 0),
        ] {
            let t = temp_name(&name, pid, n);
            assert!(t.len() <= NAME_MAX, "{t}");
            assert!(is_temp_name(&t), "{t}");
        }
        assert_eq!(temp_name("a.nvec", 12, 3), ".a.nvec.tmp.12.3");
    }

    /// Regression: `/` and other absolute paths outside the directory that end
    /// in `/` got `Invalid path` instead of SPEC 4.2's `Invalid path: must be
    /// inside <dir>`.
    #[test]
    fn regression_absolute_paths_ending_in_slash_outside_are_outside() {
        let (_t, d) = setup();
        for p in ["/", "/etc/", "/tmp/"] {
            assert!(err(&d, p).starts_with("Invalid path: must be inside "), "{p}");
        }
        let inside = format!("{}/", d.root().display());
        assert_eq!(err(&d, &inside), "Invalid path");
        assert_eq!(err(&d, "x/"), "Invalid path");
    }

    #[test]
    fn temp_names_are_recognised() {
        assert!(is_temp_name(".x.nvec.tmp.1.2"));
        assert!(!is_temp_name("x.nvec.tmp.1.2"));
        assert!(!is_temp_name(".x.nvec.tmp.1"));
        assert!(!is_temp_name(".x.nvec.tmp.1.a"));
    }

    #[test]
    fn snapshot_written_atomically_verifies() {
        use crate::snapshot::testkit::Model;
        let (_t, d) = setup();
        let target = d.resolve_for_save("m.nvec").unwrap();
        let summary = d
            .write_atomically(&target, false, |f| {
                crate::snapshot::write_source(f, &Model::default(), 1_700_000_000, &target)
            })
            .unwrap();
        let mut f = d.open_for_read(&target).unwrap();
        let rep = crate::snapshot::verify_file(&mut f, &target, Default::default()).unwrap();
        assert_eq!(rep.crc, summary.crc);
    }
}
