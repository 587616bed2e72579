//! Snapshot files written around the page cache (`O_DIRECT`).
//!
//! A SAVE through the page cache costs the kernel a copy of every byte into
//! freshly allocated cache pages, which on the machines we measured took
//! longer than encoding the snapshot itself (BENCHMARKS.md: 2.0–6.4 s of
//! system time for a 2.5 GB file, `dd conv=fsync` 0.5–1 GB/s against
//! 2.2–2.6 GB/s with `oflag=direct`). [`DirectOut`] gathers the writer's
//! bytes in a 4 KiB-aligned buffer and writes it in whole aligned blocks
//! with `O_DIRECT` set on the temp file, so the data goes from that buffer
//! to the device. The writer's few seeks back (each section's length and
//! counts, the header) rewrite their 4 KiB block: from the buffer when it
//! is still there, else read back and written again. The last, partial
//! block is written padded and the file cut to its length. Everything
//! reaches the file through `TempFile`'s `Write` and `Seek`, so the
//! `FileOps` seam (and its fault injection) sees every write.
//!
//! The buffer is written by a second thread while the writer fills another
//! ([`write_direct`]), so encoding and the device's transfer overlap; the
//! writer learns of a failed write at its next full buffer.
//!
//! Where the filesystem refuses `O_DIRECT` (`EINVAL` when setting it or on a
//! write, e.g. tmpfs on older kernels) the file is written through the page
//! cache instead, with the same bytes; the caller's `fsync` covers both.
use super::files::TempFile;
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Mutex, PoisonError};

/// Alignment of `O_DIRECT` offsets, lengths and memory: 4 KiB suits every
/// logical block size in use (512 B and 4 KiB).
const BLOCK: usize = 4096;

/// Default buffer: 4 MiB, written in one call when full.
const DEFAULT_BLOCKS: usize = 1024;

/// One aligned block of a buffer.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// The blocks as one byte slice.
fn bytes(blocks: &mut [Block]) -> &mut [u8] {
    let n = blocks.len() * BLOCK;
    // SAFETY: `Block` is `repr(C)` around `[u8; BLOCK]` and its size equals
    // its alignment, so `blocks` is `n` contiguous initialised bytes, borrowed
    // mutably for the slice's lifetime.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), n) }
}

/// Runs `f` with a [`DirectOut`] over `file` (empty, at offset 0), then
/// writes what is left and waits for the writing thread. Returns `f`'s
/// result and the outcome of that last step (`Ok(true)` if the file was
/// written around the page cache to the end).
pub fn write_direct<T>(
    file: &mut TempFile<'_>,
    f: impl FnOnce(&mut DirectOut) -> T,
) -> (T, io::Result<bool>) {
    write_direct_with(file, DEFAULT_BLOCKS, true, f)
}

/// `write_direct` with buffers of `blocks` blocks, trying `O_DIRECT` only if
/// `try_direct`.
pub fn write_direct_with<T>(
    file: &mut TempFile<'_>,
    blocks: usize,
    try_direct: bool,
    f: impl FnOnce(&mut DirectOut) -> T,
) -> (T, io::Result<bool>) {
    let direct = try_direct && set_direct(file, true).is_ok();
    let failed = Mutex::new(None);
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel(1);
        let (back_tx, back) = channel();
        let (synced_tx, synced) = channel();
        let disk = Disk {
            file,
            direct,
            broken: false,
            failed: &failed,
        };
        let writer = s.spawn(move || disk.run(rx, back_tx, synced_tx));
        let blocks = blocks.max(1);
        let mut out = DirectOut {
            tx,
            back,
            synced,
            failed: &failed,
            cur: vec![Block([0; BLOCK]); blocks],
            spare: Some(vec![Block([0; BLOCK]); blocks]),
            start: 0,
            len: 0,
            pos: 0,
            end: 0,
            dirty: true,
        };
        let value = f(&mut out);
        let last = out.flush();
        drop(out);
        let direct = writer.join().unwrap_or(false);
        (value, last.map(|()| direct))
    })
}

/// A command to the writing thread.
enum Cmd {
    /// Write `n` bytes of `blocks` at `at` (padded to whole blocks when
    /// direct); send the buffer back if `reuse`.
    Write {
        at: u64,
        blocks: Vec<Block>,
        n: usize,
        reuse: bool,
    },
    /// Change the written bytes at `at` to `data`.
    Patch { at: u64, data: Vec<u8> },
    /// Cut the file to this length.
    Cut(u64),
    /// Report the first error since the last `Sync`, if any.
    Sync,
}

/// The writing thread's side: the file and whether it is still direct.
struct Disk<'t, 'a, 'f> {
    file: &'t mut TempFile<'a>,
    direct: bool,
    /// A write failed: the rest is skipped.
    broken: bool,
    failed: &'f Mutex<Option<io::Error>>,
}

impl Disk<'_, '_, '_> {
    fn run(mut self, rx: Receiver<Cmd>, back: Sender<Vec<Block>>, synced: Sender<io::Result<()>>) -> bool {
        for cmd in rx {
            let r = match cmd {
                Cmd::Write {
                    at,
                    mut blocks,
                    n,
                    reuse,
                } => {
                    let n = if self.direct { n.div_ceil(BLOCK) * BLOCK } else { n };
                    let r = self
                        .skip_if_broken(|d| d.write_at(at, bytes(&mut blocks).get(..n).unwrap_or_default()));
                    if reuse {
                        let _ = back.send(blocks);
                    }
                    r
                }
                Cmd::Patch { at, data } => self.skip_if_broken(|d| d.patch(at, &data)),
                Cmd::Cut(end) => self.skip_if_broken(|d| d.file.as_file().set_len(end)),
                Cmd::Sync => {
                    let first = self.failed.lock().unwrap_or_else(PoisonError::into_inner).take();
                    let r = match first {
                        Some(e) => Err(e),
                        // Reported once already, at a full buffer.
                        None if self.broken => Err(io::Error::other("an earlier snapshot write failed")),
                        None => Ok(()),
                    };
                    let _ = synced.send(r);
                    Ok(())
                }
            };
            if let Err(e) = r {
                self.broken = true;
                self.failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(e);
            }
        }
        self.direct
    }

    fn skip_if_broken(&mut self, f: impl FnOnce(&mut Self) -> io::Result<()>) -> io::Result<()> {
        if self.broken {
            Ok(())
        } else {
            f(self)
        }
    }

    /// Writes `data` at `at`. An `EINVAL` from a direct write (a filesystem
    /// with larger blocks) turns `O_DIRECT` off and writes again; so does a
    /// short direct write, which leaves the rest unaligned.
    fn write_at(&mut self, at: u64, data: &[u8]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(at))?;
        let mut done = 0;
        while done < data.len() {
            match self.file.write(data.get(done..).unwrap_or_default()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => done += w,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.buffered()?;
                    self.file.seek(SeekFrom::Start(at + done as u64))?;
                }
                Err(e) => return Err(e),
            }
            if self.direct && done < data.len() && done % BLOCK != 0 {
                self.buffered()?;
            }
        }
        Ok(())
    }

    /// From now on through the page cache.
    fn buffered(&mut self) -> io::Result<()> {
        self.direct = false;
        set_direct(self.file, false)
    }

    /// Changes written bytes: each block they touch is read back, changed
    /// and written again.
    fn patch(&mut self, mut at: u64, mut data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut block = [Block([0; BLOCK])];
        while !data.is_empty() {
            let block_at = at - at % BLOCK as u64;
            let within = (at - block_at) as usize;
            let n = data.len().min(BLOCK - within);
            self.file.as_file().read_exact_at(&mut block[0].0, block_at)?;
            if let (Some(dst), Some(src)) = (block[0].0.get_mut(within..within + n), data.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.write_at(block_at, bytes(&mut block))?;
            at += n as u64;
            data = data.get(n..).unwrap_or_default();
        }
        Ok(())
    }
}

/// A `Write + Seek` over a fresh temp file: full buffers go to the writing
/// thread, seeks back into written bytes become patches. Made by
/// [`write_direct`].
pub struct DirectOut<'s> {
    tx: SyncSender<Cmd>,
    back: Receiver<Vec<Block>>,
    synced: Receiver<io::Result<()>>,
    failed: &'s Mutex<Option<io::Error>>,
    /// The buffer being filled, and the other one while it is not writing.
    cur: Vec<Block>,
    spare: Option<Vec<Block>>,
    /// File offset of `cur`'s first byte (a multiple of `BLOCK`); all bytes
    /// before it have been handed to the writing thread.
    start: u64,
    /// Bytes of `cur` in use.
    len: usize,
    /// The position of the next write.
    pos: u64,
    /// The file's length so far.
    end: u64,
    /// Written to since the last flush.
    dirty: bool,
}

fn stopped() -> io::Error {
    io::Error::other("snapshot writing thread stopped")
}

impl DirectOut<'_> {
    fn send(&self, cmd: Cmd) -> io::Result<()> {
        self.tx.send(cmd).map_err(|_| stopped())
    }

    /// A write that failed on the writing thread, once.
    fn failure(&self) -> io::Result<()> {
        match self.failed.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `cur` is full and the position at its end: hands it over and takes
    /// the other buffer.
    fn spill(&mut self) -> io::Result<()> {
        self.failure()?;
        let next = match self.spare.take() {
            Some(b) => b,
            None => self.back.recv().map_err(|_| stopped())?,
        };
        let full = std::mem::replace(&mut self.cur, next);
        let n = full.len() * BLOCK;
        self.send(Cmd::Write {
            at: self.start,
            blocks: full,
            n,
            reuse: true,
        })?;
        self.start += n as u64;
        self.len = 0;
        Ok(())
    }
}

impl Write for DirectOut<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let n = if self.pos < self.start {
            let before = usize::try_from(self.start - self.pos).unwrap_or(usize::MAX);
            let n = data.len().min(before);
            self.send(Cmd::Patch {
                at: self.pos,
                data: data.get(..n).unwrap_or_default().to_vec(),
            })?;
            n
        } else {
            let cap = self.cur.len() * BLOCK;
            let mut i = usize::try_from(self.pos - self.start).unwrap_or(usize::MAX);
            if i > self.len {
                // Nothing seeks past the end of what was written.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "write past the end of the file",
                ));
            }
            if i == cap {
                self.spill()?;
                i = 0;
            }
            let n = data.len().min(cap - i);
            if let (Some(dst), Some(src)) = (bytes(&mut self.cur).get_mut(i..i + n), data.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.len = self.len.max(i + n);
            n
        };
        self.pos += n as u64;
        self.end = self.end.max(self.pos);
        self.dirty = true;
        Ok(n)
    }

    /// Writes what is buffered (the last block padded with zeros where
    /// direct), cuts the file to its length and waits until all of it is
    /// written. The buffer is kept: later writes go on from it.
    fn flush(&mut self) -> io::Result<()> {
        if !self.dirty {
            return self.failure();
        }
        if self.len > 0 {
            let used = self.len.div_ceil(BLOCK);
            if let Some(pad) = bytes(&mut self.cur).get_mut(self.len..used * BLOCK) {
                pad.fill(0);
            }
            let tail = self.cur.get(..used).unwrap_or_default().to_vec();
            self.send(Cmd::Write {
                at: self.start,
                blocks: tail,
                n: self.len,
                reuse: false,
            })?;
        }
        self.send(Cmd::Cut(self.end))?;
        self.send(Cmd::Sync)?;
        self.synced.recv().map_err(|_| stopped())??;
        self.dirty = false;
        Ok(())
    }
}

impl Seek for DirectOut<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.end.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

#[cfg(target_os = "linux")]
fn set_direct(file: &TempFile<'_>, on: bool) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_file().as_raw_fd();
    // SAFETY: plain fcntl calls on a descriptor this process owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let want = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if want != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, want) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &TempFile<'_>, on: bool) -> io::Result<()> {
    if on {
        Err(io::ErrorKind::Unsupported.into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::files::faults::Failing;
    use crate::snapshot::files::SnapshotDir;
    use std::io::Cursor;

    /// A step of a write script: write `n` bytes of a pattern, or seek.
    #[derive(Debug, Clone, Copy)]
    enum Op {
        Write(usize),
        Seek(u64),
        End,
        Flush,
    }

    fn apply<W: Write + Seek>(w: &mut W, ops: &[Op], seed: &mut u8) {
        for op in ops {
            match *op {
                Op::Write(n) => {
                    let data: Vec<u8> = (0..n)
                        .map(|_| {
                            *seed = seed.wrapping_mul(31).wrapping_add(7);
                            *seed
                        })
                        .collect();
                    w.write_all(&data).unwrap();
                }
                Op::Seek(p) => {
                    w.seek(SeekFrom::Start(p)).unwrap();
                }
                Op::End => {
                    w.seek(SeekFrom::End(0)).unwrap();
                }
                Op::Flush => w.flush().unwrap(),
            }
        }
    }

    /// The script through `DirectOut` (buffer of `blocks` blocks) into a temp
    /// file, and the file's bytes; whether it stayed direct.
    fn through_direct(ops: &[Op], blocks: usize, try_direct: bool) -> (Vec<u8>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let d = SnapshotDir::open(dir.path()).unwrap();
        let target = d.root().join("t.bin");
        let direct = d
            .write_atomically(&target, false, |f| {
                let ((), done) = write_direct_with(f, blocks, try_direct, |out| apply(out, ops, &mut 1));
                Ok(done.unwrap())
            })
            .unwrap();
        (std::fs::read(&target).unwrap(), direct)
    }

    fn through_memory(ops: &[Op]) -> Vec<u8> {
        let mut c = Cursor::new(Vec::new());
        apply(&mut c, ops, &mut 1);
        c.into_inner()
    }

    #[test]
    fn writes_and_patches_give_the_bytes_of_a_plain_file() {
        use Op::*;
        let scripts: Vec<Vec<Op>> = vec![
            vec![],
            vec![Write(1)],
            vec![Write(4096)],
            vec![Write(3 * 4096 + 17), Seek(0), Write(40), End, Write(8)],
            // The writer's pattern: placeholders, records, patches back.
            vec![
                Write(40),
                Write(20),
                Write(30_000),
                Seek(40),
                Write(20),
                End,
                Write(4),
                Write(12),
                Write(50_001),
                Seek(30_064),
                Write(12),
                End,
                Write(4),
                Write(8),
                Seek(0),
                Write(40),
                End,
                Flush,
            ],
            // Patches across a block boundary, across the buffer's start,
            // inside the buffer, and writes after a flush.
            vec![
                Write(20_000),
                Seek(4090),
                Write(12),
                Seek(8190),
                Write(5000),
                End,
                Write(3),
                Flush,
                Write(9000),
                Seek(16_000),
                Write(9000),
                Flush,
                End,
                Write(1),
            ],
        ];
        let mut any_direct = false;
        for (i, ops) in scripts.iter().enumerate() {
            let want = through_memory(ops);
            for blocks in [1, 2, 3, 64] {
                for try_direct in [true, false] {
                    let (got, direct) = through_direct(ops, blocks, try_direct);
                    assert!(
                        got == want,
                        "script {i}, {blocks} blocks, direct {try_direct}/{direct}"
                    );
                    if !try_direct {
                        assert!(!direct);
                    }
                    any_direct |= direct;
                }
            }
        }
        // Where the temp directory's filesystem refuses O_DIRECT, only the
        // fallback ran.
        println!("O_DIRECT in use: {any_direct}");
    }

    #[test]
    fn a_failed_write_stops_the_writer_at_its_next_buffer_with_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let ops = std::sync::Arc::new(Failing::full_after(20 * BLOCK as u64));
        let d = SnapshotDir::with_ops(dir.path(), ops).unwrap();
        let target = d.root().join("full.bin");
        let r = d.write_atomically(&target, false, |f| {
            let (stopped_at, done) = write_direct_with(f, 1, true, |out| {
                for i in 0..100 {
                    if let Err(e) = out.write_all(&[7u8; BLOCK]) {
                        return Some((i, e));
                    }
                }
                None
            });
            let (i, e) = stopped_at.expect("a write failed");
            assert!(i < 30, "stopped only at block {i}");
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            assert!(done.is_err());
            Err::<(), _>(crate::snapshot::files::map_io(e, &target, &target))
        });
        assert!(r.unwrap_err().to_string().contains("No space left on device"));
        assert!(!target.exists());
    }
}
