//! Replays the fuzzing corpus (`fuzz/corpus/<target>/`) and every saved finding
//! (`fuzz/regressions/<target>/`) through the same target bodies the fuzzers run
//! (`gatehouse::fuzzing`), so the test command keeps them passing on stable.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};

use gatehouse::fuzzing::TARGETS;

const KINDS: [&str; 2] = ["corpus", "regressions"];

fn fuzz_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Runs every input of `target` and returns how many there were; fails naming each input
/// that panicked.
fn replay(target: &str) -> usize {
    let (_, body) = TARGETS.iter().find(|(name, _)| *name == target).unwrap();
    let mut count = 0;
    let mut failed = Vec::new();
    for kind in KINDS {
        for file in files(&fuzz_dir(kind).join(target)) {
            let data = std::fs::read(&file).unwrap();
            count += 1;
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "inputs that fail: {failed:#?}");
    count
}

/// One test per target, and the list of them.
macro_rules! replays {
    ($($target:ident),* $(,)?) => {
        pub const REPLAYED: &[&str] = &[$(stringify!($target)),*];
        $(
            #[test]
            fn $target() {
                let n = replay(stringify!($target));
                assert!(n > 0, "fuzz/corpus/{} is empty", stringify!($target));
            }
        )*
    };
}

mod every_input_of_the_corpus_and_the_regressions_passes {
    use super::replay;
    replays!(
        cookie_jar,
        return_to,
        route_match,
        callback_query,
        logout_token,
        discovery,
        jwks,
        config
    );
}

#[test]
fn every_corpus_directory_is_a_target_and_every_target_is_built_and_replayed() {
    for kind in KINDS {
        for dir in files(&fuzz_dir(kind)) {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/{kind}/{name} belongs to no target"
            );
        }
    }
    let sources = files(&fuzz_dir("fuzz_targets"));
    assert_eq!(
        sources.len(),
        TARGETS.len(),
        "fuzz/fuzz_targets and fuzzing::TARGETS differ"
    );
    let manifest = std::fs::read_to_string(fuzz_dir("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        let source = fuzz_dir(&format!("fuzz_targets/{name}.rs"));
        let text = std::fs::read_to_string(&source).unwrap();
        assert!(
            text.contains(&format!("gatehouse::fuzzing::{name}(data)")),
            "{name}.rs"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml lacks {name}"
        );
    }
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        every_input_of_the_corpus_and_the_regressions_passes::REPLAYED
    );
}
