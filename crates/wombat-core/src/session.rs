//! Session keys: `user:{userId}:{role}`.
//!
//! The role picks `souls/<role>.md` in the workspace, so it is validated with
//! a strict charset before it can get anywhere near a file path.

use std::fmt;

use crate::{Error, Result};

/// Longest accepted role: one leading character plus 63 more.
const MAX_ROLE_LEN: usize = 64;

/// A parsed and validated session key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    user_id: String,
    role: String,
}

impl SessionKey {
    /// Parses `user:{userId}:{role}`: exactly three `:`-separated parts, the
    /// first being `user`, a non-empty user id and a role accepted by
    /// [`is_valid_role`].
    pub fn parse(key: &str) -> Result<Self> {
        let mut parts = key.split(':');
        let (Some("user"), Some(user_id), Some(role), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::SessionKeyFormat {
                key: key.to_owned(),
            });
        };
        if user_id.is_empty() {
            return Err(Error::SessionKeyFormat {
                key: key.to_owned(),
            });
        }
        if !is_valid_role(role) {
            return Err(Error::InvalidRole {
                role: role.to_owned(),
            });
        }
        Ok(Self {
            user_id: user_id.to_owned(),
            role: role.to_owned(),
        })
    }

    /// Parses the key and checks that it belongs to `user_id`.
    pub fn parse_for_user(key: &str, user_id: &str) -> Result<Self> {
        let parsed = Self::parse(key)?;
        if parsed.user_id != user_id {
            return Err(Error::UserMismatch);
        }
        Ok(parsed)
    }

    /// A session key from parts; the role is validated.
    pub fn new(user_id: impl Into<String>, role: impl Into<String>) -> Result<Self> {
        let user_id = user_id.into();
        let role = role.into();
        Self::parse(&format!("user:{user_id}:{role}"))
    }

    /// The tenant.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The agent role, safe to use as a file stem.
    pub fn role(&self) -> &str {
        &self.role
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user:{}:{}", self.user_id, self.role)
    }
}

/// Whether `role` matches `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
///
/// The charset excludes `/`, `\` and a leading `.`, so a valid role can never
/// name a parent directory or an absolute path.
pub fn is_valid_role(role: &str) -> bool {
    let bytes = role.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= MAX_ROLE_LEN
                && first.is_ascii_alphanumeric()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, expected: std::result::Result<(&str, &str), Error>) {
        let got = SessionKey::parse(key);
        match expected {
            Ok((user, role)) => {
                let got = got.expect("valid key");
                assert_eq!((got.user_id(), got.role()), (user, role));
                assert_eq!(got.to_string(), key);
            }
            Err(e) => assert_eq!(got, Err(e)),
        }
    }

    fn format_err(key: &str) -> Error {
        Error::SessionKeyFormat { key: key.into() }
    }

    #[test]
    fn parses_valid_keys() {
        check("user:42:agent", Ok(("42", "agent")));
        check("user:u_1:pm.lead-2", Ok(("u_1", "pm.lead-2")));
        check(
            &format!("user:a:{}", "r".repeat(64)),
            Ok(("a", &"r".repeat(64))),
        );
    }

    #[test]
    fn rejects_bad_shapes() {
        for key in [
            "",
            "user",
            "user:1",
            "user:1:a:b",
            "usr:1:agent",
            "user::agent",
        ] {
            check(key, Err(format_err(key)));
        }
    }

    #[test]
    fn rejects_path_like_roles() {
        for role in [
            "..", "../etc", ".hidden", "a/b", "a\\b", "", "-x", "é", "a b",
        ] {
            let key = format!("user:1:{role}");
            check(&key, Err(Error::InvalidRole { role: role.into() }));
        }
        let long = "r".repeat(65);
        check(
            &format!("user:1:{long}"),
            Err(Error::InvalidRole { role: long }),
        );
    }

    #[test]
    fn user_must_match() {
        assert_eq!(
            SessionKey::parse_for_user("user:1:agent", "2"),
            Err(Error::UserMismatch)
        );
        assert!(SessionKey::parse_for_user("user:1:agent", "1").is_ok());
        assert_eq!(
            Error::UserMismatch.to_string(),
            "user_id does not match session_key"
        );
    }
}
