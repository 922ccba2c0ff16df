//! Agent JWTs: minting with the shared secret and verifying them (signature,
//! expiry, `type == "agent"`). Time is passed in, never read here, so tests
//! and backends control the clock. Only HMAC algorithms are supported.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::JwtError;

/// Lifetime of a minted token: two hours, as the contract says.
pub const TOKEN_TTL_SECS: u64 = 2 * 60 * 60;

/// The HMAC algorithms the contract allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256, the default.
    #[default]
    HS256,
    /// HMAC-SHA384.
    HS384,
    /// HMAC-SHA512.
    HS512,
}

impl JwtAlgorithm {
    fn to_jsonwebtoken(self) -> Algorithm {
        match self {
            Self::HS256 => Algorithm::HS256,
            Self::HS384 => Algorithm::HS384,
            Self::HS512 => Algorithm::HS512,
        }
    }

    /// The name used in `AGENT_JWT_ALGORITHM` and in the JWT header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
        }
    }
}

impl FromStr for JwtAlgorithm {
    type Err = JwtError;

    /// Parses `HS256`, `HS384` or `HS512` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HS256" => Ok(Self::HS256),
            "HS384" => Ok(Self::HS384),
            "HS512" => Ok(Self::HS512),
            _ => Err(JwtError::UnsupportedAlgorithm(s.to_owned())),
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shared secret and algorithm. `Debug` never shows the secret.
#[derive(Clone)]
pub struct JwtConfig {
    secret: Vec<u8>,
    algorithm: JwtAlgorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl JwtConfig {
    /// Builds the keys once; an empty secret is refused because it would make
    /// every token forgeable.
    pub fn new(secret: impl Into<Vec<u8>>, algorithm: JwtAlgorithm) -> crate::Result<Self> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(crate::Error::Config("AGENT_JWT_SECRET is empty".into()));
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            secret,
            algorithm,
        })
    }

    /// The configured algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Whether `other` holds the same secret (compared in constant time).
    pub fn same_secret(&self, other: &[u8]) -> bool {
        constant_time_eq(&self.secret, other)
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The claims of an agent token, exactly as the contract lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentClaims {
    /// Always `"agent"`.
    #[serde(rename = "type")]
    pub token_type: String,
    /// The tenant.
    pub user_id: String,
    /// The agent's role, e.g. `agent`.
    pub agent_role: String,
    /// `wombat:<role>`.
    pub sub: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry, seconds since the Unix epoch (`iat` + 2 hours).
    pub exp: u64,
    /// Optional agent instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

impl AgentClaims {
    /// Claims for `user_id`/`role` issued at `now` (Unix seconds).
    pub fn new(user_id: &str, role: &str, agent_id: Option<&str>, now: u64) -> Self {
        Self {
            token_type: "agent".into(),
            user_id: user_id.into(),
            agent_role: role.into(),
            sub: format!("wombat:{role}"),
            iat: now,
            exp: now.saturating_add(TOKEN_TTL_SECS),
            agent_id: agent_id.map(str::to_owned),
        }
    }
}

/// Mints an agent token for `user_id`/`role`, issued at `now` (Unix seconds)
/// and valid for [`TOKEN_TTL_SECS`].
pub fn mint(
    config: &JwtConfig,
    user_id: &str,
    role: &str,
    agent_id: Option<&str>,
    now: u64,
) -> Result<String, JwtError> {
    mint_claims(config, &AgentClaims::new(user_id, role, agent_id, now))
}

/// Signs arbitrary claims; used by [`mint`] and by tests and conformance
/// probes that need unusual tokens (expired, wrong type).
pub fn mint_claims(config: &JwtConfig, claims: &AgentClaims) -> Result<String, JwtError> {
    let header = Header::new(config.algorithm.to_jsonwebtoken());
    jsonwebtoken::encode(&header, claims, &config.encoding).map_err(|_| JwtError::Encode)
}

/// Verifies the signature and algorithm, that `exp` is after `now`, that
/// `type` is `agent` and that `user_id` is set.
pub fn verify(token: &str, config: &JwtConfig, now: u64) -> Result<AgentClaims, JwtError> {
    let mut validation = Validation::new(config.algorithm.to_jsonwebtoken());
    // Expiry is checked below against the injected clock, not the system one.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<AgentClaims>(token, &config.decoding, &validation).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => JwtError::BadSignature,
                ErrorKind::ExpiredSignature => JwtError::Expired,
                _ => JwtError::Malformed,
            }
        })?;
    check_claims(data.claims, now)
}

/// Reads the claims of a token WITHOUT checking its signature or expiry.
/// Only for tools that hold a ready-made token and need its `user_id`
/// (the conformance runner); never use it to authorise anything.
pub fn decode_unverified(token: &str) -> Result<AgentClaims, JwtError> {
    let mut validation = Validation::default();
    validation.insecure_disable_signature_validation();
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
    jsonwebtoken::decode::<AgentClaims>(token, &DecodingKey::from_secret(&[]), &validation)
        .map(|d| d.claims)
        .map_err(|_| JwtError::Malformed)
}

fn check_claims(claims: AgentClaims, now: u64) -> Result<AgentClaims, JwtError> {
    if claims.exp <= now {
        return Err(JwtError::Expired);
    }
    if claims.token_type != "agent" {
        return Err(JwtError::NotAgent);
    }
    if claims.user_id.is_empty() {
        return Err(JwtError::NoUser);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_780_000_000;

    fn config(secret: &str, alg: JwtAlgorithm) -> JwtConfig {
        JwtConfig::new(secret, alg).expect("valid config")
    }

    #[test]
    fn round_trip_for_every_algorithm() {
        for alg in [
            JwtAlgorithm::HS256,
            JwtAlgorithm::HS384,
            JwtAlgorithm::HS512,
        ] {
            let cfg = config("s3cret", alg);
            let token = mint(&cfg, "u1", "writer", Some("a7"), NOW).expect("mints");
            let claims = verify(&token, &cfg, NOW + 10).expect("verifies");
            assert_eq!(claims.token_type, "agent");
            assert_eq!(claims.user_id, "u1");
            assert_eq!(claims.agent_role, "writer");
            assert_eq!(claims.sub, "wombat:writer");
            assert_eq!(claims.iat, NOW);
            assert_eq!(claims.exp, NOW + 7200);
            assert_eq!(claims.agent_id.as_deref(), Some("a7"));
        }
    }

    #[test]
    fn claims_are_exactly_the_contract_ones() {
        let cfg = config("k", JwtAlgorithm::HS256);
        let token = mint(&cfg, "u", "agent", None, NOW).expect("mints");
        let claims = decode_unverified(&token).expect("decodes");
        let json = serde_json::to_value(&claims).expect("serialises");
        let mut keys: Vec<_> = json.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["agent_role", "exp", "iat", "sub", "type", "user_id"]);
    }

    #[test]
    fn refusals_are_typed() {
        let cfg = config("right", JwtAlgorithm::HS256);
        let token = mint(&cfg, "u", "agent", None, NOW).expect("mints");
        let wrong = config("wrong", JwtAlgorithm::HS256);
        assert_eq!(verify(&token, &wrong, NOW), Err(JwtError::BadSignature));
        let other_alg = config("right", JwtAlgorithm::HS512);
        assert_eq!(verify(&token, &other_alg, NOW), Err(JwtError::BadSignature));
        assert_eq!(verify(&token, &cfg, NOW + 7200), Err(JwtError::Expired));
        assert_eq!(verify("not-a-jwt", &cfg, NOW), Err(JwtError::Malformed));
        assert_eq!(verify("", &cfg, NOW), Err(JwtError::Malformed));
        let mut claims = AgentClaims::new("u", "agent", None, NOW);
        claims.token_type = "user".into();
        let token = mint_claims(&cfg, &claims).expect("mints");
        assert_eq!(verify(&token, &cfg, NOW), Err(JwtError::NotAgent));
        let claims = AgentClaims::new("", "agent", None, NOW);
        let token = mint_claims(&cfg, &claims).expect("mints");
        assert_eq!(verify(&token, &cfg, NOW), Err(JwtError::NoUser));
    }

    #[test]
    fn algorithm_names_parse_and_secrets_stay_hidden() {
        assert_eq!("hs384".parse::<JwtAlgorithm>(), Ok(JwtAlgorithm::HS384));
        assert!("RS256".parse::<JwtAlgorithm>().is_err());
        assert!(JwtConfig::new("", JwtAlgorithm::HS256).is_err());
        let debug = format!("{:?}", config("hunter2", JwtAlgorithm::HS256));
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
