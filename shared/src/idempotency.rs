//! `Idempotency-Key` for POSTs: the first result is stored and replayed to every retry.

use crate::problem::ApiError;
use async_trait::async_trait;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A response kept for replay.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// What the store found when a request with a key arrived.
#[derive(Clone, Debug, PartialEq)]
pub enum Begin {
    /// First time: the caller runs the request and then completes or releases the key.
    Started,
    /// Seen and finished: answer with this.
    Replay(StoredResponse),
    /// Seen and still running elsewhere.
    InProgress,
    /// The key was used before for a different request.
    Mismatch,
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    async fn begin(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Begin, ApiError>;
    async fn complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), ApiError>;
    /// Forgets a started key whose request failed transiently, so a retry runs it again.
    async fn release(&self, scope: &str, key: &str) -> Result<(), ApiError>;
}

/// Results worth replaying: success, and refusals that the same request would get again.
/// Authentication, rate-limit and server errors are not stored, so a retry can succeed later.
fn is_replayable(status: StatusCode) -> bool {
    status.is_success() || matches!(status.as_u16(), 400 | 404 | 409 | 413 | 415 | 422)
}

/// Middleware: wrap a router with `from_fn_with_state(store, idempotency)`.
pub async fn idempotency(
    State(store): State<Arc<dyn IdempotencyStore>>,
    request: Request,
    next: Next,
) -> Response {
    match run(store, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run(
    store: Arc<dyn IdempotencyStore>,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    let Some(key) = request.headers().get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(next.run(request).await);
    };
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::field(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
            .into_response()
        })?
        .to_string();
    let Some(scope) = credential_scope(&request) else {
        // Unauthenticated requests are refused further in; there is nothing to scope a key to.
        return Ok(next.run(request).await);
    };
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(|_| ApiError::PayloadTooLarge.into_response())?;
    let fingerprint = hex(&Sha256::new()
        .chain_update(parts.method.as_str())
        .chain_update([0])
        .chain_update(parts.uri.path())
        .chain_update([0])
        .chain_update(&bytes)
        .finalize());
    match store
        .begin(&scope, &key, &fingerprint)
        .await
        .map_err(IntoResponse::into_response)?
    {
        Begin::Started => {}
        Begin::Replay(stored) => return Ok(replay(stored)),
        Begin::InProgress => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still being processed".into(),
            )
            .into_response());
        }
        Begin::Mismatch => {
            return Err(ApiError::Unprocessable(
                "this Idempotency-Key was already used for a different request".into(),
            )
            .into_response());
        }
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if !is_replayable(status) {
        if let Err(err) = store.release(&scope, &key).await {
            tracing::warn!(error = %err, "could not release an idempotency key");
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX).await.map_err(|err| {
        ApiError::internal(anyhow::anyhow!("reading response: {err}")).into_response()
    })?;
    let stored = StoredResponse {
        status: status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.to_vec(),
    };
    store
        .complete(&scope, &key, &stored)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// Keys are scoped to the credential that sent them, so one caller can never replay another's.
fn credential_scope(request: &Request) -> Option<String> {
    let headers = request.headers();
    let credential = headers
        .get(crate::auth::extract::API_KEY_HEADER)
        .or_else(|| headers.get(header::AUTHORIZATION))?;
    Some(hex(&Sha256::digest(credential.as_bytes())))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    if let Some(content_type) = stored
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
