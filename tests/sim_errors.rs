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
