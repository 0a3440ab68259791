//! Pricing one request: the token counts as reported ([`Usage`]), their validation, and
//! the exact cost per class ([`Breakdown`]) from a matched [`Rate`].

use rust_decimal::Decimal;

use super::decimal::MILLION;
use super::rate::{class_index, Prices, Rate, TokenClass, CLASSES};

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
