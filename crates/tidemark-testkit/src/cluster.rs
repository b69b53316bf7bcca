//! A multi-node Apache Kafka cluster on loopback (KRaft, every node broker and
//! controller, static voters), started by `scripts/kafka.sh start-cluster`, with
//! node-level kill, graceful stop and start, and the look-ups a failover test needs:
//! partition leaders, in-sync replicas, and the group and transaction coordinators.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::kafka::{run_script, stop_pid, wait_ready};
use crate::{Broker, TestkitError};

/// Partitions of `__consumer_offsets` and `__transaction_state` on the cluster
/// (`offsets.topic.num.partitions`, `transaction.state.log.num.partitions` in
/// `scripts/kafka.sh`): the coordinator look-ups hash onto them.
const INTERNAL_PARTITIONS: i32 = 4;

/// An N-node Apache Kafka cluster of its own (replication factor 3 — N when smaller
/// — and `min.insync.replicas=2` for new topics and the internal ones; a 4 s broker
/// session, so a killed node is fenced and its leaderships move within seconds).
/// Every node stops when the value is dropped or this process exits.
pub struct KafkaCluster {
    bootstrap: String,
    dir: PathBuf,
    /// Node id (1-based) → its pid while it runs.
    nodes: BTreeMap<i32, Option<u32>>,
}

impl KafkaCluster {
    /// Starts `nodes` nodes on free loopback ports and waits until the cluster serves
    /// metadata and a group coordinator answers.
    ///
    /// # Errors
    /// [`TestkitError::Broker`] when the script fails (Kafka not installed, a node
    /// exits); [`TestkitError::Timeout`] when the cluster does not answer within 120 s.
    pub fn start(nodes: usize) -> Result<Self, TestkitError> {
        let line = run_script(&["start-cluster".to_string(), nodes.to_string()], &[])?;
        let mut fields = line.split_whitespace();
        let (Some(bootstrap), Some(dir)) = (fields.next(), fields.next()) else {
            return Err(TestkitError::Broker(format!(
                "unexpected output of start-cluster: {line:?}"
            )));
        };
        let dir = PathBuf::from(dir);
        let mut cluster = KafkaCluster {
            bootstrap: bootstrap.to_string(),
            dir,
            nodes: BTreeMap::new(),
        };
        for id in 1..=nodes as i32 {
            let pid = read_pid(&cluster.node_dir(id))?;
            cluster.nodes.insert(id, Some(pid));
        }
        wait_ready(&cluster.bootstrap, Duration::from_secs(120))?;
        Ok(cluster)
    }

    /// The node ids, 1..=N.
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.keys().copied().collect()
    }

    /// Whether node `id` runs (it was not killed or stopped since its last start).
    pub fn is_running(&self, id: i32) -> bool {
        self.nodes.get(&id).is_some_and(|p| p.is_some())
    }

    /// SIGKILLs node `id` (no controlled shutdown: its leaderships move once the
    /// controller fences it); a no-op when it is not running.
    pub fn kill(&mut self, id: i32) {
        if let Some(pid) = self.nodes.get_mut(&id).and_then(Option::take) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            // Reap-free wait: the process is gone once /proc no longer has it.
            let gone = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < gone {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops node `id` gracefully (SIGTERM: a controlled shutdown that moves its
    /// leaderships first), waiting until it has exited; a no-op when it is not running.
    pub fn stop(&mut self, id: i32) {
        if let Some(pid) = self.nodes.get_mut(&id).and_then(Option::take) {
            stop_pid(pid);
        }
    }

    /// Starts node `id` again with its ports and data, waiting until it has started.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    ///
    /// # Panics
    /// When `id` is not a node of the cluster or still runs.
    pub fn start_node(&mut self, id: i32) -> Result<(), TestkitError> {
        assert!(self.nodes.contains_key(&id), "no node {id}");
        assert!(!self.is_running(id), "node {id} runs: stop it first");
        let dir = self.node_dir(id);
        run_script(&["start".to_string(), dir.display().to_string()], &[])?;
        self.nodes.insert(id, Some(read_pid(&dir)?));
        Ok(())
    }

    /// Starts every node that is not running (a test's clean-up).
    ///
    /// # Errors
    /// As [`start_node`](Self::start_node).
    pub fn start_all(&mut self) -> Result<(), TestkitError> {
        for id in self.node_ids() {
            if !self.is_running(id) {
                self.start_node(id)?;
            }
        }
        Ok(())
    }

    /// The leader node of each partition of `topic` (partition → node id; -1 while a
    /// partition has none), from a metadata request.
    ///
    /// # Errors
    /// [`TestkitError::Kafka`] when no node answers within 10 s;
    /// [`TestkitError::Timeout`] when the topic is unknown.
    pub fn leaders(&self, topic: &str) -> Result<BTreeMap<i32, i32>, TestkitError> {
        Ok(self
            .partitions(topic)?
            .into_iter()
            .map(|(p, (leader, _))| (p, leader))
            .collect())
    }

    /// The node that leads the most partitions of `topic` (the lowest id on a tie).
    ///
    /// # Errors
    /// As [`leaders`](Self::leaders).
    pub fn busiest_leader(&self, topic: &str) -> Result<i32, TestkitError> {
        let mut count: BTreeMap<i32, usize> = BTreeMap::new();
        for leader in self.leaders(topic)?.into_values().filter(|l| *l >= 0) {
            *count.entry(leader).or_default() += 1;
        }
        let most = count.values().copied().max().unwrap_or(0);
        count
            .into_iter()
            .find(|(_, n)| *n == most)
            .map(|(id, _)| id)
            .ok_or_else(|| TestkitError::Timeout(format!("no partition of {topic} has a leader")))
    }

    /// The node coordinating consumer group `group`: the leader of its
    /// `__consumer_offsets` partition, `abs(group.hashCode()) % partitions` as Kafka's
    /// group coordinator computes it (`GroupCoordinatorService#topicPartitionFor`).
    ///
    /// # Errors
    /// As [`leaders`](Self::leaders) (before the group's first commit the topic may
    /// not exist yet).
    pub fn group_coordinator(&self, group: &str) -> Result<i32, TestkitError> {
        let partition = java_hash_abs(group) % INTERNAL_PARTITIONS;
        Ok(self.leaders("__consumer_offsets")?[&partition])
    }

    /// The node coordinating transactional id `id`: the leader of its
    /// `__transaction_state` partition (the same hash as
    /// [`group_coordinator`](Self::group_coordinator), `TransactionStateManager#partitionFor`).
    ///
    /// # Errors
    /// As [`leaders`](Self::leaders) (before the first transaction the topic may not
    /// exist yet).
    pub fn transaction_coordinator(&self, id: &str) -> Result<i32, TestkitError> {
        let partition = java_hash_abs(id) % INTERNAL_PARTITIONS;
        Ok(self.leaders("__transaction_state")?[&partition])
    }

    /// Waits until every partition of each of `topics` (of every topic when `topics`
    /// is empty) has a leader and all its replicas in its in-sync replica set (what a
    /// rolling restart waits for between nodes: no under-replicated partition).
    ///
    /// # Errors
    /// [`TestkitError::Timeout`] when that does not happen within `limit`.
    pub fn wait_in_sync(&self, topics: &[&str], limit: Duration) -> Result<(), TestkitError> {
        let deadline = Instant::now() + limit;
        let want = self.nodes.len().min(3);
        loop {
            // (topic, partition, leader, in-sync replicas) of each partition not in sync.
            let mut behind = Vec::new();
            let all;
            let topics = if topics.is_empty() {
                all = self.topic_names()?;
                all.iter().map(String::as_str).collect::<Vec<_>>()
            } else {
                topics.to_vec()
            };
            for topic in topics {
                match self.partitions(topic) {
                    Ok(parts) => behind.extend(
                        parts
                            .into_iter()
                            .filter(|(_, (l, isr))| *l < 0 || isr.len() < want)
                            .map(|(p, (l, isr))| format!("{topic}:{p} leader {l} isr {isr:?}")),
                    ),
                    Err(e) => behind.push(e.to_string()),
                }
            }
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::Timeout(format!(
                    "partitions not fully in sync within {limit:?}: {behind:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Partition → (leader, in-sync replicas) of `topic`.
    fn partitions(&self, topic: &str) -> Result<BTreeMap<i32, (i32, Vec<i32>)>, TestkitError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .map_err(TestkitError::kafka("metadata client"))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(TestkitError::kafka(format!("metadata of {topic}")))?;
        let t = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| TestkitError::Timeout(format!("topic {topic} unknown")))?;
        Ok(t.partitions()
            .iter()
            .map(|p| (p.id(), (p.leader(), p.isr().to_vec())))
            .collect())
    }

    /// Every topic's name (internal ones included).
    fn topic_names(&self) -> Result<Vec<String>, TestkitError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .map_err(TestkitError::kafka("metadata client"))?;
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(TestkitError::kafka("metadata"))?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .collect())
    }

    fn node_dir(&self, id: i32) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }
}

/// `Utils.abs(s.hashCode())` of Java for `s` (UTF-16 code units, wrapping `i32`).
fn java_hash_abs(s: &str) -> i32 {
    let h = s
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    if h == i32::MIN {
        0
    } else {
        h.abs()
    }
}

fn read_pid(dir: &Path) -> Result<u32, TestkitError> {
    std::fs::read_to_string(dir.join("pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| TestkitError::Broker(format!("no pid in {}", dir.display())))
}

impl Broker for KafkaCluster {
    fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for pid in self.nodes.values_mut().filter_map(Option::take) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        for id in self.node_ids() {
            if let Ok(pid) = read_pid(&self.node_dir(id)) {
                let gone = Instant::now() + Duration::from_secs(30);
                while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < gone {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::java_hash_abs;

    #[test]
    fn hashes_as_java_does() {
        // "hello".hashCode() == 99162322 and "polygenelubricants".hashCode() ==
        // Integer.MIN_VALUE (Utils.abs maps it to 0).
        assert_eq!(java_hash_abs("hello"), 99_162_322);
        assert_eq!(java_hash_abs("polygenelubricants"), 0);
        assert_eq!(java_hash_abs(""), 0);
    }
}
