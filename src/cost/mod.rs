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

pub mod registry;
pub mod usage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use yaml_rust2::Yaml;

use crate::config::node::kind_of;
use crate::config::{Diagnostics, Map, Problem};

/// The classes of tokens priced separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenClass {
    /// Input not served from or written to a cache.
    Input,
    /// Output that is not reasoning.
    Output,
    CacheRead,
    CacheWrite,
    Reasoning,
    /// Audio input tokens, priced apart only when the row sets `audio_input`.
    AudioInput,
    /// Audio output tokens, priced apart only when the row sets `audio_output`.
    AudioOutput,
    /// Image input tokens, priced apart only when the row sets `image_input`.
    ImageInput,
    /// Image output tokens, priced apart only when the row sets `image_output`.
    ImageOutput,
}

/// How many [`TokenClass`]es there are (the length of every per-class array).
pub const CLASSES: usize = 9;

impl TokenClass {
    pub const ALL: [TokenClass; CLASSES] = [
        TokenClass::Input,
        TokenClass::Output,
        TokenClass::CacheRead,
        TokenClass::CacheWrite,
        TokenClass::Reasoning,
        TokenClass::AudioInput,
        TokenClass::AudioOutput,
        TokenClass::ImageInput,
        TokenClass::ImageOutput,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TokenClass::Input => "input",
            TokenClass::Output => "output",
            TokenClass::CacheRead => "cache_read",
            TokenClass::CacheWrite => "cache_write",
            TokenClass::Reasoning => "reasoning",
            TokenClass::AudioInput => "audio_input",
            TokenClass::AudioOutput => "audio_output",
            TokenClass::ImageInput => "image_input",
            TokenClass::ImageOutput => "image_output",
        }
    }

    /// A per-modality class (priced apart only when the row has a price for it).
    pub fn is_modality(self) -> bool {
        matches!(
            self,
            TokenClass::AudioInput
                | TokenClass::AudioOutput
                | TokenClass::ImageInput
                | TokenClass::ImageOutput
        )
    }
}

/// Prices per million tokens as written; `None` = not set (see [`Rate::prices_for`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceSet {
    pub input: Option<Decimal>,
    pub output: Option<Decimal>,
    pub cache_read: Option<Decimal>,
    pub cache_write: Option<Decimal>,
    pub reasoning: Option<Decimal>,
    pub audio_input: Option<Decimal>,
    pub audio_output: Option<Decimal>,
    pub image_input: Option<Decimal>,
    pub image_output: Option<Decimal>,
}

/// Fully resolved prices per million tokens, indexed by [`TokenClass`] order. A modality
/// class the row has no price for holds the price of the total it stays in (input or
/// output) and `separate` says it is not priced apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prices(pub [Decimal; CLASSES], pub [bool; CLASSES]);

impl Prices {
    pub fn get(&self, c: TokenClass) -> Decimal {
        self.0[class_index(c)]
    }
    /// Whether tokens of this class are priced apart (always for the five base classes;
    /// for a modality class only when the row sets its price).
    pub fn separate(&self, c: TokenClass) -> bool {
        self.1[class_index(c)]
    }
}

pub fn class_index(c: TokenClass) -> usize {
    match c {
        TokenClass::Input => 0,
        TokenClass::Output => 1,
        TokenClass::CacheRead => 2,
        TokenClass::CacheWrite => 3,
        TokenClass::Reasoning => 4,
        TokenClass::AudioInput => 5,
        TokenClass::AudioOutput => 6,
        TokenClass::ImageInput => 7,
        TokenClass::ImageOutput => 8,
    }
}

/// A long-context tier: applies when the request's input tokens are above the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub above_input_tokens: u64,
    pub prices: PriceSet,
}

/// Where a row came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Explicit,
    LiteLlm,
}

/// One row of the rate table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// `rates[3]` for explicit rows, `litellm:<model>` for imported ones.
    pub id: String,
    pub origin: Origin,
    pub model: String,
    pub provider: Option<String>,
    pub aliases: Vec<String>,
    pub patterns: Vec<String>,
    pub effective_from: Option<i64>,
    pub effective_to: Option<i64>,
    /// Base prices; `input` and `output` are always set.
    pub base: PriceSet,
    /// Ascending by threshold.
    pub tiers: Vec<Tier>,
}

impl Rate {
    fn effective_at(&self, t: i64) -> bool {
        self.effective_from.is_none_or(|f| t >= f) && self.effective_to.is_none_or(|e| t < e)
    }

    fn provider_ok(&self, provider: Option<&str>) -> bool {
        match (&self.provider, provider) {
            (Some(p), Some(q)) => p.eq_ignore_ascii_case(q),
            _ => true,
        }
    }

    /// The tier applying to a request with `request_input` input tokens (`None` = base).
    pub fn tier_for(&self, request_input: u64) -> Option<&Tier> {
        self.tiers
            .iter()
            .rev()
            .find(|t| request_input > t.above_input_tokens)
    }

    /// Resolves the prices for a tier: a tier inherits every price it does not set from the
    /// base row; `cache_read` and `cache_write` not set anywhere cost the input price;
    /// `reasoning` not set anywhere costs the (tier's) output price.
    pub fn prices_for(&self, tier: Option<&Tier>) -> Prices {
        let t = tier.map(|t| &t.prices);
        let pick = |f: fn(&PriceSet) -> Option<Decimal>| t.and_then(f).or_else(|| f(&self.base));
        let input = pick(|p| p.input).unwrap_or_default();
        let output = pick(|p| p.output).unwrap_or_default();
        let cache_read = pick(|p| p.cache_read).unwrap_or(input);
        let cache_write = pick(|p| p.cache_write).unwrap_or(input);
        let reasoning = pick(|p| p.reasoning).unwrap_or(output);
        let audio_input = pick(|p| p.audio_input);
        let audio_output = pick(|p| p.audio_output);
        let image_input = pick(|p| p.image_input);
        let image_output = pick(|p| p.image_output);
        Prices(
            [
                input,
                output,
                cache_read,
                cache_write,
                reasoning,
                audio_input.unwrap_or(input),
                audio_output.unwrap_or(output),
                image_input.unwrap_or(input),
                image_output.unwrap_or(output),
            ],
            [
                true,
                true,
                true,
                true,
                true,
                audio_input.is_some(),
                audio_output.is_some(),
                image_input.is_some(),
                image_output.is_some(),
            ],
        )
    }
}

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

/// The semconv provider name for a LiteLLM `litellm_provider` value.
fn provider_from_litellm(p: &str) -> String {
    let mapped = match p {
        "gemini" => "gcp.gemini",
        "bedrock" | "bedrock_converse" => "aws.bedrock",
        "azure" => "azure.ai.openai",
        "azure_ai" => "azure.ai.inference",
        "mistral" => "mistral_ai",
        "xai" => "x_ai",
        "cohere_chat" => "cohere",
        p if p.starts_with("vertex_ai") => "gcp.vertex_ai",
        p => p,
    };
    mapped.to_string()
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

/// Parses a decimal number exactly from its text: `2.50`, `-1`, `2.5e-06`, `1E-5`, `3e2`.
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let t = text.trim();
    let bad = |why: &str| format!("invalid number {text:?}: {why}");
    if t.is_empty() || t.contains('_') {
        return Err(bad("expected a decimal number such as \"2.50\""));
    }
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (
            &t[..i],
            t[i + 1..].parse::<i32>().map_err(|_| bad("bad exponent"))?,
        ),
        None => (t, 0),
    };
    let mut v = Decimal::from_str_exact(mant)
        .map_err(|_| bad("expected a decimal number such as \"2.50\""))?;
    if exp < 0 {
        let scale = v.scale() + exp.unsigned_abs();
        if scale > 28 {
            // Drop trailing zeros of the mantissa first (`1.000e-27`).
            v = v.normalize();
            let scale = v.scale() + exp.unsigned_abs();
            if scale > 28 {
                return Err(bad("more than 28 decimal places"));
            }
            v.set_scale(scale).map_err(|_| bad("out of range"))?;
        } else {
            v.set_scale(scale).map_err(|_| bad("out of range"))?;
        }
    } else {
        for _ in 0..exp {
            v = v
                .checked_mul(Decimal::TEN)
                .ok_or_else(|| bad("out of range"))?;
        }
    }
    Ok(v)
}

const MILLION: i64 = 1_000_000;

/// Per-token price text (LiteLLM) → exact price per million tokens.
pub fn per_token_to_per_million(text: &str) -> Result<Decimal, String> {
    let v = parse_decimal(text)?;
    v.checked_mul(Decimal::from(MILLION))
        .map(|x| x.normalize())
        .ok_or_else(|| format!("{text} per token is out of range"))
}

/// LiteLLM keys read (everything else in an entry is ignored). The modality keys are the
/// per-token ones only: per-image, per-second and per-character prices cannot be applied to
/// token counts.
const LITELLM_KEYS: [(&str, TokenClass); 9] = [
    ("input_cost_per_token", TokenClass::Input),
    ("output_cost_per_token", TokenClass::Output),
    ("cache_read_input_token_cost", TokenClass::CacheRead),
    ("cache_creation_input_token_cost", TokenClass::CacheWrite),
    ("output_cost_per_reasoning_token", TokenClass::Reasoning),
    ("input_cost_per_audio_token", TokenClass::AudioInput),
    ("output_cost_per_audio_token", TokenClass::AudioOutput),
    ("input_cost_per_image_token", TokenClass::ImageInput),
    ("output_cost_per_image_token", TokenClass::ImageOutput),
];

fn set_class(ps: &mut PriceSet, c: TokenClass, v: Decimal) {
    match c {
        TokenClass::Input => ps.input = Some(v),
        TokenClass::Output => ps.output = Some(v),
        TokenClass::CacheRead => ps.cache_read = Some(v),
        TokenClass::CacheWrite => ps.cache_write = Some(v),
        TokenClass::Reasoning => ps.reasoning = Some(v),
        TokenClass::AudioInput => ps.audio_input = Some(v),
        TokenClass::AudioOutput => ps.audio_output = Some(v),
        TokenClass::ImageInput => ps.image_input = Some(v),
        TokenClass::ImageOutput => ps.image_output = Some(v),
    }
}

/// `input_cost_per_token_above_200k_tokens` → (Input, Some(200000)); `input_cost_per_token`
/// → (Input, None); anything else (batches, priority, 1hr cache, audio...) → None.
fn litellm_key(key: &str) -> Option<(TokenClass, Option<u64>)> {
    for (base, class) in LITELLM_KEYS {
        let Some(rest) = key.strip_prefix(base) else {
            continue;
        };
        if rest.is_empty() {
            return Some((class, None));
        }
        let n = rest.strip_prefix("_above_")?.strip_suffix("k_tokens")?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return n.parse::<u64>().ok().map(|k| (class, Some(k * 1000)));
    }
    None
}

/// Parses LiteLLM's `model_prices_and_context_window.json` text into rows. Entries without
/// a per-token input or output price (images, audio seconds, the `sample_spec`) are skipped.
pub fn import_litellm(text: &str) -> Result<Vec<Rate>, String> {
    use serde_json::value::RawValue;
    let doc: std::collections::BTreeMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut rows = Vec::new();
    for (model, raw) in doc {
        if model == "sample_spec" {
            continue;
        }
        let Ok(entry) =
            serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(raw.get())
        else {
            continue;
        };
        let mut base = PriceSet::default();
        let mut tiers: std::collections::BTreeMap<u64, PriceSet> = Default::default();
        let mut provider = None;
        for (k, v) in &entry {
            if k == "litellm_provider" {
                provider = serde_json::from_str::<String>(v.get())
                    .ok()
                    .map(|p| provider_from_litellm(&p));
                continue;
            }
            let Some((class, above)) = litellm_key(k) else {
                continue;
            };
            let text = v.get().trim();
            if !text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
                continue; // null or a string: no price
            }
            let price = per_token_to_per_million(text).map_err(|e| format!("{model}.{k}: {e}"))?;
            if price.is_sign_negative() && !price.is_zero() {
                return Err(format!("{model}.{k}: negative price {text}"));
            }
            match above {
                None => set_class(&mut base, class, price),
                Some(a) => set_class(tiers.entry(a).or_default(), class, price),
            }
        }
        if base.input.is_none() && base.output.is_none() {
            continue;
        }
        base.input.get_or_insert(Decimal::ZERO);
        base.output.get_or_insert(Decimal::ZERO);
        rows.push(Rate {
            id: format!("litellm:{model}"),
            origin: Origin::LiteLlm,
            model,
            provider,
            aliases: Vec::new(),
            patterns: Vec::new(),
            effective_from: None,
            effective_to: None,
            base,
            tiers: tiers
                .into_iter()
                .map(|(above_input_tokens, prices)| Tier {
                    above_input_tokens,
                    prices,
                })
                .collect(),
        });
    }
    Ok(rows)
}

/// Token counts as reported on a span (`None` = attribute absent). Read them from span
/// attributes with [`usage::read_usage`]. The modality counts are breakdowns: they are part
/// of `input` / `output`, never added to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub cache_read: Option<i64>,
    pub cache_write: Option<i64>,
    pub reasoning: Option<i64>,
    pub audio_input: Option<i64>,
    pub audio_output: Option<i64>,
    pub image_input: Option<i64>,
    pub image_output: Option<i64>,
    pub text_input: Option<i64>,
    pub text_output: Option<i64>,
}

impl Usage {
    /// No total count (`input`, `output`, cache, reasoning) is reported; modality
    /// breakdowns alone are not usage.
    pub fn is_empty(&self) -> bool {
        self.input.is_none()
            && self.output.is_none()
            && self.cache_read.is_none()
            && self.cache_write.is_none()
            && self.reasoning.is_none()
    }
}

/// Why a span's usage cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("{attr} is negative ({value})")]
    Negative { attr: &'static str, value: i64 },
    #[error("cache_read ({cache_read}) + cache_write ({cache_write}) input tokens exceed input_tokens ({input}), which per semconv 1.41 include them")]
    CacheExceedsInput {
        input: i64,
        cache_read: i64,
        cache_write: i64,
    },
    #[error("reasoning.output_tokens ({reasoning}) exceed output_tokens ({output}), which per semconv 1.41 include them")]
    ReasoningExceedsOutput { output: i64, reasoning: i64 },
    #[error("{what} tokens priced at the row's modality prices ({modal}) exceed the {rest} ({left}) they are part of")]
    ModalityExceeds {
        what: &'static str,
        rest: &'static str,
        modal: u64,
        left: u64,
    },
    #[error("arithmetic overflow pricing these token counts")]
    Overflow,
}

/// A priced span, with everything needed to show the arithmetic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakdown {
    /// All input tokens of the request (decides the tier).
    pub request_input: u64,
    /// The tier applied (`None` = base prices).
    pub tier: Option<u64>,
    /// Tokens per class, in [`TokenClass::ALL`] order. A modality class counts only the
    /// tokens priced apart; otherwise they are inside `input` / `output`.
    pub tokens: [u64; CLASSES],
    pub prices: Prices,
    /// Cost per class, in [`TokenClass::ALL`] order.
    pub cost: [Decimal; CLASSES],
    pub total: Decimal,
}

impl Breakdown {
    pub fn tokens_of(&self, c: TokenClass) -> u64 {
        self.tokens[class_index(c)]
    }
    pub fn cost_of(&self, c: TokenClass) -> Decimal {
        self.cost[class_index(c)]
    }
}

/// Checks a span's token counts for consistency (semconv 1.41: input includes cache reads
/// and writes, output includes reasoning).
pub fn validate(u: &Usage) -> Result<[u64; 5], UsageError> {
    let get = |v: Option<i64>, attr: &'static str| -> Result<i64, UsageError> {
        let v = v.unwrap_or(0);
        if v < 0 {
            Err(UsageError::Negative { attr, value: v })
        } else {
            Ok(v)
        }
    };
    let input = get(u.input, "gen_ai.usage.input_tokens")?;
    let output = get(u.output, "gen_ai.usage.output_tokens")?;
    let cache_read = get(u.cache_read, "gen_ai.usage.cache_read.input_tokens")?;
    let cache_write = get(u.cache_write, "gen_ai.usage.cache_write.input_tokens")?;
    let reasoning = get(u.reasoning, "gen_ai.usage.reasoning.output_tokens")?;
    let cached = cache_read
        .checked_add(cache_write)
        .ok_or(UsageError::Overflow)?;
    if cached > input {
        return Err(UsageError::CacheExceedsInput {
            input,
            cache_read,
            cache_write,
        });
    }
    if reasoning > output {
        return Err(UsageError::ReasoningExceedsOutput { output, reasoning });
    }
    Ok([
        (input - cached) as u64,
        (output - reasoning) as u64,
        cache_read as u64,
        cache_write as u64,
        reasoning as u64,
    ])
}

/// `tokens × price_per_million / 1 000 000`, exactly.
pub fn cost_of(tokens: u64, per_million: Decimal) -> Result<Decimal, UsageError> {
    let product = Decimal::from(tokens)
        .checked_mul(per_million)
        .ok_or(UsageError::Overflow)?;
    let mut scaled = product;
    if product.scale() + 6 <= 28 {
        scaled
            .set_scale(product.scale() + 6)
            .map_err(|_| UsageError::Overflow)?;
    } else {
        scaled = product
            .checked_div(Decimal::from(MILLION))
            .ok_or(UsageError::Overflow)?;
    }
    Ok(scaled.normalize())
}

/// Prices one span's usage with one row. Modality tokens are priced apart only for the
/// modalities the row (or its tier) has a price for; they then come out of the uncached
/// input (or the non-reasoning output) and must fit in it.
pub fn price(rate: &Rate, u: &Usage) -> Result<Breakdown, UsageError> {
    let base = validate(u)?;
    let request_input = u.input.unwrap_or(0).max(0) as u64;
    let tier = rate.tier_for(request_input);
    let prices = rate.prices_for(tier);
    let mut tokens = [0u64; CLASSES];
    tokens[..5].copy_from_slice(&base);
    let modal = |v: Option<i64>, c: TokenClass| -> Result<u64, UsageError> {
        if !prices.separate(c) {
            return Ok(0);
        }
        let v = v.unwrap_or(0);
        u64::try_from(v).map_err(|_| UsageError::Negative {
            attr: match c {
                TokenClass::AudioInput => "gen_ai.usage.audio.input_tokens",
                TokenClass::AudioOutput => "gen_ai.usage.audio.output_tokens",
                TokenClass::ImageInput => "gen_ai.usage.image.input_tokens",
                _ => "gen_ai.usage.image.output_tokens",
            },
            value: v,
        })
    };
    let (ai, ii) = (
        modal(u.audio_input, TokenClass::AudioInput)?,
        modal(u.image_input, TokenClass::ImageInput)?,
    );
    let (ao, io) = (
        modal(u.audio_output, TokenClass::AudioOutput)?,
        modal(u.image_output, TokenClass::ImageOutput)?,
    );
    let take = |total: u64, a: u64, b: u64, what, rest| -> Result<u64, UsageError> {
        let m = a.checked_add(b).ok_or(UsageError::Overflow)?;
        total.checked_sub(m).ok_or(UsageError::ModalityExceeds {
            what,
            rest,
            modal: m,
            left: total,
        })
    };
    tokens[0] = take(tokens[0], ai, ii, "audio + image input", "uncached input")?;
    tokens[1] = take(
        tokens[1],
        ao,
        io,
        "audio + image output",
        "non-reasoning output",
    )?;
    tokens[5] = ai;
    tokens[6] = ao;
    tokens[7] = ii;
    tokens[8] = io;
    let mut cost = [Decimal::ZERO; CLASSES];
    let mut total = Decimal::ZERO;
    for (i, c) in TokenClass::ALL.iter().enumerate() {
        cost[i] = cost_of(tokens[i], prices.get(*c))?;
        total = total.checked_add(cost[i]).ok_or(UsageError::Overflow)?;
    }
    Ok(Breakdown {
        request_input,
        tier: tier.map(|t| t.above_input_tokens),
        tokens,
        prices,
        cost,
        total: total.normalize(),
    })
}

/// The nearest double to `d` (rounded once). Fast path: a mantissa below 2^53 and a scale up
/// to 22 are both exact doubles, so one IEEE division rounds correctly (as parsing the decimal
/// text does); anything else goes through the text.
pub fn decimal_to_f64(d: Decimal) -> f64 {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let m = d.mantissa();
    match POW10.get(d.scale() as usize) {
        Some(p) if m.unsigned_abs() < 1 << 53 => m as f64 / p,
        _ => d.to_string().parse::<f64>().unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests;
