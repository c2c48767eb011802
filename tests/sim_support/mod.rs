//! Shared by tests/sim_*.rs: launch a simulator self-test kernel (cuda/sim/tests,
//! cuda/sim/errors) with its generic SimTestParams.
#![allow(dead_code)]

use traffic_moe::backend::gpu::params::SimTestParams;
use traffic_moe::backend::gpu::{Buf, Executor, GpuError, Launch};

pub struct Io {
    pub in_f: Buf<f32>,
    pub in_u: Buf<u32>,
    pub out_f: Buf<f32>,
    pub out_u: Buf<u32>,
}

impl Io {
    pub fn new(ex: &Executor, in_f: &[f32], in_u: &[u32], out_f: usize, out_u: usize) -> Io {
        Io {
            in_f: ex.upload(in_f).unwrap(),
            in_u: ex.upload(in_u).unwrap(),
            out_f: ex.alloc_zeroed(out_f).unwrap(),
            out_u: ex.alloc_zeroed(out_u).unwrap(),
        }
    }
    pub fn params(&self, n: i32, mode: i32) -> SimTestParams {
        SimTestParams {
            in_f: self.in_f.cptr(),
            in_u: self.in_u.cptr(),
            out_f: self.out_f.mptr(),
            out_u: self.out_u.mptr(),
            n,
            mode,
        }
    }
}

pub fn launch(
    ex: &Executor,
    kernel: &'static str,
    grid: u32,
    block: u32,
    smem: u32,
    p: SimTestParams,
) -> Result<(), GpuError> {
    ex.launch(&Launch::linear(kernel, grid, block, p).with_smem(smem))?;
    ex.synchronize()
}
