//! The C API's lifecycle in a long-running monitor: handles opened and
//! closed again and again (on the caller's thread and with TMOE_BACKGROUND,
//! closed with verdicts never polled and while the model thread is busy)
//! leave no thread, file descriptor or heap byte behind. One test in its
//! own binary: the counts are the process's, which other tests running
//! beside it would change.

mod tiny_train;

use std::ffi::{CStr, CString, c_char};

use tiny_train::classifier::one_epoch_classifier;
use traffic_moe::capi::*;

#[global_allocator]
static HEAP: traffic_moe::heap::Counting = traffic_moe::heap::Counting;

fn last_error() -> String {
    // SAFETY: tmoe_last_error returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(tmoe_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

fn heap() -> usize {
    traffic_moe::heap::stats().expect("Counting installed").0
}

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

/// One handle's life: open, `flows` 3-packet flows, then `end`.
#[derive(Clone, Copy, Debug)]
enum End {
    /// Flushed and every verdict polled.
    Polled,
    /// Flushed, verdicts never polled.
    Unpolled,
    /// Every flow ended by `tmoe_advance` (which hands the model thread
    /// its full batches without waiting) and closed at once: the model
    /// thread is still classifying, or has batches queued.
    Busy,
}

fn cycle(ckpt: &CString, data: &CString, flags: u32, flows: u16, end: End) {
    // SAFETY: valid strings; one thread; the handle closed once.
    unsafe {
        let h = tmoe_open(
            ckpt.as_ptr(),
            data.as_ptr(),
            std::ptr::null::<c_char>(),
            std::ptr::null(),
            0,
            flags,
        );
        assert!(!h.is_null(), "{}", last_error());
        let mut ts = 1_000;
        for port in 1000..1000 + flows {
            for k in 0..3 {
                let fr = udp_frame(port, k);
                let n = fr.len() as u32;
                assert_eq!(tmoe_feed(h, ts, 1, fr.as_ptr(), n, n), 1);
                ts += 1_000;
            }
        }
        match end {
            End::Polled => {
                assert_eq!(tmoe_flush(h), 0, "{}", last_error());
                let mut v = vec![TmoeVerdict::default(); flows as usize];
                let n = tmoe_poll(h, v.as_mut_ptr(), flows as u64);
                assert_eq!(n, flows as i64, "{}", last_error());
            }
            End::Unpolled => assert_eq!(tmoe_flush(h), 0, "{}", last_error()),
            End::Busy => assert_eq!(tmoe_advance(h, ts + 1_000_000_000_000), 0),
        }
        tmoe_close(h);
    }
}

#[test]
fn open_and_close_leave_nothing_behind() {
    traffic_moe::heap::mark_installed();
    // A tiny classifier, trained for one epoch: what it says is not checked.
    let dir = tempfile::tempdir().unwrap();
    let (data, ckpt) = one_epoch_classifier(dir.path(), |o| o);
    let ckpt = CString::new(ckpt.to_str().unwrap()).unwrap();
    let data = CString::new(data.to_str().unwrap()).unwrap();
    let all = |rounds: usize| {
        for _ in 0..rounds {
            for flags in [0, TMOE_BACKGROUND] {
                for end in [End::Polled, End::Unpolled, End::Busy] {
                    // Busy needs a full batch (64 flows on the CPU).
                    let flows = if matches!(end, End::Busy) { 70 } else { 20 };
                    cycle(&ckpt, &data, flags, flows, end);
                }
            }
        }
    };
    // Once first: rayon's pool, the engines' kept buffers and tables.
    all(1);
    let (threads, fds, bytes) = (count("/proc/self/task"), count("/proc/self/fd"), heap());
    all(2);
    let after = (count("/proc/self/task"), count("/proc/self/fd"), heap());
    assert_eq!(
        (after.0, after.1),
        (threads, fds),
        "threads and descriptors"
    );
    // The heap: what 2 x 6 handles of classifiers and flow tables would
    // hold if one leaked is far above this.
    assert!(
        after.2 <= bytes + (256 << 10),
        "{} bytes held after 12 more handles (from {bytes})",
        after.2
    );
}
