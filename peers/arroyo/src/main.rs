//! `arroyo-peer`: the same work as `tidemark bench`'s runs, done by sentry_arroyo
//! (Sentry's stream-processing library) with its `RunTaskInThreads` strategy
//! followed by `CommitOffsets`, in a fresh consumer group, until `--records` records
//! are processed. Prints one line: `records=N busy_s=S peak_rss_kib=K`.
//!
//! Usage: `arroyo-peer --brokers B --topic T --records N --workers W
//! --rounds R (0 = no-op) --commit-ms MS`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sentry_arroyo::backends::kafka::config::KafkaConfig;
use sentry_arroyo::backends::kafka::types::KafkaPayload;
use sentry_arroyo::backends::kafka::InitialOffset;
use sentry_arroyo::processing::strategies::commit_offsets::CommitOffsets;
use sentry_arroyo::processing::strategies::run_task_in_threads::{
    ConcurrencyConfig, RunTaskFunc, RunTaskInThreads,
};
use sentry_arroyo::processing::strategies::{ProcessingStrategy, ProcessingStrategyFactory};
use sentry_arroyo::processing::StreamProcessor;
use sentry_arroyo::types::{Message, Topic};
use sha2::{Digest, Sha256};

struct Args {
    brokers: String,
    topic: String,
    records: u64,
    workers: usize,
    rounds: u32,
    commit_ms: u64,
}

fn args() -> Args {
    let mut a = Args {
        brokers: String::new(),
        topic: String::new(),
        records: 0,
        workers: 2,
        rounds: 0,
        commit_ms: 100,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let (k, val) = (pair[0].as_str(), pair.get(1).cloned().unwrap_or_default());
        match k {
            "--brokers" => a.brokers = val,
            "--topic" => a.topic = val,
            "--records" => a.records = val.parse().expect("--records N"),
            "--workers" => a.workers = val.parse().expect("--workers N"),
            "--rounds" => a.rounds = val.parse().expect("--rounds N"),
            "--commit-ms" => a.commit_ms = val.parse().expect("--commit-ms N"),
            _ => panic!("unknown argument {k}"),
        }
    }
    assert!(!a.brokers.is_empty() && !a.topic.is_empty() && a.records > 0);
    a
}

/// The same chain as tidemark's `sha256:ROUNDS` processor, hex output.
fn work(payload: &[u8], rounds: u32) -> Vec<u8> {
    if rounds == 0 {
        return payload.to_vec();
    }
    let mut digest: [u8; 32] = Sha256::digest(payload).into();
    for _ in 1..rounds {
        digest = Sha256::digest(digest).into();
    }
    hex::encode(digest).into_bytes()
}

struct Factory {
    concurrency: ConcurrencyConfig,
    rounds: u32,
    commit_every: Duration,
    done: Arc<AtomicU64>,
    first: Arc<OnceLock<Instant>>,
}

impl ProcessingStrategyFactory<KafkaPayload> for Factory {
    fn create(&self) -> Box<dyn ProcessingStrategy<KafkaPayload>> {
        let (rounds, done, first) = (self.rounds, self.done.clone(), self.first.clone());
        let task = move |message: Message<KafkaPayload>| -> RunTaskFunc<KafkaPayload, String> {
            let (done, first) = (done.clone(), first.clone());
            Box::pin(async move {
                first.get_or_init(Instant::now);
                let out = work(
                    message.payload().payload().map_or(&[][..], |p| p.as_slice()),
                    rounds,
                );
                done.fetch_add(1, Ordering::Relaxed);
                Ok(message.replace(KafkaPayload::new(None, None, Some(out))))
            })
        };
        Box::new(RunTaskInThreads::new(
            CommitOffsets::new(self.commit_every),
            task,
            &self.concurrency,
            None,
        ))
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let a = args();
    let group = format!("arroyo-peer-{}", std::process::id());
    let config = KafkaConfig::new_consumer_config(
        vec![a.brokers.clone()],
        group,
        InitialOffset::Earliest,
        false,
        30_000,
        None,
    );
    let done = Arc::new(AtomicU64::new(0));
    let first = Arc::new(OnceLock::new());
    let factory = Factory {
        concurrency: ConcurrencyConfig::new(a.workers),
        rounds: a.rounds,
        commit_every: Duration::from_millis(a.commit_ms),
        done: done.clone(),
        first: first.clone(),
    };
    let processor = StreamProcessor::with_kafka(config, factory, Topic::new(&a.topic), None);
    let mut handle = processor.get_handle();
    let total = a.records;
    let watcher_done = done.clone();
    let watcher = std::thread::spawn(move || {
        while watcher_done.load(Ordering::Relaxed) < total {
            std::thread::sleep(Duration::from_millis(1));
        }
        let end = Instant::now();
        handle.signal_shutdown();
        end
    });
    processor.run().expect("arroyo processor");
    let end = watcher.join().unwrap();
    let busy = first.get().map_or(Duration::ZERO, |f| end.duration_since(*f));
    println!(
        "records={} busy_s={:.6} peak_rss_kib={}",
        done.load(Ordering::Relaxed),
        busy.as_secs_f64(),
        peak_rss_kib()
    );
}
