//! The C API in a multi-threaded monitor: several handles open at once, each
//! fed from its own thread (one per capture interface), on every CPU-side
//! engine and with or without `TMOE_BACKGROUND`, give the verdicts a single
//! thread gives; a handle moved between threads (opened on one, fed on
//! another, closed on a third) works; `tmoe_last_error` belongs to the
//! thread whose call failed; a handle that fails leaves the others working.

mod tiny_train;

use std::ffi::{CStr, CString, c_char};
use std::thread;

use tiny_train::classifier::one_epoch_classifier;
use traffic_moe::capi::*;
use traffic_moe::model::ModelConfig;
use traffic_moe::train::finetune::FinetuneOpts;

/// A raw handle handed from one thread to the next (the header lets a
/// handle move between threads as long as no two calls overlap).
struct Handle(*mut TmoeClassifier);
// SAFETY: each test uses a handle from one thread at a time (the moves are
// joins, which order the calls).
unsafe impl Send for Handle {}

struct Model {
    _dir: tempfile::TempDir,
    ckpt: CString,
    data: CString,
}

/// A tiny classifier whose heads are `head_dim` wide: the simulated GPU
/// engine's attention takes 32 (one head of d 32) and refuses 16 (two).
fn model(heads: usize) -> Model {
    let dir = tempfile::tempdir().unwrap();
    let (data, ckpt) = one_epoch_classifier(dir.path(), |o| FinetuneOpts {
        cfg: ModelConfig { heads, ..o.cfg },
        batch: 16,
        ..o
    });
    let c = |p: &std::path::Path| CString::new(p.to_str().unwrap()).unwrap();
    Model {
        ckpt: c(&ckpt),
        data: c(&data),
        _dir: dir,
    }
}

fn last_error() -> String {
    // SAFETY: tmoe_last_error returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(tmoe_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn open(m: &Model, device: &str, flags: u32) -> Handle {
    let device = CString::new(device).unwrap();
    // SAFETY: valid strings.
    let h = unsafe {
        tmoe_open(
            m.ckpt.as_ptr(),
            m.data.as_ptr(),
            std::ptr::null::<c_char>(),
            device.as_ptr(),
            0,
            flags,
        )
    };
    assert!(!h.is_null(), "{}", last_error());
    Handle(h)
}

/// The `k`-th packet of the 3-packet UDP flow of client port `port` seen on
/// interface `iface` (its own addresses).
fn udp_frame(iface: u8, port: u16, k: u64) -> Vec<u8> {
    use traffic_moe::traffic::capture::pcap_writer::{eth_ipv4, udp};
    eth_ipv4(
        [10, iface, 0, 1].into(),
        [10, iface, 0, 2].into(),
        traffic_moe::traffic::types::PROTO_UDP,
        &udp(port, 53, format!("q{iface}.{port}.{k}").as_bytes()),
    )
}

/// Feeds `flows` 3-packet flows of interface `iface` one after another.
fn feed(h: &Handle, iface: u8, flows: u16) {
    let mut ts = 1_000;
    for port in 1000..1000 + flows {
        for k in 0..3 {
            let fr = udp_frame(iface, port, k);
            // SAFETY: a live handle, used by this thread only.
            let r = unsafe { tmoe_feed(h.0, ts, 1, fr.as_ptr(), fr.len() as u32, fr.len() as u32) };
            assert_eq!(r, 1, "{}", last_error());
            ts += 1_000;
        }
    }
}

/// Ends every flow and takes every verdict, by client port.
fn drain(h: &Handle) -> Vec<(u16, u64, u32, f32)> {
    // SAFETY: a live handle, used by this thread only; room for 64 verdicts.
    unsafe {
        assert_eq!(tmoe_flush(h.0), 0, "{}", last_error());
        let mut got = Vec::new();
        let mut v = [TmoeVerdict::default(); 64];
        loop {
            let n = tmoe_poll(h.0, v.as_mut_ptr(), 64);
            assert!(n >= 0, "{}", last_error());
            if n == 0 {
                break;
            }
            got.extend(
                v[..n as usize]
                    .iter()
                    .map(|v| (v.src_port, v.packets, v.class_id, v.probability)),
            );
        }
        got.sort_by_key(|v| v.0);
        got
    }
}

fn close(h: Handle) {
    // SAFETY: a live handle, closed once, after every other call on it.
    unsafe { tmoe_close(h.0) };
}

/// One interface's whole run on one handle.
fn classify(
    m: &Model,
    device: &str,
    flags: u32,
    iface: u8,
    flows: u16,
) -> Vec<(u16, u64, u32, f32)> {
    let h = open(m, device, flags);
    feed(&h, iface, flows);
    let got = drain(&h);
    close(h);
    got
}

/// Verdicts of one run against another: the same flows and classes; the
/// same probability bits on the caller's thread (the same batches), within
/// 1e-5 in the background (batches follow the model thread's timing).
fn assert_same(got: &[(u16, u64, u32, f32)], want: &[(u16, u64, u32, f32)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1, g.2), (w.0, w.1, w.2), "{what}");
        if what.contains("background") {
            assert!((g.3 - w.3).abs() < 1e-5, "{what}: {g:?} {w:?}");
        } else {
            assert_eq!(g.3.to_bits(), w.3.to_bits(), "{what}: {g:?} {w:?}");
        }
    }
}

/// Two interfaces, each on its own handle and thread at the same time, on
/// "cpu", "cpu-bf16" and "sim", with and without TMOE_BACKGROUND: every
/// flow gets the verdict it gets when that interface runs alone.
#[test]
fn concurrent_handles_give_the_single_threaded_verdicts() {
    let m = model(1);
    let runs: Vec<(&str, u32, u16)> = [("cpu", 16), ("cpu-bf16", 16), ("sim", 2)]
        .into_iter()
        .flat_map(|(d, n)| [(d, 0, n), (d, TMOE_BACKGROUND, n)])
        .collect();
    let ifaces = 2u8;
    let want: Vec<Vec<_>> = runs
        .iter()
        .flat_map(|&(d, fl, n)| (0..ifaces).map(move |i| (d, fl, i, n)))
        .map(|(d, fl, i, n)| classify(&m, d, fl, i, n))
        .collect();
    // Every run at once: 12 handles, 12 threads.
    let got: Vec<Vec<_>> = thread::scope(|s| {
        let m = &m;
        let threads: Vec<_> = runs
            .iter()
            .flat_map(|&(d, fl, n)| (0..ifaces).map(move |i| (d, fl, i, n)))
            .map(|(d, fl, i, n)| s.spawn(move || classify(m, d, fl, i, n)))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut k = 0;
    for &(d, fl, n) in &runs {
        for i in 0..ifaces {
            let what = format!(
                "{d}{} interface {i}",
                if fl == TMOE_BACKGROUND {
                    " background"
                } else {
                    ""
                }
            );
            assert_eq!(want[k].len(), n as usize, "{what}");
            assert_same(&got[k], &want[k], &what);
            k += 1;
        }
    }
}

/// A handle opened on one thread, fed on a second, flushed and polled on a
/// third and closed on a fourth gives the verdicts of one thread.
#[test]
fn a_handle_moves_between_threads() {
    let m = model(2);
    for flags in [0, TMOE_BACKGROUND, TMOE_BACKGROUND | TMOE_EARLY_VERDICTS] {
        let what = format!("flags {flags}");
        let want = classify(&m, "cpu", flags, 0, 20);
        let h = thread::scope(|s| s.spawn(|| open(&m, "cpu", flags)).join().unwrap());
        let h = thread::spawn(move || {
            feed(&h, 0, 20);
            h
        })
        .join()
        .unwrap();
        let (h, got) = thread::spawn(move || {
            let got = drain(&h);
            (h, got)
        })
        .join()
        .unwrap();
        thread::spawn(move || close(h)).join().unwrap();
        assert_same(&got, &want, &what);
    }
}

/// `tmoe_last_error` is the last failure of the calling thread: another
/// thread's failure neither shows up nor overwrites it.
#[test]
fn last_error_belongs_to_the_thread_that_failed() {
    let m = model(2);
    let h = open(&m, "cpu", 0);
    // SAFETY: a live handle; class id 7 is out of range (2 classes).
    assert!(unsafe { tmoe_class_name(h.0, 7) }.is_null());
    let mine = last_error();
    assert!(mine.contains("class id 7 out of range"), "{mine}");
    let other = thread::spawn(|| {
        let fresh = last_error();
        // SAFETY: a NULL handle is refused.
        assert_eq!(unsafe { tmoe_flush(std::ptr::null_mut()) }, -1);
        (fresh, last_error())
    })
    .join()
    .unwrap();
    assert_eq!(other.0, "", "a new thread has no error");
    assert!(other.1.contains("NULL classifier handle"), "{}", other.1);
    assert_eq!(
        last_error(),
        mine,
        "another thread's failure replaced this one's"
    );
    close(h);
}

/// A handle whose model calls fail (the simulated GPU engine refuses the
/// head width 16 of a two-headed d 32 model) fails on its own thread, with
/// its own message, while handles on other threads classify every flow.
#[test]
fn a_failing_handle_leaves_the_others_working() {
    let m = model(2);
    let want = classify(&m, "cpu", 0, 1, 30);
    thread::scope(|s| {
        let m = &m;
        let failing: Vec<_> = [0, TMOE_BACKGROUND]
            .into_iter()
            .map(|flags| {
                s.spawn(move || {
                    let h = open(m, "sim", flags);
                    feed(&h, 0, 3);
                    // SAFETY: a live handle used by this thread only.
                    let flushed = unsafe { tmoe_flush(h.0) };
                    let mut v = [TmoeVerdict::default(); 4];
                    // SAFETY: as above, room for 4 verdicts.
                    let n = unsafe { tmoe_poll(h.0, v.as_mut_ptr(), 4) };
                    let e = last_error();
                    close(h);
                    (flushed, n, e)
                })
            })
            .collect();
        let working: Vec<_> = (0..3)
            .map(|_| s.spawn(move || classify(m, "cpu", 0, 1, 30)))
            .collect();
        for t in failing {
            let (flushed, n, e) = t.join().unwrap();
            assert_eq!((flushed, n), (0, -1), "{e}");
            assert!(e.contains("attention_fwd"), "{e}");
        }
        for t in working {
            assert_same(&t.join().unwrap(), &want, "cpu beside a failing sim handle");
        }
    });
    // And the library goes on: a new handle on the same engine classifies.
    assert_same(&classify(&m, "cpu", 0, 1, 30), &want, "cpu afterwards");
}
