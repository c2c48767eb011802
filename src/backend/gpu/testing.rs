//! Test helpers for kernels: run on every available executor, compare with a
//! reference. Used by tests/kernel_*.rs and tests/sim_*.rs.

use super::executor::Executor;

/// The executors a kernel test runs on: the simulator always (threads scheduled
/// in index order, then reversed, so that a missing barrier shows up as a
/// stale read in one of the two), the GPU when this build has `--features
/// cuda` and a device is present. Otherwise the test binary prints one visible
/// `SKIP` line (the first time, not once per test: every kernel test of a
/// machine without a GPU would say the same), or panics when
/// `TMOE_REQUIRE_GPU=1` (set on GPU machines so skips fail). No GPU is not a
/// missing prerequisite under `TMOE_CI=1`: CI machines have none.
/// `TMOE_GPU_ONLY=1` (tools/gpu-check.sh, with a device present) leaves the
/// simulator runs out: they are CI's job, and a lent GPU's minutes are few.
pub fn executors(test: &str) -> Vec<Executor> {
    static SKIP_ONCE: std::sync::Once = std::sync::Once::new();
    let mut v = vec![Executor::sim(), Executor::sim_reversed()];
    match Executor::cuda() {
        Ok(e) if std::env::var("TMOE_GPU_ONLY").is_ok_and(|v| v == "1") => v = vec![e],
        Ok(e) => v.push(e),
        Err(e) => {
            if std::env::var("TMOE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: TMOE_REQUIRE_GPU=1 but the cuda executor is unavailable: {e}");
            }
            SKIP_ONCE.call_once(|| {
                crate::testing::skip_line(
                    "cuda executor",
                    format_args!("{e} (this binary's kernel tests run on the simulator only)"),
                )
            });
        }
    }
    v
}

/// Runs `f` on every executor of [`executors`]; a failure names the executor.
pub fn run_on_executors(test: &str, f: impl Fn(&Executor) -> anyhow::Result<()>) {
    for ex in executors(test) {
        if let Err(e) = f(&ex) {
            panic!("{test} on {}: {e:#}", ex.name());
        }
    }
}

/// Error statistics of one comparison.
#[derive(Debug, Clone, Copy)]
pub struct CloseStats {
    pub max_abs_err: f64,
    pub mean_abs_err: f64,
    pub mean_signed_err: f64,
    pub mean_tol: f64,
}

/// Checks `|got-want| <= atol + rtol*|want|` everywhere, and that errors are not
/// systematic: mean |err| at most half the mean tolerance, and the mean signed
/// error (a bias, e.g. truncating instead of rounding) at most a tenth of it.
pub fn assert_close(
    what: &str,
    got: &[f64],
    want: &[f64],
    atol: f64,
    rtol: f64,
) -> anyhow::Result<CloseStats> {
    anyhow::ensure!(
        got.len() == want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    anyhow::ensure!(!got.is_empty(), "{what}: nothing to compare");
    let (mut max_abs, mut sum_abs, mut sum_signed, mut sum_tol) = (0f64, 0f64, 0f64, 0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = g - w;
        let tol = atol + rtol * w.abs();
        anyhow::ensure!(
            err.abs() <= tol,
            "{what}[{i}]: got {g}, expected {w} (|err| {:.3e} > tol {tol:.3e})",
            err.abs()
        );
        max_abs = max_abs.max(err.abs());
        sum_abs += err.abs();
        sum_signed += err;
        sum_tol += tol;
    }
    let n = got.len() as f64;
    let s = CloseStats {
        max_abs_err: max_abs,
        mean_abs_err: sum_abs / n,
        mean_signed_err: sum_signed / n,
        mean_tol: sum_tol / n,
    };
    anyhow::ensure!(
        s.mean_abs_err <= 0.5 * s.mean_tol,
        "{what}: mean error {:.3e} is not well below the tolerance {:.3e}",
        s.mean_abs_err,
        s.mean_tol
    );
    anyhow::ensure!(
        s.mean_signed_err.abs() <= 0.1 * s.mean_tol,
        "{what}: systematic error (mean signed {:.3e}, mean tol {:.3e})",
        s.mean_signed_err,
        s.mean_tol
    );
    Ok(s)
}
