//! A path-aware view over a parsed YAML tree.
//!
//! Component parsers read their options through [`Map`]. Every read records the key as
//! known; [`Map::finish`] then reports every key that nobody asked for as unknown, naming its
//! full path and the closest known key. Errors are collected in [`Diagnostics`] rather than
//! returned, so `tollgate validate` can print every problem in one run.
//!
//! A section checks itself: every mapping opened through a [`Diagnostics`] is registered
//! there, and one that was never finished has its unknown keys reported when the problems are
//! read ([`Diagnostics::is_empty`], [`Diagnostics::problems`], [`Diagnostics::into_problems`]).
//! A reader that forgets [`Map::finish`] therefore cannot let a misspelt key pass silently;
//! calling it still reports at that point, in reading order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
///
/// Problems are reported in the order the options they are about were read: a problem found
/// later (when `build` loads a file that `read` recorded) goes to the [`Slot`] taken when its
/// key was read, before every problem reported after that.
#[derive(Debug, Default)]
pub struct Diagnostics {
    problems: Vec<Problem>,
    /// Each problem's place in the report (ascending, parallel to `problems`).
    order: Vec<u64>,
    /// The place of the next problem or slot.
    next: u64,
    /// Every mapping opened through these diagnostics, to report the unknown keys of those
    /// never finished.
    sections: Vec<Arc<Section>>,
}

/// A place in a [`Diagnostics`] report, taken while reading an option whose problems are
/// found later (see [`Diagnostics::error_at`]).
/// The default slot is the start of the report (a placeholder until a read takes one).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Slot(u64);

impl Diagnostics {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
        self.order.push(self.next);
        self.next += 1;
    }
    /// Takes the place of problems found later, which [`Diagnostics::error_at`] puts there.
    pub fn slot(&mut self) -> Slot {
        let s = Slot(self.next);
        self.next += 1;
        s
    }
    /// Reports a problem at `slot`: after the problems reported before the slot was taken
    /// (and earlier ones at the same slot), before those reported after it.
    pub fn error_at(&mut self, slot: Slot, path: impl Into<String>, message: impl Into<String>) {
        let at = self.order.partition_point(|&o| o <= slot.0);
        self.problems.insert(
            at,
            Problem {
                path: path.into(),
                message: message.into(),
            },
        );
        self.order.insert(at, slot.0);
    }
    /// Whether no problem was found, counting unknown keys of sections never finished.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty() && self.unfinished().is_empty()
    }
    /// Every problem, in reading order, then the unknown keys of sections never finished.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = self.problems.clone();
        out.extend(self.unfinished());
        out
    }
    pub fn into_problems(self) -> Vec<Problem> {
        let late = self.unfinished();
        let mut out = self.problems;
        out.extend(late);
        out
    }
    fn unfinished(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for s in &self.sections {
            if !s.finished.load(Ordering::Acquire) {
                out.extend(s.unknown_keys());
            }
        }
        out
    }
}

/// What a [`Map`] shares with the [`Diagnostics`] it was opened through.
#[derive(Debug)]
struct Section {
    path: String,
    /// The string keys present, in document order.
    keys: Vec<String>,
    asked: Mutex<Vec<&'static str>>,
    /// Set once the keys were read as user-chosen names: none of them is "unknown".
    open_keys: AtomicBool,
    /// Set once its unknown keys were reported.
    finished: AtomicBool,
}

impl Section {
    fn new(path: &str, hash: Option<&Hash>) -> Self {
        Section {
            path: path.to_string(),
            keys: hash
                .map(|h| {
                    h.keys()
                        .filter_map(|k| match k {
                            Yaml::String(k) => Some(k.clone()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            asked: Mutex::new(Vec::new()),
            open_keys: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        }
    }

    fn ask(&self, key: &'static str) {
        match self.asked.lock() {
            Ok(mut a) => a.push(key),
            Err(p) => p.into_inner().push(key),
        }
    }

    fn asked(&self) -> Vec<&'static str> {
        match self.asked.lock() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Every key present that no reader asked for, with the closest known key.
    fn unknown_keys(&self) -> Vec<Problem> {
        if self.open_keys.load(Ordering::Acquire) {
            return Vec::new();
        }
        let asked = self.asked();
        let mut out = Vec::new();
        for k in &self.keys {
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
            out.push(Problem {
                path: join(&self.path, k),
                message: msg,
            });
        }
        out
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
    hash: Option<&'a Hash>,
    section: Arc<Section>,
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
        let hash = match y {
            Yaml::Hash(h) => Some(h),
            Yaml::Null => None,
            other => {
                d.error(
                    path,
                    format!("expected a mapping, found {}", kind_of(other)),
                );
                return None;
            }
        };
        let section = Arc::new(Section::new(&path, hash));
        if hash.is_some() {
            d.sections.push(section.clone());
        }
        Some(Map { hash, section })
    }

    /// An empty mapping (for defaults).
    pub fn empty(path: impl Into<String>) -> Map<'static> {
        Map {
            hash: None,
            section: Arc::new(Section::new(&path.into(), None)),
        }
    }

    pub fn path(&self) -> &str {
        &self.section.path
    }

    pub fn key_path(&self, key: &str) -> String {
        join(&self.section.path, key)
    }

    /// The raw value under `key`, marking the key as known.
    pub fn raw(&self, key: &'static str) -> Option<&'a Yaml> {
        self.section.ask(key);
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
        self.section.ask(key);
        self.hash
            .is_some_and(|h| h.contains_key(&Yaml::String(key.to_string())))
    }

    /// Entries in document order, for maps keyed by user-chosen names (component ids,
    /// pipelines). Keys that are not strings are reported.
    pub fn entries(&self, d: &mut Diagnostics) -> Vec<(String, &'a Yaml)> {
        self.section.open_keys.store(true, Ordering::Release);
        let mut out = Vec::new();
        if let Some(h) = self.hash {
            for (k, v) in h {
                match k {
                    Yaml::String(s) => out.push((s.clone(), v)),
                    other => d.error(
                        self.path().to_string(),
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
            None => Some(Map::empty(self.key_path(key))),
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

    /// Leaves this section's keys unchecked: another problem (reported) made reading them
    /// pointless, so calling them unknown would only add noise.
    pub fn skip(&self) {
        self.section.finished.store(true, Ordering::Release);
    }

    /// Reports every key present here that no reader asked for, with the closest known key
    /// (at this point in the problem list; a section never finished is reported when the
    /// diagnostics are read).
    pub fn finish(&self, d: &mut Diagnostics) {
        if self.section.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        for p in self.section.unknown_keys() {
            d.error(p.path, p.message);
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

    fn yaml(text: &str) -> Yaml {
        match crate::config::load_str(text) {
            Ok(y) => y,
            Err(p) => panic!("{p:?}"),
        }
    }

    #[test]
    fn a_section_whose_reader_forgets_finish_still_reports_its_unknown_keys() {
        let doc = yaml("outer: { inner: { timeout: 5s, timeuot: 6s } }\n");
        let mut d = Diagnostics::default();
        let root = Map::new("", &doc, &mut d).unwrap();
        let outer = root.map("outer", &mut d).unwrap();
        let inner = outer.map("inner", &mut d).unwrap();
        assert_eq!(
            inner.duration("timeout", &mut d),
            Some(Duration::from_secs(5))
        );
        drop(inner); // never finished
        outer.finish(&mut d);
        root.finish(&mut d);
        let problems: Vec<String> = d.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            vec!["outer.inner.timeuot: unknown key; did you mean `timeout`?"]
        );
        assert!(!d.is_empty());
        assert_eq!(d.into_problems().len(), 1);
    }

    #[test]
    fn finishing_reports_in_reading_order_and_once() {
        let doc = yaml("a: { x: 1 }\nzzzzzz: 2\n");
        let mut d = Diagnostics::default();
        let root = Map::new("", &doc, &mut d).unwrap();
        let a = root.map("a", &mut d).unwrap();
        a.finish(&mut d);
        d.error("later", "a problem found after `a` was finished");
        a.finish(&mut d);
        root.finish(&mut d);
        let problems: Vec<String> = d.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            vec![
                "a.x: unknown key".to_string(),
                "later: a problem found after `a` was finished".to_string(),
                "zzzzzz: unknown key; known keys: a".to_string(),
            ]
        );
    }

    #[test]
    fn a_skipped_section_is_not_checked() {
        let doc = yaml("static: { hostnames: [a] }\n");
        let mut d = Diagnostics::default();
        let root = Map::new("", &doc, &mut d).unwrap();
        let s = root.map("static", &mut d).unwrap();
        s.skip();
        root.finish(&mut d);
        assert!(d.is_empty(), "{:?}", d.problems());
    }

    #[test]
    fn problems_found_later_keep_the_place_of_their_slot() {
        let mut d = Diagnostics::default();
        d.error("a", "1");
        let s1 = d.slot();
        d.error("b", "2");
        let s2 = d.slot();
        d.error("c", "3");
        d.error_at(s2, "s2", "x");
        d.error_at(s1, "s1", "y");
        d.error_at(s1, "s1", "z");
        d.error("d", "4");
        let shown: Vec<String> = d.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            shown,
            ["a: 1", "s1: y", "s1: z", "b: 2", "s2: x", "c: 3", "d: 4"]
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
