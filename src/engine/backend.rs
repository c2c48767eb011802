//! The op interface the tape dispatches through: where tensors live and the
//! whole-layer ops the model uses, forward and backward. The tape only keeps
//! ids, shapes and each op's saved state; a [`Backend`] owns the storage and
//! the arithmetic.
//!
//! - The CPU engine is [`crate::backend::cpu::Cpu`]: `Tensor` is a host
//!   `Vec<F>`, parameters are `[F]` slices, and every op delegates to the
//!   reference ops in `backend::cpu` (f32 for training, f64 for gradient checks).
//! - The GPU engine is [`crate::backend::gpu::engine::Gpu`]: `Tensor` is a
//!   device buffer with a dtype (bf16 activations, fp32 statistics), shared
//!   when saved for the backward; `Param` a tensor of the parameter arena
//!   (fp32 master + the bf16 copy the GEMMs read); each method launches the
//!   matching kernels of `cuda/` on an executor (cudarc on a GPU, the SIMT
//!   simulator on a CPU).
//!
//! Every op is fallible ([`OpResult`]): a failed launch or allocation comes
//! back as an error naming the op. Conventions (llm.c): activation grads are
//! returned fresh, parameter grads accumulate (`+=`) into the `&mut
//! Self::Param` they are given.

use super::{AttnDims as Dims, FfnDims, Float, MoeDims, OpError, OpResult};

/// An MoE layer's eight parameters in `MoeParams` order: router, shared gate,
/// shared gate/up/down, routed gate/up/down.
pub type MoeRefs<'a, P> = [&'a P; 8];
pub type MoeGradRefs<'a, P> = [&'a mut P; 8];
/// A dense SwiGLU FFN's three parameters: gate, up, down.
pub type FfnRefs<'a, P> = [&'a P; 3];
pub type FfnGradRefs<'a, P> = [&'a mut P; 3];

pub trait Backend<F: Float> {
    /// One tensor's storage (row-major, `len` elements).
    type Tensor;
    /// A parameter as the ops read and update it.
    type Param: ?Sized;
    /// What attention keeps for its backward.
    type AttnSaved;
    /// What an MoE layer keeps for its backward (routing included).
    type MoeSaved;
    /// What a dense SwiGLU FFN keeps for its backward.
    type FfnSaved;
    /// What the fused LM head + cross entropy keeps (per-row logsumexp).
    type LmHeadSaved;

    /// A short name for messages and reports (`cpu`, `sim`, `cuda`).
    fn name(&self) -> &'static str;
    fn len(&self, x: &Self::Tensor) -> usize;
    /// Stages a batch's token ids and padding mask for the ops of one forward
    /// (and backward): a device engine uploads them once here, and ops given
    /// the same host slices use the staged copies.
    fn stage_batch(&self, _ids: &[u32], _mask: &[u8]) -> OpResult<()> {
        Ok(())
    }
    /// A copy on the host (loss values, logits for predictions).
    fn to_host(&self, x: &Self::Tensor) -> OpResult<Vec<F>>;
    /// The values of several one-element tensors (the MoE layers' aux
    /// losses), in order: a device engine reads them in one copy, not one
    /// synchronising read each.
    fn scalars_to_host(&self, xs: &[&Self::Tensor]) -> OpResult<Vec<F>> {
        xs.iter()
            .map(|x| match self.to_host(x)?[..] {
                [v] => Ok(v),
                ref v => Err(OpError::msg(
                    "scalars_to_host",
                    format!("a tensor of {} elements is not a scalar", v.len()),
                )),
            })
            .collect()
    }
    fn zeros(&self, n: usize) -> OpResult<Self::Tensor>;
    fn scalar(&self, v: F) -> OpResult<Self::Tensor>;
    /// `acc += x`: activation grads from several consumers add up.
    fn add_assign(&self, acc: &mut Self::Tensor, x: &Self::Tensor) -> OpResult<()>;
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> OpResult<Self::Tensor>;

    fn embedding_fwd(&self, ids: &[u32], table: &Self::Param, d: usize) -> OpResult<Self::Tensor>;
    fn embedding_bwd(
        &self,
        ids: &[u32],
        dy: &Self::Tensor,
        d: usize,
        dtable: &mut Self::Param,
    ) -> OpResult<()>;

    /// `(y, rstd)`.
    fn rmsnorm_fwd(
        &self,
        x: &Self::Tensor,
        w: &Self::Param,
        d: usize,
    ) -> OpResult<(Self::Tensor, Self::Tensor)>;
    /// Returns `dx`.
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_bwd(
        &self,
        x: &Self::Tensor,
        w: &Self::Param,
        rstd: &Self::Tensor,
        dy: &Self::Tensor,
        d: usize,
        dw: &mut Self::Param,
    ) -> OpResult<Self::Tensor>;

    /// `y[rows, dout] = x·wᵀ + b`, `w` is `[dout, din]`.
    fn linear_fwd(
        &self,
        x: &Self::Tensor,
        w: &Self::Param,
        b: Option<&Self::Param>,
        rows: usize,
        din: usize,
        dout: usize,
    ) -> OpResult<Self::Tensor>;
    /// Returns `dx`; `dw` (and `db`) accumulate.
    #[allow(clippy::too_many_arguments)]
    fn linear_bwd(
        &self,
        x: &Self::Tensor,
        w: &Self::Param,
        dy: &Self::Tensor,
        rows: usize,
        din: usize,
        dout: usize,
        dw: &mut Self::Param,
        db: Option<&mut Self::Param>,
    ) -> OpResult<Self::Tensor>;

    fn swiglu_fwd(&self, gate: &Self::Tensor, up: &Self::Tensor) -> OpResult<Self::Tensor>;
    /// `(dgate, dup)`.
    fn swiglu_bwd(
        &self,
        gate: &Self::Tensor,
        up: &Self::Tensor,
        dy: &Self::Tensor,
    ) -> OpResult<(Self::Tensor, Self::Tensor)>;

    fn gelu_fwd(&self, x: &Self::Tensor) -> OpResult<Self::Tensor>;
    fn gelu_bwd(&self, x: &Self::Tensor, dy: &Self::Tensor) -> OpResult<Self::Tensor>;

    /// Causal attention with RoPE on the fused projection `qkv [B·S, 3·H·hd]`.
    fn attention_fwd(
        &self,
        qkv: &Self::Tensor,
        mask: &[u8],
        dims: &Dims,
        theta: f64,
    ) -> OpResult<(Self::Tensor, Self::AttnSaved)>;
    /// Returns `dqkv`.
    fn attention_bwd(
        &self,
        saved: &Self::AttnSaved,
        dy: &Self::Tensor,
        dims: &Dims,
        theta: f64,
    ) -> OpResult<Self::Tensor>;

    /// `resid + MoE(z)`; the load-balancing statistics count only the
    /// positions where `mask` is non-zero (real tokens, not padding).
    /// `train: false` (inference) may skip what only training reads (a
    /// device engine then writes no pre-activations and computes no
    /// load-balancing loss); a backward or `moe_aux` of such a forward is
    /// an error.
    fn moe_fwd(
        &self,
        z: &Self::Tensor,
        resid: &Self::Tensor,
        mask: &[u8],
        w: MoeRefs<Self::Param>,
        dims: &MoeDims,
        train: bool,
    ) -> OpResult<(Self::Tensor, Self::MoeSaved)>;
    /// The layer's load-balancing loss, a one-element tensor (a device
    /// engine keeps it on the device: the tape reads every layer's at the end
    /// of the forward, not one sync per layer).
    fn moe_aux(&self, saved: &Self::MoeSaved) -> OpResult<Self::Tensor>;
    /// Chosen experts, `[T, k]`.
    fn moe_routing(&self, saved: &Self::MoeSaved) -> OpResult<Vec<u32>>;
    /// Returns `dz` (the residual's grad is `dy` itself); `aux_weight` is
    /// d(loss)/d(aux).
    #[allow(clippy::too_many_arguments)]
    fn moe_bwd(
        &self,
        z: &Self::Tensor,
        w: MoeRefs<Self::Param>,
        saved: &Self::MoeSaved,
        dy: &Self::Tensor,
        aux_weight: F,
        dims: &MoeDims,
        grads: MoeGradRefs<Self::Param>,
    ) -> OpResult<Self::Tensor>;

    /// The dense twin's FFN, `resid + w_down·(silu(w_gate·z) ⊙ (w_up·z))`,
    /// as one op so that an engine can fuse it as it fuses an expert (gate
    /// and up in one product with SwiGLU in its epilogue). `train` as in
    /// [`Backend::moe_fwd`].
    fn ffn_fwd(
        &self,
        z: &Self::Tensor,
        resid: &Self::Tensor,
        w: FfnRefs<Self::Param>,
        dims: &FfnDims,
        train: bool,
    ) -> OpResult<(Self::Tensor, Self::FfnSaved)>;
    /// Returns `dz` (the residual's grad is `dy` itself).
    fn ffn_bwd(
        &self,
        z: &Self::Tensor,
        w: FfnRefs<Self::Param>,
        saved: &Self::FfnSaved,
        dy: &Self::Tensor,
        dims: &FfnDims,
        grads: FfnGradRefs<Self::Param>,
    ) -> OpResult<Self::Tensor>;

    /// Masked mean over the sequence: `[B, S, d] -> [B, d]`.
    fn mean_pool_fwd(
        &self,
        x: &Self::Tensor,
        mask: &[u8],
        b: usize,
        s: usize,
        d: usize,
    ) -> OpResult<Self::Tensor>;
    fn mean_pool_bwd(
        &self,
        dy: &Self::Tensor,
        mask: &[u8],
        b: usize,
        s: usize,
        d: usize,
    ) -> OpResult<Self::Tensor>;

    /// Mean cross entropy over rows whose target is not `ignore`.
    fn xent_fwd(&self, logits: &Self::Tensor, targets: &[u32], ignore: u32) -> OpResult<F>;
    /// Returns `dlogits` for `dloss`.
    fn xent_bwd(
        &self,
        logits: &Self::Tensor,
        targets: &[u32],
        ignore: u32,
        dloss: F,
    ) -> OpResult<Self::Tensor>;

    /// Tied LM head fused with the mean cross entropy over rows whose target
    /// is not `ignore`: `h [T, d]`, `table [V, d]`; the `[T, V]` logits are
    /// never kept. Returns the loss.
    fn lm_head_xent_fwd(
        &self,
        h: &Self::Tensor,
        table: &Self::Param,
        d: usize,
        targets: &[u32],
        ignore: u32,
    ) -> OpResult<(F, Self::LmHeadSaved)>;
    /// [`Backend::lm_head_xent_fwd`] when a backward will follow (the tape
    /// records): an engine may make the gradients here, in the same pass
    /// over the logits, and keep them in the saved state for the backward
    /// to scale by `dloss` (the GPU engine uses them when `dloss` is 1 and
    /// makes them again otherwise). By default, the plain forward.
    fn lm_head_xent_train_fwd(
        &self,
        h: &Self::Tensor,
        table: &Self::Param,
        d: usize,
        targets: &[u32],
        ignore: u32,
    ) -> OpResult<(F, Self::LmHeadSaved)> {
        self.lm_head_xent_fwd(h, table, d, targets, ignore)
    }
    /// Returns `dh`; `dtable` accumulates.
    #[allow(clippy::too_many_arguments)]
    fn lm_head_xent_bwd(
        &self,
        h: &Self::Tensor,
        table: &Self::Param,
        d: usize,
        targets: &[u32],
        saved: &Self::LmHeadSaved,
        dloss: F,
        dtable: &mut Self::Param,
    ) -> OpResult<Self::Tensor>;
}
