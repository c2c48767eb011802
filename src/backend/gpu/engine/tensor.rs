//! The GPU engine's tensors: device buffers with a dtype, shared (not
//! copied) when an op saves them for its backward.

use std::rc::Rc;

use half::bf16;

use crate::backend::gpu::Buf;
use crate::engine::{OpError, OpResult};

/// Activations are bf16 (what the GEMMs and attention read); statistics the
/// backward needs in full precision (RMSNorm's rstd, the loss) are fp32.
#[derive(Clone)]
pub enum GpuTensor {
    Bf16(Rc<Buf<bf16>>),
    F32(Rc<Buf<f32>>),
}

impl GpuTensor {
    pub fn len(&self) -> usize {
        match self {
            GpuTensor::Bf16(b) => b.len(),
            GpuTensor::F32(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> &'static str {
        match self {
            GpuTensor::Bf16(_) => "bf16",
            GpuTensor::F32(_) => "f32",
        }
    }

    /// The bf16 buffer, or an error naming `op` when the tensor is fp32.
    pub fn bf16(&self, op: &'static str) -> OpResult<&Buf<bf16>> {
        match self {
            GpuTensor::Bf16(b) => Ok(b),
            GpuTensor::F32(_) => Err(OpError::msg(op, "expected a bf16 tensor, got f32")),
        }
    }

    /// The fp32 buffer, or an error naming `op`.
    pub fn f32(&self, op: &'static str) -> OpResult<&Buf<f32>> {
        match self {
            GpuTensor::F32(b) => Ok(b),
            GpuTensor::Bf16(_) => Err(OpError::msg(op, "expected an f32 tensor, got bf16")),
        }
    }

    pub(crate) fn from_bf16(b: Buf<bf16>) -> GpuTensor {
        GpuTensor::Bf16(Rc::new(b))
    }

    pub(crate) fn from_f32(b: Buf<f32>) -> GpuTensor {
        GpuTensor::F32(Rc::new(b))
    }
}
