//! `tmoe bench kernels` entries for the tensor-core GEMMs (cuda/gemm.cu):
//! TFLOP/s and % of the bf16 tensor peak (flops = 2*M*N*K, useful rows only).
//! At a model's shapes (`bench kernels --config/--batch/--seq`; on a GPU by
//! default `base`: d 768, QKV 2304, N 8 experts, top-2, expert ffn 1024 with
//! gate|up fused to 2048, at 64 x 512 tokens); without one the simulator runs
//! a tiny shape once as a launch-path smoke (not a correctness check). MoE entries: grouped gate|up forward (plain and with
//! SwiGLU fused), down forward, gate|up dX, gate|up and down dW.

use half::bf16;

use super::{ModelShape, Recorder, Reps, median_ms};
use crate::backend::gpu::Executor;
use crate::backend::gpu::ops::gemm::{self, Mat};
use crate::backend::gpu::ops::moe_permute::MoePlan;
use crate::backend::gpu::ops::moe_route::Routing;

/// Runs every selected entry, recording each into `rec`.
pub(super) fn run(
    ex: &Executor,
    iters: Reps,
    model: Option<&ModelShape>,
    want: &dyn Fn(&str) -> bool,
    rec: &mut Recorder,
) -> anyhow::Result<()> {
    // (tokens, d, qkv, experts, k, expert ffn, plan tile)
    let (t, d, qkv, n_experts, k, ffn, tile) = if let Some(m) = model {
        let (c, t) = (&m.cfg, m.tokens());
        // The plan's tile as the GPU engine picks it for these tokens.
        let tile = crate::backend::gpu::engine::moe::plan_tile(t, c.top_k, c.n_experts);
        (t, c.d, 3 * c.d, c.n_experts, c.top_k, c.expert_ff(), tile)
    } else {
        (96, 64, 192, 4, 2, 64, 64)
    };
    let act = |n: usize| -> Vec<bf16> {
        (0..n)
            .map(|i| bf16::from_f32(((i % 251) as f32 - 125.0) / 500.0))
            .collect()
    };
    let flops = |m: usize, n: usize, kk: usize| 2.0 * m as f64 * n as f64 * kk as f64;
    let shape = |m: usize, n: usize, kk: usize| format!("M {m} N {n} K {kk}");

    let x = ex.upload(&act(t * d))?;
    let y_qkv = ex.alloc_zeroed::<bf16>(t * qkv)?;
    let w_qkv = ex.upload(&act(qkv * d))?;
    let w_out = ex.upload(&act(d * d))?;
    let y = ex.alloc_zeroed::<bf16>(t * d)?;
    let (tu, du, qu) = (t as u64, d as u64, qkv as u64);

    if want("gemm_fwd") {
        let ms = median_ms(ex, iters, || {
            gemm::fwd(
                ex,
                Mat::dense(&x, d),
                Mat::dense(&w_qkv, d),
                None,
                Mat::dense(&y_qkv, qkv),
                t,
                d,
                qkv,
            )
        })?;
        let bytes = 2 * (tu * du + qu * du + tu * qu);
        rec.compute(
            "gemm_fwd_qkv",
            &shape(t, qkv, d),
            flops(t, qkv, d),
            bytes,
            ms,
        );
        let ms = median_ms(ex, iters, || {
            gemm::fwd(
                ex,
                Mat::dense(&x, d),
                Mat::dense(&w_out, d),
                None,
                Mat::dense(&y, d),
                t,
                d,
                d,
            )
        })?;
        let bytes = 2 * (2 * tu * du + du * du);
        rec.compute("gemm_fwd_out", &shape(t, d, d), flops(t, d, d), bytes, ms);
    }
    if want("gemm_dx") {
        // dX[t, d] = dY[t, qkv] . W_qkv: M t, N d, K qkv.
        let ms = median_ms(ex, iters, || {
            gemm::bwd_dx(
                ex,
                Mat::dense(&y_qkv, qkv),
                Mat::dense(&w_qkv, d),
                Mat::dense(&y, d),
                t,
                d,
                qkv,
            )
        })?;
        let bytes = 2 * (tu * qu + qu * du + tu * du);
        rec.compute(
            "gemm_dx_qkv",
            &shape(t, d, qkv),
            flops(t, d, qkv),
            bytes,
            ms,
        );
    }
    if want("gemm_dw") {
        // dW[out, d] += dY^T . X over t rows: M out, N d, K t.
        for (name, dout, dy) in [("gemm_dw_qkv", qkv, &y_qkv), ("gemm_dw_out", d, &y)] {
            let splits = gemm::dw_splits(dout, d, t);
            let ws = ex.alloc_zeroed::<f32>(gemm::dw_workspace_len(dout, d, t, splits).max(1))?;
            let dw = ex.alloc_zeroed::<f32>(dout * d)?;
            let ms = median_ms(ex, iters, || {
                gemm::bwd_dw(
                    ex,
                    Mat::dense(dy, dout),
                    Mat::dense(&x, d),
                    Mat::dense(&dw, d),
                    true,
                    Some(&ws),
                    t,
                    d,
                    dout,
                )
            })?;
            let ou = dout as u64;
            // dY, X read; dW read and written (+=); the split-K partials
            // written and read back by the reduce.
            let ws_len = gemm::dw_workspace_len(dout, d, t, splits) as u64;
            let bytes = 2 * (tu * ou + tu * du) + 8 * ou * du + 8 * ws_len;
            let sh = format!("{} splits {splits}", shape(dout, d, t));
            rec.compute(name, &sh, flops(dout, d, t), bytes, ms);
        }
    }
    if want("gemm_moe") {
        // Balanced synthetic routing: token i -> experts i % N and (3i + 1) % N.
        let idx: Vec<u32> = (0..t)
            .flat_map(|i| [(i % n_experts) as u32, ((3 * i + 1) % n_experts) as u32])
            .collect();
        let routing = Routing {
            tokens: t,
            n_experts,
            k,
        };
        let plan = MoePlan::alloc(ex, routing, tile)?;
        plan.build(ex, &ex.upload(&idx)?)?;
        let rows = plan.max_rows;
        let routed = t * k;
        let ru = routed as u64;
        let gu = 2 * ffn;
        let w_gu = ex.upload(&act(n_experts * gu * d))?;
        let w_down = ex.upload(&act(n_experts * d * ffn))?;
        let h = ex.alloc_zeroed::<bf16>(rows * gu)?;
        let xp = ex.alloc_zeroed::<bf16>(rows * d)?;
        let sh = |n: usize, kk: usize| format!("rows {routed} (padded {rows}) N {n} K {kk}");
        let (gu64, fu, eu) = (gu as u64, ffn as u64, n_experts as u64);

        // Gate|up with the token gather fused into the A load.
        let ms = median_ms(ex, iters, || {
            gemm::grouped_fwd(
                ex,
                &plan,
                Mat::dense(&x, d),
                true,
                &w_gu,
                Mat::dense(&h, gu),
                gu,
                d,
            )
        })?;
        // X read once (the gather reads each token's row k times: re-reads).
        let bytes = 2 * (tu * du + eu * gu64 * du + ru * gu64);
        rec.compute(
            "gemm_moe_gate_up_fwd",
            &sh(gu, d),
            flops(routed, gu, d),
            bytes,
            ms,
        );
        // The same with SwiGLU fused: H [rows, ffn] straight from the epilogue,
        // without and with the bf16 pre-activations (for swiglu_bwd).
        let hs = ex.alloc_zeroed::<bf16>(rows * ffn)?;
        for (name, pre) in [
            ("gemm_moe_gate_up_swiglu_fwd", None),
            ("gemm_moe_gate_up_swiglu_pre_fwd", Some(Mat::dense(&h, gu))),
        ] {
            let ms = median_ms(ex, iters, || {
                gemm::grouped_fwd_swiglu(
                    ex,
                    &plan,
                    Mat::dense(&x, d),
                    true,
                    &w_gu,
                    Mat::dense(&hs, ffn),
                    pre,
                    ffn,
                    d,
                )
            })?;
            let out = ru * fu + if pre.is_some() { ru * gu64 } else { 0 };
            let bytes = 2 * (tu * du + eu * gu64 * du + out);
            rec.compute(name, &sh(gu, d), flops(routed, gu, d), bytes, ms);
        }
        // Down projection on the SwiGLU output (the first half of h as a view).
        let ms = median_ms(ex, iters, || {
            gemm::grouped_fwd(
                ex,
                &plan,
                Mat::view(&h, 0, gu),
                false,
                &w_down,
                Mat::dense(&xp, d),
                d,
                ffn,
            )
        })?;
        let bytes = 2 * (ru * fu + eu * du * fu + ru * du);
        rec.compute(
            "gemm_moe_down_fwd",
            &sh(d, ffn),
            flops(routed, d, ffn),
            bytes,
            ms,
        );
        // dX of gate|up: dXp[rows, d] = dH[rows, 2 ffn] . W_e.
        let ms = median_ms(ex, iters, || {
            gemm::grouped_dx(
                ex,
                &plan,
                Mat::dense(&h, gu),
                &w_gu,
                Mat::dense(&xp, d),
                gu,
                d,
            )
        })?;
        let bytes = 2 * (ru * gu64 + eu * gu64 * du + ru * du);
        rec.compute(
            "gemm_moe_gate_up_dx",
            &sh(d, gu),
            flops(routed, d, gu),
            bytes,
            ms,
        );
        // Grouped dW (+=, fp32): gate|up dW_e[2 ffn, d] = dH_e^T . X_e with the
        // token gather fused; down dW_e[d, ffn] = dY_e^T . H_e on plan rows.
        for (name, dy, dy_cols, xm, gather, dout, din) in [
            (
                "gemm_moe_gate_up_dw",
                &h,
                gu,
                Mat::dense(&x, d),
                true,
                gu,
                d,
            ),
            (
                "gemm_moe_down_dw",
                &xp,
                d,
                Mat::dense(&hs, ffn),
                false,
                d,
                ffn,
            ),
        ] {
            let splits = gemm::grouped_dw_splits(&plan, dout, din);
            let ws_len = gemm::grouped_dw_workspace_len(&plan, dout, din, splits);
            let ws = ex.alloc_zeroed::<f32>(ws_len.max(1))?;
            let dw = ex.alloc_zeroed::<f32>(n_experts * dout * din)?;
            let ms = median_ms(ex, iters, || {
                gemm::grouped_dw(
                    ex,
                    &plan,
                    Mat::dense(dy, dy_cols),
                    xm,
                    gather,
                    Mat::dense(&dw, din),
                    true,
                    Some(&ws),
                    dout,
                    din,
                )
            })?;
            let (ou, iu) = (dout as u64, din as u64);
            // dY's routed rows, X's distinct rows (t tokens when gathered),
            // dW read and written, the split-K partials written and read back.
            let x_rows = if gather { tu } else { ru };
            let bytes = 2 * (ru * ou + x_rows * iu) + 8 * eu * ou * iu + 8 * ws_len as u64;
            let shp = format!(
                "E {n_experts} M {dout} N {din} K rows {routed} (padded {rows}) splits {splits}"
            );
            rec.compute(name, &shp, flops(routed, dout, din), bytes, ms);
        }
    }
    Ok(())
}
