//! What the kernel (and, in a VM, the host) charges for memory a process
//! touches for the first time: maps `GB` gigabytes, writes one byte per 4 KiB
//! page, then writes the whole range again, and unmaps it; twice. A LOAD
//! builds its new store in memory like this (BENCHMARKS.md, "DUMP LOAD").
//!
//! `cargo run --release --example first_touch -- [GB=2.3]`

use std::time::Instant;

fn main() {
    let gb: f64 = std::env::args().nth(1).map_or(2.3, |s| s.parse().expect("GB"));
    let len = (gb * 1e9) as usize;
    for round in 1..=2 {
        // SAFETY: a fresh private anonymous mapping, written only inside its
        // length and unmapped before the next round.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert!(p != libc::MAP_FAILED, "mmap of {len} bytes failed");
            let bytes = p.cast::<u8>();
            let t = Instant::now();
            for at in (0..len).step_by(4096) {
                bytes.add(at).write_volatile(1);
            }
            let first = t.elapsed().as_secs_f64();
            let t = Instant::now();
            std::ptr::write_bytes(bytes, 2, len);
            let again = t.elapsed().as_secs_f64();
            println!(
                "round {round}: first touch {first:.3} s ({:.2} GB/s), then writing it all {again:.3} s ({:.2} GB/s)",
                gb / first,
                gb / again
            );
            libc::munmap(p, len);
        }
    }
}
