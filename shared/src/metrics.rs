//! Prometheus metrics: the HTTP metrics every service records, and the text exposition.

use axum::http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// Request counts by route and status, latency by route, and the requests running now.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
}

/// One running request, counted in `http_requests_in_flight` until it is dropped: answered,
/// or abandoned when its connection closed.
#[must_use]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

impl HttpMetrics {
    /// Creates the metrics and registers them with `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            metrics.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            metrics.latency.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests received and not yet answered (a drain waits for these)",
            metrics.in_flight.clone(),
        );
        metrics
    }

    /// Counts a request as running until the returned guard drops.
    pub fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn observe(&self, method: &Method, route: &str, status: StatusCode, elapsed: Duration) {
        // `as_str`, not `to_string`: the method's text without a trip through `fmt`.
        self.requests
            .get_or_create(&RequestLabels {
                method: method.as_str().to_owned(),
                route: route.to_owned(),
                status: status.as_u16(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.as_str().to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// Registers `build_info{version="..."} 1`, so a dashboard shows which release each instance
/// runs.
pub fn register_build_info(registry: &mut Registry, version: &str) {
    let info = Family::<BuildLabels, Gauge>::default();
    info.get_or_create(&BuildLabels {
        version: version.to_string(),
    })
    .set(1);
    registry.register("build_info", "The running release (always 1)", info);
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %err, "encoding metrics failed");
    }
    out
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
