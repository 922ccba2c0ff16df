//! The crate's one error type: problems that stop a run from starting or a
//! report from being written (check failures are results, not errors).

/// Why the runner could not run or write its reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error("invalid conformance config: {0}")]
    Config(String),
    /// Writing a report failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
