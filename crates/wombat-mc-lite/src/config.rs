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
}

impl McLiteConfig {
    /// Defaults: no internal token, 1 MiB bodies, 10 s drain.
    pub fn new(jwt: JwtConfig, db: DbLocation) -> Self {
        Self {
            jwt,
            internal_token: None,
            db,
            max_body_bytes: 1024 * 1024,
            drain_timeout: Duration::from_secs(10),
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
            .finish()
    }
}
