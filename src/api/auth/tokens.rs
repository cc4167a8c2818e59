//! The token file (`--auth-tokens`): identities and, preferably, only the SHA-256 of each
//! token. It is read at start and again on every reload; [`super::Authenticator::replace_tokens`]
//! puts a reloaded file in force.
//!
//! ```yaml
//! tokens:
//!   - identity: alice
//!     sha256: 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b  # sha256sum of the token
//!   - identity: ci
//!     token: a-plain-token   # accepted, but anyone who reads the file can use it
//! ```

use std::{collections::HashMap, path::Path};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::engine::ANONYMOUS;

/// Why the token file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML/JSON of the expected shape.
    #[error("parsing {origin}: {source}")]
    Parse {
        origin: String,
        #[source]
        source: serde_yaml::Error,
    },
    /// An entry is incomplete, ambiguous or a duplicate.
    #[error("{origin}: tokens[{index}]: {message}")]
    Invalid {
        origin: String,
        index: usize,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    identity: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// Identities by the SHA-256 of their token: tokens are compared as digests, so neither the
/// file nor memory needs to hold them, and the lookup's timing says nothing about a token.
#[derive(Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], String>,
}

impl Tokens {
    /// Loads a token file (YAML or JSON).
    ///
    /// # Errors
    /// Unreadable or malformed file, an entry with neither or both of `sha256` and `token`,
    /// a digest that is not 64 hex digits, one token listed twice, or no token at all.
    pub fn from_file(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses a token file's text; `origin` names it in errors.
    ///
    /// # Errors
    /// See [`Tokens::from_file`].
    pub fn from_yaml(text: &str, origin: &str) -> Result<Tokens, TokensError> {
        let file: TokensFile = serde_yaml::from_str(text).map_err(|source| TokensError::Parse {
            origin: origin.to_string(),
            source,
        })?;
        let mut by_digest = HashMap::new();
        if file.tokens.is_empty() {
            return Err(TokensError::Invalid {
                origin: origin.to_string(),
                index: 0,
                message: "no tokens: nobody could call the API".to_string(),
            });
        }
        for (index, entry) in file.tokens.into_iter().enumerate() {
            let invalid = |message: &str| TokensError::Invalid {
                origin: origin.to_string(),
                index,
                message: message.to_string(),
            };
            let identity = entry.identity.trim().to_string();
            if identity.is_empty() {
                return Err(invalid("identity: is required"));
            }
            if identity.eq_ignore_ascii_case(ANONYMOUS) {
                return Err(invalid(
                    "identity: \"anonymous\" is reserved for unauthenticated callers",
                ));
            }
            let digest = match (entry.sha256, entry.token) {
                (Some(hex), None) => parse_digest(hex.trim())
                    .ok_or_else(|| invalid("sha256: must be 64 hexadecimal digits"))?,
                (None, Some(token)) if !token.trim().is_empty() => digest(token.trim()),
                (None, Some(_)) => return Err(invalid("token: is empty")),
                _ => return Err(invalid("give exactly one of sha256 and token")),
            };
            if by_digest.insert(digest, identity).is_some() {
                return Err(invalid("the same token is listed twice"));
            }
        }
        Ok(Tokens { by_digest })
    }

    /// The identity holding `token`.
    pub fn identity(&self, token: &str) -> Option<&str> {
        self.by_digest.get(&digest(token)).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

pub(super) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistakes_in_the_token_file_fail_the_load() {
        let load = |yaml: &str| Tokens::from_yaml(yaml, "test").unwrap_err().to_string();
        assert!(load("tokens: []").contains("no tokens"));
        assert!(load("tokens: [{identity: a}]").contains("exactly one"));
        assert!(load("tokens: [{identity: a, token: x, sha256: y}]").contains("exactly one"));
        assert!(load("tokens: [{identity: a, sha256: abc}]").contains("64"));
        assert!(load("tokens: [{identity: '', token: x}]").contains("identity"));
        assert!(load("tokens: [{identity: anonymous, token: x}]").contains("reserved"));
        assert!(load("tokens: [{identity: Anonymous, token: x}]").contains("reserved"));
        assert!(
            load("tokens: [{identity: a, token: x}, {identity: b, token: x}]").contains("twice")
        );
        assert!(load("tokens: [{identity: a, token: x, role: admin}]").contains("role"));
        assert!(load("{").contains("test"));
    }

    #[test]
    fn json_token_files_are_accepted() {
        let tokens = Tokens::from_yaml(
            r#"{"tokens": [{"identity": "bob", "token": "t0k"}]}"#,
            "test",
        )
        .unwrap();
        assert_eq!(tokens.identity("t0k"), Some("bob"));
        assert_eq!(tokens.identity("t0K"), None);
    }
}
