//! `tidemark run`'s OpenTelemetry export (feature `otel`, on by default): the
//! tracer provider whose tracer makes the records' `process` spans
//! (`Pipeline::with_tracer_provider`), sending them over OTLP/HTTP (protobuf) by a
//! batch span processor, when an endpoint is given.
//!
//! The standard variables are honoured by the SDK and the exporter themselves:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL, `/v1/traces` appended) or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (full URL), `OTEL_SERVICE_NAME` (default
//! here `tidemark`), `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default
//! `parentbased_always_on`), `OTEL_SDK_DISABLED=true` (no export).

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// The exporting tracer provider; [`Export::shutdown`] sends what is left.
pub struct Export {
    pub provider: SdkTracerProvider,
}

/// True when the environment names an OTLP endpoint and does not disable the SDK.
fn endpoint_in_env() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Starts exporting when `endpoint` (`--otlp-endpoint`, an OTLP/HTTP base URL such
/// as `http://127.0.0.1:4318`) is given or the environment names one; `None`
/// otherwise (nothing exported, no span made).
///
/// # Errors
/// An endpoint that is not a URL, or an exporter the SDK cannot build.
pub fn start(endpoint: Option<&str>) -> anyhow::Result<Option<Export>> {
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
    Ok(Some(Export { provider }))
}

impl Export {
    /// Exports the spans still queued (waits up to the exporter's timeout).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: OpenTelemetry export did not finish: {e}");
        }
    }
}
