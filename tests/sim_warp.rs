//! Simulator self-tests at warp level (kernels: cuda/sim/tests/warp.cu).

mod kernel_util;
use kernel_util::{Io, launch};
use traffic_moe::backend::gpu::testing::run_on_executors;

#[test]
fn shuffles_follow_cuda_semantics() {
    run_on_executors("shuffles", |ex| {
        let n = 64usize; // two warps
        let io = Io::new(ex, &[0.0], &[0], 1, n * 8);
        launch(ex, "simt_shuffles", 1, n as u32, 0, io.params(0, 0))?;
        let o = ex.download(&io.out_u)?;
        for t in 0..n {
            let (w, lane) = (t / 32 * 32, t % 32);
            let v = |l: usize| (w + l) as u32 * 10 + 1;
            let want = [
                v((lane + 3) % 32),
                if lane >= 1 { v(lane - 1) } else { v(lane) },
                if lane + 2 < 32 { v(lane + 2) } else { v(lane) },
                v(lane ^ 5),
                v(lane / 8 * 8 + 2),
                if lane % 16 + 3 < 16 {
                    v(lane + 3)
                } else {
                    v(lane)
                },
                if lane % 8 >= 4 { v(lane - 4) } else { v(lane) },
                (0..32).sum::<u32>(),
            ];
            anyhow::ensure!(
                o[t * 8..t * 8 + 8] == want,
                "thread {t}: got {:?}, want {want:?}",
                &o[t * 8..t * 8 + 8]
            );
        }
        Ok(())
    });
}

#[test]
fn votes_and_partial_masks() {
    run_on_executors("votes", |ex| {
        let n = 32usize;
        let io = Io::new(ex, &[0.0], &[0], 1, n * 8);
        launch(ex, "simt_votes", 1, n as u32, 0, io.params(0, 0))?;
        let o = ex.download(&io.out_u)?;
        let ballot3: u32 = (0..32).filter(|l| l % 3 == 0).map(|l| 1u32 << l).sum();
        let partner = |l: u32| if l < 16 { l ^ 1 } else { l ^ 2 };
        let up: u32 = (0..32u32)
            .filter(|&l| partner(l) > l)
            .map(|l| 1u32 << l)
            .sum();
        for lane in 0..32u32 {
            let want = [ballot3, 1, 0, 1, 0, partner(lane), up, 0];
            let got = &o[lane as usize * 8..lane as usize * 8 + 8];
            anyhow::ensure!(got == want, "lane {lane}: got {got:?}, want {want:?}");
        }
        Ok(())
    });
}
