//! Entity tags for the resources HQ edits: an `ETag` on every read of one, and `If-Match` on
//! writes so an edit based on a stale read is refused with 412 instead of overwriting what
//! someone else saved meanwhile (RFC 9110 sections 8.8.3 and 13.1.1).

use crate::problem::ApiError;
use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A strong entity tag (quotes included) derived from a record's content: two reads return the
/// same tag exactly when they return the same record, whichever instance answers them.
pub fn etag_of<T: Serialize>(record: &T) -> String {
    let json = serde_json::to_vec(record).unwrap_or_default();
    let digest = Sha256::digest(&json);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The answer `body`, with `etag` as its `ETag`.
pub fn with_etag(body: impl IntoResponse, etag: &str) -> Response {
    let mut response = body.into_response();
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

/// A request's `If-Match` precondition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match`: the write applies to whatever is stored.
    #[default]
    Absent,
    /// `If-Match: *`: any current representation.
    Any,
    /// The tags the client last saw (quotes included, weak ones dropped: they never match).
    Tags(Vec<String>),
}

impl IfMatch {
    /// Parses the header's value; a malformed one is a 400 rather than a silently ignored check.
    pub fn parse(value: Option<&HeaderValue>) -> Result<Self, ApiError> {
        let Some(value) = value else {
            return Ok(Self::Absent);
        };
        let malformed =
            || ApiError::BadRequest("If-Match must be * or a list of quoted entity tags".into());
        let text = value.to_str().map_err(|_| malformed())?.trim();
        if text == "*" {
            return Ok(Self::Any);
        }
        let mut tags = Vec::new();
        for item in text.split(',').map(str::trim) {
            let (weak, tag) = match item.strip_prefix("W/") {
                Some(tag) => (true, tag),
                None => (false, item),
            };
            let quoted = tag.len() >= 2 && tag.starts_with('"') && tag.ends_with('"');
            if !quoted || tag[1..tag.len() - 1].contains('"') {
                return Err(malformed());
            }
            // Strong comparison: a weak tag never matches (RFC 9110 13.1.1).
            if !weak {
                tags.push(tag.to_string());
            }
        }
        Ok(Self::Tags(tags))
    }

    /// True when a write may go ahead against a stored record whose tag is `current`.
    pub fn admits(&self, current: &str) -> bool {
        match self {
            Self::Absent | Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| t == current),
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Self::parse(parts.headers.get(IF_MATCH))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<IfMatch, ApiError> {
        IfMatch::parse(Some(&HeaderValue::from_str(text).expect("header")))
    }

    #[test]
    fn tags_follow_the_content() {
        let a = etag_of(&serde_json::json!({ "name": "Leeds" }));
        assert_eq!(a, etag_of(&serde_json::json!({ "name": "Leeds" })));
        assert_ne!(a, etag_of(&serde_json::json!({ "name": "York" })));
        assert!(
            a.starts_with('"') && a.ends_with('"') && a.len() == 26,
            "{a}"
        );
    }

    #[test]
    fn strong_tags_match_and_weak_or_other_tags_do_not() {
        let current = "\"abc\"";
        assert!(IfMatch::parse(None).unwrap().admits(current));
        assert!(parse("*").unwrap().admits(current));
        assert!(parse("\"abc\"").unwrap().admits(current));
        assert!(parse("\"old\", \"abc\"").unwrap().admits(current));
        assert!(!parse("\"old\"").unwrap().admits(current));
        assert!(!parse("W/\"abc\"").unwrap().admits(current));
    }

    #[test]
    fn malformed_preconditions_are_bad_requests() {
        for text in ["abc", "\"abc", "\"a\"b\"", "\"abc\",", ""] {
            assert!(
                matches!(parse(text), Err(ApiError::BadRequest(_))),
                "{text:?}"
            );
        }
    }
}
