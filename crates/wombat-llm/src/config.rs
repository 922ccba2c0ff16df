//! Router configuration: a plain struct with the documented defaults, and a
//! validating constructor from environment-style variables.
//!
//! This module never reads the process environment itself; the binary
//! passes a lookup function (or a map) so tests and embedders stay
//! hermetic.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use wombat_core::{ModelRef, PricingTable, Provider, ProviderName};

use crate::endpoint::{ENDPOINTS_VAR, EndpointConfig, parse_endpoints};
use crate::types::ApiKey;
use crate::{Error, Result};

/// Retry policy for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per model, the first included (`WOMBAT_RETRY_ATTEMPTS`, 3).
    pub attempts: u32,
    /// Base backoff (`WOMBAT_RETRY_DELAY_MS`, 1000 ms), doubled per retry.
    pub base_delay: Duration,
    /// Backoff cap (`WOMBAT_RETRY_MAX_DELAY_MS`, 30000 ms).
    pub max_delay: Duration,
    /// Random jitter as a fraction of the delay (`WOMBAT_RETRY_JITTER`, 0.1):
    /// the delay is multiplied by a uniform factor in `1 ± jitter`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_delay: Duration::from_millis(1000),
            max_delay: Duration::from_millis(30_000),
            jitter: 0.1,
        }
    }
}

impl RetryPolicy {
    /// Longest provider-requested wait (`Retry-After`, `retry-after-ms`,
    /// Gemini `retryDelay`) that is honoured as is; a longer one falls back
    /// to exponential backoff.
    pub const MAX_HINTED_DELAY: Duration = Duration::from_secs(60);

    /// The wait before retry number `retry` (0 for the first retry): the
    /// provider's hint when it is at most a minute, else
    /// `min(base × 2^retry, max)` with jitter, never above `max`.
    pub fn delay(&self, retry: u32, hint: Option<Duration>) -> Duration {
        if let Some(hint) = hint.filter(|h| *h <= Self::MAX_HINTED_DELAY) {
            return hint;
        }
        let factor = 2f64.powi(i32::try_from(retry.min(30)).unwrap_or(30));
        let capped = (self.base_delay.as_secs_f64() * factor).min(self.max_delay.as_secs_f64());
        let jitter = if self.jitter > 0.0 {
            1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0)
        } else {
            1.0
        };
        let secs = (capped * jitter).clamp(0.0, self.max_delay.as_secs_f64());
        Duration::from_secs_f64(secs)
    }
}

/// Everything the router needs. Build it with [`RouterConfig::default`] and
/// set fields, or from variables with [`RouterConfig::from_env_map`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouterConfig {
    /// Provider of model strings without a `provider/` prefix
    /// (`LLM_PROVIDER`, `openai`).
    pub default_provider: Provider,
    /// The default tier (`LLM_MODEL_DEFAULT`, `gpt-4o-mini`).
    pub default_model: String,
    /// The cheap tier (`LLM_MODEL_CHEAP`); the default tier when unset.
    pub cheap_model: Option<String>,
    /// The best tier (`LLM_MODEL_BEST`); the default tier when unset.
    pub best_model: Option<String>,
    /// Tried when the chosen model fails over (`LLM_MODEL_FALLBACK`), possibly
    /// on another provider.
    pub fallback_model: Option<String>,
    /// Keys by provider (`OPENAI_API_KEY`, ...).
    pub api_keys: BTreeMap<Provider, ApiKey>,
    /// Base URL overrides by provider (`OPENAI_BASE_URL`, ...), without a
    /// trailing slash.
    pub base_urls: BTreeMap<Provider, String>,
    /// Custom OpenAI-compatible endpoints by name (`WOMBAT_LLM_ENDPOINTS`):
    /// each is served as the provider [`Provider::Custom`] of its name, so
    /// `<name>/<model>` model strings go to it. See [`EndpointConfig`].
    pub endpoints: BTreeMap<ProviderName, EndpointConfig>,
    /// Retries per model.
    pub retry: RetryPolicy,
    /// Total deadline of one routed request, retries, waits and failover
    /// included (120 s).
    pub deadline: Duration,
    /// TCP/TLS connect timeout (10 s).
    pub connect_timeout: Duration,
    /// Longest silence while waiting for response headers or the next body
    /// chunk (120 s). A non-streaming call gets its headers only once the
    /// whole answer is generated, so this must not be shorter than the
    /// longest generation expected; the deadline bounds the call anyway.
    pub read_timeout: Duration,
    /// Prices and context windows.
    pub pricing: PricingTable,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            default_provider: Provider::OpenAi,
            default_model: "gpt-4o-mini".to_owned(),
            cheap_model: None,
            best_model: None,
            fallback_model: None,
            api_keys: BTreeMap::new(),
            base_urls: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            retry: RetryPolicy::default(),
            deadline: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            pricing: PricingTable::builtin(),
        }
    }
}

/// One provider serving a configured model, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ProviderSummary {
    /// Where calls go: the base URL with only scheme, host, port and path
    /// (any user info, query or fragment removed, as they may hold
    /// credentials); `None` for the offline echo provider and for a custom
    /// provider served by an injected backend.
    pub base_url: Option<String>,
    /// Whether a key is configured (never the key).
    pub key_set: bool,
    /// Whether calls need a key: false for keyless providers (Ollama, echo)
    /// and for an OpenAI-compatible provider whose base URL is overridden
    /// (a local server; see [`RouterConfig::key_required`]).
    pub key_required: bool,
    /// The configured models it serves: `default`, `cheap`, `best`,
    /// `fallback`.
    pub uses: Vec<&'static str>,
}

/// The LLM part of `/health`: models and which providers have keys, never
/// the keys themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LlmSummary {
    /// `LLM_PROVIDER`.
    pub default_provider: Provider,
    /// The default tier as `provider/model`.
    pub model: String,
    /// The cheap tier as `provider/model`.
    pub cheap_model: String,
    /// The best tier as `provider/model`.
    pub best_model: String,
    /// The fallback as `provider/model`, if any.
    pub fallback_model: Option<String>,
    /// For every provider that needs a key, whether one is configured.
    pub keys: BTreeMap<Provider, bool>,
    /// Each provider serving one of the configured models (default, cheap,
    /// best, fallback), and every custom provider (used or not), with where
    /// its calls go.
    pub providers: BTreeMap<Provider, ProviderSummary>,
}

impl LlmSummary {
    /// The providers of configured models that need a key and have none, in
    /// a stable order: their calls will fail with
    /// [`crate::ErrorKind::MissingApiKey`]. (For the startup warning and the
    /// `/health` status.)
    pub fn missing_keys(&self) -> Vec<Provider> {
        self.providers
            .iter()
            .filter(|(_, p)| p.key_required && !p.key_set)
            .map(|(provider, _)| *provider)
            .collect()
    }
}

/// `url` with only scheme, host, port and path: user info, query and
/// fragment may carry credentials and are dropped. An unparseable URL is
/// not shown at all.
pub(crate) fn display_base_url(url: &str) -> String {
    let Ok(parsed) = url.parse::<http::Uri>() else {
        return "(unparseable url)".to_owned();
    };
    let Some(scheme) = parsed.scheme_str() else {
        return "(unparseable url)".to_owned();
    };
    let mut out = format!("{scheme}://{}", parsed.host().unwrap_or(""));
    if let Some(port) = parsed.port_u16() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(parsed.path().trim_end_matches('/'));
    out
}

impl RouterConfig {
    /// Reads every LLM variable through `get` (pass `|k| std::env::var(k).ok()`
    /// in a binary) and validates it. Unset or empty variables keep their
    /// defaults. Errors name the variable: an unknown provider, a malformed
    /// model string, a non-numeric or zero attempt count, a jitter outside
    /// `0..=1`, a base URL that is not `http(s)://`, a
    /// `WOMBAT_LLM_ENDPOINTS` that is not a valid endpoint document.
    ///
    /// `WOMBAT_LLM_ENDPOINTS` declares custom OpenAI-compatible endpoints as
    /// a JSON object (at most 64 KiB and 32 endpoints; unknown fields are
    /// errors), each key read through `get` from the variable its
    /// `api_key_env` names:
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use wombat_llm::{Provider, RouterConfig};
    ///
    /// let vars = HashMap::from([
    ///     (
    ///         "WOMBAT_LLM_ENDPOINTS".to_owned(),
    ///         r#"{"corp": {"base_url": "https://llm.corp.example/v1",
    ///                      "api_key_env": "CORP_LLM_KEY",
    ///                      "headers": {"X-Team": "agents"}}}"#
    ///             .to_owned(),
    ///     ),
    ///     ("CORP_LLM_KEY".to_owned(), "sk-corp".to_owned()),
    ///     ("LLM_MODEL_DEFAULT".to_owned(), "corp/llama-3.3-70b".to_owned()),
    /// ]);
    /// let config = RouterConfig::from_map(&vars)?;
    /// let corp = Provider::custom("corp")?;
    /// assert_eq!(config.base_url(corp), "https://llm.corp.example/v1");
    /// assert_eq!(config.summary().model, "corp/llama-3.3-70b");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_env_map(get: &impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut cfg = Self::default();

        // First: the endpoints' names must be known before model strings
        // naming them (`corp/llama`) or `LLM_PROVIDER=corp` are parsed.
        if let Some(doc) = var(ENDPOINTS_VAR) {
            cfg.endpoints = parse_endpoints(&doc, &var)?;
        }
        if let Some(p) = var("LLM_PROVIDER") {
            cfg.default_provider = p.to_ascii_lowercase().parse().map_err(|_| Error::config(
                "LLM_PROVIDER",
                format!(
                    "unknown provider {p:?}: expected one of openai, anthropic, google, xai, groq, mistral, openrouter, ollama, echo, or an endpoint of WOMBAT_LLM_ENDPOINTS"
                ),
))?;
        }
        let model_var = |tier: &str| -> Result<Option<String>> {
            let (new, legacy) = (format!("LLM_MODEL_{tier}"), format!("OPENAI_MODEL_{tier}"));
            let (name, value) = match var(&new) {
                Some(v) => (new, v),
                None => match var(&legacy) {
                    Some(v) => (legacy, v),
                    None => return Ok(None),
                },
            };
            ModelRef::parse(&value, cfg.default_provider)
                .map_err(|e| Error::config(name, e.to_string()))?;
            Ok(Some(value))
        };
        if let Some(m) = model_var("DEFAULT")? {
            cfg.default_model = m;
        }
        cfg.cheap_model = model_var("CHEAP")?;
        cfg.best_model = model_var("BEST")?;
        cfg.fallback_model = model_var("FALLBACK")?;

        for provider in Provider::ALL {
            if let Some(key) = provider.api_key_envs().iter().find_map(|env| var(env)) {
                cfg.api_keys.insert(provider, ApiKey::new(key));
            }
            let env = provider.base_url_env();
            if let Some(url) = var(env) {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(Error::config(
                        env.to_owned(),
                        format!("{url:?} is not an http:// or https:// url"),
                    ));
                }
                if wombat_transport::Target::parse(&url).is_err() {
                    // Not quoted: a base URL may carry credentials.
                    return Err(Error::config(
                        env.to_owned(),
                        "is not a valid url (a host in ASCII, punycode for an \
                         international name; spaces and other reserved characters \
                         percent-encoded)"
                            .to_owned(),
                    ));
                }
                cfg.base_urls
                    .insert(provider, url.trim_end_matches('/').to_owned());
            }
        }

        let number = |name: &str| -> Result<Option<u64>> {
            var(name)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        Error::config(
                            name.to_owned(),
                            format!("{v:?} is not a non-negative integer"),
                        )
                    })
                })
                .transpose()
        };
        if let Some(n) = number("WOMBAT_RETRY_ATTEMPTS")? {
            cfg.retry.attempts = u32::try_from(n)
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    Error::config(
                        "WOMBAT_RETRY_ATTEMPTS",
                        format!("{n} is out of range 1..=100"),
                    )
                })?;
        }
        if let Some(ms) = number("WOMBAT_RETRY_DELAY_MS")? {
            cfg.retry.base_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = number("WOMBAT_RETRY_MAX_DELAY_MS")? {
            cfg.retry.max_delay = Duration::from_millis(ms);
        }
        if let Some(j) = var("WOMBAT_RETRY_JITTER") {
            cfg.retry.jitter = j
                .parse::<f64>()
                .ok()
                .filter(|x| (0.0..=1.0).contains(x))
                .ok_or_else(|| {
                    Error::config(
                        "WOMBAT_RETRY_JITTER",
                        format!("{j:?} is not a number between 0 and 1"),
                    )
                })?;
        }
        Ok(cfg)
    }

    /// [`RouterConfig::from_env_map`] over a map of variables.
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self> {
        Self::from_env_map(&|k: &str| vars.get(k).cloned())
    }

    /// The base URL used for `provider`: the override or the public
    /// default; for a custom provider, its endpoint's (empty without one).
    pub fn base_url(&self, provider: Provider) -> &str {
        if let Provider::Custom(name) = provider {
            return self
                .endpoints
                .get(&name)
                .map_or("", |e| e.base_url.trim().trim_end_matches('/'));
        }
        self.base_urls
            .get(&provider)
            .map_or(provider.default_base_url(), String::as_str)
    }

    /// The model string configured for `tier` (cheap and best fall back to
    /// the default tier).
    pub fn tier_model(&self, tier: crate::Tier) -> &str {
        let configured = match tier {
            crate::Tier::Default => None,
            crate::Tier::Cheap => self.cheap_model.as_deref(),
            crate::Tier::Best => self.best_model.as_deref(),
        };
        configured.unwrap_or(&self.default_model)
    }

    /// Whether calls to `provider` need a key. Keyless providers (Ollama,
    /// echo) never do. An OpenAI-compatible provider whose base URL is
    /// overridden to anything but its public endpoint does not either: that
    /// is how local servers (vLLM, LM Studio, llama.cpp) are reached, and
    /// they take no key; a key, when set, is still sent.
    pub fn key_required(&self, provider: Provider) -> bool {
        if provider.api_key_env().is_none() {
            return false;
        }
        let openai_compatible = matches!(
            provider,
            Provider::OpenAi
                | Provider::Xai
                | Provider::Groq
                | Provider::Mistral
                | Provider::OpenRouter
        );
        let overridden = self
            .base_urls
            .get(&provider)
            .is_some_and(|url| url != provider.default_base_url());
        !(openai_compatible && overridden)
    }

    /// Whether any configured model is served by the echo provider
    /// (`LLM_PROVIDER=echo`, or a tier or the fallback on `echo/`).
    pub fn uses_echo(&self) -> bool {
        self.uses_provider(Provider::Echo)
    }

    /// Whether the configuration uses Ollama: `LLM_PROVIDER=ollama`, a tier
    /// or the fallback on `ollama/`, or `OLLAMA_BASE_URL` set. Ollama needs
    /// no key, so this is what makes it "configured".
    pub fn uses_ollama(&self) -> bool {
        self.uses_provider(Provider::Ollama) || self.base_urls.contains_key(&Provider::Ollama)
    }

    /// Whether `provider` is the default provider or serves a tier or the
    /// fallback model.
    fn uses_provider(&self, provider: Provider) -> bool {
        self.default_provider == provider
            || [
                Some(self.default_model.as_str()),
                self.cheap_model.as_deref(),
                self.best_model.as_deref(),
                self.fallback_model.as_deref(),
            ]
            .into_iter()
            .flatten()
            .any(|m| {
                ModelRef::parse(m, self.default_provider).is_ok_and(|m| m.provider == provider)
            })
    }

    /// What `/health` may show.
    pub fn summary(&self) -> LlmSummary {
        let show = |s: &str| {
            ModelRef::parse(s, self.default_provider)
                .map_or_else(|_| s.to_owned(), |m| m.to_string())
        };
        LlmSummary {
            default_provider: self.default_provider,
            model: show(&self.default_model),
            cheap_model: show(self.tier_model(crate::Tier::Cheap)),
            best_model: show(self.tier_model(crate::Tier::Best)),
            fallback_model: self.fallback_model.as_deref().map(show),
            keys: Provider::ALL
                .into_iter()
                .filter(|p| p.api_key_env().is_some())
                .map(|p| (p, self.api_keys.contains_key(&p)))
                .collect(),
            providers: self.provider_summaries(),
        }
    }

    fn provider_summaries(&self) -> BTreeMap<Provider, ProviderSummary> {
        let uses = [
            ("default", Some(self.default_model.as_str())),
            ("cheap", Some(self.tier_model(crate::Tier::Cheap))),
            ("best", Some(self.tier_model(crate::Tier::Best))),
            ("fallback", self.fallback_model.as_deref()),
        ];
        let mut out: BTreeMap<Provider, ProviderSummary> = self
            .endpoints
            .keys()
            .map(|name| {
                let p = Provider::Custom(*name);
                (p, self.provider_summary(p))
            })
            .collect();
        for (name, model) in uses {
            let Some(Ok(model)) = model.map(|m| ModelRef::parse(m, self.default_provider)) else {
                continue;
            };
            let p = model.provider;
            out.entry(p)
                .or_insert_with(|| self.provider_summary(p))
                .uses
                .push(name);
        }
        out
    }

    /// `provider`'s summary, not yet used by any model.
    pub(crate) fn provider_summary(&self, p: Provider) -> ProviderSummary {
        let (base_url, key_set) = match p {
            Provider::Echo => (None, false),
            Provider::Custom(name) => match self.endpoints.get(&name) {
                Some(e) => (
                    Some(display_base_url(self.base_url(p))),
                    e.api_key.is_some(),
                ),
                None => (None, false),
            },
            _ => (
                Some(display_base_url(self.base_url(p))),
                self.api_keys.contains_key(&p),
            ),
        };
        ProviderSummary {
            base_url,
            key_set,
            key_required: self.key_required(p),
            uses: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<RouterConfig> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        RouterConfig::from_map(&map)
    }

    fn config_var(r: Result<RouterConfig>) -> String {
        match r {
            Err(e) if e.kind() == crate::ErrorKind::Config => {
                e.config_var().unwrap_or_default().to_owned()
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn base_urls_the_transport_cannot_send_to_are_refused_at_start() {
        for url in [
            "http://bücher.example/v1",
            "http://host/v1 beta",
            "https://user:sk-1@/x",
        ] {
            let err = from(&[("OPENAI_BASE_URL", url)]).expect_err(url);
            assert_eq!(err.config_var(), Some("OPENAI_BASE_URL"), "{url}");
            assert!(!err.to_string().contains("sk-1"), "{err}");
        }
        assert!(from(&[("OPENAI_BASE_URL", "http://xn--bcher-kva.example/v1")]).is_ok());
    }

    #[test]
    fn defaults() {
        let cfg = from(&[]).expect("empty env is valid");
        assert_eq!(cfg.default_provider, Provider::OpenAi);
        assert_eq!(cfg.tier_model(crate::Tier::Cheap), "gpt-4o-mini");
        assert_eq!(cfg.tier_model(crate::Tier::Best), "gpt-4o-mini");
        assert_eq!(cfg.retry, RetryPolicy::default());
        assert_eq!(
            cfg.base_url(Provider::Anthropic),
            "https://api.anthropic.com"
        );
        assert!(cfg.fallback_model.is_none());
    }

    #[test]
    fn reads_every_variable() {
        let cfg = from(&[
            ("LLM_PROVIDER", "Anthropic"),
            ("LLM_MODEL_DEFAULT", "claude-sonnet-4"),
            ("OPENAI_MODEL_DEFAULT", "ignored"),
            ("OPENAI_MODEL_CHEAP", "openai/gpt-4o-mini"),
            ("LLM_MODEL_FALLBACK", "google/gemini-2.0-flash"),
            ("GOOGLE_API_KEY", "g-key"),
            ("ANTHROPIC_API_KEY", "a-key"),
            ("OPENAI_API_KEY", "  "),
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/"),
            ("WOMBAT_RETRY_ATTEMPTS", "5"),
            ("WOMBAT_RETRY_DELAY_MS", "10"),
            ("WOMBAT_RETRY_MAX_DELAY_MS", "20"),
            ("WOMBAT_RETRY_JITTER", "0"),
        ])
        .expect("valid");
        assert_eq!(cfg.default_provider, Provider::Anthropic);
        assert_eq!(cfg.default_model, "claude-sonnet-4");
        assert_eq!(cfg.cheap_model.as_deref(), Some("openai/gpt-4o-mini"));
        assert_eq!(cfg.base_url(Provider::OpenAi), "http://127.0.0.1:9/v1");
        assert_eq!(cfg.retry.attempts, 5);
        assert_eq!(cfg.retry.max_delay, Duration::from_millis(20));
        assert_eq!(cfg.retry.jitter, 0.0);
        let summary = cfg.summary();
        assert_eq!(summary.model, "anthropic/claude-sonnet-4");
        assert_eq!(
            summary.fallback_model.as_deref(),
            Some("google/gemini-2.0-flash")
        );
        assert!(summary.keys[&Provider::Google]);
        assert!(!summary.keys[&Provider::OpenAi]);
        assert!(!summary.keys.contains_key(&Provider::Echo));
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("a-key") && !debug.contains("g-key"));
    }

    #[test]
    fn summary_shows_each_provider_in_use_without_secrets() {
        let cfg = from(&[
            ("LLM_MODEL_BEST", "anthropic/claude-sonnet-4"),
            ("LLM_MODEL_FALLBACK", "groq/llama-3.3-70b"),
            ("OPENAI_API_KEY", "sk-secret-openai"),
            ("GROQ_API_KEY", "gsk-secret"),
            (
                "OPENAI_BASE_URL",
                "https://user:pa55@proxy.example:8443/openai/v1/?api-key=k3y#frag",
            ),
        ])
        .expect("valid");
        let summary = cfg.summary();
        let openai = &summary.providers[&Provider::OpenAi];
        assert_eq!(
            openai.base_url.as_deref(),
            Some("https://proxy.example:8443/openai/v1")
        );
        assert_eq!(openai.uses, ["default", "cheap"]);
        // A base URL override makes the key optional for OpenAI-compatible
        // providers; a set key is still reported.
        assert!(openai.key_set && !openai.key_required);
        let anthropic = &summary.providers[&Provider::Anthropic];
        assert_eq!(
            anthropic.base_url.as_deref(),
            Some("https://api.anthropic.com")
        );
        assert!(!anthropic.key_set && anthropic.key_required);
        assert_eq!(anthropic.uses, ["best"]);
        assert_eq!(summary.providers[&Provider::Groq].uses, ["fallback"]);
        assert!(!summary.providers.contains_key(&Provider::Google));
        assert_eq!(summary.missing_keys(), [Provider::Anthropic]);
        let json = serde_json::to_string(&summary).expect("serialises");
        for secret in ["pa55", "k3y", "frag", "user", "sk-secret", "gsk-secret"] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        // An override equal to the public endpoint changes nothing.
        let cfg = from(&[("OPENAI_BASE_URL", "https://api.openai.com/v1")]).expect("valid");
        assert!(cfg.key_required(Provider::OpenAi));
        assert!(!cfg.key_required(Provider::Ollama));
        assert_eq!(cfg.summary().missing_keys(), [Provider::OpenAi]);
        // Echo shows no URL and needs no key.
        let cfg = from(&[("LLM_PROVIDER", "echo")]).expect("valid");
        let echo = &cfg.summary().providers[&Provider::Echo];
        assert_eq!((echo.base_url.as_deref(), echo.key_required), (None, false));
        assert!(cfg.uses_echo() && !from(&[]).expect("valid").uses_echo());
    }

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(
            config_var(from(&[("LLM_PROVIDER", "azure")])),
            "LLM_PROVIDER"
        );
        assert_eq!(
            config_var(from(&[("WOMBAT_RETRY_ATTEMPTS", "three")])),
            "WOMBAT_RETRY_ATTEMPTS"
        );
        assert_eq!(
            config_var(from(&[("WOMBAT_RETRY_ATTEMPTS", "0")])),
            "WOMBAT_RETRY_ATTEMPTS"
        );
        assert_eq!(
            config_var(from(&[("WOMBAT_RETRY_JITTER", "1.5")])),
            "WOMBAT_RETRY_JITTER"
        );
        assert_eq!(
            config_var(from(&[("WOMBAT_RETRY_DELAY_MS", "-1")])),
            "WOMBAT_RETRY_DELAY_MS"
        );
        assert_eq!(
            config_var(from(&[("LLM_MODEL_BEST", "openai/")])),
            "LLM_MODEL_BEST"
        );
        assert_eq!(
            config_var(from(&[("OPENAI_MODEL_FALLBACK", "anthropic/")])),
            "OPENAI_MODEL_FALLBACK"
        );
        assert_eq!(
            config_var(from(&[("GROQ_BASE_URL", "ftp://x")])),
            "GROQ_BASE_URL"
        );
        let msg = from(&[("LLM_PROVIDER", "azure")])
            .expect_err("invalid")
            .to_string();
        assert!(
            msg.starts_with("invalid LLM_PROVIDER: unknown provider \"azure\""),
            "{msg}"
        );
    }

    #[test]
    fn backoff_doubles_caps_and_honours_short_hints() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.delay(0, None), Duration::from_secs(1));
        assert_eq!(policy.delay(2, None), Duration::from_secs(4));
        assert_eq!(policy.delay(10, None), Duration::from_secs(30));
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(45))),
            Duration::from_secs(45)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(61))),
            Duration::from_secs(2)
        );
        let jittery = RetryPolicy::default();
        for _ in 0..100 {
            let d = jittery.delay(0, None).as_secs_f64();
            assert!((0.9..=1.1).contains(&d), "{d}");
        }
    }
}
