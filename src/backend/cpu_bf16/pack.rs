//! bf16 operands in the layout the micro-kernels read (the tile design is in
//! the module docs of `cpu_bf16`): weights packed once at load into column
//! panels of [`NR`] outputs, activations packed per tile of [`MR`] rows.
//!
//! A k-pair is one `u32`: the bf16 of an even k in the low half, the next k
//! in the high half (what `vdpbf16ps` multiplies lane by lane). An odd `k` is
//! padded with a zero; a panel short of outputs with zero weights.

use half::bf16;

/// Output columns per micro tile (four 16-lane f32 vectors).
pub const NR: usize = 64;
/// Rows per micro tile: MR x 4 accumulators = 24 of the 32 zmm registers.
pub const MR: usize = 6;

/// bf16 bits of `x`, rounded to nearest even (as `vcvtne2ps2bf16` does).
#[inline]
pub fn bf16_bits(x: f32) -> u32 {
    u32::from(bf16::from_f32(x).to_bits())
}

/// The f32 value of the bf16 in the low half of `bits`.
#[inline(always)]
pub fn lo_f32(bits: u32) -> f32 {
    f32::from_bits(bits << 16)
}

/// The f32 value of the bf16 in the high half of `bits`.
#[inline(always)]
pub fn hi_f32(bits: u32) -> f32 {
    f32::from_bits(bits & 0xFFFF_0000)
}

/// What one `u32` of a packed operand holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// Two bf16: the pair of k (even low, odd high) `vdpbf16ps` multiplies.
    Bf16Pair,
    /// One f32 (its bits): one k per slot, for the f32 engine.
    F32,
}

impl Elem {
    /// Slots a row of `k` values takes.
    pub fn slots(self, k: usize) -> usize {
        match self {
            Elem::Bf16Pair => k.div_ceil(2),
            Elem::F32 => k,
        }
    }
}

/// How a panel's columns map to outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Column j of panel p is output `p·NR + j`.
    Plain,
    /// A SwiGLU pair: columns `0..NR/2` of panel p are gate rows
    /// `p·NR/2 + j`, columns `NR/2..NR` the up rows of the same outputs; the
    /// kernel writes `silu(gate)·up`, NR/2 outputs per panel.
    Swiglu,
}

/// 16 slots on a 64-byte boundary: a panel's storage unit, so each of the
/// kernel's NR-slot weight loads covers whole cache lines. On an Intel
/// Xeon (family 6, model 207), panels at malloc's 16-byte alignment split
/// every 64-byte load across two lines: the f32 GEMM ran 7-10 % slower
/// (interleaved A/B, one thread).
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
pub struct Line([u32; 16]);

const _: () = assert!(NR.is_multiple_of(16) && size_of::<Line>() == 64);

/// A weight `W [n, k]` (PyTorch `[out, in]`) as column panels:
/// `data[panel][slot][NR]`, a slot a bf16 pair or one f32 ([`Elem`]).
#[derive(Clone, Debug)]
pub struct PackedMat {
    /// Outputs (columns of `y`).
    pub n: usize,
    /// Inputs.
    pub k: usize,
    /// Slots per row: k-pairs (`ceil(k / 2)`) for bf16, `k` for f32.
    pub kp: usize,
    pub layout: Layout,
    pub elem: Elem,
    /// The slots, 64-byte aligned (see [`Line`]); read through
    /// [`PackedMat::slots`]. May hold more lines than the matrix uses (a
    /// reused storage keeps its length: lines once written need no zero
    /// fill when it grows again).
    data: Vec<Line>,
    /// Lines the matrix uses.
    lines: usize,
}

impl PackedMat {
    /// Packs `w [n, k]` row-major as bf16.
    pub fn new(w: &[f32], n: usize, k: usize) -> PackedMat {
        PackedMat::new_as(Elem::Bf16Pair, w, n, k)
    }

    /// Packs `w [n, k]` row-major as `elem`.
    pub fn new_as(elem: Elem, w: &[f32], n: usize, k: usize) -> PackedMat {
        debug_assert_eq!(w.len(), n * k);
        let kp = elem.slots(k);
        let panels = n.div_ceil(NR);
        let mut data = vec![Line::default(); panels * kp * NR / 16];
        let slots: &mut [u32] = bytemuck::cast_slice_mut(&mut data);
        for p in 0..panels {
            for j in 0..NR.min(n - p * NR) {
                pack_column(
                    elem,
                    &w[(p * NR + j) * k..][..k],
                    &mut slots[p * kp * NR + j..],
                    kp,
                );
            }
        }
        PackedMat {
            n,
            k,
            kp,
            layout: Layout::Plain,
            elem,
            lines: data.len(),
            data,
        }
    }

    /// A plain `[n, k]` matrix of `elem` in `storage` (a matrix's, from
    /// [`PackedMat::into_storage`]), not zero-filled: the slots hold
    /// whatever `storage` held, and the caller must write every one
    /// through [`PackedMat::slots_mut`] (the strided products' packing).
    /// Reusing the storage spares the page faults of a fresh allocation,
    /// which cost more than the packing of a per-product matrix.
    pub fn unwritten_in(mut storage: Vec<Line>, elem: Elem, n: usize, k: usize) -> PackedMat {
        let kp = elem.slots(k);
        let lines = n.div_ceil(NR) * kp * NR / 16;
        if storage.len() < lines {
            storage.resize(lines, Line::default());
        }
        PackedMat {
            lines,
            n,
            k,
            kp,
            layout: Layout::Plain,
            elem,
            data: storage,
        }
    }

    /// The slots' storage, for [`PackedMat::unwritten_in`].
    pub fn into_storage(self) -> Vec<Line> {
        self.data
    }

    /// Packs a SwiGLU pair `gate [f, k]`, `up [f, k]` into one matrix whose
    /// product is `silu(x·gateᵀ)·(x·upᵀ)` `[m, f]` (see [`Layout::Swiglu`]).
    pub fn swiglu(gate: &[f32], up: &[f32], f: usize, k: usize) -> PackedMat {
        PackedMat::swiglu_as(Elem::Bf16Pair, gate, up, f, k)
    }

    /// [`PackedMat::swiglu`] as `elem`.
    pub fn swiglu_as(elem: Elem, gate: &[f32], up: &[f32], f: usize, k: usize) -> PackedMat {
        debug_assert_eq!(gate.len(), f * k);
        debug_assert_eq!(up.len(), f * k);
        let kp = elem.slots(k);
        let half = NR / 2;
        let panels = f.div_ceil(half);
        let mut data = vec![Line::default(); panels * kp * NR / 16];
        let slots: &mut [u32] = bytemuck::cast_slice_mut(&mut data);
        for p in 0..panels {
            for j in 0..half.min(f - p * half) {
                let row = p * half + j;
                let base = p * kp * NR;
                pack_column(elem, &gate[row * k..][..k], &mut slots[base + j..], kp);
                pack_column(elem, &up[row * k..][..k], &mut slots[base + half + j..], kp);
            }
        }
        PackedMat {
            n: f,
            k,
            kp,
            layout: Layout::Swiglu,
            elem,
            lines: data.len(),
            data,
        }
    }

    /// Outputs one panel produces.
    pub fn outputs_per_panel(&self) -> usize {
        match self.layout {
            Layout::Plain => NR,
            Layout::Swiglu => NR / 2,
        }
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(self.outputs_per_panel())
    }

    /// Every panel's slots, in order (64-byte aligned).
    pub fn slots(&self) -> &[u32] {
        bytemuck::cast_slice(&self.data[..self.lines])
    }

    /// Every panel's slots, writable.
    pub fn slots_mut(&mut self) -> &mut [u32] {
        bytemuck::cast_slice_mut(&mut self.data[..self.lines])
    }

    /// Panel `p`: `kp · NR` slots, starting on a 64-byte boundary.
    pub fn panel(&self, p: usize) -> &[u32] {
        &self.slots()[p * self.kp * NR..][..self.kp * NR]
    }
}

/// One weight row (an output column) into a panel column, stride NR.
fn pack_column(elem: Elem, row: &[f32], dst: &mut [u32], kp: usize) {
    if elem == Elem::F32 {
        for (q, &v) in row.iter().enumerate() {
            dst[q * NR] = v.to_bits();
        }
        return;
    }
    for q in 0..kp {
        let lo = bf16_bits(row[2 * q]);
        let hi = row.get(2 * q + 1).map_or(0, |&v| bf16_bits(v));
        dst[q * NR] = lo | hi << 16;
    }
}

/// [`pack_tile_portable`] for f32 slots: the rows' bits, `[MR][k]`.
pub fn pack_tile_f32(x: &[f32], k: usize, rows: &[usize], tile: &mut [u32]) {
    for (i, dst) in tile.chunks_exact_mut(k.max(1)).take(MR).enumerate() {
        match rows.get(i) {
            Some(&r) => {
                for (d, &v) in dst.iter_mut().zip(&x[r * k..][..k]) {
                    *d = v.to_bits();
                }
            }
            None => dst.fill(0),
        }
    }
}

/// Packs rows of `x` (width `k`) into one tile `[MR][kp]`: `rows` gives the
/// source row of each tile row (fewer than MR: the rest are zero).
pub fn pack_tile_portable(x: &[f32], k: usize, rows: &[usize], tile: &mut [u32]) {
    let kp = k.div_ceil(2);
    for (i, dst) in tile.chunks_exact_mut(kp).take(MR).enumerate() {
        match rows.get(i) {
            Some(&r) => {
                let src = &x[r * k..][..k];
                for (q, d) in dst.iter_mut().enumerate() {
                    let lo = bf16_bits(src[2 * q]);
                    let hi = src.get(2 * q + 1).map_or(0, |&v| bf16_bits(v));
                    *d = lo | hi << 16;
                }
            }
            None => dst.fill(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_hold_even_k_low_and_odd_k_high_with_zero_padding() {
        // w [2, 3]: k odd, one panel with 2 of NR columns used.
        let w = [1.0f32, 2.0, 3.0, -1.0, -2.0, -3.0];
        let p = PackedMat::new(&w, 2, 3);
        assert_eq!((p.kp, p.panels()), (2, 1));
        let at = |q: usize, j: usize| p.panel(0)[q * NR + j];
        assert_eq!((lo_f32(at(0, 0)), hi_f32(at(0, 0))), (1.0, 2.0));
        assert_eq!((lo_f32(at(1, 0)), hi_f32(at(1, 0))), (3.0, 0.0));
        assert_eq!((lo_f32(at(1, 1)), hi_f32(at(1, 1))), (-3.0, 0.0));
        assert_eq!(at(0, 2), 0, "unused columns are zero");
    }

    #[test]
    fn every_panel_and_slot_row_starts_on_a_cache_line() {
        // Odd n and k, f32 and bf16, plain and SwiGLU: each panel (and each
        // NR-slot row in it) the kernel loads begins at a 64-byte boundary.
        let (n, k) = (NR * 2 + 3, 37);
        let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        for elem in [Elem::F32, Elem::Bf16Pair] {
            let plain = PackedMat::new_as(elem, &w, n, k);
            let pair = PackedMat::swiglu_as(elem, &w[..NR * k], &w[NR * k..2 * NR * k], NR, k);
            for m in [&plain, &pair] {
                for p in 0..m.panels() {
                    let panel = m.panel(p);
                    for q in 0..m.kp {
                        let at = panel[q * NR..].as_ptr() as usize;
                        assert_eq!(at % 64, 0, "{elem:?} panel {p} slot row {q}");
                    }
                }
            }
        }
    }

    #[test]
    fn swiglu_panels_put_gate_then_up_of_the_same_outputs() {
        let (f, k) = (NR / 2 + 1, 2);
        let gate: Vec<f32> = (0..f * k).map(|i| i as f32).collect();
        let up: Vec<f32> = gate.iter().map(|v| -v).collect();
        let p = PackedMat::swiglu(&gate, &up, f, k);
        assert_eq!(p.panels(), 2);
        // Output NR/2 (first of panel 1): gate row NR/2 at column 0, up at NR/2.
        let pan = p.panel(1);
        assert_eq!(lo_f32(pan[0]), gate[(NR / 2) * k]);
        assert_eq!(lo_f32(pan[NR / 2]), up[(NR / 2) * k]);
    }
}
