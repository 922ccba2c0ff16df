//! The crate's one error type. Messages are lowercase and name the offending
//! value; none of them carries file contents or secrets.

use std::path::PathBuf;

/// Everything a caller of this crate can get wrong, or that can fail on disk.
///
/// Problems *inside* workspace files (a broken `SKILL.md`, an unreadable soul)
/// are not errors: they become [`crate::Diagnostic`]s and the workspace keeps
/// working with whatever loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A role that breaks the role charset rule (`[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`).
    /// Roles pick `souls/<role>.md`, so this is what stops path traversal.
    #[error("invalid role {role:?}: must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")]
    InvalidRole {
        /// The role as received.
        role: String,
    },
    /// A time-zone name that is not in the IANA database. The daemon maps this to 400.
    #[error("unknown time zone {name:?}: expected an IANA name such as America/Los_Angeles")]
    UnknownTimeZone {
        /// The name as received.
        name: String,
    },
    /// Writing the boot marker failed (for example the state directory is not
    /// writable, or the marker path is a symbolic link, which is never followed).
    #[error("cannot write boot marker {path}: {source}")]
    BootMarker {
        /// The marker path.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The workspace folder does not exist, so there is nothing to mark as booted.
    #[error("workspace folder {path} does not exist")]
    WorkspaceMissing {
        /// The workspace path.
        path: PathBuf,
    },
    /// Starting the background refresh thread failed.
    #[error("cannot start the workspace refresh thread: {0}")]
    RefreshThread(#[source] std::io::Error),
}

/// Result with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
