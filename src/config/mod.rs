//! Collector-shaped YAML configuration: loading, `${env:VAR}` substitution, merging several
//! files in order, and the top-level structure (`receivers`, `processors`, `exporters`,
//! `extensions`, `service`). Component options are read by each component's own factory
//! through [`node::Map`], so every problem is reported with its full YAML path.

pub mod node;
pub mod time;

use std::path::Path;

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlLoader};

pub use node::{Diagnostics, Map, Problem, Slot};

/// Reads, substitutes and merges the given files (later files override earlier ones, maps
/// merge key by key, lists are replaced), as the collector does with several `--config`.
pub fn load_files(paths: &[impl AsRef<Path>]) -> Result<Yaml, Vec<Problem>> {
    let mut merged = Yaml::Hash(Hash::new());
    let mut problems = Vec::new();
    for p in paths {
        let p = p.as_ref();
        match std::fs::read_to_string(p) {
            Ok(text) => match load_str_named(&text, &p.display().to_string()) {
                Ok(doc) => merge(&mut merged, doc),
                Err(mut e) => problems.append(&mut e),
            },
            Err(e) => problems.push(Problem {
                path: p.display().to_string(),
                message: format!("cannot read config file: {e}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(merged)
    } else {
        Err(problems)
    }
}

/// Parses one YAML document and applies `${env:...}` substitution.
pub fn load_str(text: &str) -> Result<Yaml, Vec<Problem>> {
    load_str_named(text, "<config>")
}

/// Deepest nesting of sequences and mappings accepted in any YAML the gateway reads.
pub const MAX_YAML_DEPTH: usize = 64;
/// Most nodes that aliases (`*name`) may expand to in one YAML text.
pub const MAX_ALIAS_EXPANSION: u64 = 100_000;

/// Parses YAML text safely: before building any tree, an event pass (which does not recurse)
/// refuses nesting deeper than [`MAX_YAML_DEPTH`] (which would overflow the stack) and
/// aliases expanding to more than [`MAX_ALIAS_EXPANSION`] nodes (an alias bomb, which would
/// exhaust memory). Used for every YAML the gateway reads: configuration, token files, rate
/// tables, at start and on reload. Errors start with `name` (the file).
pub fn parse_yaml(text: &str, name: &str) -> Result<Vec<Yaml>, String> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    // Open collections: (anchor id, nodes in it so far, expansions included).
    let mut open: Vec<(usize, u64)> = Vec::new();
    let mut anchored: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    let mut expanded = 0u64;
    loop {
        let (ev, mark) = parser
            .next_token()
            .map_err(|e| format!("{name}: invalid YAML: {e}"))?;
        let add = |open: &mut Vec<(usize, u64)>, n: u64| {
            if let Some(top) = open.last_mut() {
                top.1 = top.1.saturating_add(n);
            }
        };
        match ev {
            Event::StreamEnd => break,
            Event::Scalar(_, _, anchor, _) => {
                if anchor > 0 {
                    anchored.insert(anchor, 1);
                }
                add(&mut open, 1);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_YAML_DEPTH {
                    return Err(format!(
                        "{name}: YAML nested deeper than {MAX_YAML_DEPTH} levels (line {})",
                        mark.line()
                    ));
                }
                open.push((anchor, 1));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, n)) = open.pop() {
                    if anchor > 0 {
                        anchored.insert(anchor, n);
                    }
                    add(&mut open, n);
                }
            }
            Event::Alias(id) => {
                let n = anchored.get(&id).copied().unwrap_or(1);
                expanded = expanded.saturating_add(n);
                if expanded > MAX_ALIAS_EXPANSION {
                    return Err(format!(
                        "{name}: YAML aliases expand to more than {MAX_ALIAS_EXPANSION} nodes (line {}); an alias bomb is refused",
                        mark.line()
                    ));
                }
                add(&mut open, n);
            }
            _ => {}
        }
    }
    YamlLoader::load_from_str(text).map_err(|e| format!("{name}: invalid YAML: {e}"))
}

fn load_str_named(text: &str, name: &str) -> Result<Yaml, Vec<Problem>> {
    let docs = parse_yaml(text, name).map_err(|e| {
        vec![Problem {
            path: name.to_string(),
            message: e
                .strip_prefix(&format!("{name}: "))
                .unwrap_or(&e)
                .to_string(),
        }]
    })?;
    let mut doc = docs.into_iter().next().unwrap_or(Yaml::Hash(Hash::new()));
    if matches!(doc, Yaml::Null) {
        doc = Yaml::Hash(Hash::new());
    }
    let mut d = Diagnostics::default();
    substitute(&mut doc, "", &mut d);
    if d.is_empty() {
        Ok(doc)
    } else {
        Err(d.into_problems())
    }
}

fn merge(base: &mut Yaml, over: Yaml) {
    match (base, over) {
        (Yaml::Hash(b), Yaml::Hash(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Replaces `${env:NAME}`, `${env:NAME:-default}` and `${NAME}` in string scalars; `$$` is a
/// literal `$`. A value that is exactly one reference takes the type of the substituted text
/// (so `port: ${env:PORT}` is an integer), as in the collector.
fn substitute(y: &mut Yaml, path: &str, d: &mut Diagnostics) {
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h.iter_mut() {
                let key = node::scalar_string(k).unwrap_or_default();
                substitute(v, &node::join(path, &key), d);
            }
        }
        Yaml::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                substitute(v, &format!("{path}[{i}]"), d);
            }
        }
        Yaml::String(s) if s.contains('$') => match expand(s) {
            Ok((text, whole)) => {
                *y = if whole {
                    Yaml::from_str(&text)
                } else {
                    Yaml::String(text)
                };
            }
            Err(e) => d.error(path.to_string(), e),
        },
        _ => {}
    }
}

/// Expands references in `s`; returns the text and whether `s` was a single reference.
fn expand(s: &str) -> Result<(String, bool), String> {
    expand_at(s, 0)
}

/// How deeply defaults may nest (`${env:A:-${env:B:-x}}` is two).
const MAX_DEFAULT_NESTING: usize = 8;

/// The index of the `}` closing a `${` whose body starts at `body` (nested `${...}` skipped).
fn closing_brace(body: &str) -> Option<usize> {
    let b = body.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn expand_at(s: &str, nesting: usize) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut refs = 0;
    let mut literal = false;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        if !rest[..i].is_empty() {
            literal = true;
        }
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            literal = true;
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
            let inner = &body[..end];
            let inner = inner.strip_prefix("env:").unwrap_or(inner);
            let (name, default) = match inner.split_once(":-") {
                Some((n, dflt)) => (n, Some(dflt)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "invalid environment variable name {name:?} in {s:?}"
                ));
            }
            // As in the shell, a default applies when the variable is unset or empty.
            match (std::env::var(name), default) {
                (Ok(v), _) if !v.is_empty() => out.push_str(&v),
                (_, Some(dflt)) => {
                    if nesting >= MAX_DEFAULT_NESTING {
                        return Err(format!(
                            "defaults nested deeper than {MAX_DEFAULT_NESTING} levels in {s:?}"
                        ));
                    }
                    out.push_str(&expand_at(dflt, nesting + 1)?.0);
                }
                (Ok(_), None) => {
                    return Err(format!(
                        "environment variable {name} is set but empty (use ${{env:{name}:-default}} to give a default)"
                    ))
                }
                (Err(_), None) => {
                    return Err(format!(
                        "environment variable {name} is not set (use ${{env:{name}:-default}} to give a default)"
                    ))
                }
            }
            refs += 1;
            rest = &body[end + 1..];
        } else {
            out.push('$');
            literal = true;
            rest = after;
        }
    }
    if !rest.is_empty() {
        literal = true;
    }
    out.push_str(rest);
    Ok((out, refs == 1 && !literal))
}

/// A component id: `type` or `type/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId(pub String);

impl ComponentId {
    pub fn kind(&self) -> &str {
        self.0.split_once('/').map_or(self.0.as_str(), |(t, _)| t)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Checks the `type[/name]` shape.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        let valid = match s.split_once('/') {
            Some((t, n)) => ok_part(t) && ok_part(n),
            None => ok_part(s),
        };
        if valid {
            Ok(ComponentId(s.to_string()))
        } else {
            Err(format!(
                "invalid component id {s:?}: expected `type` or `type/name` using letters, digits, `_`, `-`, `.`"
            ))
        }
    }
}

impl std::fmt::Display for ComponentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_substitution_types_whole_references() {
        std::env::set_var("TG_TEST_PORT", "4317");
        let y = load_str("a: ${env:TG_TEST_PORT}\nb: host:${env:TG_TEST_PORT}\nc: ${env:TG_TEST_UNSET_X:-d}\ne: $$x\n").unwrap();
        assert_eq!(y["a"], Yaml::Integer(4317));
        assert_eq!(y["b"], Yaml::String("host:4317".into()));
        assert_eq!(y["c"], Yaml::String("d".into()));
        assert_eq!(y["e"], Yaml::String("$x".into()));
    }

    #[test]
    fn unset_env_is_an_error_with_path() {
        let e = load_str("exporters:\n  otlp:\n    endpoint: ${env:TG_TEST_SURELY_UNSET}\n")
            .unwrap_err();
        assert_eq!(e[0].path, "exporters.otlp.endpoint");
        assert!(e[0].message.contains("TG_TEST_SURELY_UNSET is not set"));
    }

    /// Issue 21, item 16: `${env:EP}` set to "" silently meant the default endpoint, and
    /// nested defaults were not expanded.
    #[test]
    fn empty_env_is_an_error_and_nested_defaults_expand() {
        std::env::set_var("TG_TEST_EMPTY_EP", "");
        std::env::set_var("TG_TEST_INNER_HOST", "inner");
        let e =
            load_str("exporters:\n  otlp:\n    endpoint: ${env:TG_TEST_EMPTY_EP}\n").unwrap_err();
        assert_eq!(e[0].path, "exporters.otlp.endpoint");
        assert!(
            e[0].message.contains("TG_TEST_EMPTY_EP is set but empty"),
            "{}",
            e[0].message
        );
        let y = load_str(concat!(
            "a: ${env:TG_TEST_EMPTY_EP:-fallback}\n",
            "b: ${env:TG_TEST_UNSET_Y:-${env:TG_TEST_INNER_HOST:-x}}:4317\n",
            "c: ${env:TG_TEST_UNSET_Y:-${env:TG_TEST_UNSET_Z:-${env:TG_TEST_UNSET_W:-7}}}\n",
        ))
        .unwrap();
        assert_eq!(y["a"], Yaml::String("fallback".into()));
        assert_eq!(y["b"], Yaml::String("inner:4317".into()));
        assert_eq!(y["c"], Yaml::Integer(7));
        let e = load_str("a: ${env:TG_TEST_UNSET_Y:-${env:TG_TEST_UNSET_Z}}\n").unwrap_err();
        assert!(
            e[0].message.contains("TG_TEST_UNSET_Z is not set"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn merge_overrides_in_order() {
        let mut a = load_str("x: {a: 1, b: 2}\nl: [1, 2]\n").unwrap();
        merge(&mut a, load_str("x: {b: 3}\nl: [9]\n").unwrap());
        assert_eq!(a["x"]["a"], Yaml::Integer(1));
        assert_eq!(a["x"]["b"], Yaml::Integer(3));
        assert_eq!(a["l"], Yaml::Array(vec![Yaml::Integer(9)]));
    }

    #[test]
    fn component_ids() {
        assert_eq!(ComponentId::parse("otlp/internal").unwrap().kind(), "otlp");
        assert!(ComponentId::parse("otlp/").is_err());
        assert!(ComponentId::parse("a b").is_err());
    }
}
