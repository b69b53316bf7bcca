//! Processors the tests share.

use std::time::Duration;

use tidemark::{Outputs, ProcessResult, Processor, Record};

/// A slow call: sleeps this long in every record, then succeeds with no output.
pub struct Sleepy(pub Duration);

impl Processor for Sleepy {
    fn process(&self, _: &Record) -> ProcessResult {
        std::thread::sleep(self.0);
        Ok(Outputs::none())
    }
}
