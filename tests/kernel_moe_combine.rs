//! cuda/moe_combine.cu against backend::cpu::moe_permute::{combine, combine_bwd}
//! (f64, same bf16 inputs), with the routing plan built on the device.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use rand::Rng;
use traffic_moe::backend::cpu::alloc::as_uninit;
use traffic_moe::backend::cpu::moe_permute;
use traffic_moe::backend::gpu::ops::moe_combine::{self, CombineInputs};
use traffic_moe::backend::gpu::ops::moe_permute::MoePlan;
use traffic_moe::backend::gpu::ops::moe_route::Routing;
use traffic_moe::backend::gpu::params::{
    MoeCombineBwdRowsParams, MoeCombineBwdTokensParams, MoeCombineFwdParams,
};
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};
use traffic_moe::backend::gpu::{Buf, Executor, Launch};

// (tokens, experts, k, tile, d). d 45 and 300 take the scalar path (d % 8 != 0);
// 64 (8 vectors: most lanes idle), 768 (96 vectors: 3 per lane, the model's
// width) and 1032 (129: a second pass with one vector) the 16-byte path.
const CASES: [(usize, usize, usize, usize, usize); 5] = [
    (37, 8, 2, 16, 45),
    (20, 5, 3, 8, 300),
    (9, 4, 1, 4, 64),
    (33, 8, 2, 16, 768),
    (11, 6, 3, 8, 1032),
];

#[test]
fn combine_fwd_bwd_match_reference() {
    run_on_executors("moe_combine", |ex| {
        let mut rng = rng(41);
        for (t, n, k, tile, d) in CASES {
            let what = format!("T {t} N {n} k {k} d {d}");
            let mut topk = Vec::new();
            for _ in 0..t {
                let first = rng.random_range(0..n as u32);
                topk.extend((0..k as u32).map(|j| (first + j) % n as u32));
            }
            let plan = MoePlan::alloc(
                ex,
                Routing {
                    tokens: t,
                    n_experts: n,
                    k,
                },
                tile,
            )?;
            plan.build(ex, &ex.upload(&topk)?)?;
            let slot_pos = ex.download(&plan.slot_pos)?;
            let rows = plan.max_rows;

            let (resid, residf) = bf16_input(&mut rng, t * d, 2.0);
            let (shared, sharedf) = bf16_input(&mut rng, t * d, 1.0);
            let gate: Vec<f32> = uniform(&mut rng, t, 0.5).iter().map(|v| v + 0.5).collect();
            let (y, yf) = bf16_input(&mut rng, rows * d, 1.0);
            let w: Vec<f32> = uniform(&mut rng, t * k, 0.5)
                .iter()
                .map(|v| v + 0.5)
                .collect();
            let mut want = vec![0.0f64; t * d];
            moe_permute::combine(
                &residf,
                &sharedf,
                &f64s(&gate),
                &yf,
                &f64s(&w),
                &slot_pos,
                t,
                k,
                d,
                as_uninit(&mut want),
            );

            let (rb, sb, gb, yb, wb) = (
                ex.upload(&resid)?,
                ex.upload(&shared)?,
                ex.upload(&gate)?,
                ex.upload(&y)?,
                ex.upload(&w)?,
            );
            let ob = ex.alloc_zeroed::<bf16>(t * d)?;
            let inp = CombineInputs {
                resid: Some(&rb),
                shared_out: Some(&sb),
                shared_gate: Some(&gb),
                y_rows: &yb,
                topk_w: Some(&wb),
            };
            moe_combine::fwd(ex, &plan, &inp, &ob, d)?;
            assert_close(
                &format!("combine out ({what})"),
                &bf_f64(&ex.download(&ob)?),
                &want,
                1e-5,
                BF16_RTOL,
            )?;

            // Un-permute sum: only Y (weights 1, no residual / shared terms).
            let ones = vec![1.0f64; t * k];
            moe_permute::combine(
                &vec![0.0; t * d],
                &vec![0.0; t * d],
                &vec![0.0; t],
                &yf,
                &ones,
                &slot_pos,
                t,
                k,
                d,
                as_uninit(&mut want),
            );
            let inp = CombineInputs {
                resid: None,
                shared_out: None,
                shared_gate: None,
                y_rows: &yb,
                topk_w: None,
            };
            moe_combine::fwd(ex, &plan, &inp, &ob, d)?;
            assert_close(
                &format!("un-permute sum ({what})"),
                &bf_f64(&ex.download(&ob)?),
                &want,
                1e-5,
                BF16_RTOL,
            )?;

            // Backward.
            let (dout, doutf) = bf16_input(&mut rng, t * d, 1.0);
            let (mut wds, mut wdg, mut wdy, mut wdw) = (
                vec![0.0f64; t * d],
                vec![0.0f64; t],
                vec![0.0f64; rows * d],
                vec![0.0f64; t * k],
            );
            moe_permute::combine_bwd(
                &doutf,
                &sharedf,
                &f64s(&gate),
                &yf,
                &f64s(&w),
                &slot_pos,
                t,
                k,
                d,
                as_uninit(&mut wds),
                as_uninit(&mut wdg),
                as_uninit(&mut wdy),
                as_uninit(&mut wdw),
            );
            let db = ex.upload(&dout)?;
            // dy starts as garbage: padding rows must come back zero.
            let dyb = ex.upload(&vec![bf16::from_f32(3.0); rows * d])?;
            let dwb = ex.alloc_zeroed::<f32>(t * k)?;
            moe_combine::bwd_rows(ex, &plan, &db, &yb, Some(&wb), &dyb, Some(&dwb), d)?;
            let dw_first = ex.download(&dwb)?;
            assert_close(
                &format!("combine dy_rows ({what})"),
                &bf_f64(&ex.download(&dyb)?),
                &wdy,
                1e-6,
                BF16_RTOL,
            )?;
            // fp32 dot products of d terms.
            assert_close(
                &format!("combine dtopk_w ({what})"),
                &f64s(&ex.download(&dwb)?),
                &wdw,
                1e-5 * d as f64,
                1e-5,
            )?;
            // Fixed reduction order: a second run gives the same bits (dy in place: dy aliases y).
            let yb2 = ex.upload(&y)?;
            moe_combine::bwd_rows(ex, &plan, &db, &yb2, Some(&wb), &yb2, Some(&dwb), d)?;
            anyhow::ensure!(
                ex.download(&dwb)? == dw_first,
                "dtopk_w not reproducible ({what})"
            );
            anyhow::ensure!(
                ex.download(&yb2)? == ex.download(&dyb)?,
                "dy_rows in place differs ({what})"
            );
            let (dsb, dgb) = (ex.alloc_zeroed::<bf16>(t * d)?, ex.alloc_zeroed::<f32>(t)?);
            moe_combine::bwd_tokens(ex, &db, &sb, Some(&gb), &dsb, Some(&dgb), t, d)?;
            assert_close(
                &format!("combine dshared_out ({what})"),
                &bf_f64(&ex.download(&dsb)?),
                &wds,
                1e-6,
                BF16_RTOL,
            )?;
            assert_close(
                &format!("combine dshared_gate ({what})"),
                &f64s(&ex.download(&dgb)?),
                &wdg,
                1e-5 * d as f64,
                1e-5,
            )?;
        }
        Ok(())
    });
}

/// A copy of `v` that starts one element (2 bytes) past a 16-byte boundary:
/// (buffer, address of the copy).
fn shifted(ex: &Executor, v: &[bf16]) -> anyhow::Result<(Buf<bf16>, u64)> {
    let mut s = vec![bf16::ZERO];
    s.extend(v);
    let b = ex.upload(&s)?;
    let a = b.addr() + 2;
    Ok((b, a))
}

#[test]
fn combine_misaligned_pointers_take_the_scalar_path() {
    // d % 8 == 0 but one pointer per kernel off by one bf16: same results as
    // the aligned 16-byte path (checked against the reference above).
    run_on_executors("moe_combine_misaligned", |ex| {
        let mut rng = rng(42);
        let (t, n, k, tile, d) = (37, 8, 2, 16, 64);
        let topk: Vec<u32> = (0..t * k)
            .map(|i| ((i / k) * 3 + i % k) as u32 % n as u32)
            .collect();
        let r = Routing {
            tokens: t,
            n_experts: n,
            k,
        };
        let plan = MoePlan::alloc(ex, r, tile)?;
        plan.build(ex, &ex.upload(&topk)?)?;
        let rows = plan.max_rows;
        let (resid, _) = bf16_input(&mut rng, t * d, 2.0);
        let (shared, _) = bf16_input(&mut rng, t * d, 1.0);
        let (y, _) = bf16_input(&mut rng, rows * d, 1.0);
        let (dout, _) = bf16_input(&mut rng, t * d, 1.0);
        let gate: Vec<f32> = uniform(&mut rng, t, 0.5).iter().map(|v| v + 0.5).collect();
        let w: Vec<f32> = uniform(&mut rng, t * k, 0.5)
            .iter()
            .map(|v| v + 0.5)
            .collect();
        let (rb, sb, yb, db, gb, wb) = (
            ex.upload(&resid)?,
            ex.upload(&shared)?,
            ex.upload(&y)?,
            ex.upload(&dout)?,
            ex.upload(&gate)?,
            ex.upload(&w)?,
        );
        let close = |what: &str, got: &[bf16], want: &[bf16]| {
            assert_close(what, &bf_f64(got), &bf_f64(want), 1e-6, BF16_RTOL).map(|_| ())
        };
        let blocks = |rows: usize| rows.div_ceil(8) as u32;

        // Forward, y_rows misaligned.
        let ob = ex.alloc_zeroed::<bf16>(t * d)?;
        let inp = CombineInputs {
            resid: Some(&rb),
            shared_out: Some(&sb),
            shared_gate: Some(&gb),
            y_rows: &yb,
            topk_w: Some(&wb),
        };
        moe_combine::fwd(ex, &plan, &inp, &ob, d)?;
        let want = ex.download(&ob)?;
        let (_ys, y_addr) = shifted(ex, &y)?;
        let p = MoeCombineFwdParams {
            resid: rb.cptr(),
            shared_out: sb.cptr(),
            shared_gate: gb.cptr(),
            y_rows: y_addr as *const _,
            topk_w: wb.cptr(),
            slot_pos: plan.slot_pos.cptr(),
            out: ob.mptr(),
            tokens: t as i32,
            k: k as i32,
            d: d as i32,
            _pad: 0,
        };
        ex.launch(&Launch::linear("moe_combine_fwd", blocks(t), 256, p))?;
        close("combine out, y misaligned", &ex.download(&ob)?, &want)?;

        // Expert-side backward, dout misaligned.
        let (dyb, dwb) = (
            ex.alloc_zeroed::<bf16>(rows * d)?,
            ex.alloc_zeroed::<f32>(t * k)?,
        );
        moe_combine::bwd_rows(ex, &plan, &db, &yb, Some(&wb), &dyb, Some(&dwb), d)?;
        let (want_dy, want_dw) = (ex.download(&dyb)?, ex.download(&dwb)?);
        let dyb = ex.upload(&vec![bf16::from_f32(3.0); rows * d])?;
        let (_ds, dout_addr) = shifted(ex, &dout)?;
        let p = MoeCombineBwdRowsParams {
            dout: dout_addr as *const _,
            y_rows: yb.cptr(),
            topk_w: wb.cptr(),
            sorted_slot: plan.sorted_slot.cptr(),
            dy_rows: dyb.mptr(),
            dtopk_w: dwb.mptr(),
            rows: rows as i32,
            k: k as i32,
            d: d as i32,
            _pad: 0,
        };
        ex.launch(&Launch::linear(
            "moe_combine_bwd_rows",
            blocks(rows),
            256,
            p,
        ))?;
        close(
            "combine dy_rows, dout misaligned",
            &ex.download(&dyb)?,
            &want_dy,
        )?;
        assert_close(
            "combine dtopk_w, dout misaligned",
            &f64s(&ex.download(&dwb)?),
            &f64s(&want_dw),
            1e-5 * d as f64,
            1e-5,
        )?;

        // Shared-expert backward, dshared_out misaligned.
        let (dsb, dgb) = (ex.alloc_zeroed::<bf16>(t * d)?, ex.alloc_zeroed::<f32>(t)?);
        moe_combine::bwd_tokens(ex, &db, &sb, Some(&gb), &dsb, Some(&dgb), t, d)?;
        let (want_ds, want_dg) = (ex.download(&dsb)?, ex.download(&dgb)?);
        let dss = ex.alloc_zeroed::<bf16>(t * d + 1)?;
        let p = MoeCombineBwdTokensParams {
            dout: db.cptr(),
            shared_out: sb.cptr(),
            shared_gate: gb.cptr(),
            dshared_out: (dss.addr() + 2) as *mut _,
            dshared_gate: dgb.mptr(),
            tokens: t as i32,
            d: d as i32,
        };
        ex.launch(&Launch::linear("moe_combine_bwd_tokens", blocks(t), 256, p))?;
        close(
            "combine dshared_out, misaligned",
            &ex.download(&dss)?[1..],
            &want_ds,
        )?;
        assert_close(
            "combine dshared_gate, misaligned",
            &f64s(&ex.download(&dgb)?),
            &f64s(&want_dg),
            1e-5 * d as f64,
            1e-5,
        )?;
        Ok(())
    });
}
