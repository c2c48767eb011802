//! Launch wrappers for cuda/attention.cu: causal attention with a key padding
//! mask (FlashAttention-2 forward and backward on tensor cores).
//!
//! Tensors are token-row views ([`Rows`]): Q, K and V can be the three column
//! blocks of the fused QKV projection `[B·S, 3·H·hd]` and O the `[B·S, H·hd]`
//! input of the output projection, with no transposes. The forward also writes
//! the per-row softmax statistics `stats [B, H, S, 2]` (fp32 `(m, 1/l)`: the
//! row maximum in log2 units and the reciprocal of the row sum) that the
//! backward needs. They are kept apart, not summed into a logsumexp: `m + log2
//! l` in fp32 loses `log2 l` once the scaled scores reach ~1e5 and up, and the
//! backward's P with it.

use half::bf16;

use crate::backend::gpu::params::{AttnBwdParams, AttnFwdParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

/// Query rows per forward CTA (ATT_FWD_BM: 8 warps x 16).
const FWD_BM: usize = 128;
const FWD_THREADS: u32 = 256;
/// Query / key rows per backward CTA (ATT_BQ = ATT_BN: 4 warps x 16).
const BWD_BLOCK: usize = 64;
const BWD_THREADS: u32 = 128;

#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    /// Query rows `[B, H, S]`: elements of the backward's `delta` scratch.
    pub fn rows(&self) -> usize {
        self.batch * self.heads * self.seq
    }
    /// Elements of the forward's `stats` (`[B, H, S, 2]`: two per row).
    pub fn stats_len(&self) -> usize {
        2 * self.rows()
    }
    fn check(&self) -> Result<[i32; 4]> {
        if !matches!(self.head_dim, 32 | 64) {
            return Err(GpuError::Invalid(format!(
                "attention: head_dim {} not supported (32 or 64)",
                self.head_dim
            )));
        }
        let dims = [self.batch, self.seq, self.heads, self.head_dim];
        let ok = self.batch * self.heads <= 65535
            && i32::try_from(self.batch * self.seq * self.heads * self.head_dim).is_ok();
        match dims.map(|v| i32::try_from(v).ok().filter(|&v| v > 0)) {
            [Some(b), Some(s), Some(h), Some(d)] if ok => Ok([b, s, h, d]),
            _ => Err(GpuError::Invalid(format!("attention: bad shape {self:?}"))),
        }
    }
    /// The named kernel for this head_dim (checked before).
    fn kernel(&self, hd32: &'static str, hd64: &'static str) -> &'static str {
        if self.head_dim == 32 { hd32 } else { hd64 }
    }
    fn smem(&self, tile_rows: usize) -> u32 {
        (tile_rows * (self.head_dim + 8) * 2) as u32
    }
}

/// A token-row view: element (b, s, h, d) at
/// `buf[offset + (b·S + s)·ld + h·head_dim + d]`.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub buf: &'a Buf<bf16>,
    pub offset: usize,
    pub ld: usize,
}

impl<'a> Rows<'a> {
    /// A dense `[B·S, H·hd]` tensor.
    pub fn dense(buf: &'a Buf<bf16>, s: &AttnShape) -> Self {
        Rows {
            buf,
            offset: 0,
            ld: s.heads * s.head_dim,
        }
    }
    /// Q, K and V of the fused projection `[B·S, 3·H·hd]` (or its gradient).
    pub fn qkv(buf: &'a Buf<bf16>, s: &AttnShape) -> [Self; 3] {
        let w = s.heads * s.head_dim;
        [0, 1, 2].map(|i| Rows {
            buf,
            offset: i * w,
            ld: 3 * w,
        })
    }
    /// Checks the view against the shape and the executor; returns (address, ld).
    fn check(&self, ex: &Executor, what: &str, s: &AttnShape) -> Result<(u64, i32)> {
        let w = s.heads * s.head_dim;
        let end = self.offset + (s.batch * s.seq - 1) * self.ld + w;
        let bad = |why: String| Err(GpuError::Invalid(format!("attention {what}: {why}")));
        if self.buf.is_host() == ex.is_gpu() {
            return bad("buffer belongs to another executor".into());
        }
        if self.ld < w || end > self.buf.len() {
            return bad(format!(
                "view (offset {}, ld {}) of {} elements does not hold [{} rows, {w}]",
                self.offset,
                self.ld,
                self.buf.len(),
                s.batch * s.seq
            ));
        }
        if !self.offset.is_multiple_of(8) || !self.ld.is_multiple_of(8) {
            return bad(format!(
                "offset {} and ld {} must be multiples of 8 (16-byte rows)",
                self.offset, self.ld
            ));
        }
        let addr = self.buf.addr() + 2 * self.offset as u64;
        // cp.async reads 16 bytes at a time: a GPU faults on a misaligned base.
        if !addr.is_multiple_of(16) {
            return bad(format!("address {addr:#x} is not 16-byte aligned"));
        }
        let ld = i32::try_from(self.ld).map_err(|_| GpuError::Invalid("ld too large".into()))?;
        Ok((addr, ld))
    }
}

fn check_vec<T: bytemuck::Pod>(ex: &Executor, what: &str, b: &Buf<T>, len: usize) -> Result<()> {
    ex.check_buf(&format!("attention {what}"), b, len)
}

/// `stats` holds `[B, H, S, 2]` and is read and written as float2 (8 bytes).
fn check_stats(ex: &Executor, stats: &Buf<f32>, s: &AttnShape) -> Result<()> {
    check_vec(ex, "stats", stats, s.stats_len())?;
    if !stats.addr().is_multiple_of(8) {
        return Err(GpuError::Invalid(format!(
            "attention stats: address {:#x} is not 8-byte aligned (float2 rows)",
            stats.addr()
        )));
    }
    Ok(())
}

/// O = softmax(mask(Q Kᵀ / sqrt(hd))) V (=) and `stats [B, H, S, 2]` (=):
/// per query row `(m, 1/l)`, m the maximum of the visible scores · scale ·
/// log2 e and l = Σ 2^(t - m) over them (logsumexp = (m + log2 l) · ln 2);
/// `(-inf, 0)` for a query that sees no key, whose output row is 0.
#[allow(clippy::too_many_arguments)]
pub fn fwd(
    ex: &Executor,
    q: Rows,
    k: Rows,
    v: Rows,
    mask: &Buf<u8>,
    out: Rows,
    stats: &Buf<f32>,
    s: &AttnShape,
) -> Result<()> {
    let [batch, seq, heads, head_dim] = s.check()?;
    let (q, ld_q) = q.check(ex, "q", s)?;
    let (k, ld_k) = k.check(ex, "k", s)?;
    let (v, ld_v) = v.check(ex, "v", s)?;
    let (o, ld_o) = out.check(ex, "out", s)?;
    check_vec(ex, "mask", mask, s.batch * s.seq)?;
    check_stats(ex, stats, s)?;
    let params = AttnFwdParams {
        q: q as *const _,
        k: k as *const _,
        v: v as *const _,
        mask: mask.cptr(),
        o: o as *mut _,
        stats: stats.mptr(),
        ld_q,
        ld_k,
        ld_v,
        ld_o,
        batch,
        seq,
        heads,
        head_dim,
        scale: 1.0 / (s.head_dim as f32).sqrt(),
        _pad: 0,
    };
    ex.launch(&Launch {
        kernel: s.kernel("attn_fwd_hd32", "attn_fwd_hd64"),
        grid: [s.seq.div_ceil(FWD_BM) as u32, (s.batch * s.heads) as u32, 1],
        block: [FWD_THREADS, 1, 1],
        smem: s.smem(FWD_BM + 4 * 64),
        params,
    })
}

/// Everything the backward reads: the forward's inputs, output and row statistics.
#[derive(Clone, Copy)]
pub struct AttnSaved<'a> {
    pub q: Rows<'a>,
    pub k: Rows<'a>,
    pub v: Rows<'a>,
    pub out: Rows<'a>,
    pub stats: &'a Buf<f32>,
    pub mask: &'a Buf<u8>,
}

/// dQ, dK, dV (=) from dO. `delta` (`[B, H, S]` fp32, `AttnShape::rows`) is
/// scratch. Two launches: dQ (and delta = rowsum(dO·O)), then dK and dV.
#[allow(clippy::too_many_arguments)]
pub fn bwd(
    ex: &Executor,
    saved: &AttnSaved,
    dout: Rows,
    dq: Rows,
    dk: Rows,
    dv: Rows,
    delta: &Buf<f32>,
    s: &AttnShape,
) -> Result<()> {
    let [batch, seq, heads, head_dim] = s.check()?;
    let (q, ld_q) = saved.q.check(ex, "q", s)?;
    let (k, ld_k) = saved.k.check(ex, "k", s)?;
    let (v, ld_v) = saved.v.check(ex, "v", s)?;
    let (o, ld_o) = saved.out.check(ex, "out", s)?;
    let (dout, ld_do) = dout.check(ex, "dout", s)?;
    let (dq, ld_dq) = dq.check(ex, "dq", s)?;
    let (dk, ld_dk) = dk.check(ex, "dk", s)?;
    let (dv, ld_dv) = dv.check(ex, "dv", s)?;
    check_vec(ex, "mask", saved.mask, s.batch * s.seq)?;
    check_stats(ex, saved.stats, s)?;
    check_vec(ex, "delta", delta, s.rows())?;
    let params = AttnBwdParams {
        q: q as *const _,
        k: k as *const _,
        v: v as *const _,
        o: o as *const _,
        dout: dout as *const _,
        mask: saved.mask.cptr(),
        stats: saved.stats.cptr(),
        delta: delta.mptr(),
        dq: dq as *mut _,
        dk: dk as *mut _,
        dv: dv as *mut _,
        ld_q,
        ld_k,
        ld_v,
        ld_o,
        ld_do,
        ld_dq,
        ld_dk,
        ld_dv,
        batch,
        seq,
        heads,
        head_dim,
        scale: 1.0 / (s.head_dim as f32).sqrt(),
        _pad: 0,
    };
    let grid = [
        s.seq.div_ceil(BWD_BLOCK) as u32,
        (s.batch * s.heads) as u32,
        1,
    ];
    let block = [BWD_THREADS, 1, 1];
    ex.launch(&Launch {
        kernel: s.kernel("attn_bwd_dq_hd32", "attn_bwd_dq_hd64"),
        grid,
        block,
        smem: s.smem(7 * BWD_BLOCK),
        params,
    })?;
    ex.launch(&Launch {
        kernel: s.kernel("attn_bwd_dkdv_hd32", "attn_bwd_dkdv_hd64"),
        grid,
        block,
        smem: s.smem(6 * BWD_BLOCK),
        params,
    })
}
