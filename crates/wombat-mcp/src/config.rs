//! Which MCP servers to use: the `{"mcpServers": {...}}` document other MCP
//! clients read (a workspace's `mcp.json`, or the same JSON in an
//! environment variable), parsed and validated into [`McpConfig`].
//!
//! This module reads a file when asked to and never the environment (the
//! binary passes the variable's value in). Header values may hold secrets:
//! they are never shown by `Debug` and never appear in an error message.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

/// Default per-server timeout of one MCP operation (a `tools/list` or a
/// `tools/call`, handshake included): 30 s, the per-tool default of the spec.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest server name: 32 bytes, so `<server>__<tool>` leaves room for a
/// tool name within the 64 bytes model providers accept.
pub const MAX_SERVER_NAME: usize = 32;

/// Largest `mcp.json` (or `WOMBAT_MCP_SERVERS` value) read: 256 KiB.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// Most servers one configuration may name: 64.
pub const MAX_SERVERS: usize = 64;

/// Longest `timeout_secs`: one hour.
const MAX_TIMEOUT_SECS: u64 = 3600;

/// Headers the client sets itself; a configured header may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "x-agent-token",
    "traceparent",
    "accept",
    "content-type",
    "content-length",
    "host",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// A configuration that cannot be used; the message names the offending
/// server and field, never a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// When a tool call needs a person's approval before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// Decided by the tool's `annotations.destructiveHint`: `true` needs
    /// approval, anything else (absent included) does not.
    Auto,
    /// Always needs approval.
    Always,
    /// Never needs approval, even when the tool says it is destructive.
    Never,
}

/// One configured MCP server.
#[derive(Clone)]
pub struct McpServerConfig {
    name: String,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    bearer: bool,
    approval: BTreeMap<String, Approval>,
    timeout: Duration,
}

impl fmt::Debug for McpServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be API keys: only their names are shown.
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("McpServerConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("headers", &header_names)
            .field("bearer", &self.bearer)
            .field("approval", &self.approval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl McpServerConfig {
    /// The server's name, the prefix of its tools' names (`<name>__<tool>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Streamable HTTP endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the agent JWT is also sent as `Authorization: Bearer`.
    pub fn bearer(&self) -> bool {
        self.bearer
    }

    /// Timeout of one operation against this server (list or call).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Names of the configured extra headers (their values are secret).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|(n, _)| n.as_str())
    }

    pub(crate) fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// Whether a call to `tool` (the server's own name, without the prefix)
    /// needs approval, given the tool's `destructiveHint`. An entry for the
    /// exact tool name wins over `"*"`; without either, `Auto`.
    pub fn requires_approval(&self, tool: &str, destructive: bool) -> bool {
        let policy = self
            .approval
            .get(tool)
            .or_else(|| self.approval.get("*"))
            .copied()
            .unwrap_or(Approval::Auto);
        match policy {
            Approval::Auto => destructive,
            Approval::Always => true,
            Approval::Never => false,
        }
    }
}

/// The MCP servers Wombat may call: only these, never a URL from a request.
#[derive(Debug, Clone, Default)]
pub struct McpConfig {
    servers: Vec<McpServerConfig>,
}

/// The `mcpServers` document as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    #[serde(rename = "mcpServers")]
    mcp_servers: BTreeMap<String, RawServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    bearer: bool,
    #[serde(default)]
    approval: BTreeMap<String, Approval>,
    timeout_secs: Option<u64>,
    #[serde(default)]
    allow_insecure_http: bool,
    /// Other MCP clients mark a server `"type": "http"` (or
    /// `"streamable-http"`); accepted so one file serves both, and checked.
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl McpConfig {
    /// No servers.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses an `{"mcpServers": {...}}` document. `source` names where it
    /// came from (a path, an environment variable) in error messages.
    pub fn parse(json: &str, source: &str) -> Result<Self, ConfigError> {
        if json.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::new(format!(
                "{source}: larger than {MAX_CONFIG_BYTES} bytes"
            )));
        }
        let raw: RawDocument = serde_json::from_str(json).map_err(|e| {
            // An unknown or missing field is named; any other message could
            // quote a value (a header holding a key given as the wrong
            // type), so only its position is given.
            let text = e.to_string();
            if text.starts_with("unknown field") || text.starts_with("missing field") {
                ConfigError::new(format!("{source}: invalid MCP configuration: {text}"))
            } else {
                ConfigError::new(format!(
                    "{source}: invalid MCP configuration at line {} column {} (expected {{\"mcpServers\": {{\"<name>\": {{\"url\": \"...\"}}}}}})",
                    e.line(),
                    e.column()
                ))
            }
        })?;
        if raw.mcp_servers.len() > MAX_SERVERS {
            return Err(ConfigError::new(format!(
                "{source}: more than {MAX_SERVERS} MCP servers"
            )));
        }
        let servers = raw
            .mcp_servers
            .into_iter()
            .map(|(name, server)| validate_server(source, name, server))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { servers })
    }

    /// Reads and parses a file (a workspace's `mcp.json`).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let source = path.display().to_string();
        let meta = std::fs::metadata(path)
            .map_err(|e| ConfigError::new(format!("{source}: cannot read: {e}")))?;
        if meta.len() > MAX_CONFIG_BYTES as u64 {
            return Err(ConfigError::new(format!(
                "{source}: larger than {MAX_CONFIG_BYTES} bytes"
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(format!("{source}: cannot read: {e}")))?;
        Self::parse(&text, &source)
    }

    /// Both configurations' servers; a name in both is an error (tool names
    /// must be unique, and silently preferring one would hide a mistake).
    pub fn merge(mut self, other: Self) -> Result<Self, ConfigError> {
        for server in other.servers {
            if self.servers.iter().any(|s| s.name == server.name) {
                return Err(ConfigError::new(format!(
                    "MCP server {:?} is configured twice",
                    server.name
                )));
            }
            self.servers.push(server);
        }
        if self.servers.len() > MAX_SERVERS {
            return Err(ConfigError::new(format!(
                "more than {MAX_SERVERS} MCP servers"
            )));
        }
        Ok(self)
    }

    /// The servers, in name order within each merged source.
    pub fn servers(&self) -> &[McpServerConfig] {
        &self.servers
    }

    /// Whether no server is configured.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

/// `[A-Za-z0-9_-]{1,32}` without `__` (which separates server and tool).
pub(crate) fn valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !name.contains("__")
}

fn validate_server(
    source: &str,
    name: String,
    raw: RawServer,
) -> Result<McpServerConfig, ConfigError> {
    let err = |msg: String| ConfigError::new(format!("{source}: MCP server {name:?}: {msg}"));
    if !valid_server_name(&name) {
        return Err(ConfigError::new(format!(
            "{source}: MCP server name {name:?} must be 1-{MAX_SERVER_NAME} of [A-Za-z0-9_-] without \"__\""
        )));
    }
    if let Some(kind) = raw.kind.as_deref()
        && !matches!(kind, "http" | "streamable-http" | "streamableHttp")
    {
        return Err(err(format!(
            "type {kind:?} is not supported; only remote Streamable HTTP servers (\"http\")"
        )));
    }
    let url = reqwest013::Url::parse(&raw.url).map_err(|e| err(format!("invalid url: {e}")))?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" => {}
        "http" if raw.allow_insecure_http || is_loopback(host) => {}
        "http" => {
            return Err(err(format!(
                "url uses http:// to {host:?}, which is not loopback; use https:// or set \"allow_insecure_http\": true"
            )));
        }
        other => return Err(err(format!("url scheme {other:?} is not http or https"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            "url must not carry credentials; put them in \"headers\"".to_owned(),
        ));
    }
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (key, value) in raw.headers {
        let header = HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| err(format!("invalid header name {key:?}")))?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(err(format!("header {key:?} is set by Wombat itself")));
        }
        if raw.bearer && header == http::header::AUTHORIZATION {
            return Err(err(
                "\"bearer\": true sends the agent JWT as Authorization; do not also set an Authorization header".to_owned(),
            ));
        }
        // The value is never echoed: it may be a key.
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| err(format!("header {key:?} has an invalid value")))?;
        value.set_sensitive(true);
        headers.push((header, value));
    }
    for tool in raw.approval.keys() {
        if tool.is_empty() || tool.len() > 128 {
            return Err(err(format!(
                "approval key {tool:?} is not a tool name or \"*\""
            )));
        }
    }
    let timeout = match raw.timeout_secs {
        None => DEFAULT_TIMEOUT,
        Some(s) if (1..=MAX_TIMEOUT_SECS).contains(&s) => Duration::from_secs(s),
        Some(s) => {
            return Err(err(format!(
                "timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}, got {s}"
            )));
        }
    };
    Ok(McpServerConfig {
        name,
        url: url.to_string(),
        headers,
        bearer: raw.bearer,
        approval: raw.approval,
        timeout,
    })
}

/// `localhost` or a loopback address (IPv6 in brackets as URLs write it).
fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<McpConfig, ConfigError> {
        McpConfig::parse(json, "mcp.json")
    }

    #[test]
    fn parses_the_common_shape() {
        let c = parse(
            r#"{"mcpServers": {"mc": {"url": "http://127.0.0.1:1/mcp", "headers": {"X-Api-Key": "sekrit"},
                "bearer": true, "approval": {"delete_document": "never", "*": "always"}, "timeout_secs": 5}}}"#,
        )
        .expect("should be accepted");
        let s = &c.servers()[0];
        assert_eq!(s.name(), "mc");
        assert!(s.bearer());
        assert_eq!(s.timeout(), Duration::from_secs(5));
        assert!(!s.requires_approval("delete_document", true));
        assert!(s.requires_approval("search_tasks", false));
        let debug = format!("{c:?}");
        assert!(!debug.contains("sekrit"), "{debug}");
        assert!(debug.contains("x-api-key"), "{debug}");
    }

    #[test]
    fn approval_defaults_to_the_destructive_hint() {
        let c = parse(r#"{"mcpServers": {"a": {"url": "https://example.com/mcp"}}}"#)
            .expect("should be accepted");
        assert!(c.servers()[0].requires_approval("x", true));
        assert!(!c.servers()[0].requires_approval("x", false));
    }

    #[test]
    fn rejects_bad_names_urls_and_headers_without_echoing_values() {
        for (json, needle) in [
            (
                r#"{"mcpServers": {"a__b": {"url": "https://x.test"}}}"#,
                "without \"__\"",
            ),
            (
                r#"{"mcpServers": {"a b": {"url": "https://x.test"}}}"#,
                "must be 1-32",
            ),
            (
                r#"{"mcpServers": {"a": {"url": "http://example.com/mcp"}}}"#,
                "not loopback",
            ),
            (
                r#"{"mcpServers": {"a": {"url": "file:///etc/passwd"}}}"#,
                "not http or https",
            ),
            (
                r#"{"mcpServers": {"a": {"url": "https://u:p@x.test"}}}"#,
                "credentials",
            ),
            (
                r#"{"mcpServers": {"a": {"url": "https://x.test", "headers": {"X-Agent-Token": "sekrit"}}}}"#,
                "set by Wombat",
            ),
            (
                r#"{"mcpServers": {"a": {"url": "https://x.test", "headers": {"X-K": "sek\nrit"}}}}"#,
                "invalid value",
            ),
            (
                r#"{"mcpServers": {"a": {"url": "https://x.test", "timeout_secs": 0}}}"#,
                "timeout_secs",
            ),
            (
                r#"{"mcpServers": {"a": {"url": "https://x.test", "type": "stdio"}}}"#,
                "not supported",
            ),
            (
                r#"{"mcpServers": {"a": {"command": "rm"}}}"#,
                "unknown field",
            ),
        ] {
            let e = parse(json).expect_err("should be rejected").to_string();
            assert!(e.contains(needle), "{json}: {e}");
            assert!(!e.contains("sek"), "{e}");
        }
        assert!(parse(r#"{"mcpServers": {"a": {"url": "http://example.com", "allow_insecure_http": true}}}"#).is_ok());
        assert!(parse(r#"{"mcpServers": {"a": {"url": "http://[::1]:9/mcp"}}}"#).is_ok());
        assert!(parse(r#"{"mcpServers": {"a": {"url": "http://localhost:9/mcp"}}}"#).is_ok());
    }

    #[test]
    fn merge_rejects_a_name_twice() {
        let a = parse(r#"{"mcpServers": {"a": {"url": "https://x.test"}}}"#)
            .expect("should be accepted");
        let b = parse(r#"{"mcpServers": {"a": {"url": "https://y.test"}}}"#)
            .expect("should be accepted");
        let c = parse(r#"{"mcpServers": {"c": {"url": "https://y.test"}}}"#)
            .expect("should be accepted");
        assert!(
            a.clone()
                .merge(b)
                .expect_err("should be rejected")
                .to_string()
                .contains("twice")
        );
        assert_eq!(a.merge(c).expect("should be accepted").servers().len(), 2);
    }
}
