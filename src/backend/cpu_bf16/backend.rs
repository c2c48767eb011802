//! The packed engine behind the tape's op interface: forward ops on f32 host
//! vectors with packed bf16 or f32 weights ([`Bf16Param`]); the products on
//! the packed GEMM,
//! everything else (norms, attention core, routing, activations, pooling)
//! the f32 reference ops of `backend::cpu`. Backward ops are errors: this is
//! an inference engine.

use rayon::prelude::*;

use super::gemm::swiglu_down;
use super::kernel::Kernel;
use super::moe::{self, MoeRouting};
use super::pack::Layout;
use super::params::Bf16Param;
use super::{attention, matmul};
use crate::backend::cpu::{act, alloc, pool, rmsnorm, swiglu, xent};
use crate::engine::{
    AttnDims, Backend, FfnDims, FfnGradRefs, FfnRefs, MoeDims, MoeGradRefs, MoeRefs, OpError,
    OpResult,
};

/// The bf16 CPU inference engine: the micro-kernel it runs.
#[derive(Clone, Copy, Debug)]
pub struct CpuBf16 {
    kernel: Kernel,
}

impl CpuBf16 {
    /// The fastest kernel this CPU has (AVX-512 BF16, else portable).
    pub fn new() -> CpuBf16 {
        crate::backend::cpu::alloc::keep_freed_memory();
        CpuBf16 {
            kernel: Kernel::detect(),
        }
    }

    /// A given kernel; an error if this CPU cannot run it.
    pub fn with_kernel(kernel: Kernel) -> OpResult<CpuBf16> {
        if !kernel.available() {
            return Err(OpError::msg(
                "cpu-bf16",
                format!("this CPU cannot run the {} kernel", kernel.name()),
            ));
        }
        crate::backend::cpu::alloc::keep_freed_memory();
        Ok(CpuBf16 { kernel })
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
}

impl Default for CpuBf16 {
    fn default() -> Self {
        CpuBf16::new()
    }
}

fn inference_only<T>(op: &'static str) -> OpResult<T> {
    Err(OpError::msg(
        op,
        "the bf16 CPU engine is inference-only (no backward); train on the f32 engine",
    ))
}

/// A vector filled by `f`, which must write every element (no zero fill).
fn vec_from(n: usize, f: impl FnOnce(&mut [f32])) -> Vec<f32> {
    // Zero-filled after all: `f` takes `&mut [f32]`, which must be
    // initialised; the products (the large buffers) use `matmul_into`.
    let mut v = vec![0f32; n];
    f(&mut v);
    v
}

impl Backend<f32> for CpuBf16 {
    type Tensor = Vec<f32>;
    type Param = Bf16Param;
    type AttnSaved = ();
    type MoeSaved = MoeRouting;
    type FfnSaved = ();
    type LmHeadSaved = ();

    fn name(&self) -> &'static str {
        "cpu-bf16"
    }
    fn len(&self, x: &Vec<f32>) -> usize {
        x.len()
    }
    fn to_host(&self, x: &Vec<f32>) -> OpResult<Vec<f32>> {
        Ok(x.clone())
    }
    fn zeros(&self, n: usize) -> OpResult<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn scalar(&self, v: f32) -> OpResult<Vec<f32>> {
        Ok(vec![v])
    }
    fn add_assign(&self, acc: &mut Vec<f32>, x: &Vec<f32>) -> OpResult<()> {
        acc.iter_mut().zip(x).for_each(|(a, &b)| *a += b);
        Ok(())
    }
    fn add(&self, a: &Vec<f32>, b: &Vec<f32>) -> OpResult<Vec<f32>> {
        if a.len() != b.len() {
            return Err(OpError::msg(
                "add",
                format!("{} vs {} elements", a.len(), b.len()),
            ));
        }
        Ok(a.iter().zip(b).map(|(&x, &y)| x + y).collect())
    }

    fn embedding_fwd(&self, ids: &[u32], table: &Bf16Param, d: usize) -> OpResult<Vec<f32>> {
        let table = table.f32("embedding_fwd")?;
        let rows = table.len() / d.max(1);
        let mut y = Vec::with_capacity(ids.len() * d);
        for &id in ids {
            if id as usize >= rows {
                return Err(OpError::msg(
                    "embedding_fwd",
                    format!("token id {id} is past the table's {rows} rows"),
                ));
            }
            y.extend_from_slice(&table[id as usize * d..][..d]);
        }
        Ok(y)
    }
    fn embedding_bwd(&self, _: &[u32], _: &Vec<f32>, _: usize, _: &mut Bf16Param) -> OpResult<()> {
        inference_only("embedding_bwd")
    }

    fn rmsnorm_fwd(&self, x: &Vec<f32>, w: &Bf16Param, d: usize) -> OpResult<(Vec<f32>, Vec<f32>)> {
        let w = w.f32("rmsnorm_fwd")?;
        if w.len() != d || !x.len().is_multiple_of(d.max(1)) {
            return Err(OpError::msg(
                "rmsnorm_fwd",
                "gain or input of the wrong size",
            ));
        }
        let (mut y, mut rstd) = (alloc::uninit(x.len()), alloc::uninit(x.len() / d));
        rmsnorm::fwd(x, w, d, 1e-6, &mut y, &mut rstd);
        // SAFETY: `fwd` writes every element of both.
        Ok(unsafe { (alloc::assume_init(y), alloc::assume_init(rstd)) })
    }
    fn rmsnorm_bwd(
        &self,
        _: &Vec<f32>,
        _: &Bf16Param,
        _: &Vec<f32>,
        _: &Vec<f32>,
        _: usize,
        _: &mut Bf16Param,
    ) -> OpResult<Vec<f32>> {
        inference_only("rmsnorm_bwd")
    }

    fn linear_fwd(
        &self,
        x: &Vec<f32>,
        w: &Bf16Param,
        b: Option<&Bf16Param>,
        rows: usize,
        din: usize,
        dout: usize,
    ) -> OpResult<Vec<f32>> {
        const OP: &str = "linear_fwd (bf16)";
        let w = &w.packed(OP, 1, Layout::Plain)?[0];
        if (w.n, w.k) != (dout, din) || x.len() != rows * din {
            return Err(OpError::msg(
                OP,
                format!(
                    "weight [{}, {}], x of {} for [{rows}, {din}] -> {dout}",
                    w.n,
                    w.k,
                    x.len()
                ),
            ));
        }
        let bias = b.map(|b| b.f32(OP)).transpose()?;
        matmul(self.kernel, x, None, rows, w, bias)
    }
    #[allow(clippy::too_many_arguments)]
    fn linear_bwd(
        &self,
        _: &Vec<f32>,
        _: &Bf16Param,
        _: &Vec<f32>,
        _: usize,
        _: usize,
        _: usize,
        _: &mut Bf16Param,
        _: Option<&mut Bf16Param>,
    ) -> OpResult<Vec<f32>> {
        inference_only("linear_bwd")
    }

    fn swiglu_fwd(&self, gate: &Vec<f32>, up: &Vec<f32>) -> OpResult<Vec<f32>> {
        if gate.len() != up.len() {
            return Err(OpError::msg("swiglu_fwd", "gate and up differ in size"));
        }
        Ok(vec_from(gate.len(), |y| swiglu::fwd(gate, up, y)))
    }
    fn swiglu_bwd(
        &self,
        _: &Vec<f32>,
        _: &Vec<f32>,
        _: &Vec<f32>,
    ) -> OpResult<(Vec<f32>, Vec<f32>)> {
        inference_only("swiglu_bwd")
    }

    fn gelu_fwd(&self, x: &Vec<f32>) -> OpResult<Vec<f32>> {
        Ok(vec_from(x.len(), |y| act::gelu_fwd(x, y)))
    }
    fn gelu_bwd(&self, _: &Vec<f32>, _: &Vec<f32>) -> OpResult<Vec<f32>> {
        inference_only("gelu_bwd")
    }

    fn attention_fwd(
        &self,
        qkv: &Vec<f32>,
        mask: &[u8],
        dims: &AttnDims,
        theta: f64,
    ) -> OpResult<(Vec<f32>, ())> {
        Ok((attention::fwd(self.kernel, qkv, mask, dims, theta)?, ()))
    }
    fn attention_bwd(&self, _: &(), _: &Vec<f32>, _: &AttnDims, _: f64) -> OpResult<Vec<f32>> {
        inference_only("attention_bwd")
    }

    fn moe_fwd(
        &self,
        z: &Vec<f32>,
        resid: &Vec<f32>,
        mask: &[u8],
        w: MoeRefs<Bf16Param>,
        dims: &MoeDims,
        _train: bool,
    ) -> OpResult<(Vec<f32>, MoeRouting)> {
        moe::fwd(self.kernel, z, resid, mask, w, dims)
    }
    fn moe_aux(&self, saved: &MoeRouting) -> OpResult<Vec<f32>> {
        Ok(vec![saved.aux])
    }
    fn moe_routing(&self, saved: &MoeRouting) -> OpResult<Vec<u32>> {
        Ok(saved.topk_idx.clone())
    }
    fn moe_bwd(
        &self,
        _: &Vec<f32>,
        _: MoeRefs<Bf16Param>,
        _: &MoeRouting,
        _: &Vec<f32>,
        _: f32,
        _: &MoeDims,
        _: MoeGradRefs<Bf16Param>,
    ) -> OpResult<Vec<f32>> {
        inference_only("moe_bwd")
    }

    /// Gate|up as one packed product with SwiGLU in its epilogue (as an
    /// expert), then down, then the residual.
    fn ffn_fwd(
        &self,
        z: &Vec<f32>,
        resid: &Vec<f32>,
        w: FfnRefs<Bf16Param>,
        dims: &FfnDims,
        _train: bool,
    ) -> OpResult<(Vec<f32>, ())> {
        const OP: &str = "ffn_fwd (bf16)";
        let FfnDims { t, d, ff } = *dims;
        let [pair, _, down] = w;
        let pair = &pair.packed(OP, 1, Layout::Swiglu)?[0];
        let down = &down.packed(OP, 1, Layout::Plain)?[0];
        if (pair.n, pair.k) != (ff, d)
            || (down.n, down.k) != (d, ff)
            || z.len() != t * d
            || resid.len() != t * d
        {
            return Err(OpError::msg(OP, format!("shapes do not match {dims:?}")));
        }
        let mut out = swiglu_down(self.kernel, z, t, pair, down)?;
        out.par_chunks_mut(d)
            .zip(resid.par_chunks(d))
            .for_each(|(o, r)| o.iter_mut().zip(r).for_each(|(y, &r)| *y += r));
        Ok((out, ()))
    }
    fn ffn_bwd(
        &self,
        _: &Vec<f32>,
        _: FfnRefs<Bf16Param>,
        _: &(),
        _: &Vec<f32>,
        _: &FfnDims,
        _: FfnGradRefs<Bf16Param>,
    ) -> OpResult<Vec<f32>> {
        inference_only("ffn_bwd")
    }

    fn mean_pool_fwd(
        &self,
        x: &Vec<f32>,
        mask: &[u8],
        b: usize,
        s: usize,
        d: usize,
    ) -> OpResult<Vec<f32>> {
        if x.len() != b * s * d || mask.len() != b * s {
            return Err(OpError::msg(
                "mean_pool_fwd",
                "input or mask of the wrong size",
            ));
        }
        Ok(vec_from(b * d, |y| pool::mean_fwd(x, mask, b, s, d, y)))
    }
    fn mean_pool_bwd(
        &self,
        _: &Vec<f32>,
        _: &[u8],
        _: usize,
        _: usize,
        _: usize,
    ) -> OpResult<Vec<f32>> {
        inference_only("mean_pool_bwd")
    }

    fn xent_fwd(&self, logits: &Vec<f32>, targets: &[u32], ignore: u32) -> OpResult<f32> {
        let mut losses = vec![0f32; targets.len()];
        Ok(xent::fwd(logits, targets, ignore, &mut losses))
    }
    fn xent_bwd(&self, _: &Vec<f32>, _: &[u32], _: u32, _: f32) -> OpResult<Vec<f32>> {
        inference_only("xent_bwd")
    }

    fn lm_head_xent_fwd(
        &self,
        h: &Vec<f32>,
        table: &Bf16Param,
        d: usize,
        targets: &[u32],
        ignore: u32,
    ) -> OpResult<(f32, ())> {
        // The logits on this engine's packed products (bf16 or f32 slots,
        // as the other weights), f32 sums, a vocabulary slice at a time.
        let head = table.lm_head("lm_head_xent_fwd", d)?;
        let loss = super::lm_head::loss(self.kernel, head, h, d, targets, ignore)?;
        Ok((loss, ()))
    }
    #[allow(clippy::too_many_arguments)]
    fn lm_head_xent_bwd(
        &self,
        _: &Vec<f32>,
        _: &Bf16Param,
        _: usize,
        _: &[u32],
        _: &(),
        _: f32,
        _: &mut Bf16Param,
    ) -> OpResult<Vec<f32>> {
        inference_only("lm_head_xent_bwd")
    }
}
