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
//! Where the filesystem refuses `O_DIRECT` (`EINVAL` when setting it or on a
//! write, e.g. tmpfs on older kernels) the file is written through the page
//! cache instead, with the same bytes; the caller's `fsync` covers both.
use super::files::TempFile;
use std::io::{self, Seek, SeekFrom, Write};

/// Alignment of `O_DIRECT` offsets, lengths and memory: 4 KiB suits every
/// logical block size in use (512 B and 4 KiB).
const BLOCK: usize = 4096;

/// Default buffer: 4 MiB, written in one call when full.
const DEFAULT_BLOCKS: usize = 1024;

/// One aligned block of the buffer.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// A `Write + Seek` over a fresh temp file that writes whole aligned
/// blocks with `O_DIRECT` when the filesystem allows it.
pub struct DirectOut<'t, 'a> {
    file: &'t mut TempFile<'a>,
    direct: bool,
    blocks: Vec<Block>,
    /// File offset of the buffer's first byte (a multiple of `BLOCK`); all
    /// bytes before it are in the file.
    start: u64,
    /// Bytes of the buffer in use.
    len: usize,
    /// The position of the next write.
    pos: u64,
    /// The file's length so far.
    end: u64,
}

impl<'t, 'a> DirectOut<'t, 'a> {
    /// Wraps `file`, which must be empty and positioned at 0.
    pub fn new(file: &'t mut TempFile<'a>) -> Self {
        Self::with_blocks(file, DEFAULT_BLOCKS, true)
    }

    /// `new` with a buffer of `blocks` blocks, trying `O_DIRECT` only if
    /// `try_direct`.
    pub fn with_blocks(file: &'t mut TempFile<'a>, blocks: usize, try_direct: bool) -> Self {
        let direct = try_direct && set_direct(file, true).is_ok();
        DirectOut {
            file,
            direct,
            blocks: vec![Block([0; BLOCK]); blocks.max(1)],
            start: 0,
            len: 0,
            pos: 0,
            end: 0,
        }
    }

    /// Whether writes currently bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn cap(&self) -> usize {
        self.blocks.len() * BLOCK
    }

    /// Writes `buf[..n]` at file offset `at`; `n` is a multiple of `BLOCK`
    /// unless the page cache is in use. An `EINVAL` from a direct write (a
    /// filesystem with larger blocks) turns `O_DIRECT` off and writes again.
    fn write_out(&mut self, at: u64, n: usize) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(at))?;
        let mut done = 0;
        while done < n {
            let r = match bytes(&mut self.blocks).get(done..n) {
                Some(b) => self.file.write(b),
                None => return Err(io::ErrorKind::InvalidInput.into()),
            };
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => done += w,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.buffered()?;
                    self.file.seek(SeekFrom::Start(at + done as u64))?;
                }
                Err(e) => return Err(e),
            }
            // A short direct write leaves the rest unaligned.
            if self.direct && done < n && done % BLOCK != 0 {
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

    /// The buffer is full and the position at its end: writes it all.
    fn spill(&mut self) -> io::Result<()> {
        let cap = self.cap();
        self.write_out(self.start, cap)?;
        self.start += cap as u64;
        self.len = 0;
        Ok(())
    }

    /// Writes `data` at `self.pos`, which is before the buffer: reads the
    /// block back, changes it, writes it again. Returns the bytes taken
    /// (up to the end of that block or the buffer's start).
    fn patch(&mut self, data: &[u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let block_at = self.pos - self.pos % BLOCK as u64;
        let within = (self.pos - block_at) as usize;
        let n = data.len().min(BLOCK - within);
        let mut block = [Block([0; BLOCK])];
        self.file.as_file().read_exact_at(&mut block[0].0, block_at)?;
        if let (Some(dst), Some(src)) = (block[0].0.get_mut(within..within + n), data.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.file.seek(SeekFrom::Start(block_at))?;
        let mut done = 0;
        while done < BLOCK {
            match self.file.write(bytes(&mut block).get(done..).unwrap_or_default()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => done += w,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.buffered()?;
                    self.file.seek(SeekFrom::Start(block_at + done as u64))?;
                }
                Err(e) => return Err(e),
            }
            if self.direct && done < BLOCK && done % BLOCK != 0 {
                self.buffered()?;
            }
        }
        Ok(n)
    }
}

/// The blocks as one byte slice.
fn bytes(blocks: &mut [Block]) -> &mut [u8] {
    let n = blocks.len() * BLOCK;
    // SAFETY: `Block` is `repr(C)` around `[u8; BLOCK]` and its size equals
    // its alignment, so `blocks` is `n` contiguous initialised bytes, borrowed
    // mutably for the slice's lifetime.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), n) }
}

impl Write for DirectOut<'_, '_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let n = if self.pos < self.start {
            let before = usize::try_from(self.start - self.pos).unwrap_or(usize::MAX);
            self.patch(data.get(..data.len().min(before)).unwrap_or_default())?
        } else {
            let cap = self.cap();
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
            if let (Some(dst), Some(src)) = (bytes(&mut self.blocks).get_mut(i..i + n), data.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.len = self.len.max(i + n);
            n
        };
        self.pos += n as u64;
        self.end = self.end.max(self.pos);
        Ok(n)
    }

    /// Writes what is buffered, the last block padded, and cuts the file
    /// to its length. The buffer is kept: later writes go on from it.
    fn flush(&mut self) -> io::Result<()> {
        if self.len > 0 {
            let padded = self.len.div_ceil(BLOCK) * BLOCK;
            if let Some(pad) = bytes(&mut self.blocks).get_mut(self.len..padded) {
                pad.fill(0);
            }
            let n = if self.direct { padded } else { self.len };
            self.write_out(self.start, n)?;
        }
        self.file.as_file().set_len(self.end)?;
        self.file.seek(SeekFrom::Start(self.pos))?;
        Ok(())
    }
}

impl Seek for DirectOut<'_, '_> {
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
                let mut out = DirectOut::with_blocks(f, blocks, try_direct);
                apply(&mut out, ops, &mut 1);
                out.flush().unwrap();
                Ok(out.is_direct())
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
}
