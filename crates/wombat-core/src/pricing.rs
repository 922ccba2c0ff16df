//! The pricing and context-window table, and cost computation.
//!
//! Prices are USD per million tokens, held as integer micro-dollars per
//! million tokens so that cost arithmetic is exact: `tokens × price` is then a
//! count of micro-micro-dollars, rounded once (half away from zero) to whole
//! micro-dollars. Floating point would turn `1250 × 0.15` into
//! `187.4999…` and round the wrong way.

use std::borrow::Cow;
use std::collections::HashMap;

use foldhash::HashMap as FastMap;
use serde::{Deserialize, Serialize};

use crate::json::ObjectWriter;
use crate::{Error, Result, Usage};

/// Context window assumed for a model the table does not know.
pub const DEFAULT_CONTEXT_WINDOW: u64 = 128_000;

const MICROS_PER_DOLLAR: f64 = 1_000_000.0;

/// Price and context window of one model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelPrice {
    /// Input price, micro-dollars per million tokens (USD 0.15/M is 150_000).
    pub input_micros_per_mtok: u64,
    /// Output price, micro-dollars per million tokens.
    pub output_micros_per_mtok: u64,
    /// Largest prompt plus completion the model accepts, in tokens.
    pub context_window: u64,
}

impl ModelPrice {
    /// A price from USD per million tokens, as pricing pages state it.
    ///
    /// Negative or non-finite prices are clamped to zero.
    pub fn from_usd_per_mtok(input: f64, output: f64, context_window: u64) -> Self {
        Self {
            input_micros_per_mtok: usd_to_micros(input),
            output_micros_per_mtok: usd_to_micros(output),
            context_window,
        }
    }
}

fn usd_to_micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        // Rounding here is exact for every price with at most six decimals.
        (usd * MICROS_PER_DOLLAR).round() as u64
    } else {
        0
    }
}

/// The cost of one call, in the daemon API's camelCase wire shape.
///
/// `inputCost`, `outputCost` and `totalCost` are USD rounded to micro-dollars;
/// `totalCost` is the sum of the two rounded parts so the figures always add
/// up. `priced` is `false` when the model is not in the table (all costs 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    /// The model the tokens were billed on.
    pub model: String,
    /// Prompt tokens billed.
    pub input_tokens: u64,
    /// Completion tokens billed.
    pub output_tokens: u64,
    /// USD for the prompt.
    pub input_cost: f64,
    /// USD for the completion.
    pub output_cost: f64,
    /// USD in all.
    pub total_cost: f64,
    /// Always `"USD"` (borrowed, not allocated, for the costs Wombat makes).
    pub currency: Cow<'static, str>,
    /// Whether the model had a price; an unpriced model costs 0.
    #[serde(default = "default_true")]
    pub priced: bool,
}

fn default_true() -> bool {
    true
}

impl Cost {
    /// A cost from whole micro-dollar amounts.
    pub fn from_micros(model: &str, usage: &Usage, input: u64, output: u64, priced: bool) -> Self {
        Self {
            model: model.to_owned(),
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            input_cost: micros_to_usd(input),
            output_cost: micros_to_usd(output),
            total_cost: micros_to_usd(input.saturating_add(output)),
            currency: Cow::Borrowed("USD"),
            priced,
        }
    }

    /// Appends this cost as JSON to `out`: the bytes `serde_json` writes
    /// for it, written without going through `Serialize` (about a fifth of
    /// the work, for a response or message that carries one).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut obj = ObjectWriter::new(out);
        obj.str("model", &self.model)
            .u64("inputTokens", self.input_tokens)
            .u64("outputTokens", self.output_tokens)
            .f64("inputCost", self.input_cost)
            .f64("outputCost", self.output_cost)
            .f64("totalCost", self.total_cost)
            .str("currency", &self.currency)
            .bool("priced", self.priced);
        obj.end();
    }

    /// `totalCost` as whole micro-dollars, for exact accumulation.
    pub fn total_micros(&self) -> u64 {
        usd_to_micros(self.total_cost)
    }

    /// The cost of two calls together (for example a call and its retry with
    /// a repair prompt), billed under `self`'s model name. Sums are exact.
    #[must_use]
    pub fn combine(&self, other: &Cost) -> Cost {
        let usage = Usage::new(
            self.input_tokens.saturating_add(other.input_tokens),
            self.output_tokens.saturating_add(other.output_tokens),
        );
        Cost::from_micros(
            &self.model,
            &usage,
            usd_to_micros(self.input_cost).saturating_add(usd_to_micros(other.input_cost)),
            usd_to_micros(self.output_cost).saturating_add(usd_to_micros(other.output_cost)),
            self.priced && other.priced,
        )
    }
}

fn micros_to_usd(micros: u64) -> f64 {
    micros as f64 / MICROS_PER_DOLLAR
}

/// Cost of `tokens` at `micros_per_mtok`, in micro-dollars, rounded half up.
fn token_cost_micros(tokens: u64, micros_per_mtok: u64) -> u64 {
    let exact = u128::from(tokens) * u128::from(micros_per_mtok);
    let rounded = (exact + 500_000) / 1_000_000;
    u64::try_from(rounded).unwrap_or(u64::MAX)
}

/// Model prices and context windows, looked up by model name.
///
/// A lookup tries, in order: the exact name; the name after its last `/`
/// (`meta-llama/llama-3.3-70b` → `llama-3.3-70b`, `models/gemini-2.0-flash` →
/// `gemini-2.0-flash`); then the longest table key that the name starts with
/// followed by `-` (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`,
/// `claude-3-5-sonnet-20241022` → `claude-3-5-sonnet`).
#[derive(Debug, Clone)]
pub struct PricingTable {
    entries: FastMap<String, ModelPrice>,
}

impl Default for PricingTable {
    fn default() -> Self {
        Self::builtin()
    }
}

/// USD per million tokens (input, output) and context window of every model
/// family Wombat 0.1.0 priced, plus a few current ones.
const BUILTIN: &[(&str, f64, f64, u64)] = &[
    // OpenAI
    ("gpt-4o", 2.50, 10.00, 128_000),
    ("gpt-4o-mini", 0.15, 0.60, 128_000),
    ("gpt-4.1", 2.00, 8.00, 1_047_576),
    ("gpt-4.1-mini", 0.40, 1.60, 1_047_576),
    ("gpt-4.1-nano", 0.10, 0.40, 1_047_576),
    ("gpt-4-turbo", 10.00, 30.00, 128_000),
    ("gpt-4", 30.00, 60.00, 8_192),
    ("gpt-3.5-turbo", 0.50, 1.50, 16_385),
    ("gpt-5", 1.25, 10.00, 400_000),
    ("gpt-5-mini", 0.25, 2.00, 400_000),
    ("gpt-5-nano", 0.05, 0.40, 400_000),
    ("o3-mini", 1.10, 4.40, 200_000),
    // Anthropic
    ("claude-opus-4", 15.00, 75.00, 200_000),
    ("claude-opus-4-1", 15.00, 75.00, 200_000),
    ("claude-sonnet-4", 3.00, 15.00, 200_000),
    ("claude-sonnet-4-5", 3.00, 15.00, 200_000),
    ("claude-haiku-4-5", 1.00, 5.00, 200_000),
    ("claude-3-7-sonnet", 3.00, 15.00, 200_000),
    ("claude-3-5-sonnet", 3.00, 15.00, 200_000),
    ("claude-3-5-haiku", 0.80, 4.00, 200_000),
    ("claude-3-opus", 15.00, 75.00, 200_000),
    ("claude-3-sonnet", 3.00, 15.00, 200_000),
    ("claude-3-haiku", 0.25, 1.25, 200_000),
    // Google
    ("gemini-2.5-pro", 1.25, 10.00, 1_048_576),
    ("gemini-2.5-flash", 0.30, 2.50, 1_048_576),
    ("gemini-2.5-flash-lite", 0.10, 0.40, 1_048_576),
    ("gemini-2.0-flash", 0.10, 0.40, 1_048_576),
    ("gemini-2.0-flash-lite", 0.075, 0.30, 1_048_576),
    ("gemini-1.5-pro", 1.25, 5.00, 2_097_152),
    ("gemini-1.5-flash", 0.075, 0.30, 1_048_576),
    // xAI
    ("grok-2", 2.00, 10.00, 131_072),
    ("grok-3", 3.00, 15.00, 131_072),
    ("grok-3-mini", 0.30, 0.50, 131_072),
    // Groq
    ("llama-3.3-70b-versatile", 0.59, 0.79, 131_072),
    ("llama-3.1-8b-instant", 0.05, 0.08, 131_072),
    ("mixtral-8x7b-32768", 0.24, 0.24, 32_768),
    // Mistral
    ("mistral-large", 2.00, 6.00, 131_072),
    ("mistral-small", 0.20, 0.60, 32_768),
    ("codestral", 0.30, 0.90, 256_000),
];

/// One entry of a pricing override document.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideEntry {
    input: f64,
    output: f64,
    context_window: Option<u64>,
}

impl PricingTable {
    /// The built-in table.
    pub fn builtin() -> Self {
        let entries = BUILTIN
            .iter()
            .map(|&(name, input, output, window)| {
                (
                    name.to_owned(),
                    ModelPrice::from_usd_per_mtok(input, output, window),
                )
            })
            .collect();
        Self { entries }
    }

    /// A table with no entries (every model unpriced).
    pub fn empty() -> Self {
        Self {
            entries: FastMap::default(),
        }
    }

    /// Adds or replaces one model's price.
    pub fn insert(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.entries.insert(model.into(), price);
    }

    /// Merges overrides from a JSON document of the form
    /// `{"my-model": {"input": 0.5, "output": 1.5, "context_window": 32000}}`
    /// (USD per million tokens). Entries replace built-in ones of the same
    /// name; a missing `context_window` keeps the existing one or the default.
    /// Reading the file is the caller's business.
    pub fn merge_json(&mut self, json: &str) -> Result<()> {
        let overrides: HashMap<String, OverrideEntry> =
            serde_json::from_str(json).map_err(|e| Error::InvalidPricing {
                reason: e.to_string(),
            })?;
        for (name, entry) in overrides {
            let valid = |x: f64| x.is_finite() && x >= 0.0;
            if !valid(entry.input) || !valid(entry.output) {
                return Err(Error::InvalidPricing {
                    reason: format!("prices of {name:?} must be finite and non-negative"),
                });
            }
            let window = entry
                .context_window
                .or_else(|| self.entries.get(&name).map(|p| p.context_window))
                .unwrap_or(DEFAULT_CONTEXT_WINDOW);
            self.entries.insert(
                name,
                ModelPrice::from_usd_per_mtok(entry.input, entry.output, window),
            );
        }
        Ok(())
    }

    /// The price of `model`, if the table knows it (see the type docs for
    /// the matching rules).
    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        if let Some(p) = self.entries.get(model) {
            return Some(p);
        }
        let base = model.rsplit('/').next().unwrap_or(model);
        if let Some(p) = self.entries.get(base) {
            return Some(p);
        }
        self.entries
            .iter()
            .filter(|(key, _)| {
                base.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
            })
            .max_by_key(|(key, _)| key.len())
            .map(|(_, p)| p)
    }

    /// The model's context window, or [`DEFAULT_CONTEXT_WINDOW`].
    pub fn context_window(&self, model: &str) -> u64 {
        self.lookup(model)
            .map_or(DEFAULT_CONTEXT_WINDOW, |p| p.context_window)
    }

    /// The cost of `usage` on `model`. Unknown models cost 0 with
    /// `priced: false`.
    pub fn cost(&self, model: &str, usage: &Usage) -> Cost {
        match self.lookup(model) {
            Some(price) => Cost::from_micros(
                model,
                usage,
                token_cost_micros(usage.prompt_tokens, price.input_micros_per_mtok),
                token_cost_micros(usage.completion_tokens, price.output_micros_per_mtok),
                true,
            ),
            None => Cost::from_micros(model, usage, 0, 0, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_json_is_what_serde_writes() {
        let table = PricingTable::builtin();
        let mut costs = vec![
            table.cost("gpt-4o-mini", &Usage::new(1250, 150)),
            table.cost(
                "claude-3-5-sonnet-20241022",
                &Usage::new(123_456_789, 98_765),
            ),
            table.cost("no-such-model \"quoted\" é", &Usage::new(1, 2)),
            table.cost("gpt-4o", &Usage::default()),
            Cost::from_micros("m", &Usage::new(u64::MAX, u64::MAX), u64::MAX, 1, true),
        ];
        costs.push(costs[0].combine(&costs[1]));
        for cost in costs {
            let mut out = b"[".to_vec();
            cost.write_json(&mut out);
            assert_eq!(out[1..], serde_json::to_vec(&cost).expect("serialises"));
        }
    }

    #[test]
    fn cost_is_exact_and_rounded_to_micro_dollars() {
        let table = PricingTable::builtin();
        let cost = table.cost("gpt-4o-mini", &Usage::new(1250, 150));
        // 1250 × 0.15 = 187.5 µ$ rounds up to 188; 150 × 0.60 = 90 µ$.
        insta::assert_json_snapshot!(cost, @r#"
        {
          "model": "gpt-4o-mini",
          "inputTokens": 1250,
          "outputTokens": 150,
          "inputCost": 0.000188,
          "outputCost": 0.00009,
          "totalCost": 0.000278,
          "currency": "USD",
          "priced": true
        }
        "#);
        assert_eq!(cost.total_micros(), 278);
    }

    #[test]
    fn lookup_rules() {
        let table = PricingTable::builtin();
        let price_of = |m: &str| table.lookup(m).map(|p| p.input_micros_per_mtok);
        assert_eq!(price_of("gpt-4o-mini-2024-07-18"), Some(150_000));
        assert_eq!(price_of("gpt-4o-2024-08-06"), Some(2_500_000));
        assert_eq!(price_of("gpt-4-0613"), Some(30_000_000));
        assert_eq!(price_of("gpt-4.1-mini"), Some(400_000));
        assert_eq!(price_of("claude-3-5-sonnet-20241022"), Some(3_000_000));
        assert_eq!(price_of("claude-haiku-4-5-20251001"), Some(1_000_000));
        assert_eq!(price_of("models/gemini-2.0-flash"), Some(100_000));
        assert_eq!(price_of("openai/gpt-4o"), Some(2_500_000));
        assert_eq!(price_of("mistral-large-latest"), Some(2_000_000));
        assert_eq!(price_of("gpt-4oo"), None);
        assert_eq!(price_of("llama-3"), None);
        assert_eq!(table.context_window("gpt-4"), 8_192);
        assert_eq!(
            table.context_window("my-local-model"),
            DEFAULT_CONTEXT_WINDOW
        );
    }

    #[test]
    fn combined_costs_add_exactly() {
        let table = PricingTable::builtin();
        let a = table.cost("gpt-4o-mini", &Usage::new(1250, 150));
        let both = a.combine(&a);
        assert_eq!((both.input_tokens, both.output_tokens), (2500, 300));
        assert_eq!(both.total_micros(), 556);
        assert!(both.priced);
        assert!(!a.combine(&table.cost("mystery", &Usage::new(1, 1))).priced);
    }

    #[test]
    fn unknown_model_is_unpriced_and_free() {
        let cost = PricingTable::builtin().cost("my-local-model", &Usage::new(10, 20));
        assert!(!cost.priced);
        assert_eq!(cost.total_cost, 0.0);
        assert_eq!((cost.input_tokens, cost.output_tokens), (10, 20));
    }

    #[test]
    fn huge_usage_does_not_overflow() {
        let cost = PricingTable::builtin().cost("gpt-4", &Usage::new(u64::MAX, u64::MAX));
        assert!(cost.total_cost.is_finite());
    }

    #[test]
    fn overrides_merge_and_validate() {
        let mut table = PricingTable::builtin();
        table
            .merge_json(
                r#"{"my-model":{"input":0.0375,"output":1},"gpt-4o":{"input":1,"output":2}}"#,
            )
            .expect("valid overrides");
        let cost = table.cost("my-model", &Usage::new(1_000_000, 1_000_000));
        assert_eq!((cost.input_cost, cost.output_cost), (0.0375, 1.0));
        assert_eq!(table.context_window("my-model"), DEFAULT_CONTEXT_WINDOW);
        assert_eq!(table.context_window("gpt-4o"), 128_000);
        assert!(
            table
                .merge_json(r#"{"x":{"input":-1,"output":1}}"#)
                .is_err()
        );
        assert!(table.merge_json(r#"{"x":{"input":1}}"#).is_err());
        assert!(table.merge_json("[]").is_err());
    }
}
