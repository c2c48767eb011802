//! Launch wrappers for cuda/embed.cu.

use half::bf16;

use crate::backend::gpu::params::{
    EMBED_TILE, EmbedBwdAllocParams, EmbedBwdReduceParams, EmbedBwdScatterParams,
    EmbedBwdTileParams, EmbedFwdBf16Params, EmbedFwdParams,
};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;

fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| GpuError::Invalid(format!("embedding: bad {what} {v}")))
}

/// A gather's sizes as its kernel takes them, once its buffers are checked.
struct Gather {
    rows: i32,
    d: i32,
    vocab: i32,
    blocks: u32,
}

impl Gather {
    fn check<T: bytemuck::Pod>(
        ex: &Executor,
        ids: &Buf<u32>,
        table: &Buf<T>,
        out: &Buf<bf16>,
        (rows, d, vocab): (usize, usize, usize),
    ) -> Result<Gather> {
        ex.check_buf("embedding ids", ids, rows)?;
        ex.check_buf("embedding table", table, vocab * d)?;
        ex.check_buf("embedding out", out, rows * d)?;
        // One warp per row.
        let rows_per_block = (THREADS / 32) as usize;
        Ok(Gather {
            rows: to_i32("rows", rows)?,
            d: to_i32("d", d)?,
            vocab: to_i32("vocab", vocab)?,
            blocks: rows.div_ceil(rows_per_block) as u32,
        })
    }
}

/// `out[t] = table[ids[t]]`; ids: `[rows]`, table: `[vocab, d]` f32, out: `[rows, d]` bf16.
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
    let g = Gather::check(ex, ids, table, out, (rows, d, vocab))?;
    let params = EmbedFwdParams {
        ids: ids.cptr(),
        table: table.cptr(),
        out: out.mptr(),
        rows: g.rows,
        d: g.d,
        vocab: g.vocab,
        _pad: 0,
    };
    ex.launch(&Launch::linear("embed_fwd", g.blocks, THREADS, params))
}

/// [`fwd`] from the table's bf16 copy (weights loaded for inference keep no
/// fp32 table): bit for bit [`fwd`] when `table` is its table rounded to
/// nearest even, at 4 bytes a row element instead of 6.
pub fn fwd_bf16(
    ex: &Executor,
    ids: &Buf<u32>,
    table: &Buf<bf16>,
    out: &Buf<bf16>,
    rows: usize,
    d: usize,
    vocab: usize,
) -> Result<()> {
    let g = Gather::check(ex, ids, table, out, (rows, d, vocab))?;
    let params = EmbedFwdBf16Params {
        ids: ids.cptr(),
        table: table.cptr(),
        out: out.mptr(),
        rows: g.rows,
        d: g.d,
        vocab: g.vocab,
        _pad: 0,
    };
    ex.launch(&Launch::linear("embed_fwd_bf16", g.blocks, THREADS, params))
}

/// Rows per tile of the backward pass (`EMBED_TILE` in cuda/params.h).
pub const BWD_TILE: usize = EMBED_TILE as usize;
/// Ids share a 32-bit sort key with the row inside the tile (8 bits), and the
/// key 0xFFFFFFFF (id 2^24 - 1, row 255) marks an empty slot: ids stay below
/// 2^24 - 1.
const MAX_VOCAB: usize = (1 << 24) - 1;

/// Largest sort of one id's tiles in `embed_bwd_reduce` (u32 shared memory,
/// 32 KiB): rows up to 8192 tiles (2M rows) per call.
const MAX_SORT: usize = 8192;

/// Device scratch of the backward pass for `rows` rows of width `d` over a
/// table of `vocab` ids: per tile, the sorted distinct ids, each one's dout row
/// or (ids repeated in the tile) an fp32 partial row; per id, its count and
/// segment start.
/// Built on the device from the ids every call: no host plan, no host sync.
pub struct EmbedBwdScratch {
    partial: Buf<f32>,
    tile_ids: Buf<u32>,
    entry_row: Buf<u32>,
    n_groups: Buf<u32>,
    entry_slot: Buf<u32>,
    entry_len: Buf<u32>,
    segment: Buf<u32>,
    /// Zero between calls (`embed_bwd_scatter` resets what the tiles counted).
    id_count: Buf<u32>,
    id_base: Buf<u32>,
    cursor: Buf<u32>,
    rows: usize,
    d: usize,
    vocab: usize,
}

impl EmbedBwdScratch {
    pub fn alloc(ex: &Executor, rows: usize, d: usize, vocab: usize) -> Result<Self> {
        to_i32("rows", rows)?;
        to_i32("d", d)?;
        to_i32("vocab", vocab)?;
        if vocab > MAX_VOCAB {
            return Err(GpuError::Invalid(format!(
                "embedding: vocab {vocab} above the backward's limit of {MAX_VOCAB} ids"
            )));
        }
        let n_tiles = rows.div_ceil(BWD_TILE);
        if n_tiles > MAX_SORT {
            return Err(GpuError::Invalid(format!(
                "embedding: {rows} rows above the backward's limit {}",
                MAX_SORT * BWD_TILE
            )));
        }
        let padded = n_tiles * BWD_TILE;
        Ok(EmbedBwdScratch {
            partial: ex.alloc_zeroed(padded * d)?,
            tile_ids: ex.alloc_zeroed(padded)?,
            entry_row: ex.alloc_zeroed(padded)?,
            n_groups: ex.alloc_zeroed(n_tiles)?,
            entry_slot: ex.alloc_zeroed(padded)?,
            entry_len: ex.alloc_zeroed(padded)?,
            segment: ex.alloc_zeroed(padded)?,
            id_count: ex.alloc_zeroed(vocab)?,
            id_base: ex.alloc_zeroed(vocab)?,
            cursor: ex.alloc_zeroed(1)?,
            rows,
            d,
            vocab,
        })
    }
}

/// `dtable[ids[t]] += dout[t]`, deterministic (fixed summation order, no float
/// atomics); ids: `[rows]` (ids >= vocab contribute nothing, as the forward
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
    if vocab > scratch.vocab {
        return Err(GpuError::Invalid(format!(
            "embedding: vocab {vocab} above the scratch's {}",
            scratch.vocab
        )));
    }
    ex.check_buf("embedding ids", ids, rows)?;
    ex.check_buf("embedding dout", dout, rows * d)?;
    ex.check_buf("embedding dtable", dtable, vocab * d)?;
    let n_tiles = rows.div_ceil(BWD_TILE);
    let n_entries = n_tiles * BWD_TILE;
    let s = scratch;
    let tile = EmbedBwdTileParams {
        ids: ids.cptr(),
        dout: dout.cptr(),
        partial: s.partial.mptr(),
        tile_ids: s.tile_ids.mptr(),
        entry_row: s.entry_row.mptr(),
        n_groups: s.n_groups.mptr(),
        id_count: s.id_count.mptr(),
        entry_slot: s.entry_slot.mptr(),
        cursor: s.cursor.mptr(),
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
    let entry_blocks = n_entries.div_ceil(THREADS as usize) as u32;
    let alloc = EmbedBwdAllocParams {
        tile_ids: s.tile_ids.cptr(),
        n_groups: s.n_groups.cptr(),
        entry_slot: s.entry_slot.cptr(),
        id_count: s.id_count.cptr(),
        id_base: s.id_base.mptr(),
        entry_len: s.entry_len.mptr(),
        cursor: s.cursor.mptr(),
        n_entries: n_entries as i32,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "embed_bwd_alloc",
        entry_blocks,
        THREADS,
        alloc,
    ))?;
    let scatter = EmbedBwdScatterParams {
        tile_ids: s.tile_ids.cptr(),
        n_groups: s.n_groups.cptr(),
        entry_slot: s.entry_slot.cptr(),
        id_base: s.id_base.cptr(),
        id_count: s.id_count.mptr(),
        segment: s.segment.mptr(),
        n_entries: n_entries as i32,
        _pad: 0,
    };
    ex.launch(&Launch::linear(
        "embed_bwd_scatter",
        entry_blocks,
        THREADS,
        scatter,
    ))?;
    let sort_len = n_tiles.next_power_of_two();
    let reduce = EmbedBwdReduceParams {
        dout: dout.cptr(),
        partial: s.partial.cptr(),
        entry_row: s.entry_row.cptr(),
        tile_ids: s.tile_ids.cptr(),
        n_groups: s.n_groups.cptr(),
        entry_slot: s.entry_slot.cptr(),
        entry_len: s.entry_len.cptr(),
        id_base: s.id_base.cptr(),
        segment: s.segment.cptr(),
        dtable: dtable.mptr(),
        sort_len: sort_len as i32,
        d: to_i32("d", d)?,
    };
    // One block per entry (non-slot-0 ones exit at once), 8 columns per thread.
    let cols_per_thread = if d % 8 == 0 { 8 } else { 1 };
    let threads = THREADS.min((d / cols_per_thread).div_ceil(32) as u32 * 32);
    ex.launch(
        &Launch::linear("embed_bwd_reduce", n_entries as u32, threads, reduce)
            .with_smem((sort_len * 4) as u32),
    )
}
