//! High watermarks for the lag gauges, sampled off the poll thread: every
//! `lag_refresh` a separate client asks the brokers (ListOffsets, through
//! librdkafka's `query_watermark_offsets`) for the high watermark of each partition
//! the last publish listed, and sends them to the driver, which alone writes the
//! gauges. A paused partition fetches nothing, so watermarks taken from fetch
//! responses would freeze while the lag grows; these do not.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::config::Config;
use crate::engine::observation::publish::HighWatermarks;
use crate::metrics::Shared;
use crate::topic_partition::TopicPartition;

/// The sampler's client: the pipeline's connection settings (brokers, security),
/// but a throwaway `group.id` and none of the group membership settings, so it can
/// never touch the pipeline's group (a shared `group.instance.id` would fence the
/// member, KIP-345).
pub(crate) fn client_config(config: &Config) -> ClientConfig {
    let mut cc = config.consumer_client_config();
    for key in [
        "group.instance.id",
        "group.protocol",
        "group.remote.assignor",
        "partition.assignment.strategy",
    ] {
        cc.remove(key);
    }
    cc.set(
        "group.id",
        format!("tidemark-lag-{:016x}", rand::random::<u64>()),
    );
    cc
}

/// A running sampler; dropping it stops the thread at its next tick (not waited
/// for: a slow ListOffsets must not delay the end of a run).
pub(crate) struct LagSampler {
    _stop: Sender<()>,
}

impl LagSampler {
    /// Starts sampling every `every` with a client made from `client_config`; the
    /// watermarks arrive on the returned receiver. `None` when the client cannot be
    /// created (logged: the lag gauges then stay empty).
    pub(crate) fn start(
        client_config: &ClientConfig,
        shared: Arc<Shared>,
        every: Duration,
    ) -> Option<(LagSampler, Receiver<HighWatermarks>)> {
        let client: BaseConsumer = match client_config.create() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "lag sampler not started: no high watermarks for the lag gauges");
                return None;
            }
        };
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("tidemark-lag".into())
            .spawn(move || loop {
                match stop_rx.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let assigned: Vec<TopicPartition> = shared
                    .partitions
                    .lock()
                    .iter()
                    .map(|p| TopicPartition::new(&*p.topic, p.partition))
                    .collect();
                let mut sampled = Vec::with_capacity(assigned.len());
                for tp in assigned {
                    let timeout = every.max(Duration::from_secs(1));
                    match client.fetch_watermarks(&tp.topic, tp.partition, timeout) {
                        Ok((_, high)) => sampled.push((tp, high)),
                        Err(e) => tracing::debug!(%tp, error = %e, "high watermark unknown"),
                    }
                }
                if tx.send(sampled).is_err() {
                    return;
                }
            })
            .ok()?;
        drop(thread);
        Some((LagSampler { _stop: stop_tx }, rx))
    }
}
