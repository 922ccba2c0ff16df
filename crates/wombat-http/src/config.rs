//! The daemon's configuration: a flat map of settings (env var names as
//! keys) merged by the binary from `wombat.toml`, `.env` and the process
//! environment, validated here into typed values before any port is bound.
//!
//! Every validation error names the variable and the offending value in one
//! line; the binary prints it and exits with code 64. Secrets are held in
//! [`Secret`], whose `Debug` never prints them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use wombat_controlplane::JwtAlgorithm;

/// Raw settings: variable name → value, as merged by the binary.
pub type Settings = BTreeMap<String, String>;

/// A configuration value that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}: {reason}")]
pub struct ConfigError {
    /// The variable, e.g. `WOMBAT_PORT`.
    pub var: String,
    /// What is wrong, including the value when it is not a secret.
    pub reason: String,
}

impl ConfigError {
    /// An error about `var`.
    pub fn new(var: &str, reason: impl Into<String>) -> Self {
        Self {
            var: var.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A secret string (API key, JWT secret, daemon key) that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Validated daemon settings (everything but the LLM router's, which
/// `wombat-llm` validates from the same map).
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// `WOMBAT_HOST`. Unset: `127.0.0.1` without a daemon key (a first run
    /// must not expose an open API to the network), `0.0.0.0` with one.
    pub host: IpAddr,
    /// Whether `host` was chosen by that default rather than `WOMBAT_HOST`.
    pub host_defaulted: bool,
    /// `WOMBAT_PORT` (8081).
    pub port: u16,
    /// `BACKEND_URL`; `None` when unset (the binary decides the default).
    pub backend_url: Option<String>,
    /// `AGENT_DAEMON_API_KEY`; `None` disables daemon auth.
    pub daemon_api_key: Option<Secret>,
    /// `AGENT_JWT_SECRET`.
    pub jwt_secret: Option<Secret>,
    /// `AGENT_JWT_ALGORITHM` (HS256).
    pub jwt_algorithm: JwtAlgorithm,
    /// `WOMBAT_WORKSPACE` (`./workspace`).
    pub workspace: PathBuf,
    /// `WOMBAT_STATE_DIR`: where the boot marker is kept instead of the
    /// workspace (which may then be mounted read-only); unset by default.
    pub state_dir: Option<PathBuf>,
    /// `WOMBAT_DEFAULT_TASK`.
    pub default_task: Option<String>,
    /// `WOMBAT_CONTEXT_WARNING_THRESHOLD` (75), percent in 0..=100.
    pub context_warning_threshold: f64,
    /// `WOMBAT_DEFAULT_TIMEZONE`.
    pub default_timezone: Option<String>,
    /// `WOMBAT_INCLUDE_TIME_CONTEXT` (true).
    pub include_time_context: bool,
    /// `WOMBAT_MAX_CHARS_PER_FILE` (20000).
    pub max_chars_per_file: usize,
    /// `WOMBAT_BOOTSTRAP_MAX_CHARS` (150000).
    pub bootstrap_max_chars: usize,
    /// `WOMBAT_SKILLS_MAX_CHARS` (30000).
    pub skills_max_chars: usize,
    /// `WOMBAT_METRICS_PUBLIC` (false): serve `/metrics` without the daemon key.
    pub metrics_public: bool,
    /// `WOMBAT_MAX_BODY_BYTES` (1 MiB).
    pub max_body_bytes: usize,
    /// `WOMBAT_HEADER_TIMEOUT_SECS` (10): a new connection must deliver its
    /// first request headers (and an HTTP/1 request its headers) in time.
    pub header_read_timeout: Duration,
    /// `WOMBAT_BODY_TIMEOUT_SECS` (30): a request body must arrive in full
    /// in time (408 otherwise).
    pub body_timeout: Duration,
    /// `WOMBAT_KEEP_ALIVE_TIMEOUT_SECS` (75): a connection with no request in
    /// flight for this long is closed (HTTP/1 keep-alive and HTTP/2).
    pub keep_alive_timeout: Duration,
    /// `WOMBAT_MAX_CONNECTIONS` (1024): open connections at most; more
    /// clients wait in the listen backlog.
    pub max_connections: usize,
    /// `WOMBAT_REQUEST_TIMEOUT_SECS` (300): deadline of one agent request,
    /// LLM and backend calls included.
    pub request_timeout: Duration,
    /// `WOMBAT_SHUTDOWN_TIMEOUT_SECS` (30): drain deadline.
    pub shutdown_timeout: Duration,
    /// `WOMBAT_MAX_CONCURRENT_LLM` (512): LLM calls in flight before new
    /// requests get 429.
    pub max_concurrent_llm: usize,
    /// `WOMBAT_MCP_SERVERS`: MCP servers (the `{"mcpServers": {...}}` JSON,
    /// validated), merged with the workspace's `mcp.json`. Header values in
    /// it are secrets.
    pub mcp_servers: Option<wombat_mcp::McpConfig>,
    /// `WOMBAT_TOOL_MAX_STEPS` (8), `WOMBAT_TOOL_TIMEOUT_SECS` (30),
    /// `WOMBAT_TOOL_CONCURRENCY` (4), `WOMBAT_TOOL_RESULT_MAX_BYTES`
    /// (16384): the tool loop's limits.
    pub tool_limits: wombat_agent::tools::LoopLimits,
    /// `WOMBAT_WEBHOOK_ALLOWED_HOSTS`: comma-separated host names; when set,
    /// webhooks to any other host are refused with 400.
    pub webhook_allowed_hosts: Option<Vec<String>>,
    /// `WOMBAT_WEBHOOK_ALLOW_PRIVATE` (false): allow webhooks to loopback,
    /// private, link-local and other non-public addresses. Hosts named in
    /// `WOMBAT_WEBHOOK_ALLOWED_HOSTS` are always allowed.
    pub webhook_allow_private: bool,
    /// `WOMBAT_WEBHOOK_MAX_IN_FLIGHT` (1024): deliveries beyond are dropped
    /// (and counted) rather than queued without bound.
    pub webhook_max_in_flight: usize,
    /// `WOMBAT_PRICING_FILE`: JSON pricing overrides.
    pub pricing_file: Option<PathBuf>,
    /// `WOMBAT_TEMPERATURE` (0.4, 0.1.0's value): sampling temperature of
    /// send and stream, in 0..=2; `metadata.temperature` overrides it.
    pub temperature: f32,
    /// `WOMBAT_COMPACT_TEMPERATURE` (0.3, 0.1.0's value): sampling
    /// temperature of `/compact`, in 0..=2.
    pub compact_temperature: f32,
    /// `WOMBAT_REDIS_URL` (`redis://[:password@]host:port[/db]`): budgets,
    /// rate limits and `/usage` shared by every replica. Unset: in memory,
    /// per process. A secret: it may carry a password.
    pub redis_url: Option<Secret>,
    /// Limits of every user (`WOMBAT_BUDGET_USD_DAY`,
    /// `WOMBAT_BUDGET_USD_MONTH`, `WOMBAT_BUDGET_SOFT_PERCENT`,
    /// `WOMBAT_RATE_RPM`, `WOMBAT_RATE_TPM`, `WOMBAT_USER_CONCURRENCY`);
    /// unset means no limit. `metadata.limits` overrides them per request.
    pub limits: wombat_governance::Limits,
    /// `WOMBAT_BUDGET_TIMEZONE` (UTC): where budget days and months begin.
    pub budget_timezone: jiff::tz::TimeZone,
    /// `WOMBAT_LIMITS_ON_STORE_ERROR` (`open`): let requests through when
    /// the store is unreachable (`open`) or answer 503 (`closed`).
    pub limits_on_store_error: wombat_governance::FailMode,
}

/// A budget in USD: a finite, non-negative number, kept as micro-dollars.
pub fn usd_micros(v: &str) -> Result<u64, String> {
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && (0.0..=1e9).contains(&n) => Ok((n * 1e6).round() as u64),
        _ => Err(format!("{v:?} is not an amount of USD between 0 and 1e9")),
    }
}

/// A percentage in (0, 100].
pub fn percent(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(n) if n > 0.0 && n <= 100.0 => Ok(n),
        _ => Err(format!("{v:?} is not a percentage in (0, 100]")),
    }
}

fn redis_url(v: &str) -> Result<Option<Secret>, String> {
    // Never echo the value: it may carry a password.
    if (v.starts_with("redis://") || v.starts_with("valkey://")) && v.len() > "redis://".len() {
        Ok(Some(Secret::new(v)))
    } else {
        Err("is not a redis:// URL".to_owned())
    }
}

fn limits(s: &Settings) -> Result<wombat_governance::Limits, ConfigError> {
    let some = |f: fn(&str) -> Result<u64, String>| move |v: &str| f(v).map(Some);
    let count = |v: &str| match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{v:?} is not a positive integer")),
    };
    let small = |v: &str| match v.parse::<u32>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!("{v:?} is not a positive integer below 2^32")),
    };
    Ok(wombat_governance::Limits {
        budget_day_micros: parse(s, "WOMBAT_BUDGET_USD_DAY", None, some(usd_micros))?,
        budget_month_micros: parse(s, "WOMBAT_BUDGET_USD_MONTH", None, some(usd_micros))?,
        soft_percent: parse(s, "WOMBAT_BUDGET_SOFT_PERCENT", None, |v| {
            percent(v).map(Some)
        })?,
        rpm: parse(s, "WOMBAT_RATE_RPM", None, small)?,
        tpm: parse(s, "WOMBAT_RATE_TPM", None, some(count))?,
        concurrency: parse(s, "WOMBAT_USER_CONCURRENCY", None, small)?,
    })
}

/// Every `WOMBAT_*` setting the daemon reads, in one place: the binary
/// warns about any other `WOMBAT_*` name (a misspelling would otherwise be
/// ignored silently). Add new settings here.
pub const KNOWN_WOMBAT_VARS: &[&str] = &[
    "WOMBAT_BODY_TIMEOUT_SECS",
    "WOMBAT_BOOTSTRAP_MAX_CHARS",
    "WOMBAT_BUDGET_SOFT_PERCENT",
    "WOMBAT_BUDGET_TIMEZONE",
    "WOMBAT_BUDGET_USD_DAY",
    "WOMBAT_BUDGET_USD_MONTH",
    "WOMBAT_COMPACT_TEMPERATURE",
    "WOMBAT_CONTEXT_WARNING_THRESHOLD",
    "WOMBAT_DATA_DIR",
    "WOMBAT_DEFAULT_TASK",
    "WOMBAT_DEFAULT_TIMEZONE",
    "WOMBAT_EMBEDDED_BACKEND",
    "WOMBAT_HEADER_TIMEOUT_SECS",
    "WOMBAT_HOST",
    "WOMBAT_INCLUDE_TIME_CONTEXT",
    "WOMBAT_KEEP_ALIVE_TIMEOUT_SECS",
    "WOMBAT_LIMITS_ON_STORE_ERROR",
    "WOMBAT_LLM_ENDPOINTS",
    "WOMBAT_LOG_FORMAT",
    "WOMBAT_MAX_BODY_BYTES",
    "WOMBAT_MAX_CHARS_PER_FILE",
    "WOMBAT_MAX_CONCURRENT_LLM",
    "WOMBAT_MAX_CONNECTIONS",
    "WOMBAT_MCP_SERVERS",
    "WOMBAT_METRICS_PUBLIC",
    "WOMBAT_OTEL_CAPTURE_CONTENT",
    "WOMBAT_PORT",
    "WOMBAT_PRICING_FILE",
    "WOMBAT_RATE_RPM",
    "WOMBAT_RATE_TPM",
    "WOMBAT_REDIS_URL",
    "WOMBAT_REDIS_URL_FILE",
    "WOMBAT_REQUEST_TIMEOUT_SECS",
    "WOMBAT_RETRY_ATTEMPTS",
    "WOMBAT_TOOL_CONCURRENCY",
    "WOMBAT_TOOL_MAX_STEPS",
    "WOMBAT_TOOL_RESULT_MAX_BYTES",
    "WOMBAT_TOOL_TIMEOUT_SECS",
    "WOMBAT_RETRY_DELAY_MS",
    "WOMBAT_RETRY_JITTER",
    "WOMBAT_RETRY_MAX_DELAY_MS",
    "WOMBAT_SHUTDOWN_TIMEOUT_SECS",
    "WOMBAT_SKILLS_MAX_CHARS",
    "WOMBAT_STATE_DIR",
    "WOMBAT_TEMPERATURE",
    "WOMBAT_USER_CONCURRENCY",
    "WOMBAT_WEBHOOK_ALLOWED_HOSTS",
    "WOMBAT_WEBHOOK_ALLOW_PRIVATE",
    "WOMBAT_WEBHOOK_MAX_IN_FLIGHT",
    "WOMBAT_WORKSPACE",
];

/// The `WOMBAT_*` names in `s` that no component reads (sorted).
pub fn unknown_wombat_vars(s: &Settings) -> Vec<&str> {
    s.keys()
        .map(String::as_str)
        .filter(|k| k.starts_with("WOMBAT_") && !KNOWN_WOMBAT_VARS.contains(k))
        .collect()
}

/// Secrets that may instead be given as a file (`<NAME>_FILE`, for Docker
/// and Kubernetes secrets): the daemon's own, and every provider key.
pub fn secret_vars() -> Vec<&'static str> {
    // WOMBAT_REDIS_URL may carry the Redis password.
    let mut vars = vec![
        "AGENT_DAEMON_API_KEY",
        "AGENT_JWT_SECRET",
        "INTERNAL_TOKEN",
        "WOMBAT_REDIS_URL",
    ];
    for p in wombat_core::Provider::ALL {
        for v in p.api_key_envs() {
            if !vars.contains(v) {
                vars.push(v);
            }
        }
    }
    vars
}

/// Replaces every `<SECRET>_FILE` setting by `<SECRET>` read from that file
/// (one trailing newline trimmed, as secret files usually end with one).
/// Setting both is an error naming both; an unreadable file is an error
/// naming the variable and the path, never the content.
pub fn resolve_secret_files(
    s: &mut Settings,
    read: impl Fn(&std::path::Path) -> std::io::Result<String>,
) -> Result<(), ConfigError> {
    let fixed = secret_vars().into_iter().map(str::to_owned);
    let endpoint_keys = endpoint_key_vars(s);
    for var in fixed.chain(endpoint_keys) {
        let var = var.as_str();
        let file_var = format!("{var}_FILE");
        let Some(path) = get(s, &file_var).map(PathBuf::from) else {
            continue;
        };
        if get(s, var).is_some() {
            return Err(ConfigError::new(
                &file_var,
                format!("set either {var} or {file_var}, not both"),
            ));
        }
        let text = read(&path).map_err(|e| {
            ConfigError::new(
                &file_var,
                format!("cannot read {}: {}", path.display(), e.kind()),
            )
        })?;
        let value = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        if value.is_empty() {
            return Err(ConfigError::new(
                &file_var,
                format!("{} is empty", path.display()),
            ));
        }
        s.insert(var.to_owned(), value.to_owned());
    }
    Ok(())
}

/// The variables `WOMBAT_LLM_ENDPOINTS` names as `api_key_env` (custom
/// endpoints' keys), so that they too have a `<NAME>_FILE` form. Read
/// loosely: a value that is not valid JSON, too long or oddly shaped
/// contributes nothing here and is reported by the LLM configuration, which
/// parses it properly.
fn endpoint_key_vars(s: &Settings) -> Vec<String> {
    // The LLM configuration's own bound on the document.
    const MAX_DOCUMENT: usize = 64 * 1024;
    let Some(doc) = get(s, "WOMBAT_LLM_ENDPOINTS").filter(|d| d.len() <= MAX_DOCUMENT) else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Object(endpoints)) = serde_json::from_str(doc) else {
        return Vec::new();
    };
    let fixed = secret_vars();
    let mut vars: Vec<String> = Vec::new();
    for spec in endpoints.values() {
        let Some(var) = spec.get("api_key_env").and_then(serde_json::Value::as_str) else {
            continue;
        };
        let name_like = !var.is_empty()
            && var.len() <= 128
            && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if name_like && !fixed.contains(&var) && !vars.iter().any(|v| v == var) {
            vars.push(var.to_owned());
        }
    }
    vars
}

/// Flattens a figment (typically `wombat.toml` merged with the environment)
/// into [`Settings`]. Keys keep their case; scalar values become strings so
/// that every variable is validated by one set of parsers, whatever source
/// it came from. A nested table or array in `wombat.toml` is an error.
pub fn settings_from_figment(figment: &figment::Figment) -> Result<Settings, ConfigError> {
    use figment::value::Value;
    let map: BTreeMap<String, Value> = figment
        .extract()
        .map_err(|e| ConfigError::new("configuration", e.to_string()))?;
    let mut settings = Settings::new();
    for (key, value) in map {
        let text = match &value {
            Value::String(_, s) => s.clone(),
            Value::Char(_, c) => c.to_string(),
            Value::Bool(_, b) => b.to_string(),
            Value::Num(_, n) => match (n.to_u128(), n.to_i128(), n.to_f64()) {
                (Some(u), _, _) => u.to_string(),
                (None, Some(i), _) => i.to_string(),
                (None, None, Some(f)) => f.to_string(),
                _ => return Err(ConfigError::new(&key, "is not a number")),
            },
            Value::Empty(..) => String::new(),
            Value::Dict(..) | Value::Array(..) => {
                return Err(ConfigError::new(
                    &key,
                    "must be a plain value (string, number or boolean), not a table or array",
                ));
            }
        };
        settings.insert(key, text);
    }
    Ok(settings)
}

/// Reads `var` with a parser; absent or empty means `default`.
fn parse<T>(
    s: &Settings,
    var: &str,
    default: T,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match get(s, var) {
        None => Ok(default),
        Some(v) => f(v).map_err(|reason| ConfigError::new(var, reason)),
    }
}

/// A non-empty, trimmed value.
pub fn get<'a>(s: &'a Settings, var: &str) -> Option<&'a str> {
    s.get(var).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// Parses a boolean the way people write them in env files.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not a boolean (true/false)")),
    }
}

fn number<T: std::str::FromStr>(what: &'static str) -> impl Fn(&str) -> Result<T, String> {
    move |v| v.parse::<T>().map_err(|_| format!("{v:?} is not {what}"))
}

fn positive(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{v:?} is not a positive integer")),
    }
}

/// Largest accepted concurrency limit (a semaphore's permits are bounded).
const MAX_CONCURRENCY: usize = 1_000_000;

fn bounded(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(format!(
            "{v:?} is not an integer between 1 and {MAX_CONCURRENCY}"
        )),
    }
}

fn seconds(v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n <= 86_400.0 => Ok(Duration::from_secs_f64(n)),
        _ => Err(format!("{v:?} is not a number of seconds in (0, 86400]")),
    }
}

/// A sampling temperature: a number in 0..=2 (every provider accepts that
/// range; Anthropic's 0..=1 is clamped by its adapter).
pub fn temperature(v: &str) -> Result<f32, String> {
    match v.parse::<f32>() {
        Ok(t) if (0.0..=2.0).contains(&t) => Ok(t),
        _ => Err(format!("{v:?} is not a temperature between 0 and 2")),
    }
}

fn http_url(v: &str) -> Result<String, String> {
    let ok = (v.starts_with("http://") || v.starts_with("https://"))
        && v.len() > "https://".len()
        && !v.contains(char::is_whitespace);
    if ok {
        Ok(v.trim_end_matches('/').to_owned())
    } else {
        Err(format!("{v:?} is not an http(s) URL"))
    }
}

impl DaemonConfig {
    /// Validates every daemon setting; the first invalid one is returned.
    pub fn from_settings(s: &Settings) -> Result<Self, ConfigError> {
        let daemon_api_key = get(s, "AGENT_DAEMON_API_KEY").map(Secret::new);
        let host_defaulted = get(s, "WOMBAT_HOST").is_none();
        let default_host = if daemon_api_key.is_some() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([127, 0, 0, 1])
        };
        Ok(Self {
            host: parse(s, "WOMBAT_HOST", default_host, number("an IP address"))?,
            host_defaulted,
            port: parse(s, "WOMBAT_PORT", 8081, |v| match v.parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(format!("{v:?} is not a port number (1-65535)")),
            })?,
            backend_url: parse(s, "BACKEND_URL", None, |v| http_url(v).map(Some))?,
            daemon_api_key,
            jwt_secret: get(s, "AGENT_JWT_SECRET").map(Secret::new),
            jwt_algorithm: parse(s, "AGENT_JWT_ALGORITHM", JwtAlgorithm::HS256, |v| {
                v.parse::<JwtAlgorithm>()
                    .map_err(|_| format!("{v:?} is not one of HS256, HS384, HS512"))
            })?,
            workspace: PathBuf::from(get(s, "WOMBAT_WORKSPACE").unwrap_or("./workspace")),
            state_dir: get(s, "WOMBAT_STATE_DIR").map(PathBuf::from),
            default_task: get(s, "WOMBAT_DEFAULT_TASK").map(str::to_owned),
            context_warning_threshold: parse(s, "WOMBAT_CONTEXT_WARNING_THRESHOLD", 75.0, |v| {
                match v.parse::<f64>() {
                    Ok(n) if (0.0..=100.0).contains(&n) => Ok(n),
                    _ => Err(format!("{v:?} is not a percentage between 0 and 100")),
                }
            })?,
            default_timezone: get(s, "WOMBAT_DEFAULT_TIMEZONE").map(str::to_owned),
            include_time_context: parse(s, "WOMBAT_INCLUDE_TIME_CONTEXT", true, parse_bool)?,
            max_chars_per_file: parse(s, "WOMBAT_MAX_CHARS_PER_FILE", 20_000, positive)?,
            bootstrap_max_chars: parse(s, "WOMBAT_BOOTSTRAP_MAX_CHARS", 150_000, positive)?,
            skills_max_chars: parse(s, "WOMBAT_SKILLS_MAX_CHARS", 30_000, positive)?,
            metrics_public: parse(s, "WOMBAT_METRICS_PUBLIC", false, parse_bool)?,
            max_body_bytes: parse(s, "WOMBAT_MAX_BODY_BYTES", 1024 * 1024, positive)?,
            header_read_timeout: parse(
                s,
                "WOMBAT_HEADER_TIMEOUT_SECS",
                Duration::from_secs(10),
                seconds,
            )?,
            body_timeout: parse(
                s,
                "WOMBAT_BODY_TIMEOUT_SECS",
                Duration::from_secs(30),
                seconds,
            )?,
            keep_alive_timeout: parse(
                s,
                "WOMBAT_KEEP_ALIVE_TIMEOUT_SECS",
                Duration::from_secs(75),
                seconds,
            )?,
            max_connections: parse(s, "WOMBAT_MAX_CONNECTIONS", 1024, bounded)?,
            request_timeout: parse(
                s,
                "WOMBAT_REQUEST_TIMEOUT_SECS",
                Duration::from_secs(300),
                seconds,
            )?,
            shutdown_timeout: parse(
                s,
                "WOMBAT_SHUTDOWN_TIMEOUT_SECS",
                Duration::from_secs(30),
                seconds,
            )?,
            max_concurrent_llm: parse(s, "WOMBAT_MAX_CONCURRENT_LLM", 512, bounded)?,
            mcp_servers: parse(s, "WOMBAT_MCP_SERVERS", None, |v| {
                wombat_mcp::McpConfig::parse(v, "WOMBAT_MCP_SERVERS")
                    .map(Some)
                    .map_err(|e| e.to_string())
            })?,
            tool_limits: wombat_agent::tools::LoopLimits {
                max_steps: parse(s, "WOMBAT_TOOL_MAX_STEPS", 8, |v| match v.parse::<u32>() {
                    Ok(n) if (1..=100).contains(&n) => Ok(n),
                    _ => Err(format!("{v:?} is not a number of steps between 1 and 100")),
                })?,
                tool_timeout: parse(
                    s,
                    "WOMBAT_TOOL_TIMEOUT_SECS",
                    Duration::from_secs(30),
                    seconds,
                )?,
                max_concurrent: parse(s, "WOMBAT_TOOL_CONCURRENCY", 4, |v| {
                    match v.parse::<usize>() {
                        Ok(n) if (1..=64).contains(&n) => Ok(n),
                        _ => Err(format!(
                            "{v:?} is not a number of concurrent calls between 1 and 64"
                        )),
                    }
                })?,
                max_result_bytes: parse(s, "WOMBAT_TOOL_RESULT_MAX_BYTES", 16 * 1024, |v| {
                    match v.parse::<usize>() {
                        Ok(n) if (256..=1 << 20).contains(&n) => Ok(n),
                        _ => Err(format!(
                            "{v:?} is not a number of bytes between 256 and 1048576"
                        )),
                    }
                })?,
            },
            webhook_allowed_hosts: get(s, "WOMBAT_WEBHOOK_ALLOWED_HOSTS").map(|v| {
                v.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect()
            }),
            webhook_allow_private: parse(s, "WOMBAT_WEBHOOK_ALLOW_PRIVATE", false, parse_bool)?,
            webhook_max_in_flight: parse(s, "WOMBAT_WEBHOOK_MAX_IN_FLIGHT", 1024, bounded)?,
            pricing_file: get(s, "WOMBAT_PRICING_FILE").map(PathBuf::from),
            temperature: parse(s, "WOMBAT_TEMPERATURE", 0.4, temperature)?,
            compact_temperature: parse(s, "WOMBAT_COMPACT_TEMPERATURE", 0.3, temperature)?,
            redis_url: parse(s, "WOMBAT_REDIS_URL", None, redis_url)?,
            limits: limits(s)?,
            budget_timezone: parse(s, "WOMBAT_BUDGET_TIMEZONE", jiff::tz::TimeZone::UTC, |v| {
                jiff::tz::TimeZone::get(v)
                    .map_err(|_| format!("{v:?} is not a known IANA time zone"))
            })?,
            limits_on_store_error: parse(
                s,
                "WOMBAT_LIMITS_ON_STORE_ERROR",
                wombat_governance::FailMode::Open,
                |v| match v {
                    "open" => Ok(wombat_governance::FailMode::Open),
                    "closed" => Ok(wombat_governance::FailMode::Closed),
                    _ => Err(format!("{v:?} is not \"open\" or \"closed\"")),
                },
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        DaemonConfig::from_settings(&settings(pairs))
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn mcp_servers_and_tool_limits_are_validated() {
        let e = err(&[(
            "WOMBAT_MCP_SERVERS",
            r#"{"mcpServers": {"a__b": {"url": "https://x.example/mcp", "headers": {"X-Key": "s3cret"}}}}"#,
        )]);
        assert!(e.starts_with("invalid WOMBAT_MCP_SERVERS"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        assert!(
            err(&[("WOMBAT_TOOL_MAX_STEPS", "0")]).starts_with("invalid WOMBAT_TOOL_MAX_STEPS")
        );
        assert!(
            err(&[("WOMBAT_TOOL_CONCURRENCY", "65")])
                .starts_with("invalid WOMBAT_TOOL_CONCURRENCY")
        );
        let c = DaemonConfig::from_settings(&settings(&[
            (
                "WOMBAT_MCP_SERVERS",
                r#"{"mcpServers": {"mc": {"url": "http://127.0.0.1:9001/mcp"}}}"#,
            ),
            ("WOMBAT_TOOL_TIMEOUT_SECS", "5"),
        ]))
        .expect("valid");
        assert_eq!(c.mcp_servers.map(|m| m.servers().len()), Some(1));
        assert_eq!(c.tool_limits.tool_timeout, Duration::from_secs(5));
        assert_eq!(c.tool_limits.max_steps, 8);
    }

    #[test]
    fn defaults() {
        let c = DaemonConfig::from_settings(&Settings::new()).expect("valid");
        assert_eq!(c.port, 8081);
        assert_eq!(c.context_warning_threshold, 75.0);
        assert!(c.include_time_context && c.backend_url.is_none() && c.daemon_api_key.is_none());
        assert_eq!(c.max_body_bytes, 1 << 20);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        assert_eq!(
            err(&[("WOMBAT_PORT", "abc")]),
            r#"invalid WOMBAT_PORT: "abc" is not a port number (1-65535)"#
        );
        assert_eq!(
            err(&[("WOMBAT_CONTEXT_WARNING_THRESHOLD", "300")]),
            r#"invalid WOMBAT_CONTEXT_WARNING_THRESHOLD: "300" is not a percentage between 0 and 100"#
        );
        assert_eq!(
            err(&[("AGENT_JWT_ALGORITHM", "RS256")]),
            r#"invalid AGENT_JWT_ALGORITHM: "RS256" is not one of HS256, HS384, HS512"#
        );
        assert!(err(&[("BACKEND_URL", "localhost:8000")]).starts_with("invalid BACKEND_URL"));
        assert!(
            err(&[("WOMBAT_MAX_CONCURRENT_LLM", "18446744073709551615")])
                .starts_with("invalid WOMBAT_MAX_CONCURRENT_LLM")
        );
        assert!(
            err(&[("WOMBAT_INCLUDE_TIME_CONTEXT", "maybe")])
                .starts_with("invalid WOMBAT_INCLUDE_TIME_CONTEXT")
        );
        assert_eq!(
            err(&[("WOMBAT_TEMPERATURE", "2.5")]),
            r#"invalid WOMBAT_TEMPERATURE: "2.5" is not a temperature between 0 and 2"#
        );
        assert_eq!(
            err(&[("WOMBAT_COMPACT_TEMPERATURE", "warm")]),
            r#"invalid WOMBAT_COMPACT_TEMPERATURE: "warm" is not a temperature between 0 and 2"#
        );
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail's closure signature is fixed"
    )]
    fn figment_sources_merge_with_env_winning() {
        use figment::providers::{Env, Format, Toml};
        figment::Jail::expect_with(|jail| {
            jail.create_file("wombat.toml", "WOMBAT_PORT = 9000\nWOMBAT_DEFAULT_TASK = \"Inbox\"\nWOMBAT_INCLUDE_TIME_CONTEXT = false\n")?;
            jail.set_env("WOMBAT_PORT", "9100");
            let figment = figment::Figment::new()
                .merge(Toml::file("wombat.toml"))
                .merge(Env::raw().only(&["WOMBAT_PORT"]).lowercase(false));
            let settings = settings_from_figment(&figment).expect("settings");
            let c = DaemonConfig::from_settings(&settings).expect("valid");
            assert_eq!(c.port, 9100);
            assert_eq!(c.default_task.as_deref(), Some("Inbox"));
            assert!(!c.include_time_context);
            jail.set_env("WOMBAT_PORT", "abc");
            let figment =
                figment::Figment::new().merge(Env::raw().only(&["WOMBAT_PORT"]).lowercase(false));
            let err =
                DaemonConfig::from_settings(&settings_from_figment(&figment).expect("settings"))
                    .expect_err("invalid port");
            assert_eq!(err.var, "WOMBAT_PORT");
            jail.create_file("bad.toml", "[WOMBAT_PORT]\nx = 1\n")?;
            let figment = figment::Figment::new().merge(Toml::file("bad.toml"));
            assert!(settings_from_figment(&figment).is_err());
            Ok(())
        });
    }

    #[test]
    fn governance_settings() {
        let c = DaemonConfig::from_settings(&settings(&[
            ("WOMBAT_BUDGET_USD_DAY", "2.5"),
            ("WOMBAT_BUDGET_SOFT_PERCENT", "80"),
            ("WOMBAT_RATE_RPM", "60"),
            ("WOMBAT_USER_CONCURRENCY", "2"),
            ("WOMBAT_BUDGET_TIMEZONE", "Europe/Paris"),
            ("WOMBAT_LIMITS_ON_STORE_ERROR", "closed"),
        ]))
        .expect("valid");
        assert_eq!(c.limits.budget_day_micros, Some(2_500_000));
        assert_eq!((c.limits.rpm, c.limits.concurrency), (Some(60), Some(2)));
        assert_eq!(c.limits.tpm, None);
        assert_eq!(c.limits_on_store_error, wombat_governance::FailMode::Closed);
        let d = DaemonConfig::from_settings(&Settings::new()).expect("valid");
        assert!(d.limits.is_empty() && d.redis_url.is_none());
        assert_eq!(
            err(&[("WOMBAT_BUDGET_USD_MONTH", "-1")]),
            r#"invalid WOMBAT_BUDGET_USD_MONTH: "-1" is not an amount of USD between 0 and 1e9"#
        );
        assert!(err(&[("WOMBAT_RATE_TPM", "0")]).starts_with("invalid WOMBAT_RATE_TPM"));
        assert!(
            err(&[("WOMBAT_BUDGET_TIMEZONE", "Mars/Olympus")])
                .starts_with("invalid WOMBAT_BUDGET_TIMEZONE")
        );
        assert!(
            err(&[("WOMBAT_LIMITS_ON_STORE_ERROR", "maybe")])
                .starts_with("invalid WOMBAT_LIMITS_ON_STORE_ERROR")
        );
        let mut from_file = settings(&[("WOMBAT_REDIS_URL_FILE", "/run/secrets/redis")]);
        resolve_secret_files(
            &mut from_file,
            |_| Ok("redis://:pw@redis:6379\n".to_owned()),
        )
        .expect("read");
        let c = DaemonConfig::from_settings(&from_file).expect("valid");
        assert_eq!(
            c.redis_url.as_ref().map(Secret::expose),
            Some("redis://:pw@redis:6379")
        );
        assert!(unknown_wombat_vars(&from_file).is_empty());
        let e = err(&[("WOMBAT_REDIS_URL", "http://:hunter2@x")]);
        assert!(
            e.starts_with("invalid WOMBAT_REDIS_URL") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn secrets_never_print() {
        let c = DaemonConfig::from_settings(&settings(&[
            ("WOMBAT_REDIS_URL", "redis://:rp-789@localhost:6379"),
            ("AGENT_DAEMON_API_KEY", "dk-123"),
            ("AGENT_JWT_SECRET", "jwt-456"),
        ]))
        .expect("valid");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("dk-123") && !debug.contains("jwt-456") && !debug.contains("rp-789"),
            "{debug}"
        );
    }

    #[test]
    fn unknown_wombat_names_are_listed() {
        let s = settings(&[
            ("WOMBAT_PORT", "1"),
            ("WOMBAT_PROT", "1"),
            ("WOMBAT_RETRY_ATTEMPTS", "2"),
            ("OTHER", "x"),
        ]);
        assert_eq!(unknown_wombat_vars(&s), vec!["WOMBAT_PROT"]);
    }

    #[test]
    fn the_default_bind_is_loopback_unless_a_key_or_a_host_is_set() {
        let c = DaemonConfig::from_settings(&Settings::new()).expect("valid");
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert!(c.host_defaulted);
        let c = DaemonConfig::from_settings(&settings(&[("AGENT_DAEMON_API_KEY", "k")]))
            .expect("valid");
        assert_eq!(c.host, IpAddr::from([0, 0, 0, 0]));
        let c =
            DaemonConfig::from_settings(&settings(&[("WOMBAT_HOST", "0.0.0.0")])).expect("valid");
        assert_eq!(c.host, IpAddr::from([0, 0, 0, 0]));
        assert!(!c.host_defaulted);
    }

    #[test]
    fn secret_files() {
        use std::io::{Error, ErrorKind};
        let read = |p: &std::path::Path| match p.to_str() {
            Some("/run/secrets/key") => Ok("s3cret\n".to_owned()),
            Some("/run/secrets/crlf") => Ok("tok\r\n".to_owned()),
            Some("/run/secrets/empty") => Ok("\n".to_owned()),
            _ => Err(Error::from(ErrorKind::NotFound)),
        };
        let mut s = settings(&[
            ("AGENT_DAEMON_API_KEY_FILE", "/run/secrets/key"),
            ("INTERNAL_TOKEN_FILE", "/run/secrets/crlf"),
            ("ANTHROPIC_API_KEY_FILE", "/run/secrets/key"),
            ("WOMBAT_PRICING_FILE", "/not/a/secret.json"),
        ]);
        resolve_secret_files(&mut s, read).expect("resolved");
        assert_eq!(s["AGENT_DAEMON_API_KEY"], "s3cret");
        assert_eq!(s["INTERNAL_TOKEN"], "tok");
        assert_eq!(s["ANTHROPIC_API_KEY"], "s3cret");
        assert!(!s.contains_key("WOMBAT_PRICING"));

        let mut both = settings(&[
            ("AGENT_JWT_SECRET", "inline"),
            ("AGENT_JWT_SECRET_FILE", "/run/secrets/key"),
        ]);
        let e = resolve_secret_files(&mut both, read).expect_err("both");
        assert_eq!(e.var, "AGENT_JWT_SECRET_FILE");
        assert!(
            e.reason
                .contains("AGENT_JWT_SECRET or AGENT_JWT_SECRET_FILE"),
            "{e}"
        );

        let mut missing = settings(&[("OPENAI_API_KEY_FILE", "/run/secrets/nope")]);
        let e = resolve_secret_files(&mut missing, read).expect_err("unreadable");
        assert_eq!(
            e.to_string(),
            "invalid OPENAI_API_KEY_FILE: cannot read /run/secrets/nope: entity not found"
        );
        let mut empty = settings(&[("INTERNAL_TOKEN_FILE", "/run/secrets/empty")]);
        assert!(resolve_secret_files(&mut empty, read).is_err());

        // A custom endpoint's key variable has the same `_FILE` form.
        let endpoints = r#"{"corp": {"base_url": "https://llm.corp.example/v1", "api_key_env": "CORP_LLM_KEY"},
            "lab": {"base_url": "http://10.0.0.2/v1", "api_key_env": "OPENAI_API_KEY"},
            "open": {"base_url": "http://10.0.0.3/v1"}}"#;
        let mut s = settings(&[
            ("WOMBAT_LLM_ENDPOINTS", endpoints),
            ("CORP_LLM_KEY_FILE", "/run/secrets/key"),
            ("OPENAI_API_KEY_FILE", "/run/secrets/crlf"),
        ]);
        resolve_secret_files(&mut s, read).expect("resolved");
        assert_eq!(s["CORP_LLM_KEY"], "s3cret");
        assert_eq!(s["OPENAI_API_KEY"], "tok");
        let mut both = settings(&[
            ("WOMBAT_LLM_ENDPOINTS", endpoints),
            ("CORP_LLM_KEY", "inline"),
            ("CORP_LLM_KEY_FILE", "/run/secrets/key"),
        ]);
        let e = resolve_secret_files(&mut both, read).expect_err("both");
        assert_eq!(e.var, "CORP_LLM_KEY_FILE");
        // Names that are not variable names are not turned into `_FILE`
        // lookups, and a malformed document is left to the LLM config.
        for doc in [r#"{"x": {"api_key_env": "A B"}}"#, "not json", "[1]"] {
            let mut s = settings(&[
                ("WOMBAT_LLM_ENDPOINTS", doc),
                ("A B_FILE", "/run/secrets/key"),
            ]);
            resolve_secret_files(&mut s, read).expect("nothing to resolve");
            assert!(!s.contains_key("A B"));
        }
    }
}
