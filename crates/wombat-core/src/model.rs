//! Model references: `model` or `provider/model`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An LLM provider Wombat has an adapter for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// OpenAI Chat Completions.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini.
    Google,
    /// xAI (OpenAI-compatible).
    Xai,
    /// Groq (OpenAI-compatible).
    Groq,
    /// Mistral (OpenAI-compatible).
    Mistral,
    /// OpenRouter (OpenAI-compatible).
    #[serde(rename = "openrouter")]
    OpenRouter,
    /// Ollama (OpenAI-compatible, no key).
    Ollama,
    /// The offline echo provider: a wiring check, never a real model.
    Echo,
}

impl Provider {
    /// Every provider, in a stable order.
    pub const ALL: [Provider; 9] = [
        Provider::OpenAi,
        Provider::Anthropic,
        Provider::Google,
        Provider::Xai,
        Provider::Groq,
        Provider::Mistral,
        Provider::OpenRouter,
        Provider::Ollama,
        Provider::Echo,
    ];

    /// The name used in model strings and `LLM_PROVIDER`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Google => "google",
            Provider::Xai => "xai",
            Provider::Groq => "groq",
            Provider::Mistral => "mistral",
            Provider::OpenRouter => "openrouter",
            Provider::Ollama => "ollama",
            Provider::Echo => "echo",
        }
    }

    /// The env var that holds this provider's key, if it needs one. Google
    /// also accepts `GOOGLE_API_KEY`; see [`Provider::api_key_envs`].
    pub fn api_key_env(self) -> Option<&'static str> {
        self.api_key_envs().first().copied()
    }

    /// Every env var that may hold this provider's key, in order of preference.
    pub fn api_key_envs(self) -> &'static [&'static str] {
        match self {
            Provider::OpenAi => &["OPENAI_API_KEY"],
            Provider::Anthropic => &["ANTHROPIC_API_KEY"],
            Provider::Google => &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
            Provider::Xai => &["XAI_API_KEY"],
            Provider::Groq => &["GROQ_API_KEY"],
            Provider::Mistral => &["MISTRAL_API_KEY"],
            Provider::OpenRouter => &["OPENROUTER_API_KEY"],
            Provider::Ollama | Provider::Echo => &[],
        }
    }

    /// The env var that overrides this provider's base URL (`OPENAI_BASE_URL`...).
    pub fn base_url_env(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_BASE_URL",
            Provider::Anthropic => "ANTHROPIC_BASE_URL",
            Provider::Google => "GOOGLE_BASE_URL",
            Provider::Xai => "XAI_BASE_URL",
            Provider::Groq => "GROQ_BASE_URL",
            Provider::Mistral => "MISTRAL_BASE_URL",
            Provider::OpenRouter => "OPENROUTER_BASE_URL",
            Provider::Ollama => "OLLAMA_BASE_URL",
            Provider::Echo => "ECHO_BASE_URL",
        }
    }

    /// The public endpoint used when no base URL override is set.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
            Provider::Google => "https://generativelanguage.googleapis.com/v1beta",
            Provider::Xai => "https://api.x.ai/v1",
            Provider::Groq => "https://api.groq.com/openai/v1",
            Provider::Mistral => "https://api.mistral.ai/v1",
            Provider::OpenRouter => "https://openrouter.ai/api/v1",
            Provider::Ollama => "http://localhost:11434/v1",
            Provider::Echo => "",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::UnknownProvider { name: s.to_owned() })
    }
}

/// A model on a provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// Who serves it.
    pub provider: Provider,
    /// The provider's model id, sent as is.
    pub model: String,
}

impl ModelRef {
    /// Parses `model` or `provider/model`.
    ///
    /// Only the **first** `/` can separate a provider, and only when the text
    /// before it is a known provider name; otherwise the whole string is a
    /// model of `default_provider`. So `openrouter/meta-llama/llama-3.3-70b`
    /// is model `meta-llama/llama-3.3-70b` on OpenRouter, and
    /// `meta-llama/llama-3.3-70b` alone is that model on the default provider.
    pub fn parse(s: &str, default_provider: Provider) -> Result<Self> {
        let s = s.trim();
        let invalid = || Error::InvalidModel {
            model: s.to_owned(),
        };
        if s.is_empty() {
            return Err(invalid());
        }
        if let Some((prefix, rest)) = s.split_once('/') {
            if let Ok(provider) = prefix.parse::<Provider>() {
                if rest.is_empty() {
                    return Err(invalid());
                }
                return Ok(Self {
                    provider,
                    model: rest.to_owned(),
                });
            }
        }
        Ok(Self {
            provider: default_provider,
            model: s.to_owned(),
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str, provider: Provider, model: &str) {
        let got = ModelRef::parse(s, Provider::OpenAi).expect("valid model");
        assert_eq!((got.provider, got.model.as_str()), (provider, model), "{s}");
    }

    #[test]
    fn first_slash_and_known_prefix_only() {
        check("gpt-4o-mini", Provider::OpenAi, "gpt-4o-mini");
        check(
            "anthropic/claude-sonnet-4",
            Provider::Anthropic,
            "claude-sonnet-4",
        );
        check(
            "openrouter/meta-llama/llama-3.3-70b",
            Provider::OpenRouter,
            "meta-llama/llama-3.3-70b",
        );
        check(
            "meta-llama/llama-3.3-70b",
            Provider::OpenAi,
            "meta-llama/llama-3.3-70b",
        );
        check(" echo/test ", Provider::Echo, "test");
    }

    #[test]
    fn rejects_empty_parts() {
        for s in ["", "  ", "openai/"] {
            assert!(ModelRef::parse(s, Provider::OpenAi).is_err(), "{s:?}");
        }
    }

    #[test]
    fn provider_names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
            let json = serde_json::to_string(&p).expect("serialises");
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert_eq!(
            "azure".parse::<Provider>(),
            Err(Error::UnknownProvider {
                name: "azure".into()
            })
        );
    }
}
