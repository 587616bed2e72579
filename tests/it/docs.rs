//! Keeps `actors.md` true: every `impl Handler<X> for Y` in `src/actors/`
//! must appear as a row of `Y`'s "Accepts" table, and the README must open with
//! the run and test commands that `.ci/run` uses.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_handler_is_documented_in_actors_md() {
    let doc = std::fs::read_to_string(root().join("actors.md")).expect("actors.md");
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("src/actors")).expect("src/actors") {
        let path = entry.expect("entry").path();
        let src = std::fs::read_to_string(&path).expect("read");
        for line in src.lines() {
            let Some(rest) = line.trim().strip_prefix("impl Handler<") else {
                continue;
            };
            let Some((msg, rest)) = rest.split_once("> for ") else {
                continue;
            };
            let actor = rest.trim_end_matches('{').trim();
            let section = doc
                .split("\n## ")
                .find(|s| s.starts_with(actor))
                .unwrap_or_else(|| panic!("actors.md has no section for {actor}"));
            let accepts = section
                .split("**Accepts:**")
                .nth(1)
                .unwrap_or_else(|| panic!("{actor}: no Accepts table"));
            assert!(
                accepts.lines().any(|l| l.starts_with(&format!("| {msg} |"))),
                "actors.md: {actor} handles {msg} but its Accepts table does not list it"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} handlers found");
}

#[test]
fn readme_opens_with_the_run_and_test_commands_and_ci_runs_the_test_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let head: String = readme.lines().take(20).collect::<Vec<_>>().join("\n");
    assert!(
        head.contains("cargo run --release"),
        "README must open with the run command"
    );
    assert!(
        head.contains("cargo test --locked"),
        "README must open with the test command"
    );
    let ci = std::fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test --locked"),
        ".ci/run must run the README's test command"
    );
}
