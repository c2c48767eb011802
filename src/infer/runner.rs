//! A [`FlowStream`] driven the way a live monitor drives it: frames in as they
//! arrive, verdicts out in batches of `batch` flows, or sooner once the oldest
//! ready flow has waited `max_wait` (a quiet link still gets prompt verdicts),
//! with each verdict's latency kept. Shared by `tmoe classify --stream` and
//! `tmoe bench classify`.

use std::time::Duration;

use anyhow::Result;

use super::latency::VerdictClock;
use super::stream::{FlowStream, Verdict};
use crate::traffic::capture::decode::SkipReason;

/// Longest a ready flow waits for its batch to fill, by default.
pub const MAX_WAIT: Duration = Duration::from_millis(20);

pub struct StreamRunner {
    pub stream: FlowStream,
    pub clock: VerdictClock,
    pub batch: usize,
    pub max_wait: Duration,
}

impl StreamRunner {
    pub fn new(stream: FlowStream, batch: usize) -> StreamRunner {
        StreamRunner {
            stream,
            clock: VerdictClock::default(),
            batch: batch.max(1),
            max_wait: MAX_WAIT,
        }
    }

    /// Adds one frame (see [`FlowStream::feed`]).
    pub fn feed(
        &mut self,
        ts_ns: u64,
        link_type: u32,
        frame: &[u8],
        orig_len: u32,
    ) -> Result<(), SkipReason> {
        let before = self.stream.pending();
        let r = self.stream.feed(ts_ns, link_type, frame, orig_len);
        self.clock.queued(before, self.stream.pending());
        r
    }

    /// Ends every open flow (end of input).
    pub fn flush(&mut self) {
        let before = self.stream.pending();
        self.stream.flush();
        self.clock.queued(before, self.stream.pending());
    }

    /// Classifies what is due: full batches, and everything waiting when
    /// `all` or when the oldest ready flow has waited `max_wait`. Calls
    /// `on_batch` with each batch's verdicts.
    pub fn classify_due(
        &mut self,
        all: bool,
        on_batch: &mut dyn FnMut(&FlowStream, &[Verdict]) -> Result<()>,
    ) -> Result<()> {
        let overdue = self.clock.oldest_wait().is_some_and(|w| w >= self.max_wait);
        while self.stream.pending() >= self.batch || ((all || overdue) && self.stream.pending() > 0)
        {
            let verdicts = self.stream.classify_pending(self.batch)?;
            self.clock.classified(verdicts.len());
            on_batch(&self.stream, &verdicts)?;
        }
        Ok(())
    }
}
