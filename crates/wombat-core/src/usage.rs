//! Token usage as reported by a provider.

use serde::{Deserialize, Serialize};

/// Token counts of one LLM call, or a sum of several. Field names are the
/// snake_case wire names of the daemon API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt (system prompt, history and the new message).
    pub prompt_tokens: u64,
    /// Tokens the model generated.
    pub completion_tokens: u64,
    /// `prompt_tokens + completion_tokens`, unless the provider said otherwise.
    pub total_tokens: u64,
}

impl Usage {
    /// Usage with `total_tokens` computed from the two parts.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }

    /// Appends this usage as JSON to `out`: the bytes `serde_json` writes
    /// for it, written without going through `Serialize`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut obj = crate::json::ObjectWriter::new(out);
        obj.u64("prompt_tokens", self.prompt_tokens)
            .u64("completion_tokens", self.completion_tokens)
            .u64("total_tokens", self.total_tokens);
        obj.end();
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, rhs: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(rhs.prompt_tokens),
            completion_tokens: self.completion_tokens.saturating_add(rhs.completion_tokens),
            total_tokens: self.total_tokens.saturating_add(rhs.total_tokens),
        }
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Usage) {
        *self = *self + rhs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_serialises_snake_case() {
        let u = Usage::new(1250, 150) + Usage::new(1, 2);
        assert_eq!(
            serde_json::to_string(&u).expect("serialises"),
            r#"{"prompt_tokens":1251,"completion_tokens":152,"total_tokens":1403}"#
        );
    }

    #[test]
    fn write_json_is_what_serde_writes() {
        for u in [
            Usage::default(),
            Usage::new(1250, 150),
            Usage::new(u64::MAX, 7),
        ] {
            let mut out = Vec::new();
            u.write_json(&mut out);
            assert_eq!(out, serde_json::to_vec(&u).expect("serialises"));
        }
    }
}
