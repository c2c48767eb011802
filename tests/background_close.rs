//! Closing a stream whose model runs on a thread of its own (the C API's
//! `TMOE_BACKGROUND`, whose `tmoe_close` drops it): the batch the model
//! thread is classifying finishes, the batches queued behind it are dropped
//! unclassified, since nobody is left to poll their verdicts. Counted, not
//! timed: [`Closed`] says how many flows the worker had when close began
//! and how many of them it dropped.

mod tiny_train;

use std::path::Path;
use std::time::Duration;

use tiny_train::classifier::one_epoch_classifier;
use traffic_moe::engine::Device;
use traffic_moe::infer::background::{BackgroundStream, Closed};
use traffic_moe::infer::classifier::{Classifier, VocabSource};
use traffic_moe::infer::flow_feed::StreamLimits;

/// Flows per model call: big enough that classifying one takes the model
/// thread longer than handing it the next.
const BATCH: usize = 256;

/// A UDP frame of client port `port`, packet `k`.
fn udp_frame(port: u16, k: u64) -> Vec<u8> {
    use traffic_moe::traffic::capture::pcap_writer::{eth_ipv4, udp};
    eth_ipv4(
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        traffic_moe::traffic::types::PROTO_UDP,
        &udp(port, 53, format!("q{port}.{k}").as_bytes()),
    )
}

/// One stream: 4 batches of flows ended at once, closed as soon as the
/// worker holds a batch and one queued behind it (or has run dry).
fn close_busy(ckpt: &Path, data: &Path) -> Closed {
    let (ckpt, data) = (ckpt.to_path_buf(), data.to_path_buf());
    let open = move || Classifier::open(&ckpt, VocabSource::Dataset(&data), None, Device::Cpu);
    // No partial batches: only full ones go to the worker.
    let wait = Duration::from_secs(3600);
    let mut s =
        BackgroundStream::start(open, None, false, StreamLimits::default(), |_| BATCH, wait)
            .unwrap();
    let mut ts = 1_000;
    for port in 1000..1000 + 4 * BATCH as u16 {
        for k in 0..3 {
            let fr = udp_frame(port, k);
            s.feed(ts, 1, &fr, fr.len() as u32).unwrap();
            ts += 1_000;
        }
    }
    // Ends every flow (idle) and hands the worker what fits.
    s.advance(ts + 1_000_000_000_000).unwrap();
    for _ in 0..100_000 {
        if s.in_model() > BATCH || s.in_model() == 0 {
            break;
        }
        // Hands over the next batch once the worker took the first.
        s.poll(0).unwrap();
        std::thread::yield_now();
    }
    s.close()
}

#[test]
fn close_drops_the_batches_queued_behind_the_one_in_progress() {
    // A tiny classifier, trained for one epoch: what it says is not checked.
    let dir = tempfile::tempdir().unwrap();
    let (data, ckpt) = one_epoch_classifier(dir.path(), |o| o);
    let mut queued = 0;
    for _ in 0..5 {
        let c = close_busy(&ckpt, &data);
        // Before, the worker classified every batch it had been handed
        // (finished == handed, up to 2 batches) for verdicts nobody read.
        assert!(
            c.finished() <= BATCH,
            "after close the model classified {} flows, more than the batch in progress ({BATCH}): {c:?}",
            c.finished()
        );
        assert_eq!(c.finished() % BATCH, 0, "{c:?}");
        queued += usize::from(c.handed > BATCH);
    }
    // Otherwise the rounds showed nothing: no batch waited to be dropped.
    assert!(
        queued > 0,
        "no close found a batch queued behind the one in progress"
    );
}
