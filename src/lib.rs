//! tidemark: parallel batch processing of Kafka records, at-least-once per record.
//!
//! A poll thread owns the rdkafka consumer and every partition's offset state; each
//! poll round's records go, as tasks, to a worker pool running your [`Processor`]
//! (or to a tokio runtime running your [`AsyncProcessor`]); each record's completion
//! comes back as a bit the poll thread reads once per round. Per partition, tidemark
//! commits only its *committable offset* — the lowest offset not yet complete (or
//! the highest delivered + 1) — so a crash or rebalance never skips a record. See
//! docs/DESIGN.md for the architecture, the invariants and the glossary, README.md
//! for usage.
//!
//! ```no_run
//! use tidemark::{Config, Outputs, Pipeline, Processor, ProcessResult, Record};
//!
//! struct CountBytes;
//! impl Processor for CountBytes {
//!     fn process(&self, record: &Record) -> ProcessResult {
//!         let n = record.payload.as_ref().map_or(0, |p| p.len());
//!         Ok(Outputs::one(None, n.to_string().into_bytes()))
//!     }
//! }
//!
//! let mut config = Config::new("127.0.0.1:9092", "my-group", ["input"]);
//! config.sink = tidemark::SinkConfig::Topic { topic: "sizes".into() };
//! let summary = Pipeline::new(config, CountBytes).run()?;
//! println!("{} records, committed {:?}", summary.records, summary.committed);
//! # Ok::<(), tidemark::Error>(())
//! ```

#![warn(missing_docs)]

mod async_processor;
mod commit;
mod config;
mod connection;
mod engine;
mod error;
mod failures;
mod lag;
pub mod metrics;
mod offset_store;
mod ordering;
mod processor;
mod record;
mod shutdown;
mod topic_partition;
mod topics;

pub use async_processor::{run_blocking, AsyncProcessor};
pub use commit::{
    CommitCallback, CommitError, CommitEvent, CommitHandle, CommitMode, CommitPolicy,
    PartitionOffset,
};
pub use config::{
    CommitConfig, Config, Delivery, FailureConfig, FlowConfig, LifecycleConfig, Membership,
    ObservabilityConfig, PostgresSink, ProducerContext, SinkConfig, StartPosition,
    FORCED_CONSUMER_PROPERTIES,
};
pub use connection::{is_secret_property, Connection, Properties};
pub use engine::seams::sink::{
    HEADER_SRC_OFFSET, HEADER_SRC_PARTITION, HEADER_TRACEPARENT, HEADER_TRACESTATE,
};
pub use engine::{Pipeline, RunSummary};
pub use error::{Error, KafkaClientError, KafkaErrorCode, Refusal};
pub use failures::{
    DeadLetterConfig, RetryPolicy, HEADER_ATTEMPTS, HEADER_ERROR, HEADER_SRC_TOPIC,
};
pub use lag::{consumer_lag, high_watermarks, PartitionLag};
pub use metrics::{Health, Metrics, MetricsHandle, PartitionMetrics};
pub use offset_store::{FileOffsetStore, OffsetAndMetadata, OffsetStore};
pub use ordering::ProcessingOrder;
pub use processor::{from_fn, Batch, FailureKind, FromFn, ProcessError, ProcessResult, Processor};
pub use record::{Bytes, Header, OutputRecord, Outputs, Record};
pub use shutdown::ShutdownHandle;
pub use topic_partition::TopicPartition;
pub use topics::{ensure_topic, topic_partitions};

/// The pure offset tracker, re-exported from `tidemark-offsets`.
pub use tidemark_offsets as offsets;

/// README.md's Rust snippets, compiled as doctests (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
