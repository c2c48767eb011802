//! `Executor::copy` (the device-to-device copy that `tmoe bench kernels` uses as
//! its bandwidth roof): copies exactly, refuses mismatched lengths.

use traffic_moe::backend::gpu::testing::run_on_executors;

#[test]
fn copy_moves_every_byte_and_checks_lengths() {
    run_on_executors("copy", |ex| {
        let src: Vec<u32> = (0..10_007u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let a = ex.upload(&src)?;
        let b = ex.alloc_zeroed::<u32>(src.len())?;
        ex.copy(&a, &b)?;
        anyhow::ensure!(ex.download(&b)? == src, "copy differs from its source");
        let short = ex.alloc_zeroed::<u32>(src.len() - 1)?;
        let err = ex
            .copy(&a, &short)
            .expect_err("a shorter destination must be refused");
        anyhow::ensure!(err.to_string().contains("10007"), "unclear error: {err}");
        Ok(())
    });
}
