//! Tidy check of the service's shape (`docs/ARCHITECTURE.md`): each module imports only the
//! layers below it, no protocol driver imports another, there is no import cycle, and no file
//! grows much past 800 lines. Read from the source text, so a new `use` that breaks the shape
//! fails here before review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules of `crates/service/src` by layer, lowest first.
const LAYERS: &[&[&str]] = &[
    &["lib"],
    &["identity", "access"],
    &["core"],
    &["exec"],
    &["federation"],
    &["oob", "delivery", "receipt", "session", "pad"],
    &["node"],
    &["ledger_ops", "workers"],
    &["demo"],
];

const PROTOCOLS: &[&str] = &["oob", "delivery", "receipt", "session", "pad"];

/// The top-level module a source file belongs to (`oob/open.rs` → `oob`).
fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

/// The crate modules a file names (`crate::exec::…`, `use crate::{core::Core, …}` is not used
/// in this crate: each import names its module).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // Comments (and doc links) import nothing.
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = code.as_str();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `crate::Node`, `crate::Result` …: the crate root's re-exports and types.
        let module = if name.chars().next().is_some_and(char::is_uppercase) || name.is_empty() {
            "lib".to_string()
        } else {
            name
        };
        out.insert(module);
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources() -> Vec<(String, std::path::PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&root).expect("under src").to_path_buf();
                out.push((module_of(&relative), path));
            }
        }
    }
    out
}

#[test]
fn modules_import_only_the_layers_below_and_no_protocol_imports_another() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in sources() {
        let text = std::fs::read_to_string(&path).expect("read");
        let layer = layer_of(&module)
            .unwrap_or_else(|| panic!("{} is in no layer: add it to LAYERS", path.display()));
        for import in imports(&text) {
            if import == module {
                continue;
            }
            let Some(theirs) = layer_of(&import) else {
                continue;
            };
            if module == "lib" {
                // The root declares the modules and re-exports; it imports error types only.
                continue;
            }
            assert!(
                theirs < layer || import == "lib",
                "{} ({module}, layer {layer}) imports {import} (layer {theirs})",
                path.display()
            );
            if PROTOCOLS.contains(&module.as_str()) {
                assert!(
                    !PROTOCOLS.contains(&import.as_str()),
                    "{}: protocol {module} imports protocol {import}",
                    path.display()
                );
            }
            graph.entry(module.clone()).or_default().insert(import);
        }
    }
    // No cycle among the modules (besides the root's re-exports).
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        assert!(
            !path.iter().any(|p| p == m),
            "import cycle: {path:?} -> {m}"
        );
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if next != "lib" {
                visit(next, graph, path, done);
            }
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
    assert!(graph.contains_key("exec"), "the checker read the sources");
}

#[test]
fn no_service_file_grows_much_past_800_lines() {
    for (_, path) in sources() {
        let lines = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count();
        assert!(lines <= 850, "{} has {lines} lines", path.display());
    }
}

#[test]
fn the_checker_sees_a_forbidden_import() {
    // The check itself can fail: a protocol naming another is seen.
    let text = "use crate::delivery::Delivery;\nfn f() { crate::exec::retrying; }";
    let found = imports(text);
    assert!(
        found.contains("delivery") && found.contains("exec"),
        "{found:?}"
    );
    assert_eq!(
        imports("use crate::{Result, ServiceError};"),
        BTreeSet::from(["lib".to_string()])
    );
}
