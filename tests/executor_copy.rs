//! `Executor::copy` (the device-to-device copy that `tmoe bench kernels` uses as
//! its bandwidth roof): copies exactly, refuses mismatched lengths and
//! overlapping ranges.

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
        // Within one buffer: adjacent ranges copy, overlapping ones are
        // refused (a GPU leaves them undefined; the simulator would not).
        ex.copy_range(&a, 0, &b, 100, 100)?;
        ex.copy_range(&b, 100, &b, 0, 100)?;
        let want: Vec<u32> = [&src[..100], &src[..100], &src[200..]].concat();
        anyhow::ensure!(ex.download(&b)? == want, "adjacent copy differs");
        let err = ex
            .copy_range(&a, 0, &a, 5, 100)
            .expect_err("overlapping ranges must be refused");
        anyhow::ensure!(err.to_string().contains("overlap"), "unclear error: {err}");
        Ok(())
    });
}
