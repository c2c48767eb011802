//! Launch wrappers for cuda/gemm.cu: the bf16 tensor-core products of the
//! linear layers (weights `W[out, in]`, as `backend::cpu::matmul::{fwd, bwd}`)
//! and the grouped expert products over a [`MoePlan`].
//!
//! - [`fwd`]: `Y[t, out] = X[t, in] · Wᵀ (+ b)` (bf16 out, `gemm_nt`)
//! - [`bwd_dx`]: `dX[t, in] = dY[t, out] · W` (bf16 out, `gemm_nn`)
//! - [`bwd_dw`]: `dW[out, in] (+)= dYᵀ · X` (fp32, `gemm_tn`; deterministic
//!   split-K over tokens when the output has few tiles, see [`dw_splits`])
//! - [`grouped_fwd`], [`grouped_dx`]: per-expert products over the plan's
//!   tile-padded rows, the row gather optionally fused into the A load.
//! - [`add_f32`]: `dst += src` on fp32 (the split-K reduction, one split)
//!
//! Every operand is a row-strided view ([`Mat`]), so slices of fused tensors
//! (the Q, K, V columns of one QKV output) work. The 16-byte cp.async path needs
//! each operand's contiguous extent, row stride and offset to be multiples of 8
//! elements; otherwise the kernels take their scalar-load path (any shape, same
//! results, slower).

use half::bf16;

use super::moe_permute::MoePlan;
use crate::backend::gpu::params;
use crate::backend::gpu::{Buf, Executor, GpuError};
use bytemuck::Pod;

type Result<T> = std::result::Result<T, GpuError>;

/// `Gemm::run`: validation, tile / split choice and the launch.
mod run;

/// `dst += src` on fp32 (the split-K reduction with one split).
mod add;
pub use add::add_f32;

/// The reduction slice (cuda/params.h); split-K ranges are multiples.
const BK: usize = params::GEMM_BK as usize;
/// Pipeline depth (cuda/params.h).
const STAGES: usize = params::GEMM_STAGES as usize;
/// Blocks that fill the H200 twice (132 SMs, 2 big blocks each): below this the
/// big tile leaves SMs idle, so dense products take the small tile and dW splits K.
/// A constant, not the device's count: results must not depend on the machine.
const TARGET_BLOCKS: usize = 264;
/// Minimum reduction rows per split of dW (32 slices of BK).
const MIN_SPLIT_ROWS: usize = 1024;

/// A row-major `[rows, cols]` matrix inside `buf`: element `(r, c)` at
/// `offset + r * ld + c`.
pub struct Mat<'a, T: Pod> {
    pub buf: &'a Buf<T>,
    pub offset: usize,
    pub ld: usize,
}

impl<T: Pod> Clone for Mat<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Pod> Copy for Mat<'_, T> {}

impl<'a, T: Pod> Mat<'a, T> {
    /// The whole buffer as a dense matrix of `cols` columns.
    pub fn dense(buf: &'a Buf<T>, cols: usize) -> Self {
        Mat {
            buf,
            offset: 0,
            ld: cols,
        }
    }
    /// Columns from `offset` on, rows `ld` apart.
    pub fn view(buf: &'a Buf<T>, offset: usize, ld: usize) -> Self {
        Mat { buf, offset, ld }
    }
    fn addr(&self) -> u64 {
        self.buf.addr() + (self.offset * size_of::<T>()) as u64
    }
    /// 16-byte path: stride and start multiples of 16 bytes.
    fn vec_ok(&self) -> bool {
        (self.ld * size_of::<T>()).is_multiple_of(16) && self.addr().is_multiple_of(16)
    }
}

/// Block tile of the dense and grouped kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// 128 x 128, 128 threads (`gemm_<op>`).
    Big,
    /// 64 x 64, 128 threads (`gemm_<op>_small`).
    Small,
}

impl Tile {
    /// Block tile height and width (the MoE plan's tile must be a multiple).
    pub fn size(self) -> usize {
        match self {
            Tile::Big => 128,
            Tile::Small => 64,
        }
    }
    /// Both tiles run 4 warps (2 x 2): 64 x 64 (big) or 32 x 32 (small) each.
    fn threads(self) -> u32 {
        128
    }
    fn smem(self) -> u32 {
        (STAGES * 2 * self.size() * BK * 2) as u32
    }
    /// The tile of a dense product: big unless it gives too few blocks.
    pub fn for_shape(m: usize, n: usize) -> Tile {
        if m.div_ceil(128) * n.div_ceil(128) >= TARGET_BLOCKS / 2 {
            Tile::Big
        } else {
            Tile::Small
        }
    }
}

/// Which product (see cuda/gemm.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `C[M,N] = A[M,K] · B[N,K]ᵀ`, bf16 out.
    Nt,
    /// `C[M,N] = A[M,K] · B[K,N]`, bf16 out.
    Nn,
    /// `C[M,N] (+)= A[K,M]ᵀ · B[K,N]`, fp32 out.
    Tn,
}

/// The output of a product.
#[derive(Clone, Copy)]
pub enum Out<'a> {
    /// `Nt` / `Nn`: `[M, N]` bf16, overwritten.
    Bf16(Mat<'a, bf16>),
    /// `Tn`: `[M, N]` fp32, overwritten or accumulated.
    F32 { c: Mat<'a, f32>, accumulate: bool },
}

/// Per-expert products over a plan. `Nt` / `Nn`: M is the plan's rows, B holds
/// one matrix per expert. `Tn` (grouped dW): K is the plan's rows, expert e
/// reduces over its segment `expert_offset[e]..expert_offset[e+1]` (read on the
/// device) into the output's expert block `e` (`[E * M, N]`).
#[derive(Clone, Copy)]
pub struct Group<'a> {
    pub plan: &'a MoePlan,
    /// `Nt`/`Nn`: A row r is `a` row `sorted_slot[r] / k` (the routed token);
    /// `Tn`: B row r likewise. Else row r; padding rows read as zeros.
    pub gather: bool,
}

/// `Nt` with the SwiGLU epilogue: B is `[gate rows; up rows]` (N = 2F), the
/// output is `H[M, F] = silu(gate) * up` (gate and up rounded to bf16 first).
#[derive(Clone, Copy)]
pub struct Swiglu<'a> {
    /// Also writes the bf16 pre-activations `[M, 2F]` (gate columns, then up),
    /// the input of `swiglu_bwd`; `None`: the backward recomputes them.
    pub pre: Option<Mat<'a, bf16>>,
}

/// One product, every knob explicit. [`fwd`], [`bwd_dx`], [`bwd_dw`] and the
/// grouped wrappers fill it; tests use it to force tiles, splits and paths.
#[derive(Clone, Copy)]
pub struct Gemm<'a> {
    pub op: Op,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// `Nt`/`Nn`: `[M, K]`; `Tn`: `[K, M]`. Gathered: the token rows.
    pub a: Mat<'a, bf16>,
    /// `Nt`: `[N, K]`; `Nn`/`Tn`: `[K, N]`. Grouped: expert e's matrix starts
    /// `e * N * K` elements after the view's start (contiguous experts).
    pub b: Mat<'a, bf16>,
    pub out: Out<'a>,
    /// `[N]`, added in the epilogue (`Nt`/`Nn`).
    pub bias: Option<&'a Buf<f32>>,
    /// `None`: [`Tile::for_shape`] (grouped: big when the plan's tile allows).
    /// Products off the 16-byte path always run the small tile (scalar loads).
    pub tile: Option<Tile>,
    /// `Tn`: reduction splits; `None`: [`dw_splits`]. More than one needs `workspace`.
    pub splits: Option<usize>,
    /// `Tn` split-K partials, at least [`dw_workspace_len`] elements.
    pub workspace: Option<&'a Buf<f32>>,
    pub group: Option<Group<'a>>,
    /// `Nt` only: the fused SwiGLU epilogue (`out` is `H[M, N/2]`).
    pub swiglu: Option<Swiglu<'a>>,
    /// Forces the scalar-load path (tests).
    pub scalar: bool,
}

/// Reduction splits of dW for a product with `m x n` outputs over `k` rows:
/// enough blocks to fill the GPU, each split at least `MIN_SPLIT_ROWS` rows.
pub fn dw_splits(m: usize, n: usize, k: usize) -> usize {
    let tiles = m.div_ceil(128) * n.div_ceil(128);
    TARGET_BLOCKS.div_ceil(tiles).min(k / MIN_SPLIT_ROWS).max(1)
}

/// Splits per expert of grouped dW (`[E, m, n]` over the plan's rows): as
/// [`dw_splits`] with the balanced share of routed rows per expert (the
/// segments' lengths stay on the device).
pub fn grouped_dw_splits(plan: &MoePlan, m: usize, n: usize) -> usize {
    let r = &plan.routing;
    let tiles = m.div_ceil(128) * n.div_ceil(128) * r.n_experts;
    let rows = r.tokens * r.k / r.n_experts.max(1);
    TARGET_BLOCKS
        .div_ceil(tiles)
        .min(rows / MIN_SPLIT_ROWS)
        .max(1)
}

/// Workspace elements of grouped dW with `splits` per expert (0 for one).
pub fn grouped_dw_workspace_len(plan: &MoePlan, m: usize, n: usize, splits: usize) -> usize {
    if splits > 1 {
        plan.routing.n_experts * splits * m * n
    } else {
        0
    }
}

/// Rows per split (a multiple of BK) and the number of non-empty splits.
fn split_rows(k: usize, splits: usize) -> (usize, usize) {
    let rows = k.div_ceil(splits.max(1)).div_ceil(BK).max(1) * BK;
    (rows, k.div_ceil(rows).max(1))
}

/// Workspace elements `bwd_dw` needs for `dW[m, n]` over `k` rows with `splits`
/// (0 when it does not split).
pub fn dw_workspace_len(m: usize, n: usize, k: usize, splits: usize) -> usize {
    let (_, s) = split_rows(k, splits);
    if s > 1 { s * m * n } else { 0 }
}

impl Gemm<'_> {
    /// A product with defaults: no bias, tile and splits by shape, dense.
    pub fn new<'a>(
        op: Op,
        m: usize,
        n: usize,
        k: usize,
        a: Mat<'a, bf16>,
        b: Mat<'a, bf16>,
        out: Out<'a>,
    ) -> Gemm<'a> {
        Gemm {
            op,
            m,
            n,
            k,
            a,
            b,
            out,
            bias: None,
            tile: None,
            splits: None,
            workspace: None,
            group: None,
            swiglu: None,
            scalar: false,
        }
    }
}

/// Linear forward `y[t, dout] = x[t, din] · wᵀ (+ bias)`, w `[dout, din]`.
#[allow(clippy::too_many_arguments)]
pub fn fwd(
    ex: &Executor,
    x: Mat<bf16>,
    w: Mat<bf16>,
    bias: Option<&Buf<f32>>,
    y: Mat<bf16>,
    t: usize,
    din: usize,
    dout: usize,
) -> Result<()> {
    let mut g = Gemm::new(Op::Nt, t, dout, din, x, w, Out::Bf16(y));
    g.bias = bias;
    g.run(ex)
}

/// Linear input gradient `dx[t, din] = dy[t, dout] · w` (=).
#[allow(clippy::too_many_arguments)]
pub fn bwd_dx(
    ex: &Executor,
    dy: Mat<bf16>,
    w: Mat<bf16>,
    dx: Mat<bf16>,
    t: usize,
    din: usize,
    dout: usize,
) -> Result<()> {
    Gemm::new(Op::Nn, t, din, dout, dy, w, Out::Bf16(dx)).run(ex)
}

/// Linear weight gradient `dw[dout, din] (+)= dyᵀ · x` over `t` rows, fp32.
/// Splits the rows by [`dw_splits`]`(dout, din, t)`; then `workspace` must hold
/// [`dw_workspace_len`] elements.
#[allow(clippy::too_many_arguments)]
pub fn bwd_dw(
    ex: &Executor,
    dy: Mat<bf16>,
    x: Mat<bf16>,
    dw: Mat<f32>,
    accumulate: bool,
    workspace: Option<&Buf<f32>>,
    t: usize,
    din: usize,
    dout: usize,
) -> Result<()> {
    let mut g = Gemm::new(Op::Tn, dout, din, t, dy, x, Out::F32 { c: dw, accumulate });
    g.workspace = workspace;
    g.run(ex)
}

/// Grouped expert forward over the plan's `max_rows` rows:
/// `y[r, n] = A[r, :] · w[e]ᵀ` with e the expert of row r's tile, w `[E, n, k]`.
/// `gather`: A row r is x row `sorted_slot[r] / topk` (x `[tokens, k]`, padding
/// rows zero); else x is the gathered `[max_rows, k]`.
#[allow(clippy::too_many_arguments)]
pub fn grouped_fwd(
    ex: &Executor,
    plan: &MoePlan,
    x: Mat<bf16>,
    gather: bool,
    w: &Buf<bf16>,
    y: Mat<bf16>,
    n: usize,
    k: usize,
) -> Result<()> {
    let mut g = Gemm::new(
        Op::Nt,
        plan.max_rows,
        n,
        k,
        x,
        Mat::dense(w, k),
        Out::Bf16(y),
    );
    g.group = Some(Group { plan, gather });
    g.run(ex)
}

/// Grouped expert input gradient: `dx[r, k] = dy[r, :] · w[e]`, w `[E, n, k]`,
/// dy `[max_rows, n]` in plan order.
pub fn grouped_dx(
    ex: &Executor,
    plan: &MoePlan,
    dy: Mat<bf16>,
    w: &Buf<bf16>,
    dx: Mat<bf16>,
    n: usize,
    k: usize,
) -> Result<()> {
    let mut g = Gemm::new(
        Op::Nn,
        plan.max_rows,
        k,
        n,
        dy,
        Mat::dense(w, k),
        Out::Bf16(dx),
    );
    g.group = Some(Group {
        plan,
        gather: false,
    });
    g.run(ex)
}

/// Grouped expert weight gradient: `dw[e] (+)= dy_eᵀ · x_e` (fp32, dw
/// `[E, n, k]` dense experts or a view with rows `E * n`), over expert e's
/// plan rows (its segment, read on the device; an expert without rows gets
/// `dw[e] = 0` when overwriting). dy `[max_rows, n]` in plan order (padding
/// rows zero); `gather`: x row r is x `[tokens, k]` row `sorted_slot[r] / topk`,
/// else x is the gathered `[max_rows, k]`. Splits each segment by
/// [`grouped_dw_splits`]; then `workspace` must hold [`grouped_dw_workspace_len`].
#[allow(clippy::too_many_arguments)]
pub fn grouped_dw(
    ex: &Executor,
    plan: &MoePlan,
    dy: Mat<bf16>,
    x: Mat<bf16>,
    gather: bool,
    dw: Mat<f32>,
    accumulate: bool,
    workspace: Option<&Buf<f32>>,
    n: usize,
    k: usize,
) -> Result<()> {
    let mut g = Gemm::new(
        Op::Tn,
        n,
        k,
        plan.max_rows,
        dy,
        x,
        Out::F32 { c: dw, accumulate },
    );
    g.group = Some(Group { plan, gather });
    g.workspace = workspace;
    g.run(ex)
}

/// Grouped gate|up forward with SwiGLU fused: `h[r, :f] = silu(g) * u` where
/// `[g | u] = A[r, :] · w[e]ᵀ`, w `[E, 2f, k]` (each expert's gate rows, then
/// its up rows). `pre`: also the bf16 pre-activations `[max_rows, 2f]` (gate
/// columns then up) for `swiglu_bwd`; `None`: the backward recomputes them.
/// `gather` as in [`grouped_fwd`].
#[allow(clippy::too_many_arguments)]
pub fn grouped_fwd_swiglu(
    ex: &Executor,
    plan: &MoePlan,
    x: Mat<bf16>,
    gather: bool,
    w: &Buf<bf16>,
    h: Mat<bf16>,
    pre: Option<Mat<bf16>>,
    f: usize,
    k: usize,
) -> Result<()> {
    let mut g = Gemm::new(
        Op::Nt,
        plan.max_rows,
        2 * f,
        k,
        x,
        Mat::dense(w, k),
        Out::Bf16(h),
    );
    g.group = Some(Group { plan, gather });
    g.swiglu = Some(Swiglu { pre });
    g.run(ex)
}

/// Dense gate|up forward with SwiGLU fused (the shared expert):
/// `h[t, f] = silu(g) * u`, `[g | u] = x[t, :] · wᵀ (+ bias)`, w `[2f, din]`.
#[allow(clippy::too_many_arguments)]
pub fn fwd_swiglu(
    ex: &Executor,
    x: Mat<bf16>,
    w: Mat<bf16>,
    bias: Option<&Buf<f32>>,
    h: Mat<bf16>,
    pre: Option<Mat<bf16>>,
    t: usize,
    din: usize,
    f: usize,
) -> Result<()> {
    let mut g = Gemm::new(Op::Nt, t, 2 * f, din, x, w, Out::Bf16(h));
    g.bias = bias;
    g.swiglu = Some(Swiglu { pre });
    g.run(ex)
}
