//! The rate table's data model: token classes, price sets as written, resolved prices and
//! the rows themselves. Plain data with the price-resolution rules; no parsing, no I/O.

use rust_decimal::Decimal;

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
    pub(crate) fn effective_at(&self, t: i64) -> bool {
        self.effective_from.is_none_or(|f| t >= f) && self.effective_to.is_none_or(|e| t < e)
    }

    pub(crate) fn provider_ok(&self, provider: Option<&str>) -> bool {
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
