//! An IO-bound pipeline: each record names a customer (its JSON payload's `id`), an
//! async processor asks an HTTP service for the customer's profile, and the profile
//! goes to the output topic. Hundreds of requests are in flight at once
//! (`Config::concurrency`) on a few threads.
//!
//! Failures follow what the service answers:
//! * **5xx, 429, a timeout or a refused connection** — transient: the record is
//!   retried with backoff (`FailureConfig::retry`; a `Retry-After` header in seconds is
//!   honoured), and only what succeeds is committed.
//! * **any other 4xx** (an unknown customer) or a payload without an `id` — the
//!   record can never succeed: it goes to the dead-letter topic at once, with the
//!   answer in its `tidemark-error` header.
//!
//! The example starts its own enrichment service on a free loopback port: it knows
//! every customer but those whose id is a multiple of 97 (404), and answers the
//! first request for an id ending in 3 with 503.
//!
//! ```text
//! cargo run --release --example http_enrichment -- BROKERS INPUT OUTPUT DEAD_LETTERS GROUP
//! ```
//! Stops on Ctrl-C or SIGTERM (drain, final commit; `ShutdownHandle::stop_on_signals`)
//! or after 5 s without records.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tidemark::{
    AsyncProcessor, Config, DeadLetterConfig, Outputs, Pipeline, ProcessError, ProcessResult,
    ProcessingOrder, Record, RetryPolicy, SinkConfig,
};

/// The enrichment service's own counters (what a test checks the pipeline against).
#[derive(Default)]
pub struct ServiceStats {
    /// Requests answered, whatever the answer.
    pub requests: AtomicU64,
    /// Requests answered 503.
    pub unavailable: AtomicU64,
    /// Ids already asked for once (the first ask of an id ending in 3 gets a 503).
    seen: Mutex<HashSet<u64>>,
}

/// `GET /customers/{id}`: `{"id":ID,"tier":"gold"|"silver"}`, 404 for multiples of
/// 97, 503 for the first request of an id ending in 3, 400 for an id that is not a
/// number.
async fn customer(
    State(stats): State<Arc<ServiceStats>>,
    Path(id): Path<String>,
) -> (StatusCode, String) {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let Ok(id) = id.parse::<u64>() else {
        return (StatusCode::BAD_REQUEST, "not a customer id".into());
    };
    let first = stats.seen.lock().unwrap().insert(id);
    if first && id % 10 == 3 {
        stats.unavailable.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "try again".into());
    }
    if id % 97 == 0 {
        return (StatusCode::NOT_FOUND, format!("no customer {id}"));
    }
    let tier = if id % 2 == 0 { "gold" } else { "silver" };
    (StatusCode::OK, format!(r#"{{"id":{id},"tier":"{tier}"}}"#))
}

/// Starts the enrichment service on a free loopback port (within the current tokio
/// runtime); returns its address and counters.
///
/// # Errors
/// When no loopback port can be bound.
pub async fn start_service() -> std::io::Result<(SocketAddr, Arc<ServiceStats>)> {
    let stats = Arc::new(ServiceStats::default());
    let app = Router::new()
        .route("/customers/{id}", get(customer))
        .with_state(stats.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("enrichment service stopped: {e}");
        }
    });
    Ok((addr, stats))
}

/// The async processor: one HTTP request per record, its answer mapped to the
/// record's outcome (see the module documentation).
pub struct Enrich {
    client: reqwest::Client,
    /// `http://host:port`, no trailing slash.
    base: String,
}

impl Enrich {
    /// Enriches from the service at `base` (`http://host:port`), each request bounded
    /// by `timeout`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base: impl Into<String>, timeout: Duration) -> reqwest::Result<Self> {
        Ok(Enrich {
            client: reqwest::Client::builder().timeout(timeout).build()?,
            base: base.into(),
        })
    }
}

/// The `id` of a payload `{"id": N, ...}`.
fn customer_id(record: &Record) -> Option<u64> {
    let payload: serde_json::Value = serde_json::from_slice(record.payload.as_deref()?).ok()?;
    payload.get("id")?.as_u64()
}

impl AsyncProcessor for Enrich {
    async fn process(&self, record: &Record) -> ProcessResult {
        let Some(id) = customer_id(record) else {
            return Err(ProcessError::permanent("the payload has no customer id"));
        };
        let url = format!("{}/customers/{id}", self.base);
        let response = match self.client.get(&url).send().await {
            Ok(response) => response,
            // Timeouts and refused connections: the service may come back.
            Err(e) => return Err(ProcessError::retriable(format!("GET {url}: {e}"))),
        };
        let status = response.status();
        if status.is_success() {
            let profile = response
                .bytes()
                .await
                .map_err(|e| ProcessError::retriable(format!("GET {url}: body: {e}")))?;
            return Ok(Outputs::one(record.key.clone(), profile));
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_secs);
        let message = format!("GET {url}: {status}");
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let error = ProcessError::retriable(message);
            Err(match retry_after {
                Some(wait) => error.retry_after(wait),
                None => error,
            })
        } else {
            Err(ProcessError::permanent(message))
        }
    }
}

/// The pipeline's configuration: outputs to `output`, records that can never
/// succeed to `dead_letters`, up to 5 attempts 50 ms apart and growing, 256
/// requests in flight, stop after `idle_ms` without records.
pub fn config(
    brokers: &str,
    group: &str,
    input: &str,
    output: &str,
    dead_letters: &str,
    idle_ms: u64,
) -> Config {
    let mut config = Config::new(brokers, group, [input]);
    config.sink = SinkConfig::Topic {
        topic: output.into(),
    };
    config.failures.dead_letter = Some(DeadLetterConfig::new(dead_letters));
    config.failures.retry =
        RetryPolicy::attempts(5).with_backoff(Duration::from_millis(50), Duration::from_secs(10));
    config.ordering = ProcessingOrder::Unordered;
    config.concurrency = 256;
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(idle_ms));
    config
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info,librdkafka=warn")
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, input, output, dead_letters, group] = args.as_slice() else {
        return Err("usage: http_enrichment BROKERS INPUT OUTPUT DEAD_LETTERS GROUP".into());
    };
    let (addr, stats) = start_service().await?;
    let processor = Enrich::new(format!("http://{addr}"), Duration::from_secs(2))?;
    let config = config(brokers, group, input, output, dead_letters, 5_000);
    let pipeline = Pipeline::new_async(config, processor);
    // Ctrl-C or SIGTERM: drain, final commit (a second one aborts).
    pipeline.shutdown_handle().stop_on_signals()?;
    let summary = pipeline.run_async().await?;
    println!(
        "{} records in {:.1} s; the service answered {} requests ({} with 503)",
        summary.records,
        summary.elapsed.as_secs_f64(),
        stats.requests.load(Ordering::Relaxed),
        stats.unavailable.load(Ordering::Relaxed),
    );
    Ok(())
}
