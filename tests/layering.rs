//! The crate's dependency graph points one way, and this test is what enforces it: an import
//! that runs up a layer, from one component kind into another, or that closes a circle
//! between files, fails here with the file, the line and the rule.
//!
//! The layers, bottom up (the same list is in `src/lib.rs` and README "Layout"):
//! 1. foundation: `config`, `rpc`, `netguard`, `tls`;
//! 2. pure domain cores: `envelope`, `cost`, `semconv`;
//! 3. the component layer: `component`, `auth`;
//! 4. the ledger library: `ledger`;
//! 5. components: `receivers`, `processors`, `exporters`, `extensions` (no kind imports
//!    another);
//! 6. `service`;
//! 7. `cli` (and `src/main.rs`).
//!
//! Test code (`#[cfg(test)]` modules and `tests.rs` files) may reach anywhere and is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: &[(&str, u8)] = &[
    ("config", 1),
    ("rpc", 1),
    ("netguard", 1),
    ("tls", 1),
    ("envelope", 2),
    ("cost", 2),
    ("semconv", 2),
    ("component", 3),
    ("auth", 3),
    ("ledger", 4),
    ("receivers", 5),
    ("processors", 5),
    ("exporters", 5),
    ("extensions", 5),
    ("service", 6),
    ("cli", 7),
];

/// Layers whose top-level modules must not import each other.
const NO_SIBLING_IMPORTS: &[u8] = &[5];

fn layer(top: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == top).map(|(_, l)| *l)
}

/// One source file: its module path (`["exporters", "otlp"]`) and its non-test code.
struct Source {
    file: PathBuf,
    module: Vec<String>,
    code: String,
    /// Child modules it declares (`mod x;`), for relative paths in a `mod.rs`.
    children: BTreeSet<String>,
}

fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code with comments, string and character literals blanked out and every
/// `#[cfg(test)]` item removed, keeping line breaks so line numbers stay true.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(b.len(), |e| i + e + 2);
            out.extend(text[i..end].bytes().filter(|&c| c == b'\n'));
            i = end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") || rest.starts_with("br\"") {
            let start = rest.find('"').unwrap();
            let hashes = rest[..start].matches('#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let end = rest[start + 1..]
                .find(&close)
                .map_or(b.len(), |e| i + start + 1 + e + close.len());
            out.extend(text[i..end].bytes().filter(|&c| c == b'\n'));
            out.extend(b"\"\"");
            i = end;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'\n' {
                    out.push(b'\n');
                }
                i += 1;
            }
            i += 1;
            out.extend(b"\"\"");
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            let body = &rest[1..];
            let len = if let Some(escaped) = body.strip_prefix('\\') {
                escaped.find('\'').map(|e| e + 1)
            } else {
                body.chars()
                    .next()
                    .filter(|c| body[c.len_utf8()..].starts_with('\''))
                    .map(char::len_utf8)
            };
            match len {
                Some(n) => {
                    out.extend(b"' '");
                    i += n + 2;
                }
                None => {
                    out.push(b'\'');
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let code = String::from_utf8(out).unwrap();
    remove_test_items(&code)
}

/// Blanks every item that follows a `#[cfg(test)]` attribute (up to its closing brace or
/// semicolon), keeping its line breaks.
fn remove_test_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (n, c) in item.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = n + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = n + 1;
                    break;
                }
                _ => {}
            }
        }
        out.extend(item[..end].chars().filter(|&c| c == '\n'));
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|file| {
            let module = module_of(&src, &file);
            let skip =
                module.is_empty() || module == ["lib"] || module.iter().any(|m| m == "tests");
            if skip {
                return None;
            }
            let code = strip(&std::fs::read_to_string(&file).unwrap());
            let children = code
                .lines()
                .filter_map(|l| {
                    let l = l
                        .trim()
                        .trim_start_matches("pub ")
                        .trim_start_matches("pub(crate) ");
                    let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
                    Some(name.trim().to_string())
                })
                .collect();
            Some(Source {
                file,
                module,
                code,
                children,
            })
        })
        .collect()
}

/// Every module path this code names: `crate::a::b`, each path inside `crate::{..}`,
/// `super::x` (resolved against `module`), and `child::x` for a declared child module.
fn imports(s: &Source) -> Vec<(usize, Vec<String>)> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (n, line) in s.code.lines().enumerate() {
        let mut i = 0;
        while i < line.len() {
            let rest = &line[i..];
            let boundary = i == 0 || !line[..i].ends_with(|c: char| ident(c) || c == ':');
            let (base, after): (Vec<String>, &str) = if !boundary {
                i += rest.chars().next().map_or(1, char::len_utf8);
                continue;
            } else if let Some(a) = rest.strip_prefix("crate::") {
                (Vec::new(), a)
            } else if rest.starts_with("super::") {
                // `super` is the parent of this file's module; each further one goes up.
                let mut base = s.module.clone();
                let mut a = rest;
                while let Some(r) = a.strip_prefix("super::") {
                    base.pop();
                    a = r;
                }
                (base, a)
            } else if let Some(child) = s
                .children
                .iter()
                .find(|c| rest.starts_with(&format!("{c}::")))
            {
                let mut base = s.module.clone();
                base.push(child.clone());
                (base, &rest[child.len() + 2..])
            } else {
                i += rest.chars().next().map_or(1, char::len_utf8);
                continue;
            };
            for path in expand(after) {
                let mut full = base.clone();
                full.extend(path);
                if !full.is_empty() {
                    out.push((n + 1, full));
                }
            }
            i += rest.len() - after.len();
        }
    }
    out
}

/// `a::b::C` → [[a, b, C]]; `{a::X, b::{Y, Z}}` → [[a, X], [b, Y], [b, Z]].
fn expand(text: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut path = Vec::new();
    let mut rest = text;
    loop {
        if let Some(inner) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = inner.len();
            for (n, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = n;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let mut all = Vec::new();
            let mut depth = 0;
            let mut start = 0;
            let body = &inner[..end];
            for (n, c) in body.char_indices().chain([(body.len(), ',')]) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let part = body[start..n].trim();
                        if !part.is_empty() && part != "self" {
                            for p in expand(part) {
                                let mut full = path.clone();
                                full.extend(p);
                                all.push(full);
                            }
                        } else if part == "self" {
                            all.push(path.clone());
                        }
                        start = n + 1;
                    }
                    _ => {}
                }
            }
            return all;
        }
        let len = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        path.push(rest[..len].to_string());
        rest = &rest[len..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    vec![path]
}

/// The file a module path lands in: its longest prefix that is a module file.
fn resolve(files: &BTreeMap<Vec<String>, usize>, path: &[String]) -> Option<usize> {
    (1..=path.len())
        .rev()
        .find_map(|n| files.get(&path[..n].to_vec()).copied())
}

struct Edge {
    from: usize,
    to: usize,
    line: usize,
}

fn graph(sources: &[Source]) -> Vec<Edge> {
    let files: BTreeMap<Vec<String>, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.module.clone(), i))
        .collect();
    let mut edges = Vec::new();
    for (from, s) in sources.iter().enumerate() {
        for (line, path) in imports(s) {
            if let Some(to) = resolve(&files, &path) {
                if to != from {
                    edges.push(Edge { from, to, line });
                }
            }
        }
    }
    edges
}

fn rel(p: &Path) -> String {
    p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn imports_point_down_the_layers() {
    let sources = sources();
    assert!(sources.len() > 60, "the sources were not found");
    let mut problems = BTreeSet::new();
    for s in &sources {
        if s.module[0] == "main" {
            continue;
        }
        assert!(
            layer(&s.module[0]).is_some(),
            "{}: module `{}` has no layer: add it to LAYERS here, in src/lib.rs and README",
            rel(&s.file),
            s.module[0]
        );
    }
    for e in graph(&sources) {
        let (a, b) = (&sources[e.from], &sources[e.to]);
        let (from_top, to_top) = (&a.module[0], &b.module[0]);
        if from_top == "main" || from_top == to_top {
            continue;
        }
        let (lf, lt) = (layer(from_top).unwrap(), layer(to_top).unwrap());
        if lt > lf {
            problems.insert(format!(
                "{}:{}: `{from_top}` (layer {lf}) imports `{}` (layer {lt}): imports must point down",
                rel(&a.file),
                e.line,
                b.module.join("::")
            ));
        } else if lt == lf && NO_SIBLING_IMPORTS.contains(&lf) {
            problems.insert(format!(
                "{}:{}: `{from_top}` imports `{}`: components of one kind do not import another kind; move what they share down a layer",
                rel(&a.file),
                e.line,
                b.module.join("::")
            ));
        }
    }
    let list: Vec<String> = problems.into_iter().collect();
    assert!(
        list.is_empty(),
        "{} upward imports:\n{}",
        list.len(),
        list.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other_in_a_circle() {
    let sources = sources();
    let edges = graph(&sources);
    let mut next: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); sources.len()];
    for e in &edges {
        next[e.from].insert(e.to);
    }
    // Tarjan's strongly connected components; any with two or more files is a circle.
    struct State {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        circles: Vec<Vec<usize>>,
    }
    fn visit(v: usize, next: &[BTreeSet<usize>], st: &mut State) {
        st.index[v] = Some(st.counter);
        st.low[v] = st.counter;
        st.counter += 1;
        st.stack.push(v);
        st.on_stack[v] = true;
        for &w in &next[v] {
            match st.index[w] {
                None => {
                    visit(w, next, st);
                    st.low[v] = st.low[v].min(st.low[w]);
                }
                Some(iw) if st.on_stack[w] => st.low[v] = st.low[v].min(iw),
                _ => {}
            }
        }
        if Some(st.low[v]) == st.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on_stack[w] = false;
                scc.push(w);
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                st.circles.push(scc);
            }
        }
    }
    let n = sources.len();
    let mut st = State {
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        counter: 0,
        circles: Vec::new(),
    };
    for v in 0..n {
        if st.index[v].is_none() {
            visit(v, &next, &mut st);
        }
    }
    let report: Vec<String> = st
        .circles
        .iter()
        .map(|c| {
            let set: BTreeSet<usize> = c.iter().copied().collect();
            let ties: Vec<String> = edges
                .iter()
                .filter(|e| set.contains(&e.from) && set.contains(&e.to))
                .map(|e| {
                    format!(
                        "  {}:{} -> {}",
                        rel(&sources[e.from].file),
                        e.line,
                        rel(&sources[e.to].file)
                    )
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            format!("circle of {} files:\n{}", c.len(), ties.join("\n"))
        })
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn the_checker_sees_upward_imports_grouped_paths_and_test_code() {
    let code = strip(
        "use crate::{config::Map, service::{Parsed, ParseCtx}};\n// crate::cli::x\nlet s = \"crate::cli\";\n#[cfg(test)]\nmod tests {\n    use crate::cli::ledger;\n}\nfn f() { super::super::cost::price(); }\n",
    );
    let s = Source {
        file: PathBuf::from("src/processors/genai/check.rs"),
        module: vec!["processors".into(), "genai".into(), "check".into()],
        code,
        children: BTreeSet::new(),
    };
    let got: Vec<(usize, String)> = imports(&s)
        .into_iter()
        .map(|(l, p)| (l, p.join("::")))
        .collect();
    assert_eq!(
        got,
        [
            (1, "config::Map".to_string()),
            (1, "service::Parsed".to_string()),
            (1, "service::ParseCtx".to_string()),
            (8, "processors::cost::price".to_string()),
        ]
    );
}
