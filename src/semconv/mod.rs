//! The GenAI semantic conventions as data and a checker: the rule table pinned to one
//! semconv release ([`rules`]) and the span checker that applies it ([`check`]); and
//! tollgate's own names, the one list of every `tollgate.*` attribute ([`attributes`]). A
//! pure core: it depends on nothing above configuration reading; the `genai_semconv`
//! processor wraps it.

pub mod attributes;
pub mod check;
pub mod rules;
