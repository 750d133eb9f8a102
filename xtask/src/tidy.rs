//! Tidy checks that run as ordinary tests (rust-analyzer's pattern): structural invariants
//! of the workspace that no compiler checks.
//!
//! - The trainer's modules import each other one way: the module graph built from every
//!   `crate::…` and `super::…` path in `host-trainer/src` (tests and comments left out) has
//!   no cycle. ARCHITECTURE.md, "Inside the trainer", draws the graph.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// `a/b/mod.rs` → `a::b`, `a/c.rs` → `a::c`, `lib.rs` → `crate`.
    fn module_name(root: &Path, file: &Path) -> String {
        let rel = file.strip_prefix(root).unwrap_or(file).with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
            parts.pop();
        }
        if parts.is_empty() {
            "crate".to_owned()
        } else {
            parts.join("::")
        }
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The code of a file without its `#[cfg(test)] mod tests` and without `//` comments.
    fn code_of(text: &str) -> String {
        let mut code = String::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if line.trim() == "#[cfg(test)]" {
                let mut next = lines.peek().map(|l| l.trim()).unwrap_or("");
                while next.starts_with("#[") {
                    lines.next();
                    next = lines.peek().map(|l| l.trim()).unwrap_or("");
                }
                if next.starts_with("mod tests") {
                    break;
                }
            }
            code.push_str(line.split("//").next().unwrap_or(""));
            code.push('\n');
        }
        code
    }

    /// Every path that follows `prefix` in `code` (`crate::run::RunConfig` → `run::RunConfig`).
    fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at + prefix.len()..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.push(tail[..len].trim_end_matches(':'));
            }
            rest = &tail[len..];
        }
        out
    }

    /// The longest known module that `path` starts with.
    fn resolve(known: &BTreeSet<String>, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|candidate| known.contains(candidate))
    }

    fn module_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
        let mut files = Vec::new();
        rust_files(root, &mut files);
        let modules: BTreeMap<String, PathBuf> = files
            .into_iter()
            .filter(|f| f.file_name().is_some_and(|n| n != "main.rs"))
            .map(|f| (module_name(root, &f), f))
            .collect();
        let known: BTreeSet<String> = modules.keys().cloned().collect();
        let mut graph = BTreeMap::new();
        for (module, file) in &modules {
            let code = code_of(&std::fs::read_to_string(file).unwrap_or_default());
            let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
            let mut uses = BTreeSet::new();
            for path in paths_after(&code, "crate::") {
                uses.extend(resolve(&known, path));
            }
            for path in paths_after(&code, "super::") {
                let full = if parent.is_empty() {
                    path.to_owned()
                } else {
                    format!("{parent}::{path}")
                };
                // A child naming its own ancestor is how Rust nests modules, not an import.
                uses.extend(
                    resolve(&known, &full).filter(|t| !module.starts_with(&format!("{t}::"))),
                );
            }
            uses.remove(module);
            graph.insert(module.clone(), uses);
        }
        graph
    }

    fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            graph: &BTreeMap<String, BTreeSet<String>>,
            node: &str,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = stack.iter().position(|s| s == node) {
                let mut cycle = stack[at..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            if done.contains(node) {
                return None;
            }
            stack.push(node.to_owned());
            for next in graph.get(node).into_iter().flatten() {
                if let Some(cycle) = visit(graph, next, stack, done) {
                    return Some(cycle);
                }
            }
            stack.pop();
            done.insert(node.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        graph
            .keys()
            .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
    }

    #[test]
    fn the_trainer_has_no_import_cycle() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host-trainer/src");
        let graph = module_graph(&root);
        assert!(
            graph.contains_key("run") && graph.contains_key("train"),
            "{graph:?}"
        );
        assert_eq!(find_cycle(&graph), None, "module graph: {graph:#?}");
    }

    #[test]
    fn a_cycle_is_found() {
        let mut graph = BTreeMap::new();
        graph.insert("run".to_owned(), BTreeSet::from(["train".to_owned()]));
        graph.insert(
            "train".to_owned(),
            BTreeSet::from(["checkpoint".to_owned()]),
        );
        graph.insert("checkpoint".to_owned(), BTreeSet::from(["run".to_owned()]));
        assert_eq!(
            find_cycle(&graph),
            Some(vec![
                "checkpoint".into(),
                "run".into(),
                "train".into(),
                "checkpoint".into()
            ])
        );
        let code = "use crate::run::{RunConfig, RunPaths};\nfoo(super::log::x); // crate::plot\n";
        assert_eq!(paths_after(&code_of(code), "crate::"), vec!["run"]);
        assert_eq!(paths_after(&code_of(code), "super::"), vec!["log::x"]);
    }
}
