//! The modules of each crate are layered: a module uses the ones below it and is never
//! used back by them. This test draws the graph from the `use` paths in the sources
//! (`crate::a::b`, `super::c`) and fails on any cycle between sibling modules, naming
//! the files and paths that close it. A child using its parent (`super::Thing` from
//! `kafka/security.rs`) is how a module shares its own types with its parts and is not
//! a cycle; two siblings using each other, or a module reaching into a sibling of an
//! ancestor that uses it back, is.
//!
//! Test code (`tests.rs`, `*_tests.rs`, `proptests.rs`, and everything after a
//! top-level `#[cfg(test)]`) is left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside one crate, `[]` being the crate root.
type ModPath = Vec<String>;

/// One `use` reference, kept with where it was written for the failure message.
struct Edge {
    from: ModPath,
    to: ModPath,
    file: PathBuf,
    line: usize,
    text: String,
}

#[test]
fn agent_modules_are_layered_without_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_layered(&root.join("src"), "lib.rs");
}

#[test]
fn component_modules_are_layered_without_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_layered(&root.join("components/src"), "lib.rs");
}

#[test]
fn a_cycle_between_siblings_is_found() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(
        dir.join("a/mod.rs"),
        "mod x;\nmod y;\nuse crate::b::Thing;\n",
    )
    .unwrap();
    std::fs::write(dir.join("a/x.rs"), "use super::y::{self, Other};\n").unwrap();
    std::fs::write(
        dir.join("a/y.rs"),
        "pub struct Other;\nuse super::super::a::x;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "pub struct Thing;\nfn f() { crate::a::helper(); }\n#[cfg(test)]\nmod tests { use crate::a::y; }\n",
    )
    .unwrap();
    let cycles = find_cycles(&edges(&dir, "lib.rs"));
    let names: BTreeSet<String> = cycles.iter().map(|c| c.join(", ")).collect();
    assert!(names.contains("a, b"), "{names:?}");
    assert!(names.contains("a::x, a::y"), "{names:?}");
    assert_eq!(names.len(), 2, "{names:?}");
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kwpipe-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_layered(src: &Path, root_file: &str) {
    let edges = edges(src, root_file);
    assert!(
        edges.len() > 10,
        "too few imports found in {}: the parser is broken",
        src.display()
    );
    let cycles = find_cycles(&edges);
    if cycles.is_empty() {
        return;
    }
    let mut report = String::new();
    for cycle in &cycles {
        report.push_str(&format!("these use each other: {}\n", cycle.join(", ")));
        let members: BTreeSet<&String> = cycle.iter().collect();
        let mut seen = BTreeSet::new();
        for e in edges
            .iter()
            .filter(|e| seen.insert((&e.file, e.line, &e.to)))
        {
            if let Some((a, b)) = sibling_pair(&e.from, &e.to) {
                if members.contains(&a) && members.contains(&b) && a != b {
                    report.push_str(&format!(
                        "    {}:{}: {} -> {}: {}\n",
                        e.file.display(),
                        e.line,
                        a,
                        b,
                        e.text
                    ));
                }
            }
        }
    }
    panic!("modules under {} use each other:\n{report}", src.display());
}

/// The two siblings an edge connects: the children of the deepest common ancestor
/// that contain each end. `None` when one end contains the other (a parent and its
/// part).
fn sibling_pair(from: &ModPath, to: &ModPath) -> Option<(String, String)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    let parent = from[..common].join("::");
    let name = |m: &ModPath| {
        if parent.is_empty() {
            m[common].clone()
        } else {
            format!("{parent}::{}", m[common])
        }
    };
    Some((name(from), name(to)))
}

/// Every strongly connected set of siblings with more than one member, each as a
/// sorted list of module names.
fn find_cycles(edges: &[Edge]) -> Vec<Vec<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in edges {
        if let Some((a, b)) = sibling_pair(&e.from, &e.to) {
            graph.entry(b.clone()).or_default();
            graph.entry(a).or_default().insert(b);
        }
    }
    // Two modules are in one cycle when each reaches the other.
    let reach = |start: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(n) = stack.pop() {
            for m in &graph[&n] {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|k| (k, reach(k))).collect();
    let mut cycles = BTreeSet::new();
    for (a, from_a) in &reaches {
        let members: Vec<String> = from_a
            .iter()
            .filter(|b| reaches[*b].contains(*a))
            .cloned()
            .collect();
        if members.len() > 1 {
            cycles.insert(members);
        }
    }
    cycles.into_iter().collect()
}

/// The module tree under `src` and every `crate::` / `super::` path used in it.
fn edges(src: &Path, root_file: &str) -> Vec<Edge> {
    let mut modules = BTreeMap::new();
    collect_modules(&src.join(root_file), Vec::new(), &mut modules);
    let known: BTreeSet<ModPath> = modules.keys().cloned().collect();
    let mut edges = Vec::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, line) in non_test_lines(&text) {
            for path in paths_in(line) {
                let Some(target) = resolve(module, &path, &known) else {
                    continue;
                };
                if &target != module {
                    edges.push(Edge {
                        from: module.clone(),
                        to: target,
                        file: file.clone(),
                        line: i + 1,
                        text: line.trim().to_string(),
                    });
                }
            }
        }
    }
    edges
}

/// Walks `mod name;` declarations from a file, finding each module's file the way
/// rustc does (`name.rs` or `name/mod.rs` beside a `mod.rs`/`lib.rs`, under
/// `parent/` otherwise). Test modules are left out.
fn collect_modules(file: &Path, module: ModPath, out: &mut BTreeMap<ModPath, PathBuf>) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    out.insert(module.clone(), file.to_path_buf());
    let dir = match file.file_name().and_then(|n| n.to_str()) {
        Some("mod.rs" | "lib.rs" | "main.rs") => file.parent().unwrap().to_path_buf(),
        _ => file.with_extension(""),
    };
    for (_, line) in non_test_lines(&text) {
        let l = line.trim();
        let l = l
            .strip_prefix("pub(crate) ")
            .or_else(|| l.strip_prefix("pub "))
            .unwrap_or(l);
        let Some(name) = l.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) else {
            continue;
        };
        if is_test_module(name) {
            continue;
        }
        let candidates = [
            dir.join(format!("{name}.rs")),
            dir.join(name).join("mod.rs"),
        ];
        let Some(child) = candidates.iter().find(|p| p.exists()) else {
            panic!("{}: mod {name} has no file", file.display());
        };
        let mut path = module.clone();
        path.push(name.to_string());
        collect_modules(child, path, out);
    }
}

fn is_test_module(name: &str) -> bool {
    name == "tests"
        || name.ends_with("_tests")
        || name.ends_with("proptests")
        || name.ends_with("_proptest")
}

/// The file's lines without comments and test code: a top-level `#[cfg(test)]`
/// before a one-line item (`mod proptests;`) drops that item, before a block
/// (`mod tests {`) drops the rest of the file, where such blocks are kept.
fn non_test_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if line.starts_with("#[cfg(test)]") {
            match lines.next() {
                Some((_, item)) if item.trim_end().ends_with(';') => continue,
                _ => break,
            }
        }
        if !line.trim_start().starts_with("//") {
            out.push((i, line));
        }
    }
    out
}

/// Every path starting with `crate::` or `super::` in a line, with `{a, b::c}` groups
/// expanded: `use crate::x::{y, z::w}` gives `crate::x::y` and `crate::x::z::w`.
fn paths_in(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let starts = (rest.starts_with("crate::") || rest.starts_with("super::"))
            && (i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b':'));
        if starts {
            let (paths, used) = parse_path(rest);
            out.extend(paths);
            i += used.max(1);
        } else {
            i += rest.chars().next().unwrap().len_utf8();
        }
    }
    out
}

/// Parses `a::b::{c, d::{e}}` from the start of `s`: the expanded paths and the bytes
/// read. A group left open at the end of the line is read as far as it goes.
fn parse_path(s: &str) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = 0;
    let b = s.as_bytes();
    loop {
        let start = i;
        while i < s.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i > start {
            prefix.push(s[start..i].to_string());
        }
        if s[i..].starts_with("::{") {
            i += 3;
            let mut all = Vec::new();
            loop {
                while i < s.len() && (b[i] == b' ' || b[i] == b',') {
                    i += 1;
                }
                if i >= s.len() || b[i] == b'}' {
                    i += 1;
                    break;
                }
                let (inner, used) = parse_path(&s[i..]);
                for p in inner {
                    let mut full = prefix.clone();
                    full.extend(p);
                    all.push(full);
                }
                i += used.max(1);
            }
            return (all, i.min(s.len()));
        }
        if s[i..].starts_with("::") {
            i += 2;
            continue;
        }
        return (vec![prefix], i);
    }
}

/// The module a path names: `crate::`/`super::`/`self::` resolved from `module`, then
/// its longest prefix that is a module of the crate.
fn resolve(module: &ModPath, path: &[String], known: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut base: ModPath;
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base = Vec::new();
            rest = &rest[1..];
        }
        Some("super") => {
            base = module.clone();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    for part in rest {
        let mut next = base.clone();
        next.push(part.clone());
        if known.contains(&next) {
            base = next;
        } else {
            break;
        }
    }
    Some(base)
}
