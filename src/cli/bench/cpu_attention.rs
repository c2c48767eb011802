//! `tmoe bench cpu-attention`: the CPU training engine's attention blocks
//! (one batch row and head, forward and backward), the vector loops
//! (`backend::cpu::attention_f32`, what f32 training runs on AVX-512F)
//! beside the `gemm` blocks they replaced (`backend::cpu::attention`, still
//! the path for f64 and other CPUs), at the tiny and small models' heads
//! and sequences 64 and 256. Every (batch row, head) block of a batch runs
//! in parallel, as the engine runs them.
//!
//! FLOPs are the causal half of each product, as FlashAttention counts
//! them: `2·S²·hd` a block forward (Q·Kᵀ and P·V) and `4·S²·hd` backward
//! (dP, dV, dQ, dK). The `gemm` blocks compute the full squares, so they
//! do twice that work for the same result. The share is of the measured
//! `vfmadd231ps` peak with every thread running it at once.

use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use super::cpu_gemm::{pct, timings_ms, values};
use crate::backend::cpu::{attention, attention_f32};
use crate::cli::args;

#[derive(clap::Args, Debug)]
pub struct CpuAttentionArgs {
    /// Batch rows (sequences) per call.
    #[arg(long, value_parser = args::batch, default_value_t = 8)]
    pub batch: usize,
    /// Timed repetitions per shape (median and fastest reported).
    #[arg(long, value_parser = args::count, default_value_t = 20)]
    pub iters: usize,
    /// Write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing report.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Serialize)]
struct Entry {
    config: &'static str,
    blocks: &'static str,
    pass: &'static str,
    batch: usize,
    heads: usize,
    seq: usize,
    head_dim: usize,
    median_ms: f64,
    gflops: f64,
    best_ms: f64,
    best_gflops: f64,
    /// Of the measured f32 FMA peak (null without AVX-512F), median and best.
    peak_share: Option<f64>,
    best_peak_share: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    threads: usize,
    f32_peak_gflops: Option<f64>,
    entries: Vec<Entry>,
    command: String,
}

/// One shape's operands and outputs, head-major `[B·H][S, hd]`.
struct Buffers {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dob: Vec<f32>,
    mask: Vec<u8>,
    o: Vec<f32>,
    a: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

impl Buffers {
    fn new(blocks: usize, s: usize, hd: usize) -> Buffers {
        let n = blocks * s * hd;
        let scaled = |seed: usize| -> Vec<f32> {
            values(n + seed)[seed..].iter().map(|x| x * 2.0).collect()
        };
        Buffers {
            q: scaled(0),
            k: scaled(1),
            v: scaled(2),
            dob: scaled(3),
            mask: vec![1; s],
            o: vec![0.0; n],
            a: vec![0.0; blocks * s * s],
            dq: vec![0.0; n],
            dk: vec![0.0; n],
            dv: vec![0.0; n],
        }
    }

    /// Every block's forward on the vector loops or the `gemm` blocks.
    fn forward(&mut self, s: usize, hd: usize, vector: bool) {
        let blk = s * hd;
        let (q, k, v, m) = (&self.q, &self.k, &self.v, &self.mask);
        self.o
            .par_chunks_mut(blk)
            .zip(self.a.par_chunks_mut(s * s))
            .enumerate()
            .for_each(|(bh, (o, a))| {
                let r = bh * blk..(bh + 1) * blk;
                let (q, k, v) = (&q[r.clone()], &k[r.clone()], &v[r]);
                if vector {
                    attention_f32::fwd_block(q, k, v, m, hd, o, a);
                } else {
                    attention::fwd_block_gemm(q, k, v, m, hd, o, a);
                }
            });
    }

    /// Every block's backward (from the probabilities `forward` left).
    fn backward(&mut self, s: usize, hd: usize, vector: bool) {
        let blk = s * hd;
        let (q, k, v, a, dob) = (&self.q, &self.k, &self.v, &self.a, &self.dob);
        self.dq
            .par_chunks_mut(blk)
            .zip(self.dk.par_chunks_mut(blk))
            .zip(self.dv.par_chunks_mut(blk))
            .enumerate()
            .for_each(|(bh, ((dq, dk), dv))| {
                let r = bh * blk..(bh + 1) * blk;
                let (q, k, v, dob) = (&q[r.clone()], &k[r.clone()], &v[r.clone()], &dob[r]);
                let a = &a[bh * s * s..][..s * s];
                if vector {
                    attention_f32::bwd_block(q, k, v, a, dob, hd, dq, dk, dv);
                } else {
                    attention::bwd_block_gemm(q, k, v, a, dob, hd, dq, dk, dv);
                }
            });
    }
}

pub fn run(a: CpuAttentionArgs) -> anyhow::Result<()> {
    super::refuse_existing(a.out.as_deref(), a.force)?;
    let threads = rayon::current_num_threads();
    use crate::backend::cpu_bf16::peak;
    let peak = peak::all_threads(peak::f32_gflops, 20_000_000);
    eprintln!(
        "f32 FMA peak, {threads} threads at once: {}",
        peak.map_or("n/a (no AVX-512F)".into(), |p| format!("{p:.1} GFLOP/s"))
    );
    let vector = attention_f32::fast();
    if !vector {
        eprintln!("no AVX-512F here: training runs the gemm blocks, so only they are timed");
    }
    let mut entries = Vec::new();
    for config in ["tiny", "small"] {
        let c = crate::model::ModelConfig::named(config)?;
        let (h, hd) = (c.heads, c.d / c.heads);
        for s in [64, 256] {
            let mut buf = Buffers::new(a.batch * h, s, hd);
            let block_flops = (s * s * hd) as f64;
            for (blocks, on_vector) in [("vector", true), ("gemm", false)] {
                if on_vector && !(vector && attention_f32::supports(hd)) {
                    continue;
                }
                let fwd = timings_ms(a.iters, || buf.forward(s, hd, on_vector));
                let bwd = timings_ms(a.iters, || buf.backward(s, hd, on_vector));
                for (pass, (ms, best_ms), per_block) in
                    [("forward", fwd, 2.0), ("backward", bwd, 4.0)]
                {
                    let flops = per_block * block_flops * (a.batch * h) as f64;
                    let (gflops, best_gflops) = (flops / ms / 1e6, flops / best_ms / 1e6);
                    let share = peak.map(|p| gflops / p);
                    let best_share = peak.map(|p| best_gflops / p);
                    eprintln!(
                        "{config:>5} b {:>3} h {h} s {s:>3} hd {hd:>3} {blocks:>6} {pass:>8}: median {ms:>8.3} ms {gflops:>6.1} GFLOP/s{}, best {best_gflops:>6.1}{}",
                        a.batch,
                        pct(share),
                        pct(best_share)
                    );
                    entries.push(Entry {
                        config,
                        blocks,
                        pass,
                        batch: a.batch,
                        heads: h,
                        seq: s,
                        head_dim: hd,
                        median_ms: ms,
                        gflops,
                        best_ms,
                        best_gflops,
                        peak_share: share,
                        best_peak_share: best_share,
                    });
                }
            }
        }
    }
    let report = Report {
        threads,
        f32_peak_gflops: peak,
        entries,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    super::emit_json(&report, a.out.as_deref())?;
    if let Some(out) = &a.out {
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
