//! The layering rules, checked on the source: the store is below the core (nothing under
//! `src/store/` names `crate::core`), the core does not know which backend answers (nothing
//! under `src/core/` names `rusqlite` or `postgres::`), and a dialect is a leaf (none names
//! another). What both the store and the core need sits below both, in `src/base/`.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, in name order.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out
}

fn src(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir)
}

/// True when `line` holds `word` not followed by another identifier character
/// (`super::iqm` but not `super::iqm_x`).
fn names(line: &str, word: &str) -> bool {
    line.match_indices(word)
        .any(|(i, _)| !line[i + word.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
}

/// `file:line: text` for every line of the files under `dir` that `bad` finds.
fn offences(dir: &str, bad: impl Fn(&Path, &str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for path in sources(&src(dir)) {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (n, line) in text.lines().enumerate() {
            if bad(&path, line) {
                let shown = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(&path).display().to_string();
                out.push(format!("{shown}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    out
}

#[test]
fn the_store_does_not_import_the_core() {
    let found = offences("store", |_, line| line.contains("crate::core"));
    assert!(
        found.is_empty(),
        "the store names the core (it speaks store::Error and its own rows):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_core_does_not_name_a_backend() {
    let found = offences("core", |_, line| names(line, "rusqlite") || line.contains("postgres::"));
    assert!(found.is_empty(), "the core names a backend (the store maps its errors):\n{}", found.join("\n"));
}

#[test]
fn no_dialect_imports_another() {
    let dialects: Vec<String> = sources(&src("dialect"))
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| s != "mod")
        .collect();
    assert!(dialects.len() >= 4, "the dialects are not where this test looks: {dialects:?}");
    let found = offences("dialect", |path, line| {
        let own = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if own == "mod" {
            return false;
        }
        line.contains("crate::dialect::")
            || dialects.iter().filter(|d| **d != own).any(|d| names(line, &format!("super::{d}")))
    });
    assert!(
        found.is_empty(),
        "a dialect names another (what two share goes to the core or web/):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    assert!(names("use super::iqm::x;", "super::iqm"));
    assert!(names("super::iqm", "super::iqm"));
    assert!(!names("use super::iqm_shared;", "super::iqm"));
    assert!(!names("use super::*;", "super::iqm"));
}
