//! Launch wrappers for cuda/adamw.cu: multi-tensor AdamW over flat fp32 arenas
//! (parameters, gradients, m, v), one launch for every tensor.

use half::bf16;

use crate::backend::gpu::params::AdamwStepParams;
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

const THREADS: u32 = 256;
/// Elements per block: 32 per thread (8 float4), so that the block's set-up (the
/// chunk -> tensor binary search, bias corrections) is a small part of its life.
pub const CHUNK: usize = 8192;

/// Where each tensor lives in the arenas and how it is optimised; uploaded once.
pub struct ArenaLayout {
    pub n_tensors: usize,
    pub total: usize,
    pub n_chunks: usize,
    tensor_offset: Buf<i64>,
    chunk_start: Buf<u32>,
    tensor_lr: Buf<f32>,
    tensor_wd: Buf<f32>,
}

impl ArenaLayout {
    /// Host part: (tensor offsets [n+1], first chunk of each tensor [n+1]).
    pub fn tables(sizes: &[usize], chunk: usize) -> (Vec<i64>, Vec<u32>) {
        let (mut off, mut chunks) = (vec![0i64], vec![0u32]);
        for &s in sizes {
            off.push(off.last().unwrap() + s as i64);
            chunks.push(chunks.last().unwrap() + s.div_ceil(chunk) as u32);
        }
        (off, chunks)
    }

    /// `sizes[i]` elements of tensor i, its base learning rate `lr[i]` (layer-wise
    /// decay already applied) and weight decay `wd[i]`. Empty tensors are fine.
    pub fn new(ex: &Executor, sizes: &[usize], lr: &[f32], wd: &[f32]) -> Result<Self> {
        if sizes.is_empty() || lr.len() != sizes.len() || wd.len() != sizes.len() {
            return Err(GpuError::Invalid(format!(
                "adamw: {} tensor sizes, {} learning rates, {} weight decays",
                sizes.len(),
                lr.len(),
                wd.len()
            )));
        }
        let (off, chunks) = Self::tables(sizes, CHUNK);
        let n_chunks = *chunks.last().unwrap() as usize;
        if n_chunks == 0 || n_chunks > i32::MAX as usize {
            return Err(GpuError::Invalid(format!("adamw: {n_chunks} chunks")));
        }
        Ok(ArenaLayout {
            n_tensors: sizes.len(),
            total: *off.last().unwrap() as usize,
            n_chunks,
            tensor_offset: ex.upload(&off)?,
            chunk_start: ex.upload(&chunks)?,
            tensor_lr: ex.upload(lr)?,
            tensor_wd: ex.upload(wd)?,
        })
    }
}

/// The per-step hyper-parameters.
#[derive(Clone, Copy, Debug)]
pub struct AdamwHyper {
    pub lr_scale: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 1-based.
    pub step: u32,
    /// With `grad_norm` given: gradients are scaled by max_grad_norm / (norm + 1e-6) when the norm is larger (as on the CPU);
    /// a norm that is not finite updates nothing.
    pub max_grad_norm: f32,
}

/// The arenas one step touches.
pub struct AdamwArenas<'a> {
    pub param: &'a Buf<f32>,
    pub grad: &'a Buf<f32>,
    pub m: &'a Buf<f32>,
    pub v: &'a Buf<f32>,
    /// Receives a bf16 copy of the updated weights when given.
    pub param_bf16: Option<&'a Buf<bf16>>,
}

/// One AdamW step over every tensor. `grad_norm` (`[1]`, e.g. `GradNorm::out`)
/// enables clipping without a host round trip.
pub fn step(
    ex: &Executor,
    layout: &ArenaLayout,
    a: &AdamwArenas,
    h: &AdamwHyper,
    grad_norm: Option<&Buf<f64>>,
) -> Result<()> {
    for (name, b) in [("param", a.param), ("grad", a.grad), ("m", a.m), ("v", a.v)] {
        ex.check_buf(&format!("adamw {name}"), b, layout.total)?;
    }
    if let Some(b) = a.param_bf16 {
        ex.check_buf("adamw param_bf16", b, layout.total)?;
    }
    if let Some(b) = grad_norm {
        ex.check_buf("adamw grad_norm", b, 1)?;
    }
    if h.step == 0 || h.step > i32::MAX as u32 {
        return Err(GpuError::Invalid(format!(
            "adamw: step {} (1-based)",
            h.step
        )));
    }
    let params = AdamwStepParams {
        param: a.param.mptr(),
        grad: a.grad.cptr(),
        m: a.m.mptr(),
        v: a.v.mptr(),
        param_bf16: a.param_bf16.map_or(std::ptr::null_mut(), |b| b.mptr()),
        tensor_offset: layout.tensor_offset.cptr(),
        chunk_start: layout.chunk_start.cptr(),
        tensor_lr: layout.tensor_lr.cptr(),
        tensor_wd: layout.tensor_wd.cptr(),
        grad_norm: grad_norm.map_or(std::ptr::null(), |b| b.cptr()),
        n_tensors: layout.n_tensors as i32,
        chunk_elems: CHUNK as i32,
        lr_scale: h.lr_scale,
        beta1: h.beta1,
        beta2: h.beta2,
        eps: h.eps,
        max_grad_norm: h.max_grad_norm,
        step: h.step as i32,
    };
    ex.launch(&Launch::linear(
        "adamw_step",
        layout.n_chunks as u32,
        THREADS,
        params,
    ))
}
