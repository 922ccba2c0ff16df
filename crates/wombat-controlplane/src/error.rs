//! The crate's one error type. Messages never contain secrets: no JWTs, no
//! shared secret, no internal token.

/// Everything that can go wrong when talking to a control-plane backend or
/// when minting and verifying agent tokens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable (bad base URL, empty secret, ...).
    #[error("invalid control-plane config: {0}")]
    Config(String),
    /// The backend answered 401: the agent token was refused.
    #[error("control plane refused the credentials (401): {error}")]
    Unauthorized {
        /// The backend's `error` text.
        error: String,
    },
    /// The backend answered a non-success status (after retries, if it was
    /// retryable).
    #[error("control plane answered {status}: {error}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The backend's `error` text, or the raw body when it was not the
        /// contract's error JSON.
        error: String,
        /// The backend's `code`, when it sent one.
        code: Option<String>,
    },
    /// The request could not be sent or the response not read (connect
    /// error, timeout, reset), after retries.
    #[error("control plane unreachable: {0}")]
    Transport(String),
    /// The backend did not answer within the request timeout, after retries.
    #[error("control plane timed out: {0}")]
    Timeout(String),
    /// A success response whose body is not the expected JSON.
    #[error("cannot decode control-plane response: {0}")]
    Decode(String),
    /// An internal-token call was made without a configured internal token.
    #[error("no internal token configured for dispatch calls")]
    NoInternalToken,
    /// Listing tasks did not reach the last page within the page budget.
    #[error("task listing did not end within {max_pages} pages")]
    TooManyPages {
        /// The page budget that was exhausted.
        max_pages: usize,
    },
    /// A tool-request id that cannot be put in a URL (empty, too long,
    /// `.`/`..` or with control characters). Checked before any I/O, so a
    /// backend's id never becomes an unexpected path.
    #[error("invalid tool request id {id:?}: {reason}")]
    InvalidToolRequestId {
        /// The id, cut to 64 characters.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The backend answered 404 for this tool request: unknown, or another
    /// tenant's (the contract does not tell them apart).
    #[error("tool request {id:?} not found")]
    ToolRequestNotFound {
        /// The requested id.
        id: String,
    },
    /// `consume` on a request nobody has approved or rejected yet (409
    /// `tool_request_pending`).
    #[error("tool request {id:?} is still pending")]
    ToolRequestPending {
        /// The requested id.
        id: String,
    },
    /// `consume` on a request already consumed (409
    /// `tool_request_consumed`): its decision was acted on once already.
    #[error("tool request {id:?} was already consumed")]
    ToolRequestConsumed {
        /// The requested id.
        id: String,
    },
    /// `PATCH` on a request that is no longer pending (409).
    #[error("tool request {id:?} is already resolved")]
    ToolRequestResolved {
        /// The requested id.
        id: String,
    },
    /// Minting or verifying an agent token failed.
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

/// Why an agent token could not be minted or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a JWT at all (wrong shape, bad base64 or JSON, missing claims).
    #[error("malformed agent token")]
    Malformed,
    /// Signed with another secret or algorithm.
    #[error("agent token signature is invalid")]
    BadSignature,
    /// `exp` is in the past.
    #[error("agent token has expired")]
    Expired,
    /// `type` is not `agent`.
    #[error("token is not an agent token")]
    NotAgent,
    /// `user_id` is missing or empty.
    #[error("agent token has no user_id")]
    NoUser,
    /// Unknown algorithm name (only HS256, HS384 and HS512 are supported).
    #[error("unsupported JWT algorithm {0:?} (expected HS256, HS384 or HS512)")]
    UnsupportedAlgorithm(String),
    /// The token could not be encoded.
    #[error("cannot encode agent token")]
    Encode,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
