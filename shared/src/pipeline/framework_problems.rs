//! Errors produced by the framework or tower layers (404, 405, 408, 413, path rejections)
//! arrive as plain text; clients get the same problem+json shape as from handlers. An HTML
//! page (the HQ console's error pages) is an answer meant for a person and is left as it is.

use crate::problem::{PROBLEM_JSON, Problem, problem_response, problem_type};
use axum::BoxError;
use axum::body::{Body, Bytes, HttpBody, to_bytes};
use axum::http::{Request, Response, header};
use futures_util::future::BoxFuture;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The longest plain-text error body carried over into a problem's detail.
const MAX_DETAIL_BYTES: usize = 2048;

#[derive(Clone, Copy, Default)]
pub(super) struct FrameworkProblemsLayer;

impl<S> Layer<S> for FrameworkProblemsLayer {
    type Service = FrameworkProblems<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FrameworkProblems { inner }
    }
}

/// Calls the service beneath directly: no per-request clone of the stack under it.
#[derive(Clone)]
pub(super) struct FrameworkProblems<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for FrameworkProblems<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let answer = self.inner.call(request);
        Box::pin(async move { Ok(as_problem(answer.await?.map(Body::new)).await) })
    }
}

/// A success, or an error already in problem+json, passes unchanged; any other error becomes
/// a problem carrying the original status, headers and (plain-text) message.
async fn as_problem(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with(PROBLEM_JSON) || content_type.starts_with("text/html") {
        return response;
    }
    let plain = content_type.is_empty() || content_type.starts_with("text/plain");
    let (parts, body) = response.into_parts();
    let text = if plain {
        to_bytes(body, MAX_DETAIL_BYTES)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let detail = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.trim().to_string()
    };
    let mut problem = problem_response(&Problem {
        kind: problem_type(status),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail,
        errors: Vec::new(),
    });
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}
