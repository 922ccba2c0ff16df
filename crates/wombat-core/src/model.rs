//! Model references (`model` or `provider/model`), the providers they name,
//! and the process-wide table of custom provider names.
//!
//! The table is this crate's one piece of global state: an append-only list
//! of at most [`ProviderName::MAX_NAMES`] interned names, so that a custom
//! provider stays a `Copy` value like the built-in ones and
//! [`ModelRef::parse`] can recognise `name/model` without a registry being
//! passed around. Names are added only when a configuration declares them
//! ([`Provider::custom`]), never when a model string or a JSON document is
//! parsed, so untrusted input cannot grow it.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// The name of a custom provider: an OpenAI-compatible endpoint or an
/// embedder's own backend, addressed in model strings as `<name>/<model>`
/// like a built-in provider.
///
/// A name matches `[a-z0-9][a-z0-9_-]{0,31}` and is not a built-in
/// provider's name. It is interned: creating the same name twice gives the
/// same value, and the memory used is bounded by the distinct names ever
/// created in the process (at most [`ProviderName::MAX_NAMES`]). Create one
/// with [`ProviderName::new`] or [`Provider::custom`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderName(&'static str);

impl ProviderName {
    /// Longest name, in bytes.
    pub const MAX_LEN: usize = 32;

    /// Most distinct custom names a process can create.
    pub const MAX_NAMES: usize = 256;

    /// Validates `name` and interns it (see the type's rules).
    ///
    /// ```
    /// use wombat_core::ProviderName;
    ///
    /// let a = ProviderName::new("corp-gateway")?;
    /// assert_eq!(a, ProviderName::new("corp-gateway")?);
    /// assert_eq!(a.as_str(), "corp-gateway");
    /// assert!(ProviderName::new("Corp").is_err());
    /// assert!(ProviderName::new("openai").is_err());
    /// # Ok::<(), wombat_core::Error>(())
    /// ```
    pub fn new(name: &str) -> Result<Self> {
        let invalid = |reason: &'static str| Error::InvalidProviderName {
            name: name.to_owned(),
            reason,
        };
        if !valid_name(name) {
            return Err(invalid(
                "a custom provider name must match [a-z0-9][a-z0-9_-]{0,31}",
            ));
        }
        if builtin(name).is_some() {
            return Err(invalid("that is a built-in provider"));
        }
        NAMES
            .intern(name)
            .map(Self)
            .ok_or_else(|| invalid("too many custom provider names in this process (at most 256)"))
    }

    /// The name if it was already created with [`ProviderName::new`] (this
    /// never adds a name).
    pub fn lookup(name: &str) -> Option<Self> {
        NAMES.lookup(name).map(Self)
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for ProviderName {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

/// `[a-z0-9][a-z0-9_-]{0,31}`.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    bytes.len() <= ProviderName::MAX_LEN
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// The process-wide table of custom provider names.
static NAMES: Interner<{ ProviderName::MAX_NAMES }> = Interner::new();

/// An append-only table of at most `N` leaked strings. Lookups take no lock
/// (they run for model strings on the request path); adding a name takes
/// one, and happens only while configuring.
struct Interner<const N: usize> {
    slots: [OnceLock<&'static str>; N],
    /// Slots filled so far; each one below it is set.
    len: AtomicUsize,
    /// Serialises additions, so a name is never added twice.
    write: Mutex<()>,
}

impl<const N: usize> Interner<N> {
    const fn new() -> Self {
        Self {
            slots: [const { OnceLock::new() }; N],
            len: AtomicUsize::new(0),
            write: Mutex::new(()),
        }
    }

    fn lookup(&self, name: &str) -> Option<&'static str> {
        let len = self.len.load(Ordering::Acquire);
        self.slots
            .iter()
            .take(len)
            .filter_map(OnceLock::get)
            .find(|n| **n == name)
            .copied()
    }

    /// `name`'s interned copy, added if new; `None` when the table is full.
    fn intern(&self, name: &str) -> Option<&'static str> {
        if let Some(found) = self.lookup(name) {
            return Some(found);
        }
        // The guard protects no data, so a poisoned lock is still usable.
        let _guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = self.lookup(name) {
            return Some(found);
        }
        let len = self.len.load(Ordering::Acquire);
        let slot = self.slots.get(len)?;
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        // Only this thread (holding the guard) writes slot `len`.
        let stored = *slot.get_or_init(|| leaked);
        self.len.store(len + 1, Ordering::Release);
        Some(stored)
    }
}

/// The built-in provider called `name`.
fn builtin(name: &str) -> Option<Provider> {
    Provider::ALL.into_iter().find(|p| p.as_str() == name)
}

/// An LLM provider: one Wombat has an adapter for, or a custom one
/// ([`Provider::Custom`]).
///
/// Serialised as its name (`"openai"`, `"corp-gateway"`); deserialising
/// and [`FromStr`] accept the built-in names and custom names already
/// created in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// OpenAI Chat Completions.
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
    OpenRouter,
    /// Ollama (OpenAI-compatible, no key).
    Ollama,
    /// The offline echo provider: a wiring check, never a real model.
    Echo,
    /// A custom provider: a named OpenAI-compatible endpoint, or an
    /// embedder's own `ChatProvider` (`wombat-llm`) under its own name. It
    /// needs no key variable (an endpoint's key is part of its
    /// configuration) and has no public default URL.
    Custom(ProviderName),
}

impl Provider {
    /// Every built-in provider, in a stable order (custom ones are not
    /// listed).
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

    /// The custom provider called `name`, interned (see [`ProviderName::new`]
    /// for the rules); afterwards `name/<model>` strings parse to it.
    ///
    /// ```
    /// use wombat_core::{ModelRef, Provider};
    ///
    /// let mine = Provider::custom("mine")?;
    /// let model = ModelRef::parse("mine/llama-3.1-8b", Provider::OpenAi)?;
    /// assert_eq!((model.provider, model.model.as_str()), (mine, "llama-3.1-8b"));
    /// assert_eq!("mine".parse::<Provider>()?, mine);
    /// # Ok::<(), wombat_core::Error>(())
    /// ```
    pub fn custom(name: &str) -> Result<Provider> {
        ProviderName::new(name).map(Provider::Custom)
    }

    /// The custom provider's name, or `None` for a built-in provider.
    pub fn custom_name(self) -> Option<ProviderName> {
        match self {
            Provider::Custom(name) => Some(name),
            _ => None,
        }
    }

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
            Provider::Custom(name) => name.as_str(),
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
            Provider::Ollama | Provider::Echo | Provider::Custom(_) => &[],
        }
    }

    /// The env var that overrides this provider's base URL (`OPENAI_BASE_URL`...);
    /// for a custom provider, `WOMBAT_LLM_ENDPOINTS`, which declares it.
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
            Provider::Custom(_) => "WOMBAT_LLM_ENDPOINTS",
        }
    }

    /// The public endpoint used when no base URL override is set (empty for
    /// echo and custom providers).
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
            Provider::Echo | Provider::Custom(_) => "",
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

    /// A built-in provider's name, or a custom name already created in this
    /// process (see [`Provider::custom`]); parsing never creates one.
    fn from_str(s: &str) -> Result<Self> {
        builtin(s)
            .or_else(|| ProviderName::lookup(s).map(Provider::Custom))
            .ok_or_else(|| Error::UnknownProvider { name: s.to_owned() })
    }
}

impl Serialize for Provider {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Provider {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Provider;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a provider name")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Provider, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Visitor)
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
    /// before it is a known provider name (built in, or a custom name created
    /// with [`Provider::custom`]); otherwise the whole string is a
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
        for p in Provider::ALL {
            let json = format!("\"{}\"", p.as_str());
            assert_eq!(serde_json::from_str::<Provider>(&json).ok(), Some(p));
        }
        assert!(serde_json::from_str::<Provider>("\"never-configured\"").is_err());
    }

    #[test]
    fn custom_names_are_validated_and_interned_once() {
        let a = Provider::custom("core-test-a").expect("valid");
        let again = Provider::custom("core-test-a").expect("valid");
        assert_eq!(a, again);
        let (Some(x), Some(y)) = (a.custom_name(), again.custom_name()) else {
            panic!("custom");
        };
        // The same interned string, not a copy.
        assert!(std::ptr::eq(x.as_str(), y.as_str()));
        assert_eq!(a.as_str(), "core-test-a");
        assert_eq!(a.api_key_envs(), &[] as &[&str]);
        assert_eq!(a.default_base_url(), "");
        assert_eq!(Provider::OpenAi.custom_name(), None);
        for ok in ["0", "a", "a_b-c9", "x".repeat(32).as_str()] {
            assert!(ProviderName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-a",
            "_a",
            "a.b",
            "a/b",
            "a b",
            "é",
            "x".repeat(33).as_str(),
        ] {
            let err = Provider::custom(bad).expect_err(bad);
            assert!(
                err.to_string()
                    .contains("must match [a-z0-9][a-z0-9_-]{0,31}"),
                "{err}"
            );
        }
        for name in ["openai", "echo", "ollama"] {
            let err = Provider::custom(name).expect_err(name);
            assert_eq!(
                err.to_string(),
                format!("invalid provider name {name:?}: that is a built-in provider")
            );
        }
    }

    #[test]
    fn custom_names_parse_only_once_created() {
        // Parsing never adds a name: unknown prefixes stay part of the model.
        check(
            "core-test-later/llama-3",
            Provider::OpenAi,
            "core-test-later/llama-3",
        );
        assert!("core-test-later".parse::<Provider>().is_err());
        let later = Provider::custom("core-test-later").expect("valid");
        check("core-test-later/llama-3", later, "llama-3");
        check("core-test-later/org/m", later, "org/m");
        assert!(ModelRef::parse("core-test-later/", Provider::OpenAi).is_err());
        assert_eq!("core-test-later".parse::<Provider>(), Ok(later));
        let json = serde_json::to_string(&later).expect("serialises");
        assert_eq!(json, "\"core-test-later\"");
        assert_eq!(
            serde_json::from_str::<Provider>(&json).expect("deserialises"),
            later
        );
        let m = ModelRef::parse("llama-3", later).expect("valid");
        assert_eq!(m.to_string(), "core-test-later/llama-3");
        // Custom providers sort after the built-in ones, by name.
        assert!(Provider::Echo < later);
    }

    #[test]
    fn the_name_table_is_bounded() {
        let table: Interner<2> = Interner::new();
        let a = table.intern("a").expect("room");
        assert!(std::ptr::eq(a, table.intern("a").expect("known")));
        assert!(table.intern("b").is_some());
        assert_eq!(table.intern("c"), None);
        assert_eq!(table.lookup("c"), None);
        assert_eq!(table.lookup("b"), Some("b"));
    }
}
