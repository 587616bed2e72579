//! Path attacks on DUMP SAVE, LOAD, VERIFY and INFO: every case of SPEC 4.2
//! plus `./x`, an empty name, `.`, `/`, trailing `/`, names of 255 and 256
//! bytes, 4097-byte paths, control characters, a directory symlink leading
//! outside, symlinks at the target name (outside, dangling, inside), and a
//! directory at the target name. Each reply's first line is checked exactly,
//! and nothing outside `snapshot.dir` is created, changed or read: the rest
//! of the server's temp dir (with a valid snapshot planted outside) is
//! compared entry by entry before and after, and refused LOADs leave the live
//! data unchanged. `cargo test --test it rel_paths -- --nocapture`.

use crate::rel_util::{first_line, live, seed_live, tree, valid_golden};
use crate::support::TestServer;

const CMDS: [&str; 4] = ["SAVE", "LOAD", "VERIFY", "INFO"];

#[test]
fn path_attacks_get_exact_replies_and_touch_nothing_outside_the_directory() {
    let s = TestServer::spawn();
    let mut c = s.client();
    seed_live(&mut c);
    let dir = s.snapshot_dir();
    let configured = s.dir.path().join("snapshots").display().to_string();
    let outside = s.dir.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    // a valid snapshot outside: reading it through any path would show
    std::fs::write(outside.join("secret.nvec"), valid_golden()).expect("secret");
    std::fs::write(outside.join("note.txt"), b"do not touch").expect("note");
    let link =
        |to: &std::path::Path, name: &str| std::os::unix::fs::symlink(to, dir.join(name)).expect("symlink");
    link(&outside, "dirlink");
    link(&outside.join("secret.nvec"), "filelink.nvec");
    link(&outside.join("new.nvec"), "dangling.nvec");
    std::fs::create_dir(dir.join("adir")).expect("mkdir");
    let sentinel = || {
        let mut t = tree(s.dir.path());
        t.retain(|p, _| !p.starts_with("snapshots"));
        t
    };
    let before = sentinel();
    let live_before = live(&mut c);

    let inside = format!("(error) Invalid path: must be inside {configured}");
    let dotdot = "(error) Invalid path: '..' is not allowed".to_string();
    let invalid = "(error) Invalid path".to_string();
    let n256 = "a".repeat(251) + ".nvec";
    let long_missing = "b/".repeat(2048) + "x";
    let long_name = "c".repeat(4097);
    let too_long = |p: &str| {
        format!(
            "(error) I/O error on {}: File name too long (os error 36)",
            dir.join(p).display()
        )
    };
    let secret_abs = outside.join("secret.nvec").display().to_string();
    let root_abs = dir.display().to_string();
    let root_slash = format!("{root_abs}/");
    let cases: Vec<(String, [String; 4])> = vec![
        ("../x".into(), [0, 1, 2, 3].map(|_| dotdot.clone())),
        ("a/../x".into(), [0, 1, 2, 3].map(|_| dotdot.clone())),
        ("..".into(), [0, 1, 2, 3].map(|_| dotdot.clone())),
        (
            "../outside/secret.nvec".into(),
            [0, 1, 2, 3].map(|_| dotdot.clone()),
        ),
        ("/".into(), [0, 1, 2, 3].map(|_| inside.clone())),
        ("/etc/passwd".into(), [0, 1, 2, 3].map(|_| inside.clone())),
        ("/etc/".into(), [0, 1, 2, 3].map(|_| inside.clone())),
        (secret_abs, [0, 1, 2, 3].map(|_| inside.clone())),
        ("dirlink".into(), [0, 1, 2, 3].map(|_| inside.clone())),
        ("dirlink/x.nvec".into(), [0, 1, 2, 3].map(|_| inside.clone())),
        ("dirlink/secret.nvec".into(), [0, 1, 2, 3].map(|_| inside.clone())),
        ("filelink.nvec".into(), [0, 1, 2, 3].map(|_| inside.clone())),
        ("dangling.nvec".into(), [0, 1, 2, 3].map(|_| inside.clone())),
        (".".into(), [0, 1, 2, 3].map(|_| invalid.clone())),
        ("x/".into(), [0, 1, 2, 3].map(|_| invalid.clone())),
        ("adir".into(), [0, 1, 2, 3].map(|_| invalid.clone())),
        ("adir/".into(), [0, 1, 2, 3].map(|_| invalid.clone())),
        (root_abs, [0, 1, 2, 3].map(|_| invalid.clone())),
        (root_slash, [0, 1, 2, 3].map(|_| invalid.clone())),
        ("x\u{0}y".into(), [0, 1, 2, 3].map(|_| invalid.clone())),
        ("x\u{1}y".into(), [0, 1, 2, 3].map(|_| invalid.clone())),
        ("x\u{7f}y".into(), [0, 1, 2, 3].map(|_| invalid.clone())),
        ("x\u{85}y".into(), [0, 1, 2, 3].map(|_| invalid.clone())),
        (n256.clone(), [0, 1, 2, 3].map(|_| too_long(&n256))),
        (long_name.clone(), [0, 1, 2, 3].map(|_| too_long(&long_name))),
        (
            long_missing.clone(),
            [0, 1, 2, 3].map(|_| format!("(error) File not found: {}", dir.join(&long_missing).display())),
        ),
        (
            "auto_20200101_000000.snapshot".into(),
            [
                "(error) Invalid path: auto_ names are reserved for automatic snapshots".to_string(),
                format!(
                    "(error) File not found: {}",
                    dir.join("auto_20200101_000000.snapshot").display()
                ),
                format!(
                    "(error) File not found: {}",
                    dir.join("auto_20200101_000000.snapshot").display()
                ),
                format!(
                    "(error) File not found: {}",
                    dir.join("auto_20200101_000000.snapshot").display()
                ),
            ],
        ),
        (
            ".x.nvec.tmp.1.2".into(),
            [
                invalid.clone(),
                format!(
                    "(error) File not found: {}",
                    dir.join(".x.nvec.tmp.1.2").display()
                ),
                format!(
                    "(error) File not found: {}",
                    dir.join(".x.nvec.tmp.1.2").display()
                ),
                format!(
                    "(error) File not found: {}",
                    dir.join(".x.nvec.tmp.1.2").display()
                ),
            ],
        ),
    ];
    let mut checked = 0;
    for (path, want) in &cases {
        for (cmd, want) in CMDS.iter().zip(want) {
            let r = c.cmd(&format!("DUMP {cmd} {path}"));
            let shown: String = path.chars().take(40).collect();
            assert_eq!(
                &first_line(&r),
                want,
                "DUMP {cmd} {shown:?} ({} bytes)",
                path.len()
            );
            assert!(r.ends_with("END"), "{r}");
            checked += 1;
        }
    }
    // no path: SAVE picks the default name (trailing spaces are separators);
    // the others need a path
    for cmd in ["DUMP SAVE   ", "DUMP SAVE"] {
        let r = c.cmd(cmd);
        let p = first_line(&r);
        let name = p
            .strip_prefix(&format!("OK Snapshot saved: {}/", dir.display()))
            .expect("saved");
        assert!(name.starts_with("dump_") && name.ends_with(".nvec"), "{p}");
        checked += 1;
    }
    for cmd in ["LOAD", "VERIFY", "INFO"] {
        assert_eq!(
            c.cmd(&format!("DUMP {cmd}   ")),
            "(error) Invalid argument count\nEND"
        );
        checked += 1;
    }
    assert_eq!(live(&mut c), live_before, "refused commands changed live data");
    assert_eq!(sentinel(), before, "something outside snapshot.dir changed");
    assert_eq!(
        std::fs::read(outside.join("secret.nvec")).expect("secret"),
        valid_golden()
    );

    // names that are fine: ./x, a 255-byte name, an absolute path inside
    let n255 = "a".repeat(250) + ".nvec";
    let abs = dir.join("abs.nvec").display().to_string();
    for path in ["./x", n255.as_str(), abs.as_str()] {
        let shown: String = path.chars().take(40).collect();
        let r = c.cmd(&format!("DUMP SAVE {path}"));
        let name = if path == "./x" {
            "x"
        } else {
            path.rsplit('/').next().expect("name")
        };
        assert_eq!(
            first_line(&r),
            format!("OK Snapshot saved: {}", dir.join(name).display()),
            "{shown}"
        );
        for cmd in ["LOAD", "VERIFY", "INFO"] {
            let r = c.cmd(&format!("DUMP {cmd} {path}"));
            assert!(r.starts_with("OK "), "DUMP {cmd} {shown}: {r}");
        }
        checked += 4;
    }
    // a symlink at the target name pointing inside: LOAD/VERIFY/INFO follow
    // it; SAVE replaces the link itself with a regular file (rename(2)
    // semantics) and leaves the file it pointed to alone
    std::fs::copy(dir.join("x"), dir.join("target.nvec")).expect("copy");
    let target_bytes = std::fs::read(dir.join("target.nvec")).expect("read");
    link(&dir.join("target.nvec"), "inlink.nvec");
    for cmd in ["VERIFY", "INFO", "LOAD"] {
        assert!(
            c.cmd(&format!("DUMP {cmd} inlink.nvec")).starts_with("OK "),
            "{cmd}"
        );
    }
    assert_eq!(c.cmd("EVENT changed ADD z 9"), "OK");
    assert!(c.cmd("DUMP SAVE inlink.nvec").starts_with("OK Snapshot saved"));
    let meta = std::fs::symlink_metadata(dir.join("inlink.nvec")).expect("meta");
    assert!(meta.file_type().is_file(), "the link was replaced by a file");
    assert_eq!(
        std::fs::read(dir.join("target.nvec")).expect("read"),
        target_bytes
    );
    checked += 4;

    assert_eq!(sentinel(), before, "something outside snapshot.dir changed");
    println!(
        "{checked} path checks over SAVE/LOAD/VERIFY/INFO gave their exact replies; nothing outside snapshot.dir created, changed or read"
    );
}
