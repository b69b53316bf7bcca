//! `tidemark run`'s OpenTelemetry export (feature `otel`, on by default): the
//! records' `process` spans (the library's `tidemark::process` target) sent over
//! OTLP/HTTP (protobuf) by a batch span processor, when an endpoint is given.
//!
//! The standard variables are honoured by the SDK and the exporter themselves:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL, `/v1/traces` appended) or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (full URL), `OTEL_SERVICE_NAME` (default
//! here `tidemark`), `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default
//! `parentbased_always_on`), `OTEL_SDK_DISABLED=true` (no export).

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::Layer;

/// The exporting tracer provider; [`Export::shutdown`] sends what is left.
pub struct Export {
    provider: SdkTracerProvider,
}

/// The layer that turns the `process` spans into OpenTelemetry spans.
pub type OtelLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// True when the environment names an OTLP endpoint and does not disable the SDK.
fn endpoint_in_env() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Starts exporting when `endpoint` (`--otlp-endpoint`, an OTLP/HTTP base URL such
/// as `http://127.0.0.1:4318`) is given or the environment names one; `None`
/// otherwise (nothing exported, the spans never created).
///
/// # Errors
/// An endpoint that is not a URL, or an exporter the SDK cannot build.
pub fn start(endpoint: Option<&str>) -> anyhow::Result<Option<(Export, OtelLayer)>> {
    if endpoint.is_none() && !endpoint_in_env() {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_timeout(Duration::from_secs(10));
    if let Some(base) = endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = exporter
        .build()
        .context("--otlp-endpoint: cannot build the OTLP exporter")?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("tidemark");
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build();
    let layer = layer(&provider);
    Ok(Some((Export { provider }, layer)))
}

/// The layer exporting the `tidemark::process` spans through `provider`: the
/// messaging attributes only (no code location, thread, target, nor busy/idle
/// times: each of those costs a record allocations or a clock read).
fn layer(provider: &SdkTracerProvider) -> OtelLayer {
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tidemark"))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        .with_tracked_inactivity(false)
        .with_filter(Targets::new().with_target("tidemark::process", tracing::Level::INFO));
    Box::new(layer)
}

/// Drops every span it is given (`tidemark bench --trace-cost`: the SDK's cost
/// without a network's).
#[derive(Debug)]
struct Discard;

impl opentelemetry_sdk::trace::SpanExporter for Discard {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        drop(batch);
        Ok(())
    }
}

/// The layer of a `tidemark bench --trace-cost` child run: none for `off`, else
/// the sampler `always_off` or `always_on` and a batch processor dropping the spans.
pub fn for_bench(mode: tidemark_bench::trace_cost::TraceMode) -> Option<(Export, OtelLayer)> {
    use opentelemetry_sdk::trace::Sampler;
    use tidemark_bench::trace_cost::TraceMode;
    let sampler = match mode {
        TraceMode::Off => return None,
        TraceMode::SampledOut => Sampler::AlwaysOff,
        TraceMode::Sampled => Sampler::AlwaysOn,
    };
    let provider = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_batch_exporter(Discard)
        .build();
    let layer = layer(&provider);
    Some((Export { provider }, layer))
}

impl Export {
    /// Exports the spans still queued (waits up to the exporter's timeout).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: OpenTelemetry export did not finish: {e}");
        }
    }
}
