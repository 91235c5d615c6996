//! The layering in docs/ARCHITECTURE.md, checked: each crate depends only
//! on the crates below it, and no two modules of a crate use each other,
//! directly or around a circle.

mod common;

use common::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each crate and the crates of ours it may depend on.
const LAYERS: &[(&str, &str, &[&str])] = &[
    ("runbook-core", "crates/core", &[]),
    ("runbook-journal", "crates/journal", &["runbook-core"]),
    ("runbook-policy", "crates/policy", &["runbook-core"]),
    (
        "runbook-capabilities",
        "crates/capabilities",
        &["runbook-core", "runbook-journal", "runbook-policy"],
    ),
    (
        "runbook-engine",
        "crates/engine",
        &[
            "runbook-core",
            "runbook-journal",
            "runbook-policy",
            "runbook-capabilities",
        ],
    ),
    (
        "runbook-fleet",
        "crates/fleet",
        &[
            "runbook-core",
            "runbook-journal",
            "runbook-policy",
            "runbook-capabilities",
            "runbook-engine",
        ],
    ),
    (
        "runbook-console",
        "crates/console",
        &[
            "runbook-core",
            "runbook-journal",
            "runbook-policy",
            "runbook-capabilities",
            "runbook-engine",
            "runbook-fleet",
        ],
    ),
    ("runbook-kit", "crates/kit", &["runbook-core"]),
];

#[test]
fn each_crate_depends_only_on_crates_below_it() {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, dir, allowed) in LAYERS {
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(root().join(dir).join("Cargo.toml")).unwrap())
                .unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some(*name));
        seen.insert(dir.to_string());
        for section in ["dependencies", "build-dependencies", "dev-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for dep in deps.keys().filter(|d| d.starts_with("runbook-")) {
                if !allowed.contains(&dep.as_str()) {
                    problems.push(format!(
                        "{name} ({section}) depends on {dep}, which is not below it"
                    ));
                }
            }
        }
    }
    // Every crate under crates/ has its place in the table.
    for e in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = format!("crates/{}", e.unwrap().file_name().to_string_lossy());
        assert!(
            seen.contains(&dir),
            "{dir} is not in LAYERS (nor in docs/ARCHITECTURE.md?)"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_module_of_a_crate_uses_another_that_uses_it() {
    let mut problems = Vec::new();
    for dir in LAYERS.iter().map(|l| l.1).chain(["host"]) {
        let graph = module_graph(&root().join(dir).join("src"));
        assert!(
            graph.len() > 1 || dir == "crates/kit",
            "{dir}: no modules found"
        );
        if let Some(circle) = find_circle(&graph) {
            problems.push(format!("{dir}: {}", circle.join(" -> ")));
        }
    }
    assert!(
        problems.is_empty(),
        "module circles:\n{}",
        problems.join("\n")
    );
}

/// The circle-finder finds one, and names it in order.
#[test]
fn a_circle_is_found_and_named() {
    let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .iter()
        .fold(BTreeMap::new(), |mut g, (from, to)| {
            g.entry(from.to_string())
                .or_insert_with(BTreeSet::new)
                .insert(to.to_string());
            g
        });
    assert_eq!(find_circle(&g).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = g.clone();
    acyclic.get_mut("c").unwrap().remove("a");
    assert_eq!(find_circle(&acyclic), None);
}

/// Top-level module -> the top-level modules of the same crate it names
/// (`crate::x`, or `super::x` from a top-level module), outside comments
/// and `#[cfg(test)]` modules.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let parts: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .filter(|p| p != "mod")
                .collect();
            let top = match parts.first().map(String::as_str) {
                None | Some("lib" | "main") => continue,
                Some(t) => t.to_string(),
            };
            let text = code_only(&std::fs::read_to_string(&path).unwrap());
            let mut names = paths_after(&text, "crate::");
            if parts.len() == 1 {
                names.extend(paths_after(&text, "super::"));
            }
            let entry = graph.entry(top.clone()).or_default();
            entry.extend(names.into_iter().filter(|n| *n != top));
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|u| modules.contains(u));
    }
    graph
}

/// The text without comments and without `#[cfg(test)] mod … { … }`.
fn code_only(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines.peek().is_some_and(|l| {
                let l = l.trim_start();
                (l.starts_with("mod ")
                    || l.starts_with("pub mod ")
                    || l.starts_with("pub(crate) mod "))
                    && l.trim_end().ends_with('{')
            })
        {
            let mut depth = 0i32;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                if depth <= 0 {
                    break;
                }
            }
            continue;
        }
        out.push_str(line.split("//").next().unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Each identifier that follows `prefix` (`crate::x` -> `x`), where the
/// prefix starts a path.
fn paths_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let name: String = text[at + prefix.len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// A circle in `graph`, as the modules around it with the first repeated.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut circle = path[i..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}
