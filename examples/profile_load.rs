//! In-process profile of `DUMP LOAD` on an existing snapshot file: the CRC
//! pass alone (VERIFY), the reader's half (decode into batches) and the
//! store's half (apply them), each timed apart. A server LOAD runs the two
//! halves on two threads at once, so it takes about the slower one.
//!
//! The SAVE encodes on the saving thread, as the server does by default
//! (`snapshot.save_threads: 1`), so that thread's CPU time is the encoding's;
//! a second argument sets the threads as that key does. A third asks for
//! that many more encodings of the whole state into `/dev/null`, each with
//! the saving thread's CPU time (the encoding alone, without the disk).
//!
//! `cargo run --release --example profile_load -- <file.nvec> [save_threads=1] [encodings=0]`

use std::time::Instant;

use nvecd::snapshot::{load_file, verify_file, Encode, LoadOptions};
use nvecd::store::{LoadBatch, StoreBuilder, StoreConfig};

fn main() {
    let path = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: profile_load <file.nvec> [save_threads] [encodings]"),
    );
    let save_threads: usize = std::env::args()
        .nth(2)
        .map_or(1, |s| s.parse().expect("save_threads"));
    let encodings: usize = std::env::args()
        .nth(3)
        .map_or(0, |s| s.parse().expect("encodings"));
    let mb = std::fs::metadata(&path).expect("file").len() as f64 / 1e6;
    let opts = LoadOptions {
        default_dimension: 0,
        batch_records: 4096,
    };
    let open = || std::fs::File::open(&path).expect("open");
    let report = |what: &str, t: Instant| {
        let s = t.elapsed().as_secs_f64();
        println!("{what:<12} {s:7.3} s  {:7.1} MB/s", mb / s);
    };
    let t = Instant::now();
    verify_file(&mut open(), &path, opts).expect("verify");
    report("verify", t);
    let t = Instant::now();
    let mut batches = Vec::new();
    // When the reader handed over its first batch of each kind, and its last.
    let mut marks: Vec<(&str, f64)> = Vec::new();
    load_file(&mut open(), &path, opts, |b| {
        let kind = match b {
            LoadBatch::Contexts(_) => "contexts",
            LoadBatch::Pairs(_) => "pairs",
            LoadBatch::Dimension(_) | LoadBatch::Vectors(_) => "vectors",
        };
        if marks.last().map(|m| m.0) != Some(kind) {
            marks.push((kind, t.elapsed().as_secs_f64()));
        }
        batches.push(b);
        Ok(())
    })
    .expect("load");
    report("read half", t);
    let end = t.elapsed().as_secs_f64();
    let spans: Vec<String> = marks
        .iter()
        .enumerate()
        .map(|(i, (kind, at))| {
            let next = marks.get(i + 1).map_or(end, |m| m.1);
            format!("{kind} {:.3} s", next - at)
        })
        .collect();
    println!(
        "  of which (from each kind's first batch to the next's): {}",
        spans.join(", ")
    );
    let t = Instant::now();
    let mut b = StoreBuilder::new(StoreConfig::default());
    let mut spent = [0.0f64; 4];
    for batch in batches {
        let kind = match batch {
            LoadBatch::Contexts(_) => 0,
            LoadBatch::Pairs(_) => 1,
            LoadBatch::Dimension(_) | LoadBatch::Vectors(_) => 2,
        };
        let t = Instant::now();
        b.apply(batch).expect("apply");
        spent[kind] += t.elapsed().as_secs_f64();
    }
    let t_finish = Instant::now();
    let mut store = b.finish();
    spent[3] = t_finish.elapsed().as_secs_f64();
    report("build half", t);
    println!(
        "  of which: contexts {:.3} s, pairs {:.3} s, vectors {:.3} s, finish {:.3} s (with the rows left at the end of the pairs)",
        spent[0], spent[1], spent[2], spent[3]
    );
    println!("{:?}", store.stats());
    // SAVE of the loaded state into the same directory as the file.
    let out = path.with_extension("profile-save.tmp");
    let usage = || {
        // SAFETY: getrusage writes into the struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (secs(ru.ru_utime), secs(ru.ru_stime))
    };
    let (u0, s0) = usage();
    let t = Instant::now();
    let image = store.freeze();
    // As a DUMP SAVE does it: a temp file, O_DIRECT where allowed, fsync, rename.
    let dir = nvecd::snapshot::files::SnapshotDir::open(out.parent().expect("parent")).expect("dir");
    let mut written = 0.0;
    dir.write_atomically(&out, false, |f| {
        let (s, done) = nvecd::snapshot::direct::write_direct(f, |w| {
            nvecd::snapshot::write_source_with(w, &image, 0, &out, Encode::with_threads(save_threads))
        });
        written = t.elapsed().as_secs_f64();
        done.expect("direct write");
        s
    })
    .expect("write");
    report("save", t);
    let (u1, s1) = usage();
    println!(
        "  of which writing {written:.3} s, fsync the rest; thread user {:.3} s, system {:.3} s",
        u1 - u0,
        s1 - s0
    );
    let _ = std::fs::remove_file(&out);
    for _ in 0..encodings {
        let mut null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .expect("/dev/null");
        let (u0, s0) = usage();
        let t = Instant::now();
        let image = store.freeze();
        nvecd::snapshot::write_source_with(&mut null, &image, 0, &out, Encode::with_threads(save_threads))
            .expect("encode");
        let (u1, s1) = usage();
        println!(
            "encoding     {:7.3} s  thread user {:.3} s, system {:.3} s",
            t.elapsed().as_secs_f64(),
            u1 - u0,
            s1 - s0
        );
    }
    // SIM events as the bench asks it: items drawn Zipf-like (weight
    // 1/(rank+1)) over the items named in the file.
    let items = store.stats().vectors.max(1) as usize;
    let mut cum = Vec::with_capacity(items);
    let mut acc = 0.0;
    for r in 0..items {
        acc += 1.0 / (r as f64 + 1.0);
        cum.push(acc);
    }
    // A seeded draw: (the generator's next number, a Zipf item rank).
    let mut x: u64 = 42;
    let mut draw = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f64 / (1u64 << 53) as f64 * acc;
        (x, cum.partition_point(|&c| c < u).min(items - 1))
    };
    let mut lat = Vec::new();
    for _ in 0..2000 {
        let (_, k) = draw();
        let t = Instant::now();
        let _ = store.similar(&format!("item{k}"), 10, nvecd::store::SimMode::Events, None);
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "SIM events (Zipf items): p50 {:.3} ms p90 {:.3} ms p99 {:.3} ms",
        lat[1000], lat[1800], lat[1980]
    );
    // Single EVENTs into the file's contexts (the bench's `ctx<c>`, full
    // rings), timed one by one: right after a freeze (the copy-on-write a
    // save starts), then right after that image is dropped (the end of a
    // save), then with no image at all.
    let contexts = store.stats().contexts.max(1);
    let mut event = |store: &mut nvecd::store::Store| {
        let (x, k) = draw();
        let ctx = format!("ctx{}", x % contexts);
        let t = Instant::now();
        store.add_event(&ctx, nvecd::store::EventKind::Add, &format!("item{k}"), 50, 0);
        t.elapsed().as_secs_f64() * 1e3
    };
    let mut phase = |what: &str, store: &mut nvecd::store::Store| {
        let lat: Vec<f64> = (0..200).map(|_| event(store)).collect();
        let first: Vec<String> = lat.iter().take(5).map(|l| format!("{l:.3}")).collect();
        println!(
            "EVENTs {what}: first five {} ms; max {:.3} ms, sum {:.1} ms over {}",
            first.join(" "),
            lat.iter().copied().fold(0.0, f64::max),
            lat.iter().sum::<f64>(),
            lat.len()
        );
    };
    let t = Instant::now();
    let image = store.freeze();
    println!("freeze {:.3} ms", t.elapsed().as_secs_f64() * 1e3);
    phase("after a freeze", &mut store);
    drop(image);
    phase("after the image is dropped", &mut store);
    phase("with no image", &mut store);
}
