//! Verdict latency of a [`FlowStream`](super::stream::FlowStream): wall time
//! from the moment a flow is ready to classify (its K-th packet with early
//! verdicts on, else its end) to the moment its verdict comes out. The stream
//! queues ready flows oldest first and classifies them in that order, so a
//! clock per queued flow, kept beside the stream in the same order, is enough.

use std::collections::VecDeque;
use std::time::Instant;

#[derive(Default)]
pub struct VerdictClock {
    ready: VecDeque<Instant>,
    /// Seconds from ready to verdict, one per verdict.
    pub latencies: Vec<f64>,
}

impl VerdictClock {
    /// Call after every `feed`/`flush` with the stream's `pending()` before
    /// and after it: flows that joined the queue are ready now.
    pub fn queued(&mut self, pending_before: usize, pending_after: usize) {
        if pending_after > pending_before {
            let now = Instant::now();
            self.ready
                .extend(std::iter::repeat_n(now, pending_after - pending_before));
        }
    }

    /// Call when `n` verdicts (the oldest queued flows) came out.
    pub fn classified(&mut self, n: usize) {
        let now = Instant::now();
        for t in self.ready.drain(..n.min(self.ready.len())) {
            self.latencies.push((now - t).as_secs_f64());
        }
    }

    /// How long the oldest flow still waiting has waited.
    pub fn oldest_wait(&self) -> Option<std::time::Duration> {
        self.ready.front().map(Instant::elapsed)
    }

    /// The `p`-quantile (0..=1) of the latencies in seconds, None before the
    /// first verdict.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        quantile(&self.latencies, p)
    }
}

/// Nearest-rank quantile of unsorted `v`.
pub fn quantile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((s.len() as f64 * p.clamp(0.0, 1.0)).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn verdicts_pair_with_the_oldest_ready_flows() {
        let mut c = VerdictClock::default();
        c.queued(0, 3);
        c.queued(3, 3); // nothing new
        c.classified(2);
        assert_eq!(c.latencies.len(), 2);
        c.classified(5); // only one was left
        assert_eq!(c.latencies.len(), 3);
        assert!(c.latencies.iter().all(|&s| (0.0..1.0).contains(&s)));
    }
}
