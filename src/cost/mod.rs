//! The cost engine: the rate table (YAML rows plus LiteLLM imports), model matching and exact
//! per-token pricing. Pure: no I/O except reading the table files, no floating point anywhere
//! in the money path (prices are parsed from their text into [`Decimal`]).
//!
//! Rules (also in README.md, "cost"):
//! * Matching, for one model name: exact `model` → `aliases` → provider-qualified forms
//!   (`openai/gpt-4o` ↔ `gpt-4o`) → date-suffix forms (`-2024-08-06`, `-20241022`,
//!   `@20241022` stripped) → `patterns` (globs with `*` and `?`). Explicit rows are searched
//!   first, imported rows only when no explicit row matches. Rows are filtered by provider (a
//!   row with `provider` matches spans with that `gen_ai.provider.name` or none) and by
//!   effective dates (`effective_from` inclusive, `effective_to` exclusive) at the span's
//!   start time; a row naming the span's provider beats one without a provider.
//! * Pricing (semconv 1.41 token accounting): uncached input = input − cache_read −
//!   cache_write; priced output = (output − reasoning) at `output` + reasoning at `reasoning`
//!   (reasoning is included in output, never counted twice). Tiers apply when the request's
//!   input tokens (all of them, cached included) are strictly above `above_input_tokens`.

pub mod decimal;
pub mod litellm;
pub mod pricing;
pub mod rate;
pub mod registry;
pub mod usage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use yaml_rust2::Yaml;

use crate::config::node::kind_of;
use crate::config::{Diagnostics, Map, Problem};
pub use decimal::{parse_decimal, per_token_to_per_million};
use litellm::import_litellm;
pub use rate::{class_index, Origin, PriceSet, Prices, Rate, Tier, TokenClass, CLASSES};

/// How a model name found its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Exact,
    Alias,
    ProviderQualified,
    DateSuffix,
    Pattern,
}

impl MatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact model",
            MatchKind::Alias => "alias",
            MatchKind::ProviderQualified => "provider-qualified name",
            MatchKind::DateSuffix => "date-suffix form",
            MatchKind::Pattern => "pattern",
        }
    }
}

/// A successful lookup.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'t> {
    pub rate: &'t Rate,
    pub kind: MatchKind,
}

/// Rows with lookup indices (lower-cased names).
#[derive(Debug, Default)]
struct Group {
    rows: Vec<Rate>,
    names: HashMap<String, Vec<usize>>,
    aliases: HashMap<String, Vec<usize>>,
    patterns: Vec<(usize, String)>,
}

impl Group {
    fn new(rows: Vec<Rate>) -> Self {
        let mut g = Group {
            rows,
            ..Default::default()
        };
        for (i, r) in g.rows.iter().enumerate() {
            g.names.entry(r.model.to_lowercase()).or_default().push(i);
            for a in &r.aliases {
                g.aliases.entry(a.to_lowercase()).or_default().push(i);
            }
            for p in &r.patterns {
                g.patterns.push((i, p.to_lowercase()));
            }
        }
        g
    }

    /// The best candidate among `idx`: effective, provider-compatible, a row naming the
    /// span's provider before a generic one, then table order.
    fn pick(&self, idx: Option<&Vec<usize>>, provider: Option<&str>, at: i64) -> Option<&Rate> {
        let mut best: Option<&Rate> = None;
        for &i in idx? {
            let r = &self.rows[i];
            if !r.effective_at(at) || !r.provider_ok(provider) {
                continue;
            }
            match best {
                None => best = Some(r),
                Some(b) if provider.is_some() && b.provider.is_none() && r.provider.is_some() => {
                    best = Some(r)
                }
                _ => {}
            }
        }
        best
    }

    fn by_name(&self, name: &str, provider: Option<&str>, at: i64) -> Option<(&Rate, MatchKind)> {
        if let Some(r) = self.pick(self.names.get(name), provider, at) {
            return Some((r, MatchKind::Exact));
        }
        self.pick(self.aliases.get(name), provider, at)
            .map(|r| (r, MatchKind::Alias))
    }

    fn by_qualified(&self, name: &str, provider: Option<&str>, at: i64) -> Option<&Rate> {
        if let Some((_, rest)) = name.split_once('/') {
            if let Some((r, _)) = self.by_name(rest, provider, at) {
                return Some(r);
            }
        }
        if let Some(p) = provider {
            for prefix in provider_prefixes(p) {
                let q = format!("{prefix}/{name}");
                if let Some((r, _)) = self.by_name(&q, provider, at) {
                    return Some(r);
                }
            }
        }
        None
    }

    fn find(&self, name: &str, provider: Option<&str>, at: i64) -> Option<Matched<'_>> {
        let hit = |(rate, kind)| Some(Matched { rate, kind });
        if let Some(m) = self.by_name(name, provider, at) {
            return hit(m);
        }
        if let Some(r) = self.by_qualified(name, provider, at) {
            return hit((r, MatchKind::ProviderQualified));
        }
        let unqualified = name.split_once('/').map(|(_, r)| r);
        for n in std::iter::once(name).chain(unqualified) {
            if let Some(base) = strip_date_suffix(n) {
                if let Some((r, _)) = self.by_name(base, provider, at) {
                    return hit((r, MatchKind::DateSuffix));
                }
                if let Some(r) = self.by_qualified(base, provider, at) {
                    return hit((r, MatchKind::DateSuffix));
                }
            }
        }
        // Patterns: the most literal pattern wins (more non-wildcard characters), then a
        // provider-specific row, then table order.
        let mut best: Option<(&Rate, usize, bool)> = None;
        for (i, p) in &self.patterns {
            let r = &self.rows[*i];
            if !r.effective_at(at) || !r.provider_ok(provider) || !glob_match(p, name) {
                continue;
            }
            let lit = p.chars().filter(|c| *c != '*' && *c != '?').count();
            let spec = provider.is_some() && r.provider.is_some();
            if best.is_none_or(|(_, bl, bs)| lit > bl || (lit == bl && spec && !bs)) {
                best = Some((r, lit, spec));
            }
        }
        best.and_then(|(r, _, _)| hit((r, MatchKind::Pattern)))
    }
}

/// Prefixes LiteLLM and similar tables use for a semconv `gen_ai.provider.name`.
fn provider_prefixes(p: &str) -> Vec<&'static str> {
    match p {
        "openai" => vec!["openai"],
        "anthropic" => vec!["anthropic"],
        "gcp.gemini" => vec!["gemini"],
        "gcp.vertex_ai" | "gcp.gen_ai" => vec!["vertex_ai", "gemini"],
        "aws.bedrock" => vec!["bedrock", "bedrock_converse"],
        "azure.ai.openai" => vec!["azure"],
        "azure.ai.inference" => vec!["azure_ai"],
        "mistral_ai" => vec!["mistral"],
        "x_ai" => vec!["xai"],
        "deepseek" => vec!["deepseek"],
        "groq" => vec!["groq"],
        "cohere" => vec!["cohere", "cohere_chat"],
        "perplexity" => vec!["perplexity"],
        _ => Vec::new(),
    }
}

/// `gpt-4o-2024-08-06` → `gpt-4o`, `claude-3-5-sonnet-20241022` → `claude-3-5-sonnet`,
/// `claude-3-5-sonnet@20241022` → `claude-3-5-sonnet`.
pub fn strip_date_suffix(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let n = b.len();
    if n > 11 && b[n - 11] == b'-' && b[n - 3] == b'-' && b[n - 6] == b'-' {
        let (y, m, d) = (&b[n - 10..n - 6], &b[n - 5..n - 3], &b[n - 2..]);
        if digits(y) && digits(m) && digits(d) {
            return Some(&name[..n - 11]);
        }
    }
    if n > 9 && (b[n - 9] == b'-' || b[n - 9] == b'@') && digits(&b[n - 8..]) {
        return Some(&name[..n - 9]);
    }
    None
}

/// Glob matching with `*` (any run, possibly empty) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A loaded rate table.
#[derive(Debug)]
pub struct RateTable {
    pub version: String,
    pub currency: String,
    explicit: Group,
    imported: Group,
    /// Every file the table was read from (the table itself, then imports), for reloads.
    pub files: Vec<PathBuf>,
    /// The text of every file the table was built from, as read (the table itself first,
    /// named by its file name, then each import under the path the table names it by): what
    /// the ledger stores so any row can be re-priced from the ledger alone.
    pub sources: Vec<Source>,
}

/// Reads an imported file by the name the table gives it: (how to name it in messages, text).
type ReadImport<'a> = &'a dyn Fn(&str) -> Result<(String, String), String>;

/// One file a rate table was built from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    /// The name the table refers to it by (`import[].litellm`), or the table's file name.
    pub name: String,
    pub text: String,
}

impl RateTable {
    /// The SHA-256 (hex) of the table's sources, in order: identifies exactly which prices a
    /// version held, even if a version string was reused for different prices.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for s in &self.sources {
            h.update((s.name.len() as u64).to_be_bytes());
            h.update(s.name.as_bytes());
            h.update((s.text.len() as u64).to_be_bytes());
            h.update(s.text.as_bytes());
        }
        hex(&h.finalize())
    }

    /// Rebuilds a table from its stored sources (the first is the table itself; imports are
    /// resolved among the others by name, never from the file system).
    pub fn from_sources(sources: &[Source]) -> Result<RateTable, TableError> {
        let Some((main, imports)) = sources.split_first() else {
            return Err(TableError {
                problems: vec![Problem {
                    path: "<rates>".into(),
                    message: "no sources".into(),
                }],
            });
        };
        let mut t = Self::parse_with(&main.text, &|name: &str| {
            imports
                .iter()
                .find(|s| s.name == name)
                .map(|s| (name.to_string(), s.text.clone()))
                .ok_or_else(|| format!("{name}: not among the stored sources"))
        })?;
        t.sources.insert(0, main.clone());
        Ok(t)
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A rate table that could not be loaded: every problem, each with its YAML path.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct TableError {
    pub problems: Vec<Problem>,
}

impl RateTable {
    /// Reads a rate table file (and its imports, relative to its directory).
    pub fn load(path: &Path) -> Result<RateTable, TableError> {
        let text = std::fs::read_to_string(path).map_err(|e| TableError {
            problems: vec![Problem {
                path: path.display().to_string(),
                message: format!("cannot read rate table: {e}"),
            }],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut t = Self::parse(&text, base).map_err(|mut e| {
            // Problems of the text as a whole name the file.
            for p in &mut e.problems {
                if p.path == "<rates>" {
                    p.path = path.display().to_string();
                }
            }
            e
        })?;
        t.files.insert(0, path.to_path_buf());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rates.yaml".into());
        t.sources.insert(0, Source { name, text });
        Ok(t)
    }

    /// Parses a rate table from YAML text; imports are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<RateTable, TableError> {
        Self::parse_with(text, &|name: &str| {
            let file = base_dir.join(name);
            let shown = file.display().to_string();
            std::fs::read_to_string(&file)
                .map(|text| (shown.clone(), text))
                .map_err(|e| format!("{shown}: cannot read: {e}"))
        })
        .map(|mut t| {
            t.files = t.sources.iter().map(|s| base_dir.join(&s.name)).collect();
            t
        })
    }

    /// Parses a rate table; `read` returns the text of an imported file by the name the
    /// table gives it, with how to name it in messages. `sources` then holds the imports
    /// (not the table itself).
    fn parse_with(text: &str, read: ReadImport<'_>) -> Result<RateTable, TableError> {
        let one = |path: &str, message: String| TableError {
            problems: vec![Problem {
                path: path.to_string(),
                message,
            }],
        };
        let docs = crate::config::parse_yaml(text, "<rates>").map_err(|e| {
            one(
                "<rates>",
                e.strip_prefix("<rates>: ").unwrap_or(&e).to_string(),
            )
        })?;
        let doc = docs.into_iter().next().unwrap_or(Yaml::Null);
        let mut d = Diagnostics::default();
        let Some(root) = Map::new("", &doc, &mut d) else {
            return Err(TableError {
                problems: d.into_problems(),
            });
        };
        let version = root.str("version", &mut d).unwrap_or_default();
        if version.is_empty() {
            d.error(
                "version",
                "missing: the table's version (written on every priced span)",
            );
        }
        let currency = root.str("currency", &mut d).unwrap_or_default();
        if currency.is_empty() {
            d.error("currency", "missing: the currency of every price, e.g. USD");
        }
        let mut rows = Vec::new();
        if let Some(items) = root.seq("rates", &mut d) {
            for (i, y) in items.iter().enumerate() {
                if let Some(r) = parse_row(&format!("rates[{i}]"), y, &mut d) {
                    rows.push(r);
                }
            }
        }
        let mut imported = Vec::new();
        let mut sources = Vec::new();
        if let Some(items) = root.seq("import", &mut d) {
            for (i, y) in items.iter().enumerate() {
                let Some(m) = Map::new(format!("import[{i}]"), y, &mut d) else {
                    continue;
                };
                if let Some(p) = m.str("litellm", &mut d) {
                    match read(&p).and_then(|(shown, text)| {
                        let rows = import_litellm(&text).map_err(|e| format!("{shown}: {e}"))?;
                        Ok((rows, text))
                    }) {
                        Ok((mut rs, text)) => {
                            imported.append(&mut rs);
                            sources.push(Source { name: p, text });
                        }
                        Err(e) => d.error(m.key_path("litellm"), e),
                    }
                } else {
                    d.error(m.path().to_string(), "expected `litellm: <path to JSON>`");
                }
                m.finish(&mut d);
            }
        }
        root.finish(&mut d);
        check_ties(&rows, &mut d);
        if !d.is_empty() {
            return Err(TableError {
                problems: d.into_problems(),
            });
        }
        Ok(RateTable {
            version,
            currency,
            explicit: Group::new(rows),
            imported: Group::new(imported),
            files: Vec::new(),
            sources,
        })
    }

    pub fn explicit_rows(&self) -> &[Rate] {
        &self.explicit.rows
    }
    pub fn imported_rows(&self) -> &[Rate] {
        &self.imported.rows
    }

    /// Finds the row for one model name at time `at` (Unix seconds).
    pub fn find(&self, model: &str, provider: Option<&str>, at: i64) -> Option<Matched<'_>> {
        let name = model.trim().to_lowercase();
        if name.is_empty() {
            return None;
        }
        self.explicit
            .find(&name, provider, at)
            .or_else(|| self.imported.find(&name, provider, at))
    }

    /// Finds the row for a span: the response model first, then the request model.
    pub fn find_for(
        &self,
        response_model: Option<&str>,
        request_model: Option<&str>,
        provider: Option<&str>,
        at: i64,
    ) -> Option<Matched<'_>> {
        response_model
            .and_then(|m| self.find(m, provider, at))
            .or_else(|| request_model.and_then(|m| self.find(m, provider, at)))
    }
}

fn parse_price(path: &str, y: &Yaml, d: &mut Diagnostics) -> Option<Decimal> {
    let text = match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        other => {
            d.error(
                path,
                format!(
                    "expected a price such as \"2.50\", found {}",
                    kind_of(other)
                ),
            );
            return None;
        }
    };
    match parse_decimal(&text) {
        Ok(v) if v.is_sign_negative() && !v.is_zero() => {
            d.error(path, format!("must not be negative, found {text}"));
            None
        }
        Ok(v) => Some(v),
        Err(e) => {
            d.error(path, e);
            None
        }
    }
}

fn parse_price_set(m: &Map<'_>, required: bool, d: &mut Diagnostics) -> PriceSet {
    let get = |key: &'static str, d: &mut Diagnostics| {
        m.raw(key).and_then(|y| parse_price(&m.key_path(key), y, d))
    };
    let ps = PriceSet {
        input: get("input", d),
        output: get("output", d),
        cache_read: get("cache_read", d),
        cache_write: get("cache_write", d),
        reasoning: get("reasoning", d),
        audio_input: get("audio_input", d),
        audio_output: get("audio_output", d),
        image_input: get("image_input", d),
        image_output: get("image_output", d),
    };
    if required {
        if ps.input.is_none() && !m.has("input") {
            d.error(m.key_path("input"), "missing: price per million tokens");
        }
        if ps.output.is_none() && !m.has("output") {
            d.error(m.key_path("output"), "missing: price per million tokens");
        }
    }
    m.finish(d);
    ps
}

fn parse_row(path: &str, y: &Yaml, d: &mut Diagnostics) -> Option<Rate> {
    let m = Map::new(path, y, d)?;
    let model = m.str("model", d).unwrap_or_default();
    if model.trim().is_empty() {
        d.error(m.key_path("model"), "missing: the model name");
    }
    let provider = m.str("provider", d);
    let aliases = m.str_list("aliases", d).unwrap_or_default();
    let patterns = m.str_list("patterns", d).unwrap_or_default();
    let effective_from = crate::config::time::time_at(&m, "effective_from", d);
    let effective_to = crate::config::time::time_at(&m, "effective_to", d);
    if let (Some(f), Some(t)) = (effective_from, effective_to) {
        if f >= t {
            d.error(
                m.key_path("effective_to"),
                "must be after effective_from (effective_to is exclusive)",
            );
        }
    }
    let base = match m.map("per_million_tokens", d) {
        Some(pm) => parse_price_set(&pm, true, d),
        None => {
            if !m.has("per_million_tokens") {
                d.error(
                    m.key_path("per_million_tokens"),
                    "missing: prices per million tokens (input, output, ...)",
                );
            }
            PriceSet::default()
        }
    };
    let mut tiers: Vec<Tier> = Vec::new();
    if let Some(items) = m.seq("tiers", d) {
        for (i, ty) in items.iter().enumerate() {
            let Some(tm) = Map::new(format!("{}[{i}]", m.key_path("tiers")), ty, d) else {
                continue;
            };
            let above = tm.u64("above_input_tokens", d);
            if above.is_none() && !tm.has("above_input_tokens") {
                d.error(
                    tm.key_path("above_input_tokens"),
                    "missing: the input-token threshold above which this tier applies",
                );
            }
            let prices = match tm.map("per_million_tokens", d) {
                Some(pm) => parse_price_set(&pm, false, d),
                None => {
                    d.error(
                        tm.key_path("per_million_tokens"),
                        "missing: the tier's prices per million tokens",
                    );
                    PriceSet::default()
                }
            };
            tm.finish(d);
            if let Some(a) = above {
                if tiers.iter().any(|t| t.above_input_tokens == a) {
                    d.error(
                        tm.key_path("above_input_tokens"),
                        format!("another tier of this row already starts above {a}"),
                    );
                }
                tiers.push(Tier {
                    above_input_tokens: a,
                    prices,
                });
            }
        }
    }
    tiers.sort_by_key(|t| t.above_input_tokens);
    m.finish(d);
    Some(Rate {
        id: path.to_string(),
        origin: Origin::Explicit,
        model: model.trim().to_string(),
        provider,
        aliases,
        patterns,
        effective_from,
        effective_to,
        base,
        tiers,
    })
}

fn overlaps(a: &Rate, b: &Rate) -> bool {
    let lo = |x: Option<i64>| x.unwrap_or(i64::MIN);
    let hi = |x: Option<i64>| x.unwrap_or(i64::MAX);
    lo(a.effective_from) < hi(b.effective_to) && lo(b.effective_from) < hi(a.effective_to)
}

fn same_provider(a: &Rate, b: &Rate) -> bool {
    match (&a.provider, &b.provider) {
        (None, None) => true,
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
        _ => false,
    }
}

/// Two explicit rows that one name (model or alias) or one identical pattern would match
/// equally well (same provider, overlapping effective dates) are a configuration error.
fn check_ties(rows: &[Rate], d: &mut Diagnostics) {
    let mut seen: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    let mut seen_pat: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let mut keys = vec![(r.model.to_lowercase(), format!("{}.model", r.id))];
        for (k, a) in r.aliases.iter().enumerate() {
            keys.push((a.to_lowercase(), format!("{}.aliases[{k}]", r.id)));
        }
        for (key, path) in keys {
            for (j, _) in seen.get(&key).into_iter().flatten() {
                let o = &rows[*j];
                if *j != i && same_provider(o, r) && overlaps(o, r) {
                    d.error(
                        path.clone(),
                        format!(
                            "`{key}` ties between {} and {}: both match it with the same provider and overlapping effective dates; give one a provider or non-overlapping effective_from/effective_to, or remove one",
                            o.id, r.id
                        ),
                    );
                }
            }
            seen.entry(key).or_default().push((i, path));
        }
        for (k, p) in r.patterns.iter().enumerate() {
            let key = p.to_lowercase();
            let path = format!("{}.patterns[{k}]", r.id);
            for (j, _) in seen_pat.get(&key).into_iter().flatten() {
                let o = &rows[*j];
                if *j != i && same_provider(o, r) && overlaps(o, r) {
                    d.error(
                        path.clone(),
                        format!(
                            "pattern `{key}` ties between {} and {}: same pattern, same provider, overlapping effective dates",
                            o.id, r.id
                        ),
                    );
                }
            }
            seen_pat.entry(key).or_default().push((i, path));
        }
    }
}

#[cfg(test)]
mod tests;
