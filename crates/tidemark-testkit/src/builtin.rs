//! The built-in processors `tidemark run --processor` and `tidemark bench` name:
//! `noop`, `sha256:ROUNDS`, `sleep:MICROS`, `io:MICROS` (async), `json`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use tidemark::{Outputs, ProcessError, ProcessResult, Processor, Record};

/// Which processor `tidemark run` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Passes the payload through unchanged.
    Noop,
    /// Chains SHA-256 over the payload ROUNDS times; outputs the hex digest.
    Sha256 { rounds: u32 },
    /// Blocks its worker thread for MICROS µs (`std::thread::sleep`: blocking IO
    /// simulated), then passes the payload through like `noop`.
    Sleep { micros: u64 },
    /// An async processor ([`IoProcessor`]): awaits a timer of MICROS µs (IO
    /// simulated, no thread blocked), then passes the payload through like `noop`.
    Io { micros: u64 },
    /// Parses the payload as a JSON object; a malformed one is a permanent failure;
    /// outputs it compacted with `"bytes"` (payload length) added.
    Json,
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "noop" => Ok(Kind::Noop),
            "json" => Ok(Kind::Json),
            _ => {
                if let Some(r) = s.strip_prefix("sha256:") {
                    r.parse::<u32>()
                        .ok()
                        .filter(|r| *r > 0)
                        .map(|rounds| Kind::Sha256 { rounds })
                        .ok_or_else(|| format!("sha256:ROUNDS needs a positive integer, got {r:?}"))
                } else if let Some(m) = s.strip_prefix("sleep:") {
                    m.parse::<u64>()
                        .map(|micros| Kind::Sleep { micros })
                        .map_err(|_| format!("sleep:MICROS needs an integer ≥ 0, got {m:?}"))
                } else if let Some(m) = s.strip_prefix("io:") {
                    m.parse::<u64>()
                        .map(|micros| Kind::Io { micros })
                        .map_err(|_| format!("io:MICROS needs an integer ≥ 0, got {m:?}"))
                } else {
                    Err(format!(
                        "unknown processor {s:?}: expected noop, sha256:ROUNDS, sleep:MICROS, io:MICROS or json"
                    ))
                }
            }
        }
    }
}

/// The CLI's processor.
pub struct CliProcessor {
    kind: Kind,
    /// Test-only (`--test-flaky K:N`): records at offsets divisible by K fail
    /// retriably on their first N attempts in this process.
    flaky: Option<(u64, u64)>,
    attempts: Mutex<HashMap<(i32, i64), u64>>,
    /// Test-only (`--test-hold P:O`): the record at (partition, offset) fails
    /// retriably for as long as this process lives.
    hold: Option<(i32, i64)>,
    /// Test-only (`--test-sleep P:O`): processing the record at (partition, offset)
    /// sleeps for as long as this process lives (a slow call, not a failure).
    sleep: Option<(i32, i64)>,
    /// Whether each record's output is returned (default): off where no sink takes
    /// outputs, so the work is done and no output is built only to be dropped.
    outputs: bool,
}

impl CliProcessor {
    pub fn new(kind: Kind, flaky: Option<(u64, u64)>) -> Self {
        CliProcessor {
            kind,
            flaky,
            attempts: Mutex::default(),
            hold: None,
            sleep: None,
            outputs: true,
        }
    }

    /// Returns each record's output (`true`, the default) or none (`false`: no sink
    /// takes outputs; the work itself still runs).
    pub fn with_outputs(mut self, outputs: bool) -> Self {
        self.outputs = outputs;
        self
    }

    /// Holds the record at `hold` (partition, offset) forever (tests).
    pub fn with_test_hold(mut self, hold: Option<(i32, i64)>) -> Self {
        self.hold = hold;
        self
    }
}

impl CliProcessor {
    /// Sleeps forever in the record at `sleep` (partition, offset) (tests).
    pub fn with_test_sleep(mut self, sleep: Option<(i32, i64)>) -> Self {
        self.sleep = sleep;
        self
    }
}

impl Processor for CliProcessor {
    fn process(&self, record: &Record) -> ProcessResult {
        if self.sleep == Some((record.partition, record.offset)) {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        if self.hold == Some((record.partition, record.offset)) {
            return Err(ProcessError::retriable("test-hold"));
        }
        if let Some((every, times)) = self.flaky {
            if every > 0 && record.offset as u64 % every == 0 {
                let mut attempts = self.attempts.lock().expect("not poisoned");
                let n = attempts
                    .entry((record.partition, record.offset))
                    .or_default();
                *n += 1;
                if *n <= times {
                    return Err(ProcessError::retriable(format!("test-flaky attempt {n}")));
                }
            }
        }
        match (self.kind, self.outputs) {
            (Kind::Noop, false) => Ok(Outputs::none()),
            // The input's key and payload passed on without a copy (`Bytes` clones).
            (Kind::Noop, true) => Ok(Outputs::one(
                record.key.clone(),
                record.payload.clone().unwrap_or_default(),
            )),
            (kind, outputs) => {
                let payload = record.payload.as_deref().unwrap_or_default();
                let output = transform(kind, payload)?;
                Ok(match outputs {
                    true => Outputs::one(record.key.clone(), output),
                    false => {
                        std::hint::black_box(output);
                        Outputs::none()
                    }
                })
            }
        }
    }
}

/// What a built-in processor of `kind` makes of `payload` (the output's payload),
/// for the benchmark's hand-written loops to run the same work.
///
/// # Errors
/// A permanent [`ProcessError`] for a malformed payload ([`Kind::Json`]).
pub fn transform(kind: Kind, payload: &[u8]) -> Result<Vec<u8>, ProcessError> {
    {
        let out = match kind {
            Kind::Noop | Kind::Io { .. } => payload.to_vec(),
            Kind::Sleep { micros } => {
                std::thread::sleep(std::time::Duration::from_micros(micros));
                payload.to_vec()
            }
            Kind::Sha256 { rounds } => hex::encode(sha256_chain(payload, rounds)).into_bytes(),
            Kind::Json => {
                let mut value: serde_json::Value = serde_json::from_slice(payload)
                    .map_err(|e| ProcessError::permanent(format!("malformed JSON: {e}")))?;
                let obj = value
                    .as_object_mut()
                    .ok_or_else(|| ProcessError::permanent("JSON payload is not an object"))?;
                obj.insert("bytes".into(), payload.len().into());
                serde_json::to_vec(&value).expect("a JSON value serializes")
            }
        };
        Ok(out)
    }
}

/// `io:MICROS`: an async processor that awaits a tokio timer of `micros` µs per
/// record (simulated IO: no thread waits), then outputs the payload unchanged.
pub struct IoProcessor {
    pub micros: u64,
}

impl tidemark::AsyncProcessor for IoProcessor {
    async fn process(&self, record: &Record) -> ProcessResult {
        if self.micros > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(self.micros)).await;
        }
        let payload = record.payload.as_deref().unwrap_or_default().to_vec();
        Ok(Outputs::one(record.key.clone(), payload))
    }
}

/// SHA-256 applied `rounds` times: h1 = sha256(data), h(n+1) = sha256(hn).
pub fn sha256_chain(data: &[u8], rounds: u32) -> [u8; 32] {
    let mut digest: [u8; 32] = Sha256::digest(data).into();
    for _ in 1..rounds {
        digest = Sha256::digest(digest).into();
    }
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds() {
        assert_eq!("noop".parse::<Kind>(), Ok(Kind::Noop));
        assert_eq!("sha256:3".parse::<Kind>(), Ok(Kind::Sha256 { rounds: 3 }));
        assert!("sha256:0".parse::<Kind>().is_err());
        assert_eq!(
            "sleep:1000".parse::<Kind>(),
            Ok(Kind::Sleep { micros: 1000 })
        );
        assert!("sleep:-1".parse::<Kind>().is_err());
        assert_eq!("io:100".parse::<Kind>(), Ok(Kind::Io { micros: 100 }));
        assert!("io:x".parse::<Kind>().is_err());
        assert!("md5".parse::<Kind>().is_err());
    }

    #[test]
    fn sha256_chain_chains() {
        let once = sha256_chain(b"x", 1);
        assert_eq!(
            sha256_chain(b"x", 2),
            <[u8; 32]>::from(Sha256::digest(once))
        );
    }

    #[test]
    fn json_rejects_malformed_records() {
        let rec =
            |p: &[u8]| Record::new("t", 0, 0).with_payload(tidemark::Bytes::copy_from_slice(p));
        let p = CliProcessor::new(Kind::Json, None);
        assert!(p.process(&rec(b"{\"id\":1}")).is_ok());
        let err = p.process(&rec(b"{nope")).unwrap_err();
        assert_eq!(err.kind, tidemark::FailureKind::Permanent);
    }
}
