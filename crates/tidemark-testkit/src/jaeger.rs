//! A tracing backend for the tracing tests: Jaeger v2 (`scripts/jaeger.sh install`
//! builds it) with in-memory storage, its OTLP/HTTP receiver and its query API on
//! free loopback ports. The tests export to [`Jaeger::otlp_endpoint`] and read the
//! traces back with [`Jaeger::trace`], as an operator's UI would.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestkitError;

/// A running Jaeger; stopped when dropped.
pub struct Jaeger {
    process: Child,
    dir: PathBuf,
    otlp_port: u16,
    query_port: u16,
    http: reqwest::blocking::Client,
}

/// One span as Jaeger's query API returns it.
#[derive(Debug, Clone)]
pub struct Span {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// The span's name (`process orders`).
    pub name: String,
    /// The parent span's id (a `CHILD_OF` reference), if any.
    pub parent: Option<String>,
    /// The spans it links to (`FOLLOWS_FROM` references): (trace id, span id).
    pub links: Vec<(String, String)>,
    /// Its attributes (and `span.kind`, `otel.status_code`), as strings.
    pub tags: HashMap<String, String>,
    /// Its events' names (`retry`, …).
    pub events: Vec<String>,
}

fn free_port() -> Result<u16, TestkitError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| TestkitError::Broker(e.to_string()))?;
    Ok(l.local_addr()
        .map_err(|e| TestkitError::Broker(e.to_string()))?
        .port())
}

/// The project's `scripts/jaeger.sh`.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/jaeger.sh")
}

impl Jaeger {
    /// Builds Jaeger when missing, starts it with in-memory storage on free loopback
    /// ports and waits until its query API answers.
    ///
    /// # Errors
    /// [`TestkitError::Broker`] when it cannot be built or started;
    /// [`TestkitError::Timeout`] when it does not answer within 60 s.
    pub fn start() -> Result<Self, TestkitError> {
        let err = |e: String| TestkitError::Broker(format!("jaeger: {e}"));
        let out = Command::new("bash")
            .arg(script())
            .arg("install")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| err(format!("scripts/jaeger.sh: {e}")))?;
        if !out.status.success() {
            return Err(err("scripts/jaeger.sh install failed".into()));
        }
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (otlp_port, query_port, grpc_port) = (free_port()?, free_port()?, free_port()?);
        let dir = std::env::temp_dir().join(format!("tidemark-jaeger-{otlp_port}"));
        std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{grpc_port}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"
            ),
        )
        .map_err(|e| err(e.to_string()))?;
        let log = std::fs::File::create(dir.join("jaeger.log")).map_err(|e| err(e.to_string()))?;
        let process = Command::new(&bin)
            .arg("--config")
            .arg(format!("file:{}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| err(e.to_string()))?)
            .stderr(log)
            .spawn()
            .map_err(|e| err(format!("starting {bin}: {e}")))?;
        let jaeger = Jaeger {
            process,
            dir,
            otlp_port,
            query_port,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| err(e.to_string()))?,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while jaeger.get("/api/services").is_err() {
            if Instant::now() > deadline {
                return Err(TestkitError::Timeout(format!(
                    "jaeger's query API did not answer (log: {})",
                    jaeger.dir.join("jaeger.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(jaeger)
    }

    /// The OTLP/HTTP base URL to export to (`http://127.0.0.1:PORT`).
    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_port)
    }

    /// `GET path` on the query API: its JSON body, `None` for 404 (not stored).
    fn get(&self, path: &str) -> Result<Option<serde_json::Value>, TestkitError> {
        let url = format!("http://127.0.0.1:{}{path}", self.query_port);
        let err = |e: &dyn std::fmt::Display| TestkitError::Broker(format!("jaeger {url}: {e}"));
        let response = self.http.get(&url).send().map_err(|e| err(&e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(err(&response.status()));
        }
        let text = response.text().map_err(|e| err(&e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| err(&e))
    }

    /// The spans of trace `trace_id` (32 hex digits) stored so far; empty when
    /// Jaeger has none.
    ///
    /// # Errors
    /// When the query API cannot be reached or answers with something else.
    pub fn trace(&self, trace_id: &str) -> Result<Vec<Span>, TestkitError> {
        Ok(self
            .get(&format!("/api/traces/{trace_id}"))?
            .map_or_else(Vec::new, |body| spans_of(&body)))
    }

    /// The spans of every trace of `service` stored so far (at most `limit` traces).
    ///
    /// # Errors
    /// As [`trace`](Self::trace).
    pub fn traces_of(&self, service: &str, limit: usize) -> Result<Vec<Span>, TestkitError> {
        Ok(self
            .get(&format!(
                "/api/traces?service={service}&limit={limit}&lookback=1h"
            ))?
            .map_or_else(Vec::new, |body| spans_of(&body)))
    }
}

/// The spans of a query API answer (`{"data": [{"spans": [...]}, ...]}`), their ids
/// in W3C form (the API drops leading zeros: padded back to 32 and 16 digits).
fn spans_of(body: &serde_json::Value) -> Vec<Span> {
    let trace_id = |v: &serde_json::Value| format!("{:0>32}", v.as_str().unwrap_or_default());
    let span_id = |v: &serde_json::Value| format!("{:0>16}", v.as_str().unwrap_or_default());
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut spans = Vec::new();
    for trace in body["data"].as_array().into_iter().flatten() {
        for s in trace["spans"].as_array().into_iter().flatten() {
            let mut parent = None;
            let mut links = Vec::new();
            for r in s["references"].as_array().into_iter().flatten() {
                let (t, id) = (trace_id(&r["traceID"]), span_id(&r["spanID"]));
                if r["refType"] == "CHILD_OF" && parent.is_none() {
                    parent = Some(id);
                } else {
                    links.push((t, id));
                }
            }
            let tags = s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| (text(&t["key"]), text(&t["value"])))
                .collect();
            let events = s["logs"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|l| l["fields"].as_array().into_iter().flatten())
                .filter(|f| f["key"] == "event")
                .map(|f| text(&f["value"]))
                .collect();
            spans.push(Span {
                trace_id: trace_id(&s["traceID"]),
                span_id: span_id(&s["spanID"]),
                name: text(&s["operationName"]),
                parent,
                links,
                tags,
                events,
            });
        }
    }
    spans
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
