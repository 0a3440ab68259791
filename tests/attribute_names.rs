//! Every `tollgate.*` attribute name is spelled once, in `src/semconv/attributes.rs`, and
//! documented in README "Attribute contract":
//!
//! * a string literal starting with `tollgate.` anywhere else in the non-test source fails
//!   here with its file and line (use the constant instead), unless it is one of the few
//!   literals in [`NOT_ATTRIBUTES`], which are other kinds of names;
//! * every name of `attributes::ALL` must appear (in backticks) in README's "Attribute
//!   contract" section;
//! * `attributes::ALL` has no duplicates, and holds every constant the file declares.
//!
//! Test code (`tests.rs` files, `#[cfg(test)] mod … { }` bodies) is skipped: a test states
//! the wire name itself, independently of the constant.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tollgate::semconv::attributes::ALL;

const ATTRIBUTES_FILE: &str = "src/semconv/attributes.rs";

/// Literals starting with `tollgate.` that are not span or resource attribute names: (file,
/// literal, what it is). Each must still be where it is listed.
const NOT_ATTRIBUTES: &[(&str, &str, &str)] = &[
    (
        "src/processors/cost.rs",
        "tollgate.cost",
        "OTLP metric name (and instrumentation scope name) of the cost aggregates",
    ),
    (
        "src/processors/cost.rs",
        "tollgate.tokens",
        "OTLP metric name of the token aggregates",
    ),
    (
        "src/processors/cost.rs",
        "tollgate.tokens data points exported as i64::MAX because the exact sum is larger",
        "the HELP text of the tollgate_cost_otlp_saturated self-metric",
    ),
    (
        "src/ledger/focus.rs",
        "tollgate.envelope_status",
        "FOCUS Tags key of the ledger's FOCUS export",
    ),
    (
        "src/ledger/focus.rs",
        "tollgate.tenant",
        "FOCUS Tags key of the ledger's FOCUS export",
    ),
    (
        "src/ledger/focus.rs",
        "tollgate.workflow",
        "FOCUS Tags key of the ledger's FOCUS export",
    ),
    (
        "src/ledger/focus_allocated.rs",
        "tollgate.tenant",
        "x_AllocatedTags key of the allocated FOCUS export",
    ),
    (
        "src/ledger/focus_allocated.rs",
        "tollgate.server",
        "x_AllocatedTags key of the allocated FOCUS export",
    ),
    (
        "src/extensions/budget/alerts.rs",
        "tollgate.budget.threshold_crossed",
        "the `type` of the budget alert's JSON payload",
    ),
];

/// One string literal: its line (1-based) and its text between the quotes, as written.
struct Literal {
    line: usize,
    text: String,
}

/// The string literals of `text` outside comments and outside `#[cfg(test)] mod x { … }`.
fn literals(text: &str) -> Vec<Literal> {
    let b = text.as_bytes();
    // `code` is the text with comments and literals blanked (same length), so test modules
    // can be found and their braces matched without being fooled by either.
    let mut code = vec![b' '; b.len()];
    let mut found: Vec<(usize, Literal)> = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let count_lines = |from: usize, to: usize| b[from..to].iter().filter(|&&c| c == b'\n').count();
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(b.len(), |e| i + e + 2);
            line += count_lines(i, end);
            i = end;
        } else if rest.starts_with("r#\"")
            || rest.starts_with("r\"")
            || rest.starts_with("br\"")
            || rest.starts_with("br#\"")
        {
            let start = rest.find('"').unwrap();
            let hashes = rest[..start].matches('#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body_from = i + start + 1;
            let body_to = text[body_from..]
                .find(&close)
                .map_or(b.len(), |e| body_from + e);
            found.push((
                i,
                Literal {
                    line,
                    text: text[body_from..body_to].to_string(),
                },
            ));
            let end = (body_to + close.len()).min(b.len());
            line += count_lines(i, end);
            i = end;
        } else if b[i] == b'"' {
            let from = i + 1;
            let mut j = from;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            let to = j.min(b.len());
            found.push((
                i,
                Literal {
                    line,
                    text: text[from..to].to_string(),
                },
            ));
            line += count_lines(i, to);
            i = to + 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '"', '\u{1F600}') or a lifetime ('a).
            let body = &rest[1..];
            let len = if let Some(escaped) = body.strip_prefix('\\') {
                escaped.find('\'').map(|e| e + 1)
            } else {
                body.chars()
                    .next()
                    .filter(|c| body[c.len_utf8()..].starts_with('\''))
                    .map(char::len_utf8)
            };
            i += len.map_or(1, |n| n + 2);
        } else {
            if b[i] == b'\n' {
                line += 1;
            }
            code[i] = b[i];
            i += 1;
        }
    }
    let code = String::from_utf8(code).unwrap();
    let skipped = test_module_spans(&code);
    found
        .into_iter()
        .filter(|(at, _)| !skipped.iter().any(|(s, e)| s <= at && at < e))
        .map(|(_, l)| l)
        .collect()
}

/// The byte ranges of `#[cfg(test)] mod name { … }` items in blanked code.
fn test_module_spans(code: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("#[cfg(test)]") {
        let start = from + p;
        let after = code[start + "#[cfg(test)]".len()..].trim_start();
        from = start + 1;
        let Some(item) = after.strip_prefix("mod ") else {
            continue;
        };
        let name_len = item
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(item.len());
        if !item[name_len..].trim_start().starts_with('{') {
            continue; // `mod tests;`: the file is tests.rs, skipped by name.
        }
        let open = code.len() - item[name_len..].trim_start().len();
        let mut depth = 0usize;
        let mut end = code.len();
        for (k, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        spans.push((start, end));
        from = end;
    }
    spans
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `"tollgate.…"` literal of the non-test source: (file relative to the crate, line,
/// text).
fn tollgate_literals() -> Vec<(String, usize, String)> {
    let mut files = Vec::new();
    rs_files(&root().join("src"), &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let rel = f
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&f).unwrap();
        for l in literals(&text) {
            if l.text.starts_with("tollgate.") {
                out.push((rel.clone(), l.line, l.text));
            }
        }
    }
    out
}

#[test]
fn tollgate_names_are_spelled_only_in_the_attributes_file() {
    let all = tollgate_literals();
    let stray: Vec<String> = all
        .iter()
        .filter(|(file, _, text)| {
            file != ATTRIBUTES_FILE
                && !NOT_ATTRIBUTES
                    .iter()
                    .any(|(f, t, _)| f == file && t == text)
        })
        .map(|(file, line, text)| format!("{file}:{line}: \"{text}\""))
        .collect();
    assert!(
        stray.is_empty(),
        "`tollgate.*` string literals outside {ATTRIBUTES_FILE}: use its constant (add one \
         there, and to README \"Attribute contract\", for a new attribute):\n{}",
        stray.join("\n")
    );
    // The exceptions are still needed, and are not attribute names.
    for (file, text, what) in NOT_ATTRIBUTES {
        assert!(
            all.iter().any(|(f, _, t)| f == file && t == text),
            "NOT_ATTRIBUTES lists \"{text}\" ({what}) in {file}, which no longer has it"
        );
        assert!(
            !ALL.contains(text),
            "\"{text}\" is in ALL but listed as {what}"
        );
    }
}

#[test]
fn the_attributes_file_holds_every_name_once_in_all() {
    let mut seen = BTreeSet::new();
    let dups: Vec<&str> = ALL.iter().copied().filter(|n| !seen.insert(*n)).collect();
    assert!(dups.is_empty(), "duplicates in attributes::ALL: {dups:?}");
    for name in ALL {
        assert!(
            name.starts_with("tollgate."),
            "{name} is not a tollgate.* name"
        );
    }
    // Every constant of the file (prefixes aside) is in ALL.
    let text = std::fs::read_to_string(root().join(ATTRIBUTES_FILE)).unwrap();
    let consts: BTreeSet<String> = literals(&text)
        .into_iter()
        .map(|l| l.text)
        .filter(|t| t.starts_with("tollgate.") && !t.ends_with('.'))
        .collect();
    let listed: BTreeSet<String> = ALL.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        consts, listed,
        "the constants of {ATTRIBUTES_FILE} and its ALL differ"
    );
}

#[test]
fn every_attribute_is_in_the_readme_contract() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("\n## Attribute contract\n")
        .expect("README has an \"Attribute contract\" section");
    let section = &readme[start + 1..];
    let section = section[3..]
        .find("\n## ")
        .map_or(section, |end| &section[..end + 3]);
    let missing: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|n| !section.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from README \"Attribute contract\": {missing:?}"
    );
}

#[test]
fn the_scanner_finds_literals_and_skips_comments_and_test_modules() {
    let src = "// \"tollgate.comment\"\n/* \"tollgate.block\" */\nlet a = \"tollgate.a\";\n\
               let c = '\"'; let r = r#\"tollgate.raw\"#;\nfn f<'a>(x: &'a str) {}\n\
               #[cfg(test)]\nmod tests {\n    fn g() { \"tollgate.test\"; }\n}\n\
               let b = \"tollgate.\\\"b\";\n";
    let got: Vec<(usize, String)> = literals(src)
        .into_iter()
        .filter(|l| l.text.starts_with("tollgate."))
        .map(|l| (l.line, l.text))
        .collect();
    assert_eq!(
        got,
        [
            (3, "tollgate.a".to_string()),
            (4, "tollgate.raw".to_string()),
            (10, "tollgate.\\\"b".to_string()),
        ]
    );
}
