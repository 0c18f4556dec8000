//! `unsafe` code appears in one file of the workspace: `crates/pairing/src/ffi.rs`. The other
//! crates take the workspace's lints (`unsafe_code = "forbid"`), which no attribute can lift;
//! this crate only denies it, so this test checks that no other file of it (or of any crate)
//! writes `unsafe` blocks, functions, impls or lifts the lint.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn unsafe_code_is_confined_to_the_ffi_module() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let allowed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join("ffi.rs");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    assert!(
        files.len() > 50,
        "found only {} Rust files under {}",
        files.len(),
        crates.display()
    );
    let this = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("unsafe_only_in_ffi.rs");
    let mut offenders = Vec::new();
    let mut seen_in_ffi = false;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let code_uses_unsafe = text.lines().any(|line| {
            let code = line.split("//").next().unwrap_or("");
            [
                "unsafe {",
                "unsafe fn",
                "unsafe impl",
                "unsafe extern",
                "allow(unsafe_code)",
            ]
            .iter()
            .any(|p| code.contains(p))
        });
        if !code_uses_unsafe || same_file(file, &this) {
            continue;
        }
        if same_file(file, &allowed) {
            seen_in_ffi = true;
        } else {
            offenders.push(file.display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "unsafe code outside crates/pairing/src/ffi.rs: {offenders:?}"
    );
    assert!(
        seen_in_ffi,
        "the scan did not recognise the FFI module's unsafe blocks"
    );
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
