//! Simulator self-tests at block level (kernels: cuda/sim/tests/block.cu).
//! Run on the simulator and, with `--features cuda` on a GPU, on the device too.

mod kernel_util;
use kernel_util::{Io, launch};
use traffic_moe::backend::gpu::testing::run_on_executors;

#[test]
fn barriers_order_shared_memory_rounds() {
    run_on_executors("barriers", |ex| {
        let n = 256usize;
        let rounds = 5;
        let input: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
        let io = Io::new(ex, &input, &[0], 2 * n, 1);
        launch(
            ex,
            "simt_barrier",
            2,
            n as u32,
            0,
            io.params(n as i32, rounds),
        )?;
        // Expected: each round v[t] += v[t+1] (cyclic), computed on the host.
        let mut v = input.clone();
        for _ in 0..rounds {
            v = (0..n).map(|t| v[t] + v[(t + 1) % n]).collect();
        }
        let got = ex.download(&io.out_f)?;
        anyhow::ensure!(
            got[..n] == v[..] && got[n..] == v[..],
            "barrier rounds differ"
        );
        Ok(())
    });
}

#[test]
fn dynamic_shared_memory_is_per_block() {
    run_on_executors("dyn_smem", |ex| {
        let (blocks, n) = (3usize, 96usize);
        let input: Vec<f32> = (0..blocks * n).map(|i| i as f32).collect();
        let io = Io::new(ex, &input, &[0], blocks * n, 1);
        launch(
            ex,
            "simt_dyn_smem",
            blocks as u32,
            n as u32,
            (n * 4) as u32,
            io.params(0, 0),
        )?;
        let got = ex.download(&io.out_f)?;
        for b in 0..blocks {
            for t in 0..n {
                anyhow::ensure!(
                    got[b * n + t] == input[b * n + n - 1 - t],
                    "block {b} thread {t}"
                );
            }
        }
        Ok(())
    });
}

#[test]
fn block_reductions() {
    run_on_executors("block_reduce", |ex| {
        let (blocks, n) = (4usize, 160usize);
        let input: Vec<f32> = (0..blocks * n)
            .map(|i| ((i * 37) % 101) as f32 - 50.0)
            .collect();
        let io = Io::new(ex, &input, &[0], 2 * blocks, 1);
        launch(
            ex,
            "simt_block_reduce",
            blocks as u32,
            n as u32,
            0,
            io.params(0, 0),
        )?;
        let got = ex.download(&io.out_f)?;
        for b in 0..blocks {
            let s: f32 = input[b * n..(b + 1) * n].iter().sum();
            let m = input[b * n..(b + 1) * n]
                .iter()
                .cloned()
                .fold(f32::MIN, f32::max);
            anyhow::ensure!(
                got[2 * b] == s && got[2 * b + 1] == m,
                "block {b}: got {:?}",
                &got[2 * b..2 * b + 2]
            );
        }
        Ok(())
    });
}

#[test]
fn atomics_across_blocks() {
    run_on_executors("atomics", |ex| {
        let n = 1000usize; // 4 blocks of 256, the last partly idle
        let in_u: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % 10007).collect();
        let in_f = vec![0.5f32; n]; // exact in any summation order
        let mut io = Io::new(ex, &in_f, &in_u, 1, 5);
        ex.write(&mut io.out_u, &[0, 0, 0, u32::MAX, 10_000])?;
        launch(ex, "simt_atomics", 4, 256, 0, io.params(n as i32, 0))?;
        let u = ex.download(&io.out_u)?;
        let f = ex.download(&io.out_f)?;
        anyhow::ensure!(u[0] == n as u32, "atomicAdd count {}", u[0]);
        anyhow::ensure!(u[1] == *in_u.iter().max().unwrap(), "atomicMax {}", u[1]);
        anyhow::ensure!(u[2] == n as u32, "atomicCAS loop count {}", u[2]);
        anyhow::ensure!(u[3] < n as u32, "atomicExch left {}", u[3]);
        anyhow::ensure!(u[4] == 10_000 - 2 * n as u32, "atomicSub {}", u[4]);
        anyhow::ensure!(f[0] == 0.5 * n as f32, "float atomicAdd {}", f[0]);
        Ok(())
    });
}

#[test]
fn bf16_conversion_rounds_to_nearest_even_like_half() {
    run_on_executors("bf16", |ex| {
        // Ties (exactly half an ulp) both ways, subnormals, infinities, large values.
        let mut v: Vec<f32> = vec![
            1.0,
            1.0 + 1.0 / 256.0, // tie: rounds down to even
            1.0 + 3.0 / 256.0, // tie: rounds up to even
            -(1.0 + 1.0 / 256.0),
            3.0e38,
            -0.0,
            1e-40,
            f32::INFINITY,
            65504.0,
        ];
        v.extend((0..500).map(|i| ((i as f32) * 0.7311).sin() * 10f32.powi(i % 9 - 4)));
        let io = Io::new(ex, &v, &[0], v.len(), v.len());
        launch(
            ex,
            "simt_bf16",
            v.len().div_ceil(128) as u32,
            128,
            0,
            io.params(v.len() as i32, 0),
        )?;
        let bits = ex.download(&io.out_u)?;
        for (i, &x) in v.iter().enumerate() {
            let want = half::bf16::from_f32(x).to_bits() as u32;
            anyhow::ensure!(
                bits[i] == want,
                "bf16({x}) = {:#06x}, want {want:#06x}",
                bits[i]
            );
        }
        Ok(())
    });
}
