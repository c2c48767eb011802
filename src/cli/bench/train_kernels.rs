//! `tmoe bench kernels` entries for the training / MoE kernels (rope, swiglu,
//! router, permutation, combine, cross-entropy, pooling, AdamW, grad norm,
//! residual add / GELU, rowdot, bias gradient, fp32 -> bf16 cast).
//! At a model's shapes (`bench kernels --config/--batch/--seq`; on a GPU by
//! default `base`: d 768, 12 heads, N 8, k 2, d' 2048 -> 1024 per expert,
//! 64 x 512 tokens); without one the simulator runs a small shape as a
//! launch-path smoke (a few outputs checked, not a correctness test: see the
//! `kernel_*` tests).

use half::bf16;

use super::{ModelShape, Recorder, Reps, median_ms};
use crate::backend::gpu::Executor;
use crate::backend::gpu::ops::moe_combine::{self, CombineInputs};
use crate::backend::gpu::ops::moe_permute::{MoePlan, gather};
use crate::backend::gpu::ops::moe_route::{self, Routing};
use crate::backend::gpu::ops::{
    adamw, bias_grad, cast, elementwise, grad_norm, pool, rope, rowdot, swiglu, xent,
};

struct Shape {
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    n_experts: usize,
    k: usize,
    ffn: usize,
    vocab: usize,
    xent_rows: usize,
    n_params: usize,
    tile: usize,
}

/// Runs every selected entry, recording each into `rec`.
pub(super) fn run(
    ex: &Executor,
    iters: Reps,
    model: Option<&ModelShape>,
    want: &dyn Fn(&str) -> bool,
    rec: &mut Recorder,
) -> anyhow::Result<()> {
    let s = if let Some(m) = model {
        let (c, t) = (&m.cfg, m.tokens());
        Shape {
            batch: m.batch,
            seq: m.seq,
            heads: c.heads,
            head_dim: c.head_dim(),
            n_experts: c.n_experts,
            k: c.top_k,
            ffn: c.expert_ff(),
            vocab: c.vocab,
            // The LM head's loss runs over blocks of rows.
            xent_rows: t.min(8192),
            // AdamW and the norm over the model's every parameter.
            n_params: crate::model::info::model_info(c, m.seq)?.total_params,
            // The plan's tile as the GPU engine picks it for these tokens.
            tile: crate::backend::gpu::engine::moe::plan_tile(t, c.top_k, c.n_experts),
        }
    } else {
        Shape {
            batch: 2,
            seq: 32,
            heads: 4,
            head_dim: 24,
            n_experts: 8,
            k: 2,
            ffn: 64,
            vocab: 1000,
            xent_rows: 16,
            n_params: 10_000,
            tile: 16,
        }
    };
    let t = s.batch * s.seq;
    let d = s.heads * s.head_dim;
    let (tu, du) = (t as u64, d as u64);
    let act = |n: usize| -> Vec<bf16> {
        (0..n)
            .map(|i| bf16::from_f32(((i % 251) as f32 - 125.0) / 50.0))
            .collect()
    };
    let x = ex.upload(&act(t * d))?;
    let y = ex.alloc_zeroed::<bf16>(t * d)?;

    if want("rope") {
        let shape = rope::RopeShape {
            batch: s.batch,
            seq: s.seq,
            heads: s.heads,
            head_dim: s.head_dim,
            theta: 10000.0,
        };
        let sh = format!(
            "batch {} seq {} heads {} head_dim {}",
            s.batch, s.seq, s.heads, s.head_dim
        );
        let ms = median_ms(ex, iters, || rope::fwd(ex, &x, &y, &shape))?;
        rec.mem("rope_fwd", &sh, tu * du * 4, ms);
        let ms = median_ms(ex, iters, || rope::bwd(ex, &x, &y, &shape))?;
        rec.mem("rope_bwd", &sh, tu * du * 4, ms);
    }
    if want("swiglu") {
        let (rows, cols) = (t * s.k, s.ffn);
        let n = (rows * cols) as u64;
        let sh = format!("rows {rows} cols {cols}");
        let (g, u) = (ex.upload(&act(rows * cols))?, ex.upload(&act(rows * cols))?);
        let (o, o2) = (
            ex.alloc_zeroed::<bf16>(rows * cols)?,
            ex.alloc_zeroed::<bf16>(rows * cols)?,
        );
        let ms = median_ms(ex, iters, || swiglu::fwd(ex, &g, &u, &o, rows, cols))?;
        rec.mem("swiglu_fwd", &sh, n * 6, ms);
        // gate, up, dy read (three distinct buffers), dgate, dup written.
        let dy = ex.upload(&act(rows * cols))?;
        let ms = median_ms(ex, iters, || {
            swiglu::bwd(ex, &g, &u, &dy, &o, &o2, rows, cols)
        })?;
        rec.mem("swiglu_bwd", &sh, n * 10, ms);
    }

    // Routing tensors are shared by the router, permutation and combine entries.
    let r = Routing {
        tokens: t,
        n_experts: s.n_experts,
        k: s.k,
    };
    let (nu, ku) = (s.n_experts as u64, s.k as u64);
    let logits: Vec<f32> = (0..t * s.n_experts)
        .map(|i| ((i * 7919) % 1000) as f32 / 250.0)
        .collect();
    let logits = ex.upload(&logits)?;
    let probs = ex.alloc_zeroed::<f32>(t * s.n_experts)?;
    let (idx, w) = (
        ex.alloc_zeroed::<u32>(t * s.k)?,
        ex.alloc_zeroed::<f32>(t * s.k)?,
    );
    moe_route::router_fwd(ex, &logits, &probs, &idx, &w, None, None, &r)?;
    let plan = MoePlan::alloc(ex, r, s.tile)?;
    plan.build(ex, &idx)?;
    let total = ex.download(&plan.total_rows)?[0] as usize;
    anyhow::ensure!(
        total >= t * s.k && total <= plan.max_rows,
        "moe plan: {total} rows for {} slots",
        t * s.k
    );
    let route_shape = format!("tokens {t} experts {} k {}", s.n_experts, s.k);
    if want("router") || want("lb_loss") {
        let ms = median_ms(ex, iters, || {
            moe_route::router_fwd(ex, &logits, &probs, &idx, &w, None, None, &r)
        })?;
        rec.mem("router_fwd", &route_shape, tu * nu * 8 + tu * ku * 8, ms);
        let loss = ex.alloc_zeroed::<f32>(1)?;
        let partials = ex.alloc_zeroed::<f32>(moe_route::lb_loss_partials(&r))?;
        let ms = median_ms(ex, iters, || {
            moe_route::lb_loss_fwd(ex, &probs, &plan.counts, None, &partials, &loss, &r)
        })?;
        rec.mem("lb_loss_fwd", &route_shape, tu * nu * 4, ms);
        let dl = ex.alloc_zeroed::<f32>(t * s.n_experts)?;
        let ms = median_ms(ex, iters, || {
            moe_route::router_bwd(
                ex,
                &probs,
                &idx,
                Some(&w),
                &plan.counts,
                None,
                0.01,
                &dl,
                &r,
            )
        })?;
        rec.mem("router_bwd", &route_shape, tu * nu * 8 + tu * ku * 8, ms);
    }
    let rows = plan.max_rows;
    let ru = rows as u64;
    let rows_shape = format!(
        "tokens {t} k {} d {d} padded rows {rows} (tile {})",
        s.k, s.tile
    );
    if want("moe_permute") || want("moe_gather") {
        let ms = median_ms(ex, iters, || plan.build(ex, &idx))?;
        // topk_idx read (the second pass reads it again: a re-read, not
        // counted), slot_pos written, sorted_slot written for every padded row.
        rec.mem("moe_permute_plan", &route_shape, tu * ku * 8 + ru * 4, ms);
        let xp = ex.alloc_zeroed::<bf16>(rows * d)?;
        let ms = median_ms(ex, iters, || gather(ex, &plan, &x, &xp, d))?;
        // x read once (each token's k copies are re-reads of one row), every
        // padded row written (zeros for padding).
        rec.mem("moe_gather", &rows_shape, tu * du * 2 + ru * du * 2, ms);
    }
    if want("moe_combine") {
        let yr = ex.upload(&act(rows * d))?;
        let gate = ex.upload(&vec![0.5f32; t])?;
        // Distinct buffers for every input, so each counted byte is moved:
        // with resid = shared_out (or dout = shared_out below) the hardware
        // would read one buffer once.
        let shared = ex.upload(&act(t * d))?;
        let inp = CombineInputs {
            resid: Some(&x),
            shared_out: Some(&shared),
            shared_gate: Some(&gate),
            y_rows: &yr,
            topk_w: Some(&w),
        };
        let ms = median_ms(ex, iters, || moe_combine::fwd(ex, &plan, &inp, &y, d))?;
        rec.mem(
            "moe_combine_fwd",
            &rows_shape,
            tu * du * 6 + tu * ku * du * 2,
            ms,
        );
        let (dyr, dw) = (
            ex.alloc_zeroed::<bf16>(rows * d)?,
            ex.alloc_zeroed::<f32>(t * s.k)?,
        );
        let ms = median_ms(ex, iters, || {
            moe_combine::bwd_rows(ex, &plan, &x, &yr, Some(&w), &dyr, Some(&dw), d)
        })?;
        // dout read once (its k reads per token are re-reads), Y's routed
        // rows read, dY written for every padded row.
        rec.mem(
            "moe_combine_bwd_rows",
            &rows_shape,
            tu * du * 2 + tu * ku * du * 2 + ru * du * 2,
            ms,
        );
        let (ds, dg) = (ex.alloc_zeroed::<bf16>(t * d)?, ex.alloc_zeroed::<f32>(t)?);
        let ms = median_ms(ex, iters, || {
            moe_combine::bwd_tokens(ex, &x, &shared, Some(&gate), &ds, Some(&dg), t, d)
        })?;
        rec.mem(
            "moe_combine_bwd_tokens",
            &format!("tokens {t} d {d}"),
            tu * du * 6,
            ms,
        );
    }
    if want("xent") {
        let (rows, v) = (s.xent_rows, s.vocab);
        let sh = format!("rows {rows} vocab {v}");
        let lg = ex.upload(&act(rows * v))?;
        let tg = ex.upload(
            &(0..rows as u32)
                .map(|i| 1 + i * 31 % (v as u32 - 1))
                .collect::<Vec<_>>(),
        )?;
        let losses = ex.alloc_zeroed::<f32>(rows)?;
        let ms = median_ms(ex, iters, || {
            xent::fwd_bwd(ex, &lg, &tg, 0, &losses, None, rows, v, v)
        })?;
        rec.mem("xent_fwd", &sh, (rows * v * 2) as u64, ms);
        let dl = ex.alloc_zeroed::<bf16>(rows * v)?;
        let ms = median_ms(ex, iters, || {
            xent::fwd_bwd(
                ex,
                &lg,
                &tg,
                0,
                &losses,
                Some((&dl, 1.0 / rows as f32)),
                rows,
                v,
                v,
            )
        })?;
        // Logits read, dlogits written; the backward pass's second read of
        // each row is a re-read (partly from L2), not counted.
        rec.mem("xent_fwd_bwd", &sh, (rows * v * 4) as u64, ms);
        let l = ex.download(&losses)?;
        anyhow::ensure!(
            l.iter().all(|x| x.is_finite() && *x > 0.0),
            "xent: non-finite or non-positive loss"
        ); // The mean over every token's loss (one block, as the engine runs it
        // once per step): losses and targets read, the loss written.
        let all_losses = ex.upload(&vec![1.5f32; t])?;
        let all_targets = ex.upload(&vec![1u32; t])?;
        let loss = ex.alloc_zeroed::<f32>(1)?;
        let ms = median_ms(ex, iters, || {
            xent::mean(ex, &all_losses, &all_targets, 0, &loss, t)
        })?;
        rec.mem("xent_mean", &format!("tokens {t}"), tu * 8 + 4, ms);
        let mean = ex.download(&loss)?[0];
        anyhow::ensure!(mean == 1.5, "xent_mean smoke: {mean}, want 1.5");
    }
    if want("pool") {
        let shape = pool::PoolShape {
            batch: s.batch,
            seq: s.seq,
            d,
        };
        let mask: Vec<u8> = (0..t)
            .map(|i| u8::from(i % s.seq < s.seq * 3 / 4))
            .collect();
        // The forward reads only valid positions (and the mask).
        let valid = mask.iter().filter(|&&m| m != 0).count() as u64;
        let mask = ex.upload(&mask)?;
        let out = ex.alloc_zeroed::<bf16>(s.batch * d)?;
        let sh = format!("batch {} seq {} d {d}", s.batch, s.seq);
        let ms = median_ms(ex, iters, || pool::mean_fwd(ex, &x, &mask, &out, &shape))?;
        rec.mem("pool_mean_fwd", &sh, valid * du * 2 + tu, ms);
        let ms = median_ms(ex, iters, || pool::mean_bwd(ex, &out, &mask, &y, &shape))?;
        rec.mem("pool_mean_bwd", &sh, tu * du * 2, ms);
    }
    if want("adamw") || want("grad_norm") {
        // ~100 tensors of mixed sizes filling n_params.
        let mut sizes: Vec<usize> = (0..100)
            .map(|i| s.n_params / 200 + (i * 7919) % (s.n_params / 100))
            .collect();
        let sum: usize = sizes.iter().sum();
        sizes.push(s.n_params.saturating_sub(sum));
        let n: usize = sizes.iter().sum();
        let lr: Vec<f32> = (0..sizes.len())
            .map(|i| 3e-4 * 0.9f32.powi((i / 10) as i32))
            .collect();
        let wd = vec![0.01f32; sizes.len()];
        let layout = adamw::ArenaLayout::new(ex, &sizes, &lr, &wd)?;
        let (p, g, m, v) = (
            ex.upload(&vec![0.1f32; n])?,
            ex.upload(&vec![0.01f32; n])?,
            ex.alloc_zeroed::<f32>(n)?,
            ex.alloc_zeroed::<f32>(n)?,
        );
        let pb = ex.alloc_zeroed::<bf16>(n)?;
        let norm = grad_norm::GradNorm::new(ex, n)?;
        let sh = format!("{n} fp32 params in {} tensors", sizes.len());
        let ms = median_ms(ex, iters, || norm.compute(ex, &g))?;
        // The gradients read; the f64 partials written, then read by the
        // final pass, which writes the f64 norm.
        let partials = grad_norm::n_partials(n) as u64;
        rec.mem("grad_norm", &sh, n as u64 * 4 + partials * 16 + 8, ms);
        let arenas = adamw::AdamwArenas {
            param: &p,
            grad: &g,
            m: &m,
            v: &v,
            param_bf16: Some(&pb),
        };
        let h = adamw::AdamwHyper {
            lr_scale: 1.0,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            step: 1,
            max_grad_norm: 1.0,
        };
        let ms = median_ms(ex, iters, || {
            adamw::step(ex, &layout, &arenas, &h, Some(&norm.out))
        })?;
        rec.mem("adamw_step", &sh, n as u64 * 30, ms);
    }
    if ["add_fwd", "gelu_fwd", "gelu_bwd"].iter().any(|k| want(k)) {
        let n = t * d;
        let sh = format!("{n} bf16 (tokens {t} x d {d})");
        let nu = n as u64;
        let ms = median_ms(ex, iters, || elementwise::add_fwd(ex, &x, &y, &y, n))?;
        rec.mem("add_fwd", &sh, nu * 6, ms);
        let ms = median_ms(ex, iters, || elementwise::gelu_fwd(ex, &x, &y, n))?;
        rec.mem("gelu_fwd", &sh, nu * 4, ms);
        let dy = ex.upload(&act(n))?;
        let ms = median_ms(ex, iters, || elementwise::gelu_bwd(ex, &x, &dy, &y, n))?;
        rec.mem("gelu_bwd", &sh, nu * 6, ms);
    }
    if want("bias_grad") {
        // A d-wide linear layer's bias gradient over every token (dy = x),
        // the 16-byte path: partial column sums per row split, then the reduce.
        let db = ex.alloc_zeroed::<f32>(d)?;
        let sl = bias_grad::scratch_len(t, d);
        let scratch = if sl > 0 {
            Some(ex.alloc_zeroed::<f32>(sl)?)
        } else {
            None
        };
        let vec = bias_grad::vec_path(&x, d, d);
        bias_grad::run(ex, &x, d, t, d, &db, false, scratch.as_ref())?;
        let want0: f64 = act(t * d).iter().step_by(d).map(|v| v.to_f64()).sum();
        let got0 = ex.download(&db)?[0] as f64;
        anyhow::ensure!(
            (got0 - want0).abs() <= 1e-3 * (1.0 + want0.abs()),
            "bias_grad smoke: db[0] = {got0}, want {want0}"
        );
        let sh = format!(
            "tokens {t} n {d} ({} row splits)",
            bias_grad::plan(t, d, vec).splits
        );
        let ms = median_ms(ex, iters, || {
            bias_grad::run(ex, &x, d, t, d, &db, true, scratch.as_ref())
        })?;
        rec.mem(
            "bias_grad",
            &sh,
            bias_grad::bytes_moved(t, d, vec, true),
            ms,
        );
    }
    if want("cast_f32_bf16") {
        // The bf16 copy of a parameter arena (GpuParams::refresh_bf16).
        let n = s.n_params;
        let host: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 / 7.0 - 70.0).collect();
        let src = ex.upload(&host)?;
        let dst = ex.alloc_zeroed::<bf16>(n)?;
        cast::f32_to_bf16(ex, &src, &dst, n)?;
        let got = ex.download(&dst)?;
        for i in [0, n / 2, n - 1] {
            anyhow::ensure!(
                got[i].to_bits() == bf16::from_f32(host[i]).to_bits(),
                "cast_f32_bf16 smoke: out[{i}] = {}, want {}",
                got[i],
                bf16::from_f32(host[i])
            );
        }
        let sh = format!("{n} fp32 -> bf16");
        let ms = median_ms(ex, iters, || cast::f32_to_bf16(ex, &src, &dst, n))?;
        rec.mem("cast_f32_bf16", &sh, n as u64 * 6, ms);
    }
    if ["rowdot_fwd", "rowdot_bwd_dz", "rowdot_bwd_dw"]
        .iter()
        .any(|k| want(k))
    {
        // Router logits (J = N) and the shared-expert gate (J = 1, sigmoid).
        for (j, sig) in [(s.n_experts, false), (1, true)] {
            let ju = j as u64;
            let sh = format!("tokens {t} d {d} j {j}");
            let w = ex.upload(&vec![0.01f32; j * d])?;
            let out = ex.alloc_zeroed::<f32>(t * j)?;
            let ms = median_ms(ex, iters, || rowdot::fwd(ex, &x, &w, &out, t, d, j, sig))?;
            rec.mem("rowdot_fwd", &sh, tu * du * 2 + tu * ju * 4, ms);
            let y_sig = if sig { Some(&out) } else { None };
            let ms = median_ms(ex, iters, || {
                rowdot::bwd_dz(ex, &out, y_sig, &w, &y, t, d, j, true)
            })?;
            rec.mem("rowdot_bwd_dz", &sh, tu * du * 4 + tu * ju * 4, ms);
            let dw = ex.alloc_zeroed::<f32>(j * d)?;
            let scratch = ex.alloc_zeroed::<f32>(rowdot::dw_scratch_len(t, d, j))?;
            let ms = median_ms(ex, iters, || {
                rowdot::bwd_dw(ex, &out, y_sig, &x, &dw, &scratch, t, d, j)
            })?;
            let partial = scratch.len() as u64 * 8;
            rec.mem(
                "rowdot_bwd_dw",
                &sh,
                tu * du * 2 + tu * ju * 4 + partial,
                ms,
            );
        }
    }
    Ok(())
}
