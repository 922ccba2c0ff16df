//! The crate's one error type. Every message is lowercase and names the
//! offending value so it can be shown to API callers as is.

/// Everything that can go wrong while parsing or validating core types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The session key is not `user:{userId}:{role}`.
    #[error("invalid session_key {key:?}: expected user:{{userId}}:{{role}}")]
    SessionKeyFormat {
        /// The key as received.
        key: String,
    },
    /// The role part of a session key breaks the role charset rule.
    #[error("invalid role {role:?} in session_key: must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")]
    InvalidRole {
        /// The role as received.
        role: String,
    },
    /// The session key belongs to another user than the request's `user_id`.
    #[error("user_id does not match session_key")]
    UserMismatch,
    /// A model string that is empty, or names a provider with an empty model.
    #[error("invalid model {model:?}: expected <model> or <provider>/<model>")]
    InvalidModel {
        /// The model string as received.
        model: String,
    },
    /// A provider name outside the supported set.
    #[error(
        "unknown provider {name:?}: expected one of openai, anthropic, google, xai, groq, mistral, openrouter, ollama, echo, or a configured custom provider"
    )]
    UnknownProvider {
        /// The provider name as received.
        name: String,
    },
    /// A custom provider name that breaks the naming rule, is a built-in
    /// provider's, or does not fit the process's table of names.
    #[error("invalid provider name {name:?}: {reason}")]
    InvalidProviderName {
        /// The name as received.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A pricing override document that could not be read.
    #[error("invalid pricing table: {reason}")]
    InvalidPricing {
        /// What was wrong with it.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
