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
    // A stale read sees the simulator's poison (NaN), never what a previous,
    // correct launch left in the array.
    let run = |ex: &Executor, mode: i32| -> Vec<f32> {
        let io = Io::new(ex, &[0.0], &[0], n, 1);
        let p = io.params(0, mode);
        launch(ex, "simt_err_missing_barrier", 1, n as u32, 0, p).unwrap();
        ex.download(&io.out_f).unwrap()
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

/// Static shared arrays (TMOE_SHARED) also start poisoned in every block, in
/// both thread schedules: a read before any write is NaN as a float and
/// 0xFFFFFFFF as an index, never zero, and never what an earlier block or
/// launch of the same kernel wrote (each block writes after reading).
#[test]
fn unwritten_static_shared_memory_reads_as_poison() {
    let (grid, block) = (6usize, 64usize);
    for ex in [Executor::sim(), Executor::sim_reversed()] {
        for _launch in 0..2 {
            let io = Io::new(&ex, &[0.0], &[0], grid * block, grid * block);
            let p = io.params(0, 0);
            launch(
                &ex,
                "simt_err_uninit_static_smem",
                grid as u32,
                block as u32,
                0,
                p,
            )
            .unwrap();
            let f = ex.download(&io.out_f).unwrap();
            let u = ex.download(&io.out_u).unwrap();
            assert!(f.iter().all(|v| v.is_nan()), "float reads: {f:?}");
            assert!(u.iter().all(|&v| v == u32::MAX), "index reads: {u:?}");
        }
    }
}
