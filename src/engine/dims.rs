//! Shapes of the composite ops, shared by every engine.

/// Attention: batch, heads, sequence length, head dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    pub b: usize,
    pub h: usize,
    pub s: usize,
    pub hd: usize,
}

/// An MoE layer over `t` token rows of width `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoeDims {
    pub t: usize,
    pub d: usize,
    /// Routed experts N.
    pub n: usize,
    /// Experts per token k.
    pub k: usize,
    /// Shared-expert intermediate size d'.
    pub shared_ff: usize,
    /// Routed-expert intermediate size d'/k.
    pub expert_ff: usize,
}

/// A dense SwiGLU FFN over `t` token rows of width `d`, intermediate size `ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FfnDims {
    pub t: usize,
    pub d: usize,
    pub ff: usize,
}
