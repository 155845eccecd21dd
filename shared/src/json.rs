//! `ValidJson<T>`: decodes a JSON body and validates it, naming every missing or invalid field
//! in one 422 rather than only the first that serde meets. `JsonText<T>`: a value serialized
//! once, answered as it is.

use crate::problem::{ApiError, FieldError};
use crate::validate::{Validate, Validator};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::marker::PhantomData;

/// A `T` serialized to JSON, answered as it is (`application/json`): a record encoded once for
/// its row and its outbox op is not encoded again for the answer. The bytes are those `Json(T)`
/// would send.
pub struct JsonText<T> {
    text: String,
    of: PhantomData<fn() -> T>,
}

/// The buffer a [`JsonText`] is written into starts at this size, which holds a typical venue
/// record or a one-customer lookup's answer whole (a larger one grows it as before): serde_json's
/// own starts at 128 bytes and is grown, and copied, several times on the way to the size of a
/// sale.
const STARTING_CAPACITY: usize = 1024;

impl<T: Serialize> JsonText<T> {
    pub fn new(value: &T) -> serde_json::Result<Self> {
        let mut bytes = Vec::with_capacity(STARTING_CAPACITY);
        serde_json::to_writer(&mut bytes, value)?;
        Ok(Self {
            text: String::from_utf8(bytes).expect("serde_json writes UTF-8"),
            of: PhantomData,
        })
    }
}

impl<T> JsonText<T> {
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Room for every header an answer leaves with: its type, the request id, and those the
/// pipeline adds on the way out (CORS, the security headers), so its header map is allocated
/// once instead of being grown and rehashed as the layers add theirs.
const ANSWER_HEADERS: usize = 12;

impl<T> IntoResponse for JsonText<T> {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.text));
        let headers = response.headers_mut();
        headers.reserve(ANSWER_HEADERS);
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        response
    }
}

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
        decode_valid(&bytes).map(Self)
    }
}

/// Decodes and validates a body. A body that does not decode gets a 422 naming every field
/// that is missing or malformed (see [`decode`]); one that does gets every `Validate` error.
/// The two are not mixed: checks run on a body with stand-ins for its malformed fields could
/// blame a field for a rule that only failed against a stand-in (a role and its sites).
pub fn decode_valid<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = decode::<T>(bytes)?;
    let mut validator = Validator::new();
    value.validate(&mut validator);
    validator.finish()?;
    Ok(value)
}

/// Decodes JSON, mapping syntax errors to 400 and shape errors (wrong type, unknown enum value,
/// bad UUID, missing or unknown field) to 422 naming every such field by its JSON path.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match decode_first(bytes) {
        Ok(value) => Ok(value),
        Err(Shape::Syntax(err)) => Err(err),
        Err(Shape::Field(first)) => {
            let mut errors = decode_every_field::<T>(bytes)?;
            if errors.is_empty() {
                errors.push(first);
            }
            Err(ApiError::Validation(errors))
        }
    }
}

enum Shape {
    Syntax(ApiError),
    Field(FieldError),
}

/// The fast path every valid body takes: one pass from the bytes, stopping at the first error.
fn decode_first<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Shape> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let inner_is_syntax = err.inner().is_syntax() || err.inner().is_eof();
        if inner_is_syntax {
            Shape::Syntax(ApiError::BadRequest(format!(
                "the body is not valid JSON: {}",
                err.into_inner()
            )))
        } else {
            Shape::Field(field_error(&err))
        }
    })
}

/// Bounds on the slow path, which re-decodes the body once per repair: a body with many bad
/// fields gets the first of them named, not unbounded work.
const MAX_ATTEMPTS: usize = 48;
const MAX_ERRORS: usize = 20;

/// Values tried in place of a missing or malformed field, so decoding can go on to the next
/// one: between them they satisfy every field type our bodies use (options, text, numbers,
/// flags, lists, objects, UUIDs, dates, times, networks). Unit enum variants are taken from
/// serde's own "expected one of" message.
fn stand_ins() -> [Value; 10] {
    [
        Value::Null,
        json!(""),
        json!(0),
        json!(false),
        json!([]),
        json!({}),
        json!("00000000-0000-0000-0000-000000000000"),
        json!("2000-01-01"),
        json!("2000-01-01T00:00:00Z"),
        json!("127.0.0.1/32"),
    ]
}

/// The slow path, taken only for a body with a shape error: decodes from a JSON value,
/// recording each error and repairing the value where it occurred (an unknown field is removed,
/// a missing or malformed one gets a stand-in), until it decodes or the bounds are reached.
/// Returns every error recorded.
fn decode_every_field<T: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<FieldError>, ApiError> {
    let mut body: Value = serde_json::from_slice(bytes)
        .map_err(|err| ApiError::BadRequest(format!("the body is not valid JSON: {err}")))?;
    let mut errors: Vec<FieldError> = Vec::new();
    // Per repaired location: its path and the next stand-in to try there.
    let mut repairs: Vec<(Vec<Step>, usize)> = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        let err = match serde_path_to_error::deserialize::<_, T>(&body) {
            Ok(_) => return Ok(errors),
            Err(err) => err,
        };
        let error = field_error(&err);
        let mut at = steps(err.path());
        let message = err.inner().to_string();
        if let Some(missing) = quoted_after(&message, "missing field `") {
            at.push(Step::Key(missing.to_string()));
        }
        if !errors.iter().any(|e| covers(&e.field, &error.field)) {
            if errors.len() == MAX_ERRORS {
                break;
            }
            errors.push(error);
        }
        if message.starts_with("unknown field `") {
            if !remove(&mut body, &at) {
                break;
            }
            continue;
        }
        let tried = match repairs.iter_mut().find(|(path, _)| *path == at) {
            Some((_, next)) => {
                *next += 1;
                *next
            }
            None => {
                repairs.push((at.clone(), 0));
                0
            }
        };
        let mut candidates: Vec<Value> = first_variant(&message).into_iter().collect();
        candidates.extend(stand_ins());
        let Some(candidate) = candidates.into_iter().nth(tried) else {
            break;
        };
        if !put(&mut body, &at, candidate) {
            break;
        }
    }
    Ok(errors)
}

/// One step of a path into a JSON value.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

fn slot<'v>(value: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |value, step| match step {
        Step::Key(key) => value.as_object_mut()?.get_mut(key),
        Step::Index(i) => value.as_array_mut()?.get_mut(*i),
    })
}

/// Sets the value at `path`, creating the last key if it is missing.
fn put(body: &mut Value, path: &[Step], new: Value) -> bool {
    let Some((last, parent)) = path.split_last() else {
        *body = new;
        return true;
    };
    match (slot(body, parent), last) {
        (Some(Value::Object(map)), Step::Key(key)) => {
            map.insert(key.clone(), new);
            true
        }
        (Some(Value::Array(items)), Step::Index(i)) if *i < items.len() => {
            items[*i] = new;
            true
        }
        _ => false,
    }
}

fn remove(body: &mut Value, path: &[Step]) -> bool {
    match (
        path.split_last(),
        path.split_last().and_then(|(_, p)| slot(body, p)),
    ) {
        (Some((Step::Key(key), _)), Some(Value::Object(map))) => map.remove(key).is_some(),
        _ => false,
    }
}

/// The first variant serde lists in "unknown variant `x`, expected one of `a`, `b`, `c`" (or
/// "expected `a` or `b`", or "expected `a`").
fn first_variant(message: &str) -> Option<Value> {
    let rest = message.strip_prefix("unknown variant `")?;
    let rest = rest
        .split_once("expected one of `")
        .or_else(|| rest.split_once("expected `"))?
        .1;
    Some(Value::String(rest.split('`').next()?.to_string()))
}

fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// True when `reported` is `field` or one of its parents (`lines` covers `lines[0].quantity`).
fn covers(reported: &str, field: &str) -> bool {
    reported == "body"
        || field == reported
        || field
            .strip_prefix(reported)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// The field a shape error is about, by its JSON path, and serde's message for it.
fn field_error<E: std::fmt::Display>(err: &serde_path_to_error::Error<E>) -> FieldError {
    let path = err.path().to_string();
    let message = strip_position(&err.inner().to_string());
    let parent = if path == "." { None } else { Some(path) };
    // A missing field is reported at its parent's path; name the field itself.
    let named = quoted_after(&message, "missing field `");
    let field = match (named, parent) {
        (Some(child), Some(parent)) => format!("{parent}.{child}"),
        (Some(child), None) => child.to_string(),
        (None, Some(parent)) => parent,
        (None, None) => "body".to_string(),
    };
    FieldError::new(field, message)
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

    #[tokio::test]
    async fn a_json_text_answers_the_bytes_json_would_with_its_content_type() {
        let value = json!({ "id": "ö\"x", "lines": [1, 2], "at": null });
        let text = JsonText::new(&value).expect("encode");
        assert_eq!(
            text.as_str().as_bytes(),
            serde_json::to_vec(&value).unwrap()
        );
        let expected = axum::Json(&value).into_response();
        let answer = text.into_response();
        assert_eq!(answer.status(), expected.status());
        assert_eq!(answer.headers().len(), expected.headers().len());
        assert!(answer.headers().capacity() >= ANSWER_HEADERS);
        assert_eq!(
            answer.headers()[header::CONTENT_TYPE],
            expected.headers()[header::CONTENT_TYPE]
        );
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .expect("body");
        let expected = axum::body::to_bytes(expected.into_body(), usize::MAX)
            .await
            .expect("body");
        assert_eq!(body, expected);
    }

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

    /// The fields named, sorted: the slow path visits an object's keys in its own order.
    fn fields_of<T: DeserializeOwned + std::fmt::Debug>(json: &str) -> Vec<String> {
        match decode::<T>(json.as_bytes()) {
            Err(ApiError::Validation(errors)) => {
                let mut fields: Vec<String> = errors.into_iter().map(|e| e.field).collect();
                fields.sort();
                fields
            }
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn every_missing_or_malformed_field_is_named() {
        assert_eq!(fields_of::<Body>("{}"), ["count", "name"]);
        assert_eq!(fields_of::<Body>(r#"{"count": "3"}"#), ["count", "name"]);
        assert_eq!(
            fields_of::<Body>(r#"{"name": 1, "count": -1, "colour": 1}"#),
            ["colour", "count", "name"]
        );
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Order {
        customer_id: uuid::Uuid,
        kind: Kind,
        lines: Vec<Line>,
        note: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        product_id: uuid::Uuid,
        quantity: u32,
        at: chrono::DateTime<chrono::Utc>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Sale,
        Refund,
    }

    #[test]
    fn nested_fields_enums_and_typed_values_are_named_by_path() {
        let body = r#"{
            "customer_id": "not-a-uuid",
            "kind": "gift",
            "lines": [
                {"product_id": "0190b7c2-3f1e-7c3a-9d2e-5b8f0a1c2d3e", "quantity": -2, "at": "yesterday"},
                {"quantity": 1, "at": "2026-01-01T10:00:00Z"}
            ],
            "note": 7
        }"#;
        assert_eq!(
            fields_of::<Order>(body),
            [
                "customer_id",
                "kind",
                "lines[0].at",
                "lines[0].quantity",
                "lines[1].product_id",
                "note"
            ]
        );
        // A missing object is one error, not one per field inside it.
        assert_eq!(
            fields_of::<Order>(r#"{"kind": "sale", "lines": [{}]}"#),
            [
                "customer_id",
                "lines[0].at",
                "lines[0].product_id",
                "lines[0].quantity"
            ]
        );
        assert_eq!(fields_of::<Order>("5"), ["body"]);
    }

    #[test]
    fn a_body_with_very_many_bad_fields_costs_bounded_work() {
        let unknown: Vec<String> = (0..500).map(|i| format!(r#""f{i}": 1"#)).collect();
        let body = format!(r#"{{"name": "x", "count": 1, {}}}"#, unknown.join(", "));
        let fields = fields_of::<Body>(&body);
        assert_eq!(fields.len(), MAX_ERRORS);
    }

    struct Named(Body);

    impl<'de> serde::Deserialize<'de> for Named {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Body::deserialize(d).map(Named)
        }
    }

    impl Validate for Named {
        fn validate(&self, v: &mut Validator) {
            v.text("name", &self.0.name, 5);
            v.check(self.0.count < 10, "count", "must be below 10");
        }
    }

    #[test]
    fn a_body_that_decodes_gets_every_validation_error() {
        let Err(ApiError::Validation(errors)) =
            decode_valid::<Named>(br#"{"name": "  ", "count": 12}"#)
        else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "count"]);
        assert!(decode_valid::<Named>(br#"{"name": "ok", "count": 1}"#).is_ok());
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        assert!(matches!(
            decode::<Body>(br#"{"name":"#),
            Err(ApiError::BadRequest(_))
        ));
    }
}
