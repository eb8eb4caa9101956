//! The shape of the HTTP side, checked from its sources: no two modules of the API crate depend
//! on each other (directly or through others), no source file is over 800 lines (its inline test
//! module aside), and the WebSocket gateway does not depend on the API crate (it shares only
//! `domain`, `eventstore` and `web`).
//!
//! A module's dependencies are the modules its code names: `crate::a::b::Item` (the longest
//! prefix that is a module), `super::x`, and a child module `x::…` it uses by name. A parent
//! declaring `mod x;` is not a dependency; a parent *using* a child is, so a child may not use
//! items of its parent's own file (put them in a sibling module).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/user/orders/mod.rs` → `user::orders`; `src/lib.rs` → `` (the crate root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The part of a file before its inline test module (`#[cfg(test)]`), which may use its parent.
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// The code of a file without comments and string literals (good enough for paths).
fn code(text: &str) -> String {
    without_tests(text)
        .lines()
        .map(|l| {
            let l = l.split("//").next().unwrap_or("");
            let mut out = String::new();
            let mut in_str = false;
            for c in l.chars() {
                if c == '"' {
                    in_str = !in_str;
                    continue;
                }
                if !in_str {
                    out.push(c);
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}::{b}")
    }
}

/// The longest prefix of `path` (a `::`-joined path) that is a known module.
fn resolve(modules: &BTreeSet<String>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// Every `a::b::c` path in `code` that starts with `start` (an identifier), as written.
fn paths_from(code: &str, start: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let needle: Vec<char> = format!("{start}::").chars().collect();
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        let boundary = i == 0
            || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        if boundary && bytes[i..i + needle.len()] == needle[..] {
            let mut j = i + needle.len();
            let mut path = start.to_string();
            loop {
                let s = j;
                while j < bytes.len() && (bytes[j].is_alphanumeric() || bytes[j] == '_') {
                    j += 1;
                }
                if j == s {
                    // `crate::{a, b::c}`: each member of the group.
                    if j < bytes.len() && bytes[j] == '{' {
                        let end = bytes[j..]
                            .iter()
                            .position(|&c| c == '}')
                            .map_or(bytes.len(), |p| j + p);
                        let group: String = bytes[j + 1..end].iter().collect();
                        for member in group.split(',') {
                            let member = member.trim().split(" as ").next().unwrap_or("").trim();
                            if !member.is_empty() {
                                out.push(format!("{path}::{member}"));
                            }
                        }
                        path.clear();
                    }
                    break;
                }
                path.push_str("::");
                path.extend(&bytes[s..j]);
                if j + 1 < bytes.len() && bytes[j] == ':' && bytes[j + 1] == ':' {
                    j += 2;
                } else {
                    break;
                }
            }
            if !path.is_empty() {
                out.push(path);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn no_module_of_the_api_crate_depends_on_itself_through_another() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let me = module_of(&src, file);
        let text = code(&std::fs::read_to_string(file).expect("read source"));
        let mut deps = BTreeSet::new();
        for p in paths_from(&text, "crate") {
            if let Some(m) = resolve(&modules, p.trim_start_matches("crate::")) {
                deps.insert(m);
            }
        }
        let parent = me
            .rsplit_once("::")
            .map_or(String::new(), |(p, _)| p.to_string());
        for p in paths_from(&text, "super") {
            if let Some(m) = resolve(&modules, &join(&parent, p.trim_start_matches("super::"))) {
                deps.insert(m);
            } else if p == "super" || modules.contains(&parent) {
                deps.insert(parent.clone());
            }
        }
        for child in modules.iter().filter(|m| {
            m.rsplit_once("::")
                .map_or(me.is_empty() && !m.is_empty(), |(p, _)| p == me)
        }) {
            let name = child.rsplit("::").next().unwrap_or(child);
            if !paths_from(&text, name).is_empty() {
                deps.insert(child.clone());
            }
        }
        deps.remove(&me);
        // The crate root only declares modules and re-exports.
        if !me.is_empty() {
            deps.remove("");
        }
        graph.insert(me, deps);
    }
    // Tarjan-free check: a module that reaches itself.
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(String, Vec<String>)> = graph[start]
            .iter()
            .map(|d| (d.clone(), vec![start.clone(), d.clone()]))
            .collect();
        while let Some((m, trail)) = stack.pop() {
            if &m == start {
                cycles.push(trail.join(" → "));
                break;
            }
            if !seen.insert(m.clone()) {
                continue;
            }
            for d in graph.get(&m).into_iter().flatten() {
                let mut t = trail.clone();
                t.push(d.clone());
                stack.push((d.clone(), t));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "module cycles in crates/api:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_source_file_is_over_800_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["crates", "projections"] {
        sources(&root.join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter(|f| {
            let s = f.to_string_lossy();
            !s.contains("/tests/") && !s.contains("/target/") && !s.contains("/benches/")
        })
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            let n = without_tests(&text).lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "source files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_gateway_does_not_depend_on_the_api_crate() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/Cargo.toml");
    let text = std::fs::read_to_string(manifest).expect("gateway manifest");
    let deps: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split(['=', '.']).next())
        .map(str::trim)
        .collect();
    assert!(
        !deps.contains(&"api"),
        "crates/gateway/Cargo.toml names the api crate"
    );
}
