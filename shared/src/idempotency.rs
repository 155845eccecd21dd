//! `Idempotency-Key` for POSTs: the first result is stored and replayed to every retry.
//!
//! Keys are scoped by principal (the user or device id, not the raw credential: a refreshed token
//! replays the same key). A request that is cancelled (a timeout, a dropped connection) releases
//! its key instead of leaving it "in flight".
//!
//! The answer commits with the business write. A write path serving a keyed request (it finds
//! the request with [`current_request`]) records, in the transaction of the request's writes,
//! that the request committed and what it answers. The answer is an [`Answer`]: its bytes are
//! fixed before the commit, and the handler sends that very value, so what a retry replays is
//! byte for byte what the first client was sent. A handler hands its answer to the write in one
//! of two ways:
//!
//! - known before the write (central: the route builds the record the store writes): the route
//!   runs the store call inside [`answering`], and the store's transaction helper records it;
//! - made by the write (the edge: a new op's seq): the write closure returns the [`Answer`]
//!   (`Writer::mutate_answering` on the edge).
//!
//! A refusal decided inside the write (an unknown customer) is an error that rolls the write back:
//! nothing is recorded with it, and the middleware stores the refusal once the handler returns.
//! A write that commits without an answer only marks the key committed: a retry then gets a 409
//! instead of a second run. After every handler the middleware completes the key with the
//! response, which never replaces an answer recorded with the writes. [`decide`] is the one rule
//! for what a retry gets: a stored answer is replayed, however it got there.

use crate::auth::extract::Security;
use crate::auth::principal::Principal;
use crate::problem::ApiError;
use async_trait::async_trait;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service, ServiceExt};

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
    /// The request committed its writes but its answer was lost (the process stopped between
    /// the two): it is never run again.
    CommittedWithoutAnswer,
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    async fn begin(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Begin, ApiError>;
    /// Stores the answer of a started request, unless its writes already recorded one: the
    /// answer that committed with the writes stays the request's answer.
    async fn complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), ApiError>;
    /// Forgets a started key whose request failed transiently, so a retry runs it again.
    async fn release(&self, scope: &str, key: &str) -> Result<(), ApiError>;
    /// Deletes keys created before `before`; returns how many.
    async fn purge(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, ApiError>;
}

/// How long a key is remembered.
pub const KEY_LIFETIME: chrono::Duration = chrono::Duration::hours(24);

/// A started request that neither finished nor committed (its process died mid-request) stops
/// blocking its key after this long: far beyond any request's timeout.
pub const ABANDONED_AFTER: chrono::Duration = chrono::Duration::minutes(5);

/// What a store holds under a key (younger than [`KEY_LIFETIME`]), for [`decide`].
#[derive(Clone, Debug, PartialEq)]
pub struct KeyState {
    pub fingerprint: String,
    /// The stored answer, once the request finished.
    pub response: Option<StoredResponse>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Whether the request's writes committed (marked in their own transaction).
    pub committed: bool,
}

/// What a store does when a request with a key arrives.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing stored: insert the key (in progress) and run the request.
    Insert,
    /// An abandoned request that never committed: restart the key's clock and run it again.
    TakeOver,
    /// Answer without running the request.
    Answer(Begin),
}

/// The one rule every idempotency store follows.
pub fn decide(
    found: Option<KeyState>,
    fingerprint: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Decision {
    let Some(found) = found else {
        return Decision::Insert;
    };
    if found.fingerprint != fingerprint {
        return Decision::Answer(Begin::Mismatch);
    }
    match found.response {
        Some(response) => Decision::Answer(Begin::Replay(response)),
        None if found.committed => Decision::Answer(Begin::CommittedWithoutAnswer),
        None if now - found.created_at > ABANDONED_AFTER => Decision::TakeOver,
        None => Decision::Answer(Begin::InProgress),
    }
}

/// A request's answer with its bytes fixed: JSON serialized exactly as axum's `Json` does, or
/// an empty answer. The value a write records is the value the handler sends.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    status: StatusCode,
    /// `None` for an empty answer (a 204).
    content_type: Option<&'static str>,
    body: Bytes,
}

impl Answer {
    /// `value` as a JSON answer with `status`.
    pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value).map_err(ApiError::internal)?;
        Ok(Self {
            status,
            content_type: Some("application/json"),
            body: body.into(),
        })
    }

    /// An answer without a body, such as `204 No Content`.
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            content_type: None,
            body: Bytes::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn content_type(&self) -> Option<&'static str> {
        self.content_type
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The answer as it is kept for replay.
    pub fn to_stored(&self) -> StoredResponse {
        StoredResponse {
            status: self.status.as_u16(),
            content_type: self.content_type.map(str::to_string),
            body: self.body.to_vec(),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status, Body::from(self.body)).into_response();
        if let Some(content_type) = self.content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        response
    }
}

tokio::task_local! {
    static CURRENT: (String, String);
    static ANSWER: Answer;
}

/// The idempotent request a write serves, as its write path records it.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyedRequest {
    pub scope: String,
    pub key: String,
    /// The answer the route declared with [`answering`], if it did.
    pub answer: Option<Answer>,
}

/// The idempotent request the current task is serving, if any: a store's write path records it
/// (committed, with its answer when it has one) in the same transaction as the request's writes.
pub fn current_request() -> Option<KeyedRequest> {
    CURRENT
        .try_with(|(scope, key)| KeyedRequest {
            scope: scope.clone(),
            key: key.clone(),
            answer: ANSWER.try_with(Clone::clone).ok(),
        })
        .ok()
}

/// Runs `work` as the idempotent request (scope, key): what [`current_request`] returns inside.
pub async fn serving<T>(scope: String, key: String, work: impl Future<Output = T>) -> T {
    CURRENT.scope((scope, key), work).await
}

/// Runs `write` (one store call) with `answer` as what the current request answers once that
/// write commits: the write records it in its transaction. The caller then sends `answer`.
pub async fn answering<T>(answer: &Answer, write: impl Future<Output = T>) -> T {
    ANSWER.scope(answer.clone(), write).await
}

/// The middleware's state: where keys live, and how to tell who is asking.
#[derive(Clone)]
pub struct Idempotency {
    pub store: Arc<dyn IdempotencyStore>,
    pub security: Arc<Security>,
}

/// Releases a started key if the request never finished (its future was dropped).
struct InFlight {
    store: Arc<dyn IdempotencyStore>,
    scope: String,
    key: String,
    settled: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (store, scope, key) = (
            Arc::clone(&self.store),
            std::mem::take(&mut self.scope),
            std::mem::take(&mut self.key),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = store.release(&scope, &key).await {
                    tracing::warn!(error = %err, "could not release an abandoned idempotency key");
                }
            });
        }
    }
}

/// Results worth replaying: success, and refusals that the same request would get again.
/// Authentication, rate-limit and server errors are not stored, so a retry can succeed later.
fn is_replayable(status: StatusCode) -> bool {
    status.is_success() || matches!(status.as_u16(), 400 | 404 | 409 | 413 | 415 | 422)
}

impl<S> Layer<S> for Idempotency {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            state: self.clone(),
        }
    }
}

/// The middleware, made by `router.layer(Idempotency { .. })`. Requests that carry no key, and
/// anything but a POST, go straight to the service beneath; only a keyed POST pays for the
/// bookkeeping.
#[derive(Clone)]
pub struct IdempotencyService<S> {
    inner: S,
    state: Idempotency,
}

impl<S> Service<Request> for IdempotencyService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let key = match request.headers().get(IDEMPOTENCY_KEY_HEADER) {
            Some(key) if request.method() == Method::POST => key.clone(),
            _ => return Box::pin(self.inner.call(request)),
        };
        // The service polled ready goes with the request; a fresh clone stays for the next one.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        let state = self.state.clone();
        Box::pin(async move {
            Ok(match run(state, key, request, ready).await {
                Ok(response) | Err(response) => response,
            })
        })
    }
}

/// The rest of the stack, for a request this middleware lets through.
async fn pass<S>(inner: S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    match inner.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A keyed POST: replayed, refused or served and recorded.
async fn run<S>(
    state: Idempotency,
    key: HeaderValue,
    request: Request,
    next: S,
) -> Result<Response, Response>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let store = state.store;
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
    let (parts, body) = request.into_parts();
    let Ok(principal) = crate::auth::extract::identify(&parts, &state.security).await else {
        // Unauthenticated requests are refused further in; there is nothing to scope a key to.
        return Ok(pass(next, Request::from_parts(parts, body)).await);
    };
    let scope = match principal {
        Principal::Staff { user_id, .. } => format!("user:{user_id}"),
        Principal::Device { device_id, .. } => format!("device:{device_id}"),
    };
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
        Begin::CommittedWithoutAnswer => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key was carried out, but its answer was lost; \
                 it is not run again: look the result up instead"
                    .into(),
            )
            .into_response());
        }
    }
    let mut in_flight = InFlight {
        store: Arc::clone(&store),
        scope: scope.clone(),
        key: key.clone(),
        settled: false,
    };
    let response = serving(
        scope.clone(),
        key.clone(),
        pass(next, Request::from_parts(parts, Body::from(bytes))),
    )
    .await;
    let status = response.status();
    if !is_replayable(status) {
        in_flight.settled = true;
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
    in_flight.settled = true;
    Ok(Response::from_parts(parts, Body::from(body)))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    // A bare body: an answer stored without a content type is replayed without one.
    let mut response = (status, Body::from(stored.body)).into_response();
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;

    async fn sent(response: Response) -> (StatusCode, Option<String>, Vec<u8>) {
        let (parts, body) = response.into_parts();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().expect("ascii").to_string());
        let body = to_bytes(body, usize::MAX).await.expect("body").to_vec();
        (parts.status, content_type, body)
    }

    #[tokio::test]
    async fn an_answer_is_sent_as_axum_json_would_send_it_and_stored_as_sent() {
        let value =
            serde_json::json!({ "name": "Ünïcode \"quoted\"", "minors": [1, 2], "x": null });
        let answer = Answer::json(StatusCode::CREATED, &value).expect("answer");
        let stored = answer.to_stored();
        let through_json = sent((StatusCode::CREATED, Json(&value)).into_response()).await;
        let through_answer = sent(answer.into_response()).await;
        assert_eq!(through_answer, through_json);
        assert_eq!(
            (stored.status, stored.content_type, stored.body),
            (
                through_answer.0.as_u16(),
                through_answer.1,
                through_answer.2
            )
        );

        let empty = sent(Answer::empty(StatusCode::NO_CONTENT).into_response()).await;
        assert_eq!(empty, (StatusCode::NO_CONTENT, None, Vec::new()));
    }

    #[tokio::test]
    async fn a_write_sees_the_request_it_serves_and_the_answer_declared_for_it() {
        assert_eq!(current_request(), None);
        let answer = Answer::json(StatusCode::CREATED, &1).expect("answer");
        assert_eq!(answering(&answer, async { current_request() }).await, None);
        let seen = serving("user:1".into(), "k".into(), async {
            let bare = current_request();
            let answered = answering(&answer, async { current_request() }).await;
            (bare, answered)
        })
        .await;
        let request = |answer| KeyedRequest {
            scope: "user:1".into(),
            key: "k".into(),
            answer,
        };
        assert_eq!(seen, (Some(request(None)), Some(request(Some(answer)))));
    }

    #[test]
    fn an_answer_recorded_with_the_writes_is_replayed() {
        let now = chrono::Utc::now();
        let response = StoredResponse {
            status: 201,
            content_type: Some("application/json".into()),
            body: b"{}".to_vec(),
        };
        let state = |response, committed| KeyState {
            fingerprint: "f".into(),
            response,
            created_at: now,
            committed,
        };
        assert_eq!(
            decide(Some(state(Some(response.clone()), true)), "f", now),
            Decision::Answer(Begin::Replay(response))
        );
        assert_eq!(
            decide(Some(state(None, true)), "f", now),
            Decision::Answer(Begin::CommittedWithoutAnswer)
        );
    }
}
