//! Custom OpenAI-compatible endpoints: [`EndpointConfig`] (base URL,
//! optional key, extra headers) and the `WOMBAT_LLM_ENDPOINTS` document that
//! declares them by name.
//!
//! An endpoint's key and header values are secrets: they never appear in
//! `Debug` output, error messages or the `/health` summary. This module does
//! not talk to the network; the router turns each endpoint into an
//! [`crate::OpenAiAdapter`].

use std::collections::BTreeMap;
use std::fmt;

use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use wombat_core::ProviderName;

use crate::types::ApiKey;
use crate::{Error, Result};

/// The variable that declares custom endpoints.
pub(crate) const ENDPOINTS_VAR: &str = "WOMBAT_LLM_ENDPOINTS";

/// Longest `WOMBAT_LLM_ENDPOINTS` value, in bytes.
const MAX_DOCUMENT: usize = 64 * 1024;

/// Most endpoints one configuration declares.
const MAX_ENDPOINTS: usize = 32;

/// Most extra headers of one endpoint.
const MAX_HEADERS: usize = 32;

/// Headers an endpoint may not set: the HTTP client's framing headers and
/// those the adapter sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-type",
    "accept",
];

/// One custom OpenAI-compatible endpoint: where it is, its key and extra
/// headers. The router serves it under its name in
/// [`crate::RouterConfig::endpoints`]: a model string `<name>/<model>` goes
/// to `{base_url}/chat/completions` with `model: "<model>"`, with the
/// router's retries, failover and cost like any provider.
///
/// ```
/// use wombat_llm::{ApiKey, EndpointConfig, Provider, RouterConfig};
///
/// let name = Provider::custom("corp-gateway")?.custom_name().expect("custom");
/// let mut config = RouterConfig::default();
/// config.endpoints.insert(
///     name,
///     EndpointConfig::new("https://llm.corp.example/v1")
///         .with_api_key(ApiKey::new("sk-corp"))
///         .with_header("X-Team", "agents"),
/// );
/// config.default_model = "corp-gateway/llama-3.3-70b".into();
/// assert!(!format!("{config:?}").contains("sk-corp"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// The base URL (`http(s)://`, requests go to `{base}/chat/completions`).
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>` when set; without one, calls go
    /// out with no `Authorization` header (a local server).
    pub api_key: Option<ApiKey>,
    /// Extra headers sent with every call. Their values are treated as
    /// secrets (redacted in `Debug` and in [`crate::ProviderRequest`]).
    /// `Authorization` is allowed only without [`EndpointConfig::api_key`];
    /// framing headers, `content-type` and `accept` never.
    pub headers: Vec<(String, String)>,
}

impl EndpointConfig {
    /// An endpoint at `base_url` with no key and no extra headers.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            headers: Vec::new(),
        }
    }

    /// The same endpoint called with `key`.
    #[must_use]
    pub fn with_api_key(mut self, key: ApiKey) -> Self {
        self.api_key = Some(key);
        self
    }

    /// The same endpoint with one more header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The base URL without a trailing slash, and the extra headers as sent
    /// (values marked sensitive), or why the endpoint is not valid. The
    /// reason never quotes the key or a header value.
    pub(crate) fn prepare(&self) -> std::result::Result<(String, HeaderMap), String> {
        let base = self.base_url.trim().trim_end_matches('/');
        let scheme_ok = base.starts_with("http://") || base.starts_with("https://");
        if !scheme_ok || wombat_transport::Target::parse(base).is_err() {
            // Not quoted: a base URL may carry credentials.
            return Err("base_url is not an http:// or https:// url".to_owned());
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(format!("more than {MAX_HEADERS} headers"));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let header = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("header name {name:?} is not a valid header name"))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(format!("header {header} is set by the adapter"));
            }
            if header == AUTHORIZATION && self.api_key.is_some() {
                return Err(
                    "header authorization conflicts with the api key (set one of them)".to_owned(),
                );
            }
            // The value is not quoted: it may be a credential.
            let mut value = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("the value of header {header} is not valid"))?;
            value.set_sensitive(true);
            headers.append(header, value);
        }
        Ok((base.to_owned(), headers))
    }
}

impl fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials: only their names are shown; the
        // base URL without user info, query or fragment.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("EndpointConfig")
            .field("base_url", &crate::config::display_base_url(&self.base_url))
            .field("api_key", &self.api_key)
            .field("headers", &names)
            .finish()
    }
}

/// Parses `WOMBAT_LLM_ENDPOINTS`: a JSON object
/// `{"<name>": {"base_url": "...", "api_key_env": "VAR", "headers": {...}}}`,
/// each key read through `var` from the variable `api_key_env` names.
/// Errors are [`crate::ErrorKind::Config`] errors naming
/// `WOMBAT_LLM_ENDPOINTS` (and the endpoint and field); they never quote a
/// key, a header value or a base URL.
pub(crate) fn parse_endpoints(
    text: &str,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<ProviderName, EndpointConfig>> {
    let fail = |reason: String| Error::config(ENDPOINTS_VAR, reason);
    if text.len() > MAX_DOCUMENT {
        return Err(fail(format!("longer than {MAX_DOCUMENT} bytes")));
    }
    // serde_json's syntax errors give a position, never the input text.
    let doc: Value = serde_json::from_str(text).map_err(|e| fail(format!("not JSON: {e}")))?;
    let Value::Object(entries) = doc else {
        return Err(fail(
            "expected a JSON object of endpoints by name".to_owned(),
        ));
    };
    if entries.len() > MAX_ENDPOINTS {
        return Err(fail(format!("more than {MAX_ENDPOINTS} endpoints")));
    }
    let mut out = BTreeMap::new();
    for (name, spec) in entries {
        let provider = ProviderName::new(&name).map_err(|e| fail(e.to_string()))?;
        let endpoint = parse_endpoint(&spec, var)
            .map_err(|reason| fail(format!("endpoint {name:?}: {reason}")))?;
        endpoint
            .prepare()
            .map_err(|reason| fail(format!("endpoint {name:?}: {reason}")))?;
        out.insert(provider, endpoint);
    }
    Ok(out)
}

/// One endpoint's object, or why it is not valid.
fn parse_endpoint(
    spec: &Value,
    var: &impl Fn(&str) -> Option<String>,
) -> std::result::Result<EndpointConfig, String> {
    let Value::Object(fields) = spec else {
        return Err("expected an object with base_url, api_key_env, headers".to_owned());
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "base_url" | "api_key_env" | "headers"))
    {
        return Err(format!(
            "unknown field {unknown:?} (expected base_url, api_key_env, headers)"
        ));
    }
    let base_url = match fields.get("base_url") {
        Some(Value::String(url)) => url.clone(),
        Some(_) => return Err("base_url must be a string".to_owned()),
        None => return Err("base_url is missing".to_owned()),
    };
    let mut endpoint = EndpointConfig::new(base_url);
    match fields.get("api_key_env") {
        None | Some(Value::Null) => {}
        Some(Value::String(env)) => {
            let valid = !env.is_empty()
                && env.len() <= 128
                && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err("api_key_env must be a variable name ([A-Za-z0-9_])".to_owned());
            }
            // The variable is named, its value never shown.
            let key =
                var(env).ok_or_else(|| format!("api_key_env names {env}, which is not set"))?;
            endpoint.api_key = Some(ApiKey::new(key));
        }
        Some(_) => return Err("api_key_env must be a string".to_owned()),
    }
    match fields.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            if headers.len() > MAX_HEADERS {
                return Err(format!("more than {MAX_HEADERS} headers"));
            }
            for (name, value) in headers {
                let Value::String(value) = value else {
                    return Err(format!("the value of header {name:?} must be a string"));
                };
                endpoint.headers.push((name.clone(), value.clone()));
            }
        }
        Some(_) => return Err("headers must be an object of strings".to_owned()),
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, vars: &[(&str, &str)]) -> Result<BTreeMap<ProviderName, EndpointConfig>> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse_endpoints(text, &|k: &str| vars.get(k).cloned())
    }

    /// The error message of an invalid document, which must name the
    /// variable and never contain a secret.
    fn reason(text: &str) -> String {
        let vars = [("EP_KEY", "sk-ep-secret")];
        let err = parse(text, &vars).expect_err("invalid");
        assert_eq!(err.config_var(), Some(ENDPOINTS_VAR), "{err}");
        let msg = err.to_string();
        for secret in ["sk-ep-secret", "hdr-secret", "pa55"] {
            assert!(!msg.contains(secret), "{secret} in {msg}");
        }
        msg
    }

    #[test]
    fn reads_endpoints_with_keys_from_their_variables() {
        let got = parse(
            r#"{"ep-a": {"base_url": "http://127.0.0.1:9/v1/", "api_key_env": "EP_KEY",
                         "headers": {"X-Team": "agents"}},
                "ep-b": {"base_url": "https://b.example"}}"#,
            &[("EP_KEY", "sk-ep-secret")],
        )
        .expect("valid");
        let a = &got[&ProviderName::new("ep-a").expect("valid")];
        assert_eq!(a.api_key.as_ref().map(ApiKey::expose), Some("sk-ep-secret"));
        assert_eq!(a.headers, [("X-Team".to_owned(), "agents".to_owned())]);
        let (base, headers) = a.prepare().expect("valid");
        assert_eq!(base, "http://127.0.0.1:9/v1");
        assert!(headers["x-team"].is_sensitive());
        let b = &got[&ProviderName::new("ep-b").expect("valid")];
        assert!(b.api_key.is_none() && b.headers.is_empty());
        let debug = format!("{got:?}");
        assert!(
            !debug.contains("sk-ep-secret") && !debug.contains("agents"),
            "{debug}"
        );
        assert!(parse("{}", &[]).expect("empty is valid").is_empty());
    }

    #[test]
    fn invalid_documents_are_config_errors_without_secrets() {
        let cases = [
            ("[1]", "expected a JSON object"),
            ("{\"a\": ", "not JSON"),
            (
                r#"{"Bad": {"base_url": "http://x"}}"#,
                "invalid provider name \"Bad\"",
            ),
            (
                r#"{"openai": {"base_url": "http://x"}}"#,
                "built-in provider",
            ),
            (r#"{"a": "http://x"}"#, "endpoint \"a\": expected an object"),
            (r#"{"a": {}}"#, "base_url is missing"),
            (r#"{"a": {"base_url": 1}}"#, "base_url must be a string"),
            (
                r#"{"a": {"base_url": "ftp://user:pa55@x"}}"#,
                "base_url is not an http:// or https:// url",
            ),
            (
                r#"{"a": {"base_url": "http://x", "api_key": "sk-ep-secret"}}"#,
                "unknown field \"api_key\"",
            ),
            (
                r#"{"a": {"base_url": "http://x", "api_key_env": "NOPE"}}"#,
                "api_key_env names NOPE, which is not set",
            ),
            (
                r#"{"a": {"base_url": "http://x", "api_key_env": "A B"}}"#,
                "api_key_env must be a variable name",
            ),
            (
                r#"{"a": {"base_url": "http://x", "headers": {"X-A": 1}}}"#,
                "the value of header \"X-A\" must be a string",
            ),
            (
                r#"{"a": {"base_url": "http://x", "headers": {"Bad Name": "hdr-secret"}}}"#,
                "is not a valid header name",
            ),
            (
                r#"{"a": {"base_url": "http://x", "headers": {"X-A": "hdr-secret\nx"}}}"#,
                "the value of header x-a is not valid",
            ),
            (
                r#"{"a": {"base_url": "http://x", "headers": {"Content-Type": "hdr-secret"}}}"#,
                "header content-type is set by the adapter",
            ),
            (
                r#"{"a": {"base_url": "http://x", "api_key_env": "EP_KEY",
                          "headers": {"Authorization": "hdr-secret"}}}"#,
                "conflicts with the api key",
            ),
        ];
        for (text, expected) in cases {
            let msg = reason(text);
            assert!(
                msg.starts_with("invalid WOMBAT_LLM_ENDPOINTS: ") && msg.contains(expected),
                "{text}: {msg}"
            );
        }
        let big = format!(
            "{{\"a\": {{\"base_url\": \"http://{}\"}}}}",
            "x".repeat(MAX_DOCUMENT)
        );
        assert!(reason(&big).contains("longer than"));
        let many: Vec<String> = (0..=MAX_ENDPOINTS)
            .map(|i| format!("\"ep-many-{i}\": {{\"base_url\": \"http://x\"}}"))
            .collect();
        assert!(reason(&format!("{{{}}}", many.join(","))).contains("more than 32 endpoints"));
        // Without a key, an Authorization header is the endpoint's own scheme.
        parse(
            r#"{"a": {"base_url": "http://x", "headers": {"Authorization": "Token t"}}}"#,
            &[],
        )
        .expect("valid");
    }
}
