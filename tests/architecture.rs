//! The library's module graph has no cycle: data flows one way (ARCHITECTURE.md), so a module
//! may use the modules upstream of it and never the reverse. Read from the source, so that a
//! new `use crate::…` that closes a loop fails here with the loop spelled out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `p`.
fn rust_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            rust_files(&e.unwrap().path(), out);
        }
    } else if p.extension().is_some_and(|e| e == "rs") {
        out.push(p.to_path_buf());
    }
}

/// Top-level module → the other top-level modules its code names as `crate::<module>`.
/// Comment lines are skipped (a doc link is not a dependency); `cmd/` belongs to the binary.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if matches!(name.as_str(), "lib" | "main" | "cmd") {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&p, &mut files);
        if !files.is_empty() {
            modules.insert(name, files);
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (m, files) in &modules {
        let mut deps = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(f).unwrap();
            for line in text.lines() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for (i, _) in code.match_indices("crate::") {
                    let rest = &code[i + "crate::".len()..];
                    let id: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if id != *m && names.contains(&id) {
                        deps.insert(id);
                    }
                }
            }
        }
        graph.insert(m.clone(), deps);
    }
    graph
}

/// A cycle through `graph`, if there is one, as the list of modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == d).unwrap();
                    let mut c = path[start..].to_vec();
                    c.push(d.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(d, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn module_graph_has_no_cycle() {
    let graph = module_graph();
    // The walk must have found the modules, or the test would pass on nothing.
    for m in [
        "capture", "vision", "gallery", "pipeline", "events", "mqtt", "web", "config",
    ] {
        assert!(graph.contains_key(m), "module {m} not found: {graph:?}");
    }
    if let Some(c) = find_cycle(&graph) {
        panic!(
            "import cycle: {}\nwhole graph:\n{}",
            c.join(" → "),
            graph
                .iter()
                .map(|(m, d)| format!(
                    "  {m} → {}",
                    d.iter().cloned().collect::<Vec<_>>().join(", ")
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn cycle_finder_finds_a_planted_cycle() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    let c = find_cycle(&g).unwrap();
    assert_eq!(c.first(), c.last());
    assert_eq!(c.len(), 4, "{c:?}");
    let mut acyclic = g.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn architecture_md_lists_modules_in_dependency_order() {
    // ARCHITECTURE.md's module table runs from the bottom up; a reader trusts that order, so
    // every dependency must point to a row above.
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    // Only the "Modules" section: other tables name threads, some of which share a module's name.
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Modules"))
        .expect("ARCHITECTURE.md has a \"## Modules\" section");
    let mut rank = BTreeMap::new();
    for (i, line) in section.lines().filter(|l| l.starts_with("| `")).enumerate() {
        let first_cell = line.split('|').nth(1).unwrap();
        for name in first_cell.split('`').skip(1).step_by(2) {
            rank.insert(name.trim_end_matches('/').to_string(), i);
        }
    }
    let graph = module_graph();
    let mut wrong = Vec::new();
    for (m, deps) in &graph {
        let Some(&rm) = rank.get(m) else {
            wrong.push(format!("{m} is not in ARCHITECTURE.md's module table"));
            continue;
        };
        for d in deps {
            if rank.get(d).is_none_or(|&rd| rd >= rm) {
                wrong.push(format!("{m} uses {d}, which is not listed above it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
