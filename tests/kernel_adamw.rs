//! cuda/adamw.cu and cuda/grad_norm.cu against backend::cpu::{adamw::step,
//! grad_norm}: several tensors of odd sizes (chunks that end inside a tensor,
//! an empty tensor), per-tensor lr / weight decay, three steps, the bf16 copy,
//! and clipping by a norm computed on the device.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use traffic_moe::backend::cpu::adamw::sum_squares;
use traffic_moe::backend::cpu::{adamw, grad_norm};
use traffic_moe::backend::gpu::ops::adamw::{
    self as gpu_adamw, AdamwArenas, AdamwHyper, ArenaLayout,
};
use traffic_moe::backend::gpu::ops::grad_norm::GradNorm;
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};
use traffic_moe::train::optim::clip_scale;

// Offsets 0, 1000, 1017 (not a multiple of 4: scalar heads of up to 3
// elements, then float4 bodies), a tensor of 2 inside one head, tails of 1-3.
const SIZES: [usize; 7] = [1000, 17, 0, 9000, 4096, 2, 4103];
const LR: [f32; 7] = [1e-3, 2e-3, 1e-3, 5e-4, 3e-3, 1e-3, 2e-3];
const WD: [f32; 7] = [0.1, 0.0, 0.1, 0.01, 0.0, 0.1, 0.05];

#[test]
fn adamw_matches_reference_over_steps() {
    run_on_executors("adamw", |ex| {
        let mut rng = rng(71);
        let total: usize = SIZES.iter().sum();
        let layout = ArenaLayout::new(ex, &SIZES, &LR, &WD)?;
        let mut p = uniform(&mut rng, total, 1.0);
        let (mut m, mut v) = (vec![0f32; total], vec![0f32; total]);
        let (pb, mb, vb) = (ex.upload(&p)?, ex.upload(&m)?, ex.upload(&v)?);
        let mut gb = ex.alloc_zeroed::<f32>(total)?;
        let bfb = ex.alloc_zeroed::<bf16>(total)?;
        let norm = GradNorm::new(ex, total)?;
        for step in 1..=3u32 {
            let mut g = uniform(&mut rng, total, 0.5);
            g[5] = 0.0;
            ex.write(&mut gb, &g)?;
            // Clip from step 2 on (the norm of uniform(0.5) grads is ~ sqrt(total/12)).
            let clip = step >= 2;
            let max_norm = 10.0f32;
            let h = AdamwHyper {
                lr_scale: 0.7,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                step,
                max_grad_norm: max_norm,
            };
            norm.compute(ex, &gb)?;
            let arenas = AdamwArenas {
                param: &pb,
                grad: &gb,
                m: &mb,
                v: &vb,
                param_bf16: Some(&bfb),
            };
            gpu_adamw::step(ex, &layout, &arenas, &h, clip.then_some(&norm.out))?;

            let n = grad_norm(&[&g]);
            // As torch's clip_grad_norm_ and the CPU engine (optim.rs).
            let scale = if clip && n > max_norm {
                max_norm / (n + 1e-6)
            } else {
                1.0
            };
            let gs: Vec<f32> = g.iter().map(|x| x * scale).collect();
            let mut off = 0;
            for (i, &sz) in SIZES.iter().enumerate() {
                let r = off..off + sz;
                adamw::step(
                    &mut p[r.clone()],
                    &gs[r.clone()],
                    &mut m[r.clone()],
                    &mut v[r],
                    LR[i] * 0.7,
                    0.9,
                    0.95,
                    1e-8,
                    WD[i],
                    step,
                    1.0,
                );
                off += sz;
            }
            let what = format!("step {step}");
            // fp32 on both sides, different rounding order (and the clip factor
            // from the device norm): a few ulps of the gradient scale.
            assert_close(
                &format!("adamw m ({what})"),
                &f64s(&ex.download(&mb)?),
                &f64s(&m),
                1e-7,
                1e-5,
            )?;
            assert_close(
                &format!("adamw v ({what})"),
                &f64s(&ex.download(&vb)?),
                &f64s(&v),
                1e-9,
                1e-5,
            )?;
            let got = ex.download(&pb)?;
            assert_close(
                &format!("adamw param ({what})"),
                &f64s(&got),
                &f64s(&p),
                1e-7,
                1e-6,
            )?;
            let copy: Vec<bf16> = got.iter().map(|&x| bf16::from_f32(x)).collect();
            anyhow::ensure!(
                ex.download(&bfb)? == copy,
                "bf16 copy is not the rounded fp32 weights ({what})"
            );
        }
        Ok(())
    });
}

/// A constant gradient makes every bias-corrected update exactly
/// `lr / (1 + eps)` (m_hat = g, v_hat = g^2), as PyTorch's AdamW gives it
/// with f64 bias corrections; `1 - beta2^t` in float (beta2 0.999) put the
/// second to fifth updates off by 2e-6 to 7e-6.
#[test]
fn adamw_bias_corrections_are_exact_under_a_constant_gradient() {
    run_on_executors("adamw bias corrections", |ex| {
        let n = 5;
        let lr = 1e-3f32;
        let layout = ArenaLayout::new(ex, &[n], &[lr], &[0.0])?;
        let (mut pb, mb, vb) = (
            ex.upload(&vec![0f32; n])?,
            ex.upload(&vec![0f32; n])?,
            ex.upload(&vec![0f32; n])?,
        );
        let gb = ex.upload(&vec![1f32; n])?;
        for step in 1..=5u32 {
            // From 0 each time, so the weights hold this step's update alone.
            ex.write(&mut pb, &vec![0f32; n])?;
            let h = AdamwHyper {
                lr_scale: 1.0,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                step,
                max_grad_norm: 1.0,
            };
            let arenas = AdamwArenas {
                param: &pb,
                grad: &gb,
                m: &mb,
                v: &vb,
                param_bf16: None,
            };
            gpu_adamw::step(ex, &layout, &arenas, &h, None)?;
            let want = lr as f64 / (1.0 + 1e-8);
            for (i, &p) in ex.download(&pb)?.iter().enumerate() {
                let err = (-p as f64 / want - 1.0).abs();
                anyhow::ensure!(
                    err < 1e-6,
                    "step {step} [{i}]: update {} vs {want}: {err:.1e}",
                    -p
                );
            }
        }
        Ok(())
    });
}

#[test]
fn grad_norm_matches_reference_and_is_deterministic() {
    run_on_executors("grad_norm", |ex| {
        let mut rng = rng(72);
        // One partial block, several (float4 slices with scalar tails of 1-3), and
        // the capped count (partials of > 8192 elements).
        for n in [1usize, 3, 5000, 8194, 16_387, 100_003, 20_000_001] {
            if n > 1_000_000 && !ex.is_gpu() {
                continue; // too slow for the simulator; the GPU run covers the cap
            }
            let g = uniform(&mut rng, n, 1.0);
            let gb = ex.upload(&g)?;
            let norm = GradNorm::new(ex, n)?;
            norm.compute(ex, &gb)?;
            let got = ex.download(&norm.out)?;
            assert_close(
                &format!("grad norm (n {n})"),
                &got,
                &[grad_norm(&[&g]) as f64],
                0.0,
                1e-6,
            )?;
            norm.compute(ex, &gb)?;
            anyhow::ensure!(
                ex.download(&norm.out)? == got,
                "grad norm differs between runs (n {n})"
            );
        }
        Ok(())
    });
}

/// Gradients the CPU engine clips and trains on: elements whose squares
/// overflow f32 (|g| > 1.8e19), and ones whose global norm does too (two of
/// 3e38: 4.2e38, above `f32::MAX`). The norm comes out finite and equal to
/// the CPU engine's (f64, `train::optim::global_grad_norm`), and AdamW clips
/// by it with the CPU engine's factor (`clip_scale`), where a float norm was
/// inf and the step was left untaken as a diverged one.
#[test]
fn huge_gradients_are_clipped_as_on_the_cpu() {
    run_on_executors("grad_norm huge", |ex| {
        let mut rng = rng(73);
        let n = 9001; // two partial blocks, a scalar tail
        let mut squares = uniform(&mut rng, n, 1.0);
        squares[17] = 1e20;
        squares[8500] = -3e19;
        let mut beyond = uniform(&mut rng, n, 1.0);
        beyond[3] = 3e38;
        beyond[9000] = -3e38;
        for (what, g) in [("squares past f32", squares), ("norm past f32", beyond)] {
            let want = sum_squares(&g).sqrt();
            let gb = ex.upload(&g)?;
            let norm = GradNorm::new(ex, n)?;
            norm.compute(ex, &gb)?;
            let got = ex.download(&norm.out)?[0];
            anyhow::ensure!(
                got.is_finite() && ((got - want) / want).abs() < 1e-12,
                "grad norm ({what}): {got:e}, expected {want:e}"
            );

            let max_norm = 1.0f32;
            let layout = ArenaLayout::new(ex, &[n], &[1e-3], &[0.01])?;
            let mut p = uniform(&mut rng, n, 1.0);
            let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
            let (pb, mb, vb) = (ex.upload(&p)?, ex.upload(&m)?, ex.upload(&v)?);
            let h = AdamwHyper {
                lr_scale: 1.0,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                step: 1,
                max_grad_norm: max_norm,
            };
            let arenas = AdamwArenas {
                param: &pb,
                grad: &gb,
                m: &mb,
                v: &vb,
                param_bf16: None,
            };
            gpu_adamw::step(ex, &layout, &arenas, &h, Some(&norm.out))?;
            let scale = clip_scale(want, max_norm as f64).expect("the norm is above the limit");
            adamw::step(
                &mut p, &g, &mut m, &mut v, 1e-3, 0.9, 0.95, 1e-8, 0.01, 1, scale,
            );
            assert_close(
                &format!("adamw m ({what})"),
                &f64s(&ex.download(&mb)?),
                &f64s(&m),
                1e-7,
                1e-5,
            )?;
            assert_close(
                &format!("adamw param ({what})"),
                &f64s(&ex.download(&pb)?),
                &f64s(&p),
                1e-7,
                1e-6,
            )?;
        }
        Ok(())
    });
}
