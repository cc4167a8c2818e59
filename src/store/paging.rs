//! Keyset paging shared by the backends: pages are cut at a `(created_at, id)` position, never
//! by OFFSET, so a deep page costs what the first one does and rows inserted while a client
//! pages never shift or repeat what it sees.

use base64::Engine as _;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

/// Marks the token format, so that a token of some future layout is refused, not misread.
const TOKEN_VERSION: &str = "v1";

/// Where the next page starts: strictly after (older than) this execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

impl Cursor {
    /// The opaque token handed to clients: base64url of `v1:<secs>.<nanos>:<id>`.
    pub fn encode(&self) -> String {
        let raw = format!(
            "{TOKEN_VERSION}:{}.{:09}:{}",
            self.created_at.timestamp(),
            self.created_at.timestamp_subsec_nanos(),
            self.id
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// The cursor of a token; `None` for the empty token (the first page).
    ///
    /// # Errors
    /// [`StoreError::BadPageToken`] for anything [`Cursor::encode`] did not produce.
    pub fn decode(token: &str) -> Result<Option<Cursor>, StoreError> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || StoreError::BadPageToken;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let rest = raw
            .strip_prefix(TOKEN_VERSION)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(bad)?;
        let (time, id) = rest.split_once(':').ok_or_else(bad)?;
        let (secs, nanos) = time.split_once('.').ok_or_else(bad)?;
        if id.is_empty() || nanos.len() != 9 {
            return Err(bad());
        }
        let secs: i64 = secs.parse().map_err(|_| bad())?;
        let nanos: u32 = nanos.parse().map_err(|_| bad())?;
        let created_at = DateTime::from_timestamp(secs, nanos).ok_or_else(bad)?;
        Ok(Some(Cursor {
            created_at,
            id: id.to_string(),
        }))
    }
}

/// The page size to serve for a requested one: 0 means the default, and no page is larger than
/// the API allows (the engine refuses larger requests; this only bounds the store's work).
pub(crate) fn page_size(requested: usize) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_cursor() -> Cursor {
        Cursor {
            created_at: DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap(),
            id: "exec-1:with:colons".into(),
        }
    }

    #[test]
    fn a_token_decodes_to_the_cursor_it_was_made_from() {
        let c = mk_cursor();
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), Some(c));
    }

    #[test]
    fn the_empty_token_is_the_first_page() {
        assert_eq!(Cursor::decode("").unwrap(), None);
    }

    #[test]
    fn tokens_not_issued_by_the_store_are_refused() {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for token in [
            "garbage!".to_string(),
            enc("v2:1.000000000:x"),
            enc("v1:1.000000000:"),
            enc("v1:1.5:x"),
            enc("v1:x.000000000:x"),
            enc("v1:99999999999999999.000000000:x"),
            enc("v1:1"),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert!(
                matches!(Cursor::decode(&token), Err(StoreError::BadPageToken)),
                "{token}"
            );
        }
    }

    #[test]
    fn page_size_defaults_and_is_bounded() {
        assert_eq!(page_size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(usize::MAX), MAX_PAGE_SIZE);
    }
}
