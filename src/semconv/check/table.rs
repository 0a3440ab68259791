//! The rule table compiled once per process into an index from attribute name to rule or
//! mapping.

use crate::semconv::rules::{
    rule_index, ATTRIBUTES, ATTRIBUTE_RULES, COUNT_ATTRIBUTES, MAPPINGS, SPAN_REQUIREMENTS,
};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

pub(super) const N_RULES: usize = ATTRIBUTE_RULES.len();
pub(super) const NONE: u32 = u32::MAX;

pub(super) const OP: usize = rule_index("gen_ai.operation.name");
pub(super) const PROVIDER: usize = rule_index("gen_ai.provider.name");
pub(super) const INPUT: usize = rule_index("gen_ai.usage.input_tokens");
pub(super) const OUTPUT: usize = rule_index("gen_ai.usage.output_tokens");
pub(super) const CACHE_READ: usize = rule_index("gen_ai.usage.cache_read.input_tokens");
pub(super) const CACHE_WRITE: usize = rule_index("gen_ai.usage.cache_write.input_tokens");
pub(super) const REASONING: usize = rule_index("gen_ai.usage.reasoning.output_tokens");
pub(super) const ERROR_TYPE: usize = rule_index("error.type");
pub(super) const SERVER_ADDRESS: usize = rule_index("server.address");
pub(super) const SERVER_PORT: usize = rule_index("server.port");
// Compile-time proof that every name above is in the rule table.
const _: () = {
    let all = [
        OP,
        PROVIDER,
        INPUT,
        OUTPUT,
        CACHE_READ,
        CACHE_WRITE,
        REASONING,
        ERROR_TYPE,
        SERVER_ADDRESS,
        SERVER_PORT,
    ];
    let mut i = 0;
    while i < all.len() {
        assert!(all[i] < N_RULES);
        i += 1;
    }
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry {
    Rule(u16),
    Map(u16),
}

pub(super) struct Index {
    /// Current names and built-in mapping sources (every attribute of every span is looked
    /// up here, so a hash of the name replaces a binary search of string compares).
    pub(super) keys: HashMap<&'static str, Entry, BuildHasherDefault<Fnv1a>>,
    /// For each `MAPPINGS` row: rule index of its target, if the target is a rule.
    pub(super) map_target: Vec<Option<u16>>,
    /// For each `SPAN_REQUIREMENTS` row: rule index of its attribute.
    pub(super) req_rule: Vec<Option<u16>>,
    /// Per rule: whether it is a count attribute.
    pub(super) is_count: [bool; N_RULES],
}

impl Index {
    pub(super) fn lookup(&self, key: &str) -> Option<Entry> {
        self.keys.get(key).copied()
    }

    pub(super) fn rule_of(&self, key: &str) -> Option<usize> {
        match self.lookup(key) {
            Some(Entry::Rule(r)) => Some(usize::from(r)),
            _ => None,
        }
    }
}

/// FNV-1a: attribute names are short and not attacker-chosen keys of a growing table (the
/// table is fixed), so a simple fast hash is enough.
#[derive(Default)]
pub(super) struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub(super) fn to_u16(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(u16::MAX)
}

pub(super) fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut keys: Vec<(&'static str, Entry)> = ATTRIBUTES
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name, Entry::Rule(to_u16(i))))
            .collect();
        for (i, m) in MAPPINGS.iter().enumerate() {
            // A source that is also a current name would be ambiguous; the rule wins
            // (the rules tests assert this never happens).
            if !keys.iter().any(|(k, _)| *k == m.from) {
                keys.push((m.from, Entry::Map(to_u16(i))));
            }
        }
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        keys.dedup_by(|a, b| a.0 == b.0);
        let keys = keys.into_iter().collect();
        let rule_pos = |name: &str| ATTRIBUTES.iter().position(|r| r.name == name).map(to_u16);
        let mut is_count = [false; N_RULES];
        for name in COUNT_ATTRIBUTES {
            if let Some(p) = rule_pos(name) {
                is_count[usize::from(p)] = true;
            }
        }
        Index {
            map_target: MAPPINGS.iter().map(|m| rule_pos(m.to)).collect(),
            req_rule: SPAN_REQUIREMENTS.iter().map(|r| rule_pos(r.attr)).collect(),
            keys,
            is_count,
        }
    })
}
