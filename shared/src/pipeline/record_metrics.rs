//! Counts and times every request by method, route template and status, and counts the
//! requests running now.

use crate::metrics::HttpMetrics;
use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

/// Requests no route matched share one label, so a scan of random paths cannot grow the
/// metrics without bound.
const UNMATCHED: &str = "unmatched";

#[derive(Clone)]
pub(super) struct RecordMetricsLayer(pub(super) Arc<HttpMetrics>);

impl<S> Layer<S> for RecordMetricsLayer {
    type Service = RecordMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordMetrics {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

/// Calls the service beneath directly: no per-request clone of the stack under it.
#[derive(Clone)]
pub(super) struct RecordMetrics<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RecordMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let in_flight = self.metrics.start();
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let answer = self.inner.call(request);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let response = answer.await?;
            let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            metrics.observe(&method, route, response.status(), started.elapsed());
            drop(in_flight);
            Ok(response)
        })
    }
}
