//! The kernel profile (`backend::gpu::kernel_profile`, `tmoe bench model
//! --profile`) on every executor: each launch, device copy and memset is
//! counted once under its name (on a GPU between two CUDA events, resolved
//! mid-run past `RESOLVE_EVERY` pending pairs), with a positive time; the
//! work itself is unchanged; nothing is timed once it stops. One test in
//! this binary: the profile's table is process-wide.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use traffic_moe::backend::gpu::kernel_profile::{self, COPY, MEMSET, RESOLVE_EVERY, UPLOAD};
use traffic_moe::backend::gpu::ops::elementwise as ew;
use traffic_moe::backend::gpu::testing::run_on_executors;

#[test]
fn every_launch_and_copy_is_timed_once() {
    run_on_executors("kernel_profile", |ex| {
        let n = 1000;
        let (a, af) = bf16_input(&mut rng(5), n, 2.0);
        let (b, bf) = bf16_input(&mut rng(6), n, 2.0);
        let sum: Vec<bf16> = af
            .iter()
            .zip(&bf)
            .map(|(x, y)| bf16::from_f64(x + y))
            .collect();
        let (ab, bb) = (ex.upload(&a)?, ex.upload(&b)?);
        let (out, copy) = (ex.alloc_zeroed::<bf16>(n)?, ex.alloc_zeroed::<bf16>(n)?);
        // Past the pending limit on a GPU (the simulator runs each at once).
        let launches = if ex.is_gpu() { RESOLVE_EVERY + 3 } else { 7 };

        kernel_profile::start();
        for _ in 0..launches {
            ew::add_fwd(ex, &ab, &bb, &out, n)?;
        }
        ex.copy(&out, &copy)?;
        ex.zero_range(&out, 0, n / 2)?;
        let up = ex.upload(&a)?;
        let t = ex.kernel_profile_stop()?;

        let calls = |k: &str| t.iter().find(|e| e.kernel == k).map(|e| e.calls);
        anyhow::ensure!(
            calls("add_fwd") == Some(launches as u64),
            "add_fwd: {:?} calls timed, {launches} launched ({t:?})",
            calls("add_fwd")
        );
        anyhow::ensure!(calls(COPY) == Some(1), "the device copy ({t:?})");
        anyhow::ensure!(calls(MEMSET) == Some(1), "the memset ({t:?})");
        // The simulator's uploads are host copies, not queued work.
        let uploads = ex.is_gpu().then_some(1);
        anyhow::ensure!(calls(UPLOAD) == uploads, "the upload ({t:?})");
        let add = t.iter().find(|e| e.kernel == "add_fwd").unwrap();
        anyhow::ensure!(
            add.seconds > 0.0 && add.seconds.is_finite(),
            "add_fwd's time: {} s",
            add.seconds
        );
        anyhow::ensure!(
            t.windows(2).all(|w| w[0].seconds >= w[1].seconds),
            "not longest first: {t:?}"
        );

        // Timing changed nothing.
        anyhow::ensure!(ex.download(&copy)? == sum, "the timed adds' sum");
        let half: Vec<bf16> = (0..n)
            .map(|i| if i < n / 2 { bf16::ZERO } else { sum[i] })
            .collect();
        anyhow::ensure!(ex.download(&out)? == half, "the timed memset");
        anyhow::ensure!(ex.download(&up)? == a, "the timed upload");

        // Stopped: a launch is no longer timed.
        ew::add_fwd(ex, &ab, &bb, &out, n)?;
        let after = ex.kernel_profile_stop()?;
        anyhow::ensure!(after.is_empty(), "timed after the stop: {after:?}");
        Ok(())
    })
}
