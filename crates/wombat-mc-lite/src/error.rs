//! The crate's public error type (startup and client helpers). Request-level
//! failures are HTTP answers, not this type.

/// Why the reference backend could not start or a helper call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error("invalid mc-lite config: {0}")]
    Config(String),
    /// The database could not be opened or migrated.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// The listening address could not be bound (port taken, say).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An I/O step failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A helper HTTP call (such as [`crate::enqueue_notification`]) failed.
    #[error("http error: {0}")]
    Http(String),
    /// A blocking task could not be joined.
    #[error("background task failed: {0}")]
    Join(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
