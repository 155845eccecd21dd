//! `ValidJson<T>`: decodes a JSON body, naming the offending field on type errors, then validates.

use crate::problem::ApiError;
use crate::validate::{Validate, Validator};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

/// A JSON request body that decoded cleanly and passed its `Validate` checks.
#[derive(Debug, Clone)]
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        let value = decode::<T>(&bytes)?;
        let mut validator = Validator::new();
        value.validate(&mut validator);
        validator.finish()?;
        Ok(Self(value))
    }
}

/// Decodes JSON, mapping syntax errors to 400 and shape errors (wrong type, unknown enum value,
/// bad UUID, missing field) to 422 with the JSON path of the field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest(format!("the body is not valid JSON: {inner}"))
        } else {
            let message = strip_position(&inner.to_string());
            let parent = if path == "." { None } else { Some(path) };
            // A missing field is reported at its parent's path; name the field itself.
            let named = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let field = match (named, parent) {
                (Some(child), Some(parent)) => format!("{parent}.{child}"),
                (Some(child), None) => child.to_string(),
                (None, Some(parent)) => parent,
                (None, None) => "body".to_string(),
            };
            ApiError::field(field, message)
        }
    })
}

/// serde_json appends "at line 1 column 42"; the field name already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: u32,
    }

    fn field_of(json: &str) -> String {
        match decode::<Body>(json.as_bytes()) {
            Err(ApiError::Validation(errors)) => errors[0].field.clone(),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn shape_errors_name_the_field() {
        assert_eq!(field_of(r#"{"name": "x"}"#), "count");
        assert_eq!(field_of(r#"{"name": "x", "count": "3"}"#), "count");
        assert_eq!(
            field_of(r#"{"name": "x", "count": 3, "colour": 1}"#),
            "colour"
        );
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        assert!(matches!(
            decode::<Body>(br#"{"name":"#),
            Err(ApiError::BadRequest(_))
        ));
    }
}
