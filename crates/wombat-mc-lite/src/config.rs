//! Configuration of the reference backend. Built by the caller; the library
//! never reads the environment.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use wombat_controlplane::JwtConfig;

/// Default listening port (`MC_LITE_PORT`).
pub const DEFAULT_PORT: u16 = 9001;
/// Default database file (`MC_LITE_DB`).
pub const DEFAULT_DB_PATH: &str = "./.wombat-data/mc-lite.db";

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A private in-memory database, gone when the server stops (tests).
    Memory,
    /// An SQLite file in WAL mode; its parent directory is created.
    File(PathBuf),
}

impl DbLocation {
    /// `:memory:` means [`DbLocation::Memory`], anything else a file path.
    pub fn parse(value: &str) -> Self {
        if value == ":memory:" {
            Self::Memory
        } else {
            Self::File(PathBuf::from(value))
        }
    }
}

/// Deadlines and caps of the listener (see the `server` module docs).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A new connection must deliver its first request headers (and an
    /// HTTP/1 request its headers) within this (10 s).
    pub header_read_timeout: Duration,
    /// A request, body included, must be handled within this (30 s; 408).
    pub request_timeout: Duration,
    /// A connection with no request in flight is closed after this (75 s).
    pub keep_alive_timeout: Duration,
    /// Open connections at most (1024); more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            max_connections: 1024,
        }
    }
}

/// Everything [`crate::McLite::start`] needs.
#[derive(Clone)]
pub struct McLiteConfig {
    /// Secret and algorithm agent tokens are verified with.
    pub jwt: JwtConfig,
    /// `X-Internal-Token` of the dispatch endpoints; dispatch is disabled
    /// (and not advertised) without one.
    pub internal_token: Option<String>,
    /// Database location.
    pub db: DbLocation,
    /// Largest accepted request body (413 beyond it).
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Connection deadlines and the connection cap.
    pub limits: ConnectionLimits,
    /// How long idempotency records are kept (`MC_LITE_IDEMPOTENCY_RETENTION_SECS`
    /// in the binary): a repeat after that creates anew. The contract asks
    /// for 24 h or more; shorter values are for tests.
    pub idempotency_retention: Duration,
}

/// Default of [`McLiteConfig::idempotency_retention`]: 24 hours, the
/// contract's minimum (payment APIs keep keys about as long).
pub const DEFAULT_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

impl McLiteConfig {
    /// Defaults: no internal token, 1 MiB bodies, 10 s drain, idempotency
    /// records kept 24 h.
    pub fn new(jwt: JwtConfig, db: DbLocation) -> Self {
        Self {
            jwt,
            internal_token: None,
            db,
            max_body_bytes: 1024 * 1024,
            drain_timeout: Duration::from_secs(10),
            limits: ConnectionLimits::default(),
            idempotency_retention: DEFAULT_IDEMPOTENCY_RETENTION,
        }
    }
}

impl fmt::Debug for McLiteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McLiteConfig")
            .field("jwt", &self.jwt)
            .field(
                "internal_token",
                &self.internal_token.as_ref().map(|_| "<redacted>"),
            )
            .field("db", &self.db)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("drain_timeout", &self.drain_timeout)
            .field("limits", &self.limits)
            .field("idempotency_retention", &self.idempotency_retention)
            .finish()
    }
}
