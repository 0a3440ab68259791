//! A path-aware view over a parsed YAML tree.
//!
//! Component parsers read their options through [`Map`]. Every read records the key as
//! known; [`Map::finish`] then reports every key that nobody asked for as unknown, naming its
//! full path and the closest known key. Errors are collected in [`Diagnostics`] rather than
//! returned, so `tollgate validate` can print every problem in one run.

use std::cell::RefCell;
use std::time::Duration;

use yaml_rust2::yaml::Hash;
use yaml_rust2::Yaml;

/// One configuration problem: the YAML path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects every problem found while reading a configuration.
#[derive(Debug, Default)]
pub struct Diagnostics {
    problems: Vec<Problem>,
    /// Where [`Diagnostics::error_at`] inserted problems, in the order it did.
    inserted: Vec<usize>,
}

/// A place in the list of problems, taken ([`Diagnostics::mark`]) when a component's read
/// phase reads a key whose check belongs to its build phase (a file the key names, another
/// section): [`Diagnostics::error_at`] reports that check's problems there, so problems keep
/// the order of the keys whichever phase finds them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    at: usize,
    /// How many insertions had been made when the mark was taken.
    epoch: usize,
}

impl Diagnostics {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
    /// The place after the problems reported so far.
    pub fn mark(&self) -> Mark {
        Mark {
            at: self.problems.len(),
            epoch: self.inserted.len(),
        }
    }
    /// Reports a problem at `mark`: after those reported before the mark was taken (and
    /// those reported at the same mark earlier), before those reported after it.
    pub fn error_at(&mut self, mark: Mark, path: impl Into<String>, message: impl Into<String>) {
        let mut at = mark.at;
        for &p in self.inserted.get(mark.epoch..).unwrap_or_default() {
            if p <= at {
                at += 1;
            }
        }
        let at = at.min(self.problems.len());
        self.problems.insert(
            at,
            Problem {
                path: path.into(),
                message: message.into(),
            },
        );
        self.inserted.push(at);
    }
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}

/// Joins a parent path and a key the way the error messages print them.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A YAML mapping at a known path.
pub struct Map<'a> {
    path: String,
    hash: Option<&'a Hash>,
    asked: RefCell<Vec<&'static str>>,
    /// Set once the keys were read as user-chosen names: none of them is "unknown".
    open_keys: std::cell::Cell<bool>,
}

/// What a scalar looks like, for error messages.
pub fn kind_of(y: &Yaml) -> &'static str {
    match y {
        Yaml::Real(_) => "a number",
        Yaml::Integer(_) => "an integer",
        Yaml::String(_) => "a string",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a mapping",
        Yaml::Alias(_) => "an alias",
        Yaml::Null => "null",
        Yaml::BadValue => "an invalid value",
    }
}

impl<'a> Map<'a> {
    /// Views `y` as a mapping at `path`; `null` counts as an empty mapping (as `otlp:` with no
    /// options does in collector configs). Anything else is reported.
    pub fn new(path: impl Into<String>, y: &'a Yaml, d: &mut Diagnostics) -> Option<Self> {
        let path = path.into();
        match y {
            Yaml::Hash(h) => Some(Map {
                path,
                hash: Some(h),
                asked: RefCell::new(Vec::new()),
                open_keys: std::cell::Cell::new(false),
            }),
            Yaml::Null => Some(Map {
                path,
                hash: None,
                asked: RefCell::new(Vec::new()),
                open_keys: std::cell::Cell::new(false),
            }),
            other => {
                d.error(
                    path,
                    format!("expected a mapping, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    /// An empty mapping (for defaults).
    pub fn empty(path: impl Into<String>) -> Map<'static> {
        Map {
            path: path.into(),
            hash: None,
            asked: RefCell::new(Vec::new()),
            open_keys: std::cell::Cell::new(false),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw value under `key`, marking the key as known.
    pub fn raw(&self, key: &'static str) -> Option<&'a Yaml> {
        self.asked.borrow_mut().push(key);
        let v = self.hash?.get(&Yaml::String(key.to_string()))?;
        if matches!(v, Yaml::Null) {
            None
        } else {
            Some(v)
        }
    }

    /// Whether `key` is present (and not null); marks it known.
    pub fn has(&self, key: &'static str) -> bool {
        self.raw(key).is_some()
    }

    /// Whether `key` is present at all, even as an empty value (`grpc:`); marks it known.
    pub fn present(&self, key: &'static str) -> bool {
        self.asked.borrow_mut().push(key);
        self.hash
            .is_some_and(|h| h.contains_key(&Yaml::String(key.to_string())))
    }

    /// Entries in document order, for maps keyed by user-chosen names (component ids,
    /// pipelines). Keys that are not strings are reported.
    pub fn entries(&self, d: &mut Diagnostics) -> Vec<(String, &'a Yaml)> {
        self.open_keys.set(true);
        let mut out = Vec::new();
        if let Some(h) = self.hash {
            for (k, v) in h {
                match k {
                    Yaml::String(s) => out.push((s.clone(), v)),
                    other => d.error(
                        self.path.clone(),
                        format!("keys must be strings, found {}", kind_of(other)),
                    ),
                }
            }
        }
        out
    }

    pub fn map(&self, key: &'static str, d: &mut Diagnostics) -> Option<Map<'a>> {
        let y = self.raw(key)?;
        Map::new(self.key_path(key), y, d)
    }

    /// Like [`Map::map`] but an absent key gives an empty mapping, so nested defaults apply
    /// and unknown keys below are still reported when present.
    pub fn map_or_empty(&self, key: &'static str, d: &mut Diagnostics) -> Option<Map<'a>> {
        match self.raw(key) {
            Some(y) => Map::new(self.key_path(key), y, d),
            None => Some(Map {
                path: self.key_path(key),
                hash: None,
                asked: RefCell::new(Vec::new()),
                open_keys: std::cell::Cell::new(false),
            }),
        }
    }

    pub fn seq(&self, key: &'static str, d: &mut Diagnostics) -> Option<&'a [Yaml]> {
        match self.raw(key)? {
            Yaml::Array(a) => Some(a.as_slice()),
            other => {
                d.error(
                    self.key_path(key),
                    format!("expected a list, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    pub fn str(&self, key: &'static str, d: &mut Diagnostics) -> Option<String> {
        let y = self.raw(key)?;
        scalar_string(y).or_else(|| {
            d.error(
                self.key_path(key),
                format!("expected a string, found {}", kind_of(y)),
            );
            None
        })
    }

    /// A list of strings (a single string is not accepted: the collector's lists are lists).
    pub fn str_list(&self, key: &'static str, d: &mut Diagnostics) -> Option<Vec<String>> {
        let items = self.seq(key, d)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, y) in items.iter().enumerate() {
            match scalar_string(y) {
                Some(s) => out.push(s),
                None => d.error(
                    format!("{}[{i}]", self.key_path(key)),
                    format!("expected a string, found {}", kind_of(y)),
                ),
            }
        }
        Some(out)
    }

    pub fn bool(&self, key: &'static str, d: &mut Diagnostics) -> Option<bool> {
        let y = self.raw(key)?;
        match y {
            Yaml::Boolean(b) => Some(*b),
            other => {
                d.error(
                    self.key_path(key),
                    format!("expected true or false, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    pub fn u64(&self, key: &'static str, d: &mut Diagnostics) -> Option<u64> {
        let y = self.raw(key)?;
        match y {
            Yaml::Integer(i) if *i >= 0 => Some(*i as u64),
            Yaml::Integer(i) => {
                d.error(
                    self.key_path(key),
                    format!("must not be negative, found {i}"),
                );
                None
            }
            other => {
                d.error(
                    self.key_path(key),
                    format!("expected a whole number, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    /// A whole number in `[min, max]`.
    pub fn u64_in(
        &self,
        key: &'static str,
        min: u64,
        max: u64,
        d: &mut Diagnostics,
    ) -> Option<u64> {
        let v = self.u64(key, d)?;
        if v < min || v > max {
            d.error(
                self.key_path(key),
                format!("must be between {min} and {max}, found {v}"),
            );
            return None;
        }
        Some(v)
    }

    pub fn f64(&self, key: &'static str, d: &mut Diagnostics) -> Option<f64> {
        let y = self.raw(key)?;
        let v = match y {
            Yaml::Integer(i) => Some(*i as f64),
            Yaml::Real(s) => s.parse::<f64>().ok(),
            _ => None,
        };
        if v.is_none() {
            d.error(
                self.key_path(key),
                format!("expected a number, found {}", kind_of(y)),
            );
        }
        v
    }

    /// A duration such as `200ms`, `5s`, `1m30s`, `2h`.
    pub fn duration(&self, key: &'static str, d: &mut Diagnostics) -> Option<Duration> {
        let y = self.raw(key)?;
        let text = match y {
            Yaml::String(s) => s.as_str(),
            Yaml::Integer(0) => "0s",
            other => {
                d.error(
                    self.key_path(key),
                    format!(
                        "expected a duration such as \"200ms\" or \"5s\", found {}",
                        kind_of(other)
                    ),
                );
                return None;
            }
        };
        match parse_duration(text) {
            Ok(v) => Some(v),
            Err(e) => {
                d.error(self.key_path(key), e);
                None
            }
        }
    }

    /// Reports every key present here that no reader asked for, with the closest known key.
    pub fn finish(&self, d: &mut Diagnostics) {
        let Some(h) = self.hash else { return };
        if self.open_keys.get() {
            return;
        }
        let asked = self.asked.borrow();
        for k in h.keys() {
            let Yaml::String(k) = k else { continue };
            if asked.iter().any(|a| a == k) {
                continue;
            }
            let mut msg = String::from("unknown key");
            if let Some(best) = closest(k, asked.iter().copied()) {
                msg.push_str(&format!("; did you mean `{best}`?"));
            } else if !asked.is_empty() {
                let mut known: Vec<&str> = asked.to_vec();
                known.sort_unstable();
                known.dedup();
                msg.push_str(&format!("; known keys: {}", known.join(", ")));
            }
            d.error(join(&self.path, k), msg);
        }
    }
}

/// Checks `host:port` shape without resolving (validate must not touch the network).
pub fn check_endpoint(m: &Map<'_>, endpoint: &str, d: &mut Diagnostics) {
    let ok = endpoint
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        d.error(
            m.key_path("endpoint"),
            format!("expected host:port (e.g. 127.0.0.1:4317), found {endpoint:?}"),
        );
    }
}

/// The string form of a scalar (numbers keep their YAML text).
pub fn scalar_string(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses `200ms`, `5s`, `1.5s`, `1m30s`, `2h`, `100us`, `10ns`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(
            "expected a duration such as \"200ms\" or \"5s\", found an empty string".into(),
        );
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || {
        format!("invalid duration {text:?}: use a number with a unit (ns, us, ms, s, m, h), e.g. \"200ms\" or \"5s\"")
    };
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// The closest candidate to `word`, if close enough to be a plausible typo: a small edit
/// distance, or an abbreviation (`bad_sig` for `bad_signature`).
pub fn closest<'b>(word: &str, candidates: impl Iterator<Item = &'b str>) -> Option<&'b str> {
    let w = word.to_ascii_lowercase();
    let mut best: Option<(&str, usize)> = None;
    let mut prefix: Option<&str> = None;
    for c in candidates {
        let lc = c.to_ascii_lowercase();
        let dist = strsim::levenshtein(&w, &lc);
        if best.is_none_or(|(_, bd)| dist < bd) {
            best = Some((c, dist));
        }
        if w.len() >= 3 && lc.starts_with(&w) && prefix.is_none() {
            prefix = Some(c);
        }
    }
    let (c, dist) = best?;
    let limit = (word.len().max(c.len()) / 3).max(2);
    if dist <= limit {
        Some(c)
    } else {
        prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_reported_at_a_mark_keep_the_order_of_the_keys() {
        let mut d = Diagnostics::default();
        d.error("a", "1");
        let m1 = d.mark();
        d.error("c", "3");
        let m2 = d.mark();
        d.error("e", "5");
        d.error_at(m2, "d", "4");
        d.error_at(m1, "b", "2");
        d.error_at(m2, "d", "4b");
        let later = d.mark();
        d.error("g", "7");
        d.error_at(later, "f", "6");
        let got: Vec<String> = d.problems().iter().map(Problem::to_string).collect();
        assert_eq!(
            got,
            ["a: 1", "b: 2", "c: 3", "d: 4", "d: 4b", "e: 5", "f: 6", "g: 7"]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn suggestions() {
        let known = ["endpoint", "timeout", "headers"];
        assert_eq!(closest("endpiont", known.iter().copied()), Some("endpoint"));
        assert_eq!(closest("timout", known.iter().copied()), Some("timeout"));
        assert_eq!(closest("zzzzzzzz", known.iter().copied()), None);
    }

    #[test]
    fn unknown_keys_are_reported_with_path() {
        let docs = yaml_rust2::YamlLoader::load_from_str("endpiont: x\ntimeout: 5s\n").unwrap();
        let mut d = Diagnostics::default();
        let m = Map::new("exporters.otlp", &docs[0], &mut d).unwrap();
        let _ = m.str("endpoint", &mut d);
        let _ = m.duration("timeout", &mut d);
        m.finish(&mut d);
        assert_eq!(d.problems().len(), 1);
        assert_eq!(
            d.problems()[0].to_string(),
            "exporters.otlp.endpiont: unknown key; did you mean `endpoint`?"
        );
    }
}
