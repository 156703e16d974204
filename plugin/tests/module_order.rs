//! The plugin's modules import each other without cycles (ARCHITECTURE.md, "Module order
//! inside `plugin/`"): each module's `crate::<module>` paths, outside its unit tests, are
//! collected from the sources and the graph must be acyclic. `filter` (the adapter that
//! uses everything) and the test-only `fuzz` module are left out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `module -> modules it imports`, by top-level module of `plugin/src`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if ["lib", "filter", "fuzz", "eval_tests"].contains(&top.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let deps = g.entry(top.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                deps.insert(name);
            }
        }
    }
    g
}

#[test]
fn plugin_modules_import_each_other_without_cycles() {
    let g = graph();
    assert!(g.contains_key("eval") && g.contains_key("audit"), "{g:?}");
    // Depth-first search with colours; a grey node reached again closes a cycle.
    fn visit<'a>(
        g: &'a BTreeMap<String, BTreeSet<String>>,
        node: &'a str,
        colour: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        colour.insert(node, 1);
        path.push(node);
        for next in g.get(node).into_iter().flatten() {
            match colour.get(next.as_str()) {
                Some(1) => {
                    let mut cycle: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(g, next, colour, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        colour.insert(node, 2);
        None
    }
    let mut colour = BTreeMap::new();
    for node in g.keys() {
        if !colour.contains_key(node.as_str()) {
            let cycle = visit(&g, node, &mut colour, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import cycle: {:?}",
                cycle.unwrap_or_default()
            );
        }
    }
}

#[test]
fn calendar_and_usage_are_leaves() {
    let g = graph();
    let allowed: BTreeSet<String> = ["ir".to_string()].into();
    assert!(g["calendar"].is_subset(&allowed), "{:?}", g["calendar"]);
    assert!(g["usage"].is_empty(), "{:?}", g["usage"]);
}
