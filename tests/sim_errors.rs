//! The simulator reports broken kernels (cuda/sim/errors/errors.cu) as errors,
//! never hangs: barrier divergence, deadlock, masks naming absent lanes, traps,
//! unknown kernels, params of the wrong size.

mod kernel_util;
use kernel_util::{Io, launch};
use traffic_moe::backend::gpu::params::RmsNormFwdParams;
use traffic_moe::backend::gpu::{Executor, Launch};

fn expect_err(kernel: &'static str, block: u32, needle: &str) {
    let ex = Executor::sim();
    let io = Io::new(&ex, &[0.0], &[0], 64, 1);
    let err = launch(&ex, kernel, 2, block, 0, io.params(0, 0))
        .expect_err(kernel)
        .to_string();
    assert!(
        err.contains(needle),
        "{kernel}: error {err:?} lacks {needle:?}"
    );
    assert!(
        err.contains(kernel),
        "{kernel}: error {err:?} does not name the kernel"
    );
}

#[test]
fn divergent_barrier_is_reported() {
    expect_err("simt_err_divergent_barrier", 32, "barrier divergence");
}

#[test]
fn deadlock_is_reported() {
    expect_err("simt_err_deadlock", 32, "deadlock");
}

#[test]
fn full_mask_in_partial_warp_is_reported() {
    expect_err("simt_err_partial_warp", 48, "do not exist");
}

#[test]
fn trap_is_reported() {
    expect_err("simt_err_trap", 32, "__trap");
}

#[test]
fn unknown_kernel_and_wrong_params_are_reported() {
    let ex = Executor::sim();
    let p = RmsNormFwdParams::default();
    let e = ex
        .launch(&Launch::linear("no_such_kernel", 1, 32, p))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown kernel no_such_kernel"), "{e}");
    let e = ex
        .launch(&Launch::linear("simt_barrier", 1, 32, p))
        .unwrap_err()
        .to_string();
    assert!(e.contains("params struct"), "{e}");
    let io = Io::new(&ex, &[0.0], &[0], 1, 1);
    let e = ex
        .launch(&Launch::linear("simt_barrier", 1, 2048, io.params(0, 0)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid launch"), "{e}");
}

#[test]
fn simulator_keeps_working_after_errors() {
    // A failed block abandons its fibers; the next launch must start clean.
    expect_err("simt_err_deadlock", 32, "deadlock");
    let ex = Executor::sim();
    let io = Io::new(
        &ex,
        &(0..64).map(|i| i as f32).collect::<Vec<_>>(),
        &[0],
        64,
        1,
    );
    launch(&ex, "simt_dyn_smem", 1, 64, 256, io.params(0, 0)).unwrap();
    assert_eq!(ex.download(&io.out_f).unwrap()[0], 63.0);
}

/// A missing barrier (thread t reads the slot thread t+1 writes) reads stale
/// shared memory under one of the two thread schedules, so the tests' habit of
/// running both (`testing::executors`) catches it; with the barrier, both agree
/// with the intended result.
#[test]
fn missing_barrier_shows_under_one_schedule() {
    let n = 64usize;
    let want: Vec<f32> = (0..n).map(|t| ((t + 1) % n + 1) as f32).collect();
    // `__shared__` arrays are per OS thread in the simulator and keep their
    // contents between launches (as on a GPU, nothing clears them): run each
    // launch on a fresh thread so that a stale read sees zeros, not the values
    // a previous, correct launch left.
    let run = |ex: &Executor, mode: i32| -> Vec<f32> {
        let ex = ex.clone();
        std::thread::spawn(move || {
            let io = Io::new(&ex, &[0.0], &[0], n, 1);
            let p = io.params(0, mode);
            launch(&ex, "simt_err_missing_barrier", 1, n as u32, 0, p).unwrap();
            ex.download(&io.out_f).unwrap()
        })
        .join()
        .unwrap()
    };
    let (fwd, rev) = (Executor::sim(), Executor::sim_reversed());
    assert_eq!(run(&fwd, 1), want);
    assert_eq!(run(&rev, 1), want);
    let (racy_fwd, racy_rev) = (run(&fwd, 0), run(&rev, 0));
    assert!(
        racy_fwd != want || racy_rev != want,
        "the race went unnoticed in both schedules"
    );
    assert_ne!(racy_fwd, racy_rev, "the two schedules should disagree");
}

/// Dynamic shared memory starts poisoned (NaN) in every block, so a kernel
/// that reads what it never wrote fails its comparison instead of seeing the
/// previous block's values.
#[test]
fn unwritten_dynamic_shared_memory_reads_as_nan() {
    let ex = Executor::sim();
    let io = Io::new(&ex, &[0.0], &[0], 32, 1);
    launch(&ex, "simt_err_uninit_smem", 1, 32, 32 * 4, io.params(0, 0)).unwrap();
    assert!(ex.download(&io.out_f).unwrap().iter().all(|v| v.is_nan()));
}
