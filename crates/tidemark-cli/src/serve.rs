//! `tidemark run --metrics-addr HOST:PORT`: a small HTTP server with the pipeline's
//! metrics in the Prometheus text format (`/metrics`, rendered by
//! `metrics-exporter-prometheus` from the library's `metrics` facade) and its
//! health for Kubernetes probes (`/health/live`, `/health/ready`, `/health`):
//! 200 when the answer is yes, 503 when it is no, a JSON body either way.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tidemark::MetricsHandle;
use tiny_http::{Header, Response, Server};

/// Histogram buckets of the `_seconds` metrics: 100 µs to 60 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Installs the Prometheus recorder as the process's `metrics` recorder and serves
/// it, with `pipeline`'s health, on `addr` from a background thread. Returns the
/// address bound (`addr` may ask for port 0).
///
/// # Errors
/// Another recorder is installed already, or `addr` cannot be bound.
pub fn start(addr: SocketAddr, pipeline: MetricsHandle) -> anyhow::Result<SocketAddr> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .context("histogram buckets")?
        // Partitions that left this member stop being published: drop their gauges.
        .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(10)))
        .build_recorder();
    let prometheus = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow!("a metrics recorder is installed already"))?;
    let server = Server::http(addr).map_err(|e| anyhow!("binding {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("{addr} is not an IP address"))?;
    std::thread::Builder::new()
        .name("tidemark-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = answer(request.url(), &prometheus, &pipeline);
                let _ = request.respond(response);
            }
        })
        .context("starting the metrics server")?;
    tracing::info!(%bound, "serving /metrics and /health");
    Ok(bound)
}

fn answer(
    url: &str,
    prometheus: &PrometheusHandle,
    pipeline: &MetricsHandle,
) -> Response<std::io::Cursor<Vec<u8>>> {
    let header = |v: &str| Header::from_bytes("Content-Type", v).expect("a valid header");
    let health = pipeline.health();
    let probe = |yes: bool| {
        let body = format!(r#"{{"live":{},"ready":{}}}"#, health.live, health.ready);
        Response::from_string(body)
            .with_status_code(if yes { 200 } else { 503 })
            .with_header(header("application/json"))
    };
    match url.split('?').next().unwrap_or_default() {
        "/metrics" => {
            prometheus.run_upkeep();
            Response::from_string(prometheus.render())
                .with_header(header("text/plain; version=0.0.4; charset=utf-8"))
        }
        "/health" | "/health/live" => probe(health.live),
        "/health/ready" => probe(health.ready),
        _ => Response::from_string("not found: try /metrics, /health/live or /health/ready\n")
            .with_status_code(404),
    }
}
