//! [`Gemm::run`]: checks every view against its buffer and the product's
//! shape, picks the tile, the splits and the kernel, and launches it (plus the
//! split-K reduction when the reduction is split).

use super::*;
use crate::backend::gpu::params::{GemmParams, GemmSplitkReduceParams};
use crate::backend::gpu::{Executor, GpuError, Launch};
use bytemuck::Pod;

fn bad(msg: String) -> GpuError {
    GpuError::Invalid(msg)
}

fn dim(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .ok()
        .filter(|&x| x > 0)
        .ok_or_else(|| bad(format!("gemm: bad {what} {v}")))
}

/// Checks that `m` holds `rows x cols` (cols <= ld) inside its buffer.
fn check_view<T: Pod>(
    ex: &Executor,
    what: &str,
    m: &Mat<T>,
    rows: usize,
    cols: usize,
) -> Result<i32> {
    ex.check_buf(what, m.buf, m.buf.len())?;
    let end = m.offset + (rows - 1) * m.ld + cols;
    match i32::try_from(m.ld) {
        Ok(ld) if m.ld >= cols && end <= m.buf.len() => Ok(ld),
        _ => Err(bad(format!(
            "{what}: {rows} x {cols} with ld {} at offset {} does not fit its {} elements",
            m.ld,
            m.offset,
            m.buf.len()
        ))),
    }
}

impl Gemm<'_> {
    pub fn run(&self, ex: &Executor) -> Result<()> {
        let (m, n, k) = (self.m, self.n, self.k);
        let (mi, ni, ki) = (dim("M", m)?, dim("N", n)?, dim("K", k)?);
        let name = format!("gemm {:?} {m}x{n}x{k}", self.op);
        let experts = self.group.map_or(1, |g| g.plan.routing.n_experts);
        let gathered = self.group.is_some_and(|g| g.gather);
        if let Some(g) = self.group {
            let rows = if self.op == Op::Tn { k } else { m };
            if rows != g.plan.max_rows {
                return Err(bad(format!(
                    "{name}: grouped {} must be the plan's {} rows",
                    if self.op == Op::Tn { "K" } else { "M" },
                    g.plan.max_rows
                )));
            }
        }
        // A and B: rows x cols in storage (cols = the contiguous extent).
        let (a_rows, a_cols) = match self.op {
            Op::Tn => (k, m),
            _ if gathered => (self.group.unwrap().plan.routing.tokens, k),
            _ => (m, k),
        };
        let (b_rows, b_cols) = match self.op {
            Op::Nt => (n * experts, k),
            Op::Nn => (k * experts, n),
            Op::Tn if gathered => (self.group.unwrap().plan.routing.tokens, n),
            Op::Tn => (k, n),
        };
        let lda = check_view(ex, &format!("{name} A"), &self.a, a_rows, a_cols)?;
        let ldb = check_view(ex, &format!("{name} B"), &self.b, b_rows, b_cols)?;
        if experts > 1 && self.op != Op::Tn && self.b.ld != b_cols {
            return Err(bad(format!(
                "{name}: grouped B must be dense experts (ld {} != {b_cols})",
                self.b.ld
            )));
        }
        // Outputs: grouped Tn writes E blocks of [M, N]; swiglu writes [M, N/2].
        let c_rows = if self.op == Op::Tn { m * experts } else { m };
        let c_cols = if self.swiglu.is_some() { n / 2 } else { n };
        let (c_bf16, c_f32, ldc, accumulate) = match (self.op, self.out) {
            (Op::Nt | Op::Nn, Out::Bf16(c)) => {
                let ld = check_view(ex, &format!("{name} C"), &c, c_rows, c_cols)?;
                (c.addr(), 0, ld, false)
            }
            (Op::Tn, Out::F32 { c, accumulate }) => {
                let ld = check_view(ex, &format!("{name} C"), &c, c_rows, c_cols)?;
                (0, c.addr(), ld, accumulate)
            }
            _ => {
                return Err(bad(format!("{name}: Nt/Nn write bf16, Tn writes fp32")));
            }
        };
        let (c_pre, ld_pre) = match self.swiglu {
            None => (0, 0),
            Some(sw) => {
                if self.op != Op::Nt || n % 2 != 0 {
                    return Err(bad(format!("{name}: SwiGLU needs Nt with an even N")));
                }
                match sw.pre {
                    Some(pre) => {
                        let ld = check_view(ex, &format!("{name} pre"), &pre, m, n)?;
                        (pre.addr(), ld)
                    }
                    None => (0, 0),
                }
            }
        };
        if let Some(bias) = self.bias {
            if self.op == Op::Tn {
                return Err(bad(format!("{name}: no bias on Tn")));
            }
            ex.check_buf(&format!("{name} bias"), bias, n)?;
        }
        let vec = !self.scalar
            && a_cols % 8 == 0
            && b_cols % 8 == 0
            && self.a.vec_ok()
            && self.b.vec_ok();

        // The big tile has the 16-byte path only: other products take the small one.
        let fit = |t: Tile| if vec { t } else { Tile::Small };
        let mut group_splits = 1;
        let (tile, tile_expert, gather, gather_div, plan_tile) = match self.group {
            Some(g) if self.op == Op::Tn => {
                let plan = g.plan;
                group_splits = self
                    .splits
                    .unwrap_or_else(|| grouped_dw_splits(plan, m, n))
                    .max(1);
                let blocks = m.div_ceil(128) * n.div_ceil(128) * experts * group_splits;
                let tile = fit(self.tile.unwrap_or(if blocks >= TARGET_BLOCKS / 2 {
                    Tile::Big
                } else {
                    Tile::Small
                }));
                let gather = if g.gather { plan.sorted_slot.addr() } else { 0 };
                (tile, 0, gather, plan.routing.k as i32, 0)
            }
            Some(g) => {
                let plan = g.plan;
                let tile = fit(self.tile.unwrap_or(Tile::Big));
                let tile = if plan.tile % tile.size() == 0 {
                    tile
                } else {
                    Tile::Small
                };
                if plan.tile % tile.size() != 0 {
                    return Err(bad(format!(
                        "{name}: plan tile {} is not a multiple of the GEMM block height 64",
                        plan.tile
                    )));
                }
                let gather = if g.gather { plan.sorted_slot.addr() } else { 0 };
                (
                    tile,
                    plan.tile_expert.addr(),
                    gather,
                    plan.routing.k as i32,
                    plan.tile as i32,
                )
            }
            None => (
                fit(self.tile.unwrap_or_else(|| Tile::for_shape(m, n))),
                0,
                0,
                1,
                0,
            ),
        };
        let grouped_tn = self.op == Op::Tn && self.group.is_some();
        let grid_y = m.div_ceil(tile.size());
        let (k_split, splits) = if grouped_tn {
            (0, group_splits)
        } else if self.op == Op::Tn {
            split_rows(k, self.splits.unwrap_or_else(|| dw_splits(m, n, k)))
        } else {
            (k, 1)
        };
        let ws_len = experts * splits * m * n;
        let workspace = if splits > 1 {
            let ws = self
                .workspace
                .ok_or_else(|| bad(format!("{name}: {splits} splits need a workspace")))?;
            ex.check_buf(&format!("{name} workspace"), ws, ws.len())?;
            if ws.len() < ws_len {
                return Err(bad(format!(
                    "{name}: workspace of {} < {ws_len} elements",
                    ws.len(),
                )));
            }
            ws.addr()
        } else {
            0
        };
        let grid_z = if grouped_tn { experts * splits } else { splits };
        // Swiglu: a block covers BN/2 columns of H.
        let grid_x = if self.swiglu.is_some() {
            (n / 2).div_ceil(tile.size() / 2)
        } else {
            n.div_ceil(tile.size())
        };
        if grid_y > 65_535 || grid_z > 65_535 {
            return Err(bad(format!("{name}: grid too large")));
        }
        let c_expert_stride = (m * ldc as usize) as i64;
        let seg_offset = if grouped_tn {
            self.group.unwrap().plan.expert_offset.addr()
        } else {
            0
        };
        let params = GemmParams {
            a: self.a.addr() as *const _,
            b: self.b.addr() as *const _,
            c_bf16: c_bf16 as *mut _,
            c_f32: c_f32 as *mut _,
            bias: self.bias.map_or(std::ptr::null(), |b| b.cptr()),
            workspace: workspace as *mut _,
            tile_expert: tile_expert as *const _,
            gather: gather as *const _,
            seg_offset: seg_offset as *const _,
            c_pre: c_pre as *mut _,
            b_expert_stride: (n * k) as i64,
            c_expert_stride,
            m: mi,
            n: ni,
            k: ki,
            lda,
            ldb,
            ldc,
            k_split: k_split as i32,
            gather_div,
            accumulate: accumulate as i32,
            vec: vec as i32,
            plan_tile,
            group_splits: splits as i32,
            ld_pre,
            _pad: 0,
        };
        let kernel = match (self.op, tile, grouped_tn, self.swiglu.is_some()) {
            (Op::Nt, Tile::Big, _, true) => "gemm_nt_swiglu",
            (Op::Nt, Tile::Small, _, true) => "gemm_nt_swiglu_small",
            (Op::Tn, Tile::Big, true, _) => "gemm_tn_grouped",
            (Op::Tn, Tile::Small, true, _) => "gemm_tn_grouped_small",
            (Op::Nt, Tile::Big, ..) => "gemm_nt",
            (Op::Nn, Tile::Big, ..) => "gemm_nn",
            (Op::Tn, Tile::Big, ..) => "gemm_tn",
            (Op::Nt, Tile::Small, ..) => "gemm_nt_small",
            (Op::Nn, Tile::Small, ..) => "gemm_nn_small",
            (Op::Tn, Tile::Small, ..) => "gemm_tn_small",
        };
        ex.launch(&Launch {
            kernel,
            grid: [grid_x as u32, grid_y as u32, grid_z as u32],
            block: [tile.threads(), 1, 1],
            smem: tile.smem(),
            params,
        })?;
        if splits > 1 {
            let Out::F32 { c, .. } = self.out else {
                unreachable!()
            };
            let p = GemmSplitkReduceParams {
                workspace: workspace as *const _,
                c: c.addr() as *mut _,
                seg_offset: seg_offset as *const _,
                c_expert_stride,
                m: mi,
                n: ni,
                ldc,
                splits: splits as i32,
                accumulate: accumulate as i32,
                experts: experts as i32,
            };
            let blocks = (experts * m * n).div_ceil(256).min(1 << 16) as u32;
            ex.launch(&Launch::linear("gemm_splitk_reduce", blocks, 256, p))?;
        }
        Ok(())
    }
}
