//! Launch wrappers for cuda/embed.cu.

use half::bf16;

use crate::backend::gpu::params::{EmbedBwdReduceParams, EmbedBwdTileParams, EmbedFwdParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;

fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| GpuError::Invalid(format!("embedding: bad {what} {v}")))
}

/// out[t] = table[ids[t]]; ids: [rows], table: [vocab, d] f32, out: [rows, d] bf16.
/// Ids outside the table give zero rows.
pub fn fwd(
    ex: &Executor,
    ids: &Buf<u32>,
    table: &Buf<f32>,
    out: &Buf<bf16>,
    rows: usize,
    d: usize,
    vocab: usize,
) -> Result<()> {
    ex.check_buf("embedding ids", ids, rows)?;
    ex.check_buf("embedding table", table, vocab * d)?;
    ex.check_buf("embedding out", out, rows * d)?;
    let params = EmbedFwdParams {
        ids: ids.cptr(),
        table: table.cptr(),
        out: out.mptr(),
        rows: to_i32("rows", rows)?,
        d: to_i32("d", d)?,
        vocab: to_i32("vocab", vocab)?,
        _pad: 0,
    };
    let rows_per_block = (THREADS / 32) as usize;
    ex.launch(&Launch::linear(
        "embed_fwd",
        rows.div_ceil(rows_per_block) as u32,
        THREADS,
        params,
    ))
}

/// Rows per tile of the backward pass (`EMBED_TILE` in cuda/params.h).
pub const BWD_TILE: usize = 256;
/// Ids share a 32-bit sort key with the row inside the tile (8 bits).
const MAX_VOCAB: usize = 1 << 24;

/// Device scratch of the backward pass for `rows` rows of width `d`: per tile,
/// one fp32 partial row per distinct id and the tile's sorted distinct ids.
/// Built on the device from the ids every call: no host plan, no host sync.
pub struct EmbedBwdScratch {
    partial: Buf<f32>,
    tile_ids: Buf<u32>,
    n_groups: Buf<u32>,
    rows: usize,
    d: usize,
}

impl EmbedBwdScratch {
    pub fn alloc(ex: &Executor, rows: usize, d: usize) -> Result<Self> {
        to_i32("rows", rows)?;
        to_i32("d", d)?;
        let padded = rows.div_ceil(BWD_TILE) * BWD_TILE;
        Ok(EmbedBwdScratch {
            partial: ex.alloc_zeroed(padded * d)?,
            tile_ids: ex.alloc_zeroed(padded)?,
            n_groups: ex.alloc_zeroed(rows.div_ceil(BWD_TILE))?,
            rows,
            d,
        })
    }
}

/// dtable[ids[t]] += dout[t], deterministic (fixed summation order, no float
/// atomics); ids: [rows] (ids >= vocab contribute nothing, as the forward
/// zeroes them), dout: [rows, d], dtable: [vocab, d].
pub fn bwd(
    ex: &Executor,
    ids: &Buf<u32>,
    dout: &Buf<bf16>,
    dtable: &Buf<f32>,
    scratch: &EmbedBwdScratch,
    vocab: usize,
) -> Result<()> {
    let (rows, d) = (scratch.rows, scratch.d);
    if vocab > MAX_VOCAB {
        return Err(GpuError::Invalid(format!(
            "embedding: vocab {vocab} above the backward's limit {MAX_VOCAB}"
        )));
    }
    ex.check_buf("embedding ids", ids, rows)?;
    ex.check_buf("embedding dout", dout, rows * d)?;
    ex.check_buf("embedding dtable", dtable, vocab * d)?;
    let n_tiles = rows.div_ceil(BWD_TILE);
    let tile = EmbedBwdTileParams {
        ids: ids.cptr(),
        dout: dout.cptr(),
        partial: scratch.partial.mptr(),
        tile_ids: scratch.tile_ids.mptr(),
        n_groups: scratch.n_groups.mptr(),
        rows: to_i32("rows", rows)?,
        d: to_i32("d", d)?,
        vocab: to_i32("vocab", vocab)?,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "embed_bwd_tile",
        n_tiles as u32,
        BWD_TILE as u32,
        tile,
    ))?;
    let reduce = EmbedBwdReduceParams {
        partial: scratch.partial.cptr(),
        tile_ids: scratch.tile_ids.cptr(),
        n_groups: scratch.n_groups.cptr(),
        dtable: dtable.mptr(),
        n_tiles: n_tiles as i32,
        d: to_i32("d", d)?,
    };
    let threads = THREADS.min((d as u32).div_ceil(32) * 32);
    let mut launch = Launch::linear(
        "embed_bwd_reduce",
        (n_tiles * BWD_TILE) as u32,
        threads,
        reduce,
    );
    launch.grid[1] = (d as u32).div_ceil(threads);
    ex.launch(&launch)
}
