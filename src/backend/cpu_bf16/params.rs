//! A model's parameters for the bf16 engine, converted once at load.
//!
//! Matrices the products read become bf16 [`PackedMat`]s (one per expert for
//! stacked `[N, out, in]` tensors), and each SwiGLU gate/up pair (experts,
//! shared expert, the dense twin's FFN) is packed as one SwiGLU matrix in
//! the gate's slot. These stay f32:
//! - vectors (norm gains, biases): no product reads them, and they are tiny;
//! - the token embedding: a row gather, not a product (the tied LM head,
//!   pretraining's loss, packs a copy of its own on first use: `Table`);
//! - the MoE router and the shared-expert gate: the router's logits pick the
//!   top-k experts, and a bf16 rounding (about 0.4 % of a logit) can flip a
//!   near tie and send a token to another expert, a large change rather than
//!   a small error; with the gate they are 9 of about 1,000 outputs per token,
//!   so f32 costs nothing measurable.

use std::sync::OnceLock;

use super::pack::{Elem, Layout, PackedMat};
use crate::engine::param::is_gate_up_pair;
use crate::engine::{OpError, OpResult, Param};

/// Vocabulary entries per slice of the packed LM head: each group of
/// rows reads a slice from memory once and then from cache for its other
/// chunks, so a slice should fit the last-level cache (1.5 MiB of bf16 at `small`'s d
/// 384; 6 MiB at base's 1,536 in f32), and its chunk of logits in L2
/// (`backend::cpu_bf16::lm_head`). A whole number of panels.
pub const HEAD_SLICE: usize = 2048;

/// One parameter as the engine's ops read it.
#[derive(Clone, Debug)]
pub enum Bf16Param {
    F32(Vec<f32>),
    /// One matrix per block: 1, or N for stacked experts.
    Packed(Vec<PackedMat>),
    /// The up projection of a SwiGLU pair, packed with its gate.
    InGate,
    /// The token embedding: f32 rows for the lookup, and the tied LM head's
    /// matrix (`[V, d]` as `elem`, the engine's products' operand) packed on
    /// the LM head's first call, in slices of [`HEAD_SLICE`] entries (see
    /// `lm_head`): a classifier never runs the head, and the copy is as
    /// large as the table (a base model's: 100 MB in bf16).
    Table {
        rows: Vec<f32>,
        elem: Elem,
        head: OnceLock<Vec<PackedMat>>,
    },
}

impl Bf16Param {
    pub fn f32(&self, op: &'static str) -> OpResult<&[f32]> {
        match self {
            Bf16Param::F32(v) | Bf16Param::Table { rows: v, .. } => Ok(v),
            _ => Err(OpError::msg(
                op,
                "expected an f32 parameter, got a packed bf16 matrix",
            )),
        }
    }

    /// The packed matrices, checked to be `blocks` of `layout`.
    pub fn packed(
        &self,
        op: &'static str,
        blocks: usize,
        layout: Layout,
    ) -> OpResult<&[PackedMat]> {
        match self {
            Bf16Param::Packed(m) if m.len() == blocks && m.iter().all(|p| p.layout == layout) => {
                Ok(m)
            }
            _ => Err(OpError::msg(
                op,
                format!("expected {blocks} packed {layout:?} bf16 matrices"),
            )),
        }
    }

    /// The tied LM head's packed table (`[V, d]`) as slices of
    /// [`HEAD_SLICE`] entries (the last shorter), packed on the first call.
    pub fn lm_head(&self, op: &'static str, d: usize) -> OpResult<&[PackedMat]> {
        match self {
            Bf16Param::Table { rows, elem, head } if d > 0 && rows.len() % d == 0 => Ok(head
                .get_or_init(|| {
                    rows.chunks(HEAD_SLICE * d)
                        .map(|s| PackedMat::new_as(*elem, s, s.len() / d, d))
                        .collect()
                })),
            _ => Err(OpError::msg(
                op,
                format!("expected the token embedding ([V, {d}] f32 rows)"),
            )),
        }
    }

    /// Bytes held (the LM head's copy once packed).
    pub fn bytes(&self) -> usize {
        match self {
            Bf16Param::F32(v) => 4 * v.len(),
            Bf16Param::Table { rows, head, .. } => {
                let packed = head
                    .get()
                    .map_or(0, |h| h.iter().map(|p| p.slots().len()).sum());
                4 * (rows.len() + packed)
            }
            Bf16Param::Packed(m) => m.iter().map(|p| 4 * p.slots().len()).sum(),
            Bf16Param::InGate => 0,
        }
    }
}

/// Every parameter of a model, in the model's order (`ParamId`s hold).
#[derive(Clone, Debug)]
pub struct Bf16Params {
    params: Vec<Bf16Param>,
}

/// The token embedding's name (`model::net`), the LM head's tied table.
const TOKEN_EMBEDDING: &str = "tok_embed";

/// Whether `name` is kept in f32 although it is a matrix (module docs).
fn kept_f32(p: &Param) -> bool {
    p.shape.len() < 2
        || p.name.contains("embed")
        || p.name.ends_with("moe.router")
        || p.name.ends_with("moe.shared_gate")
}

/// `[out, in]` per block, and the number of blocks, of a matrix's shape.
fn blocks(shape: &[usize]) -> (usize, usize, usize) {
    let k = shape[shape.len() - 1];
    let n = shape[shape.len() - 2];
    (shape[..shape.len() - 2].iter().product(), n, k)
}

impl Bf16Params {
    /// Converts a model's f32 parameters (the optimizer's, a checkpoint's).
    pub fn pack(params: &[Param]) -> Bf16Params {
        Bf16Params::pack_as(Elem::Bf16Pair, params)
    }

    /// Packs the same matrices as [`Bf16Params::pack`], their slots `elem`:
    /// `Elem::F32` keeps f32 weights in the kernels' layout (the f32
    /// inference engine: no re-packing of constant weights per product).
    pub fn pack_as(elem: Elem, params: &[Param]) -> Bf16Params {
        let mut out = Vec::with_capacity(params.len());
        let mut i = 0;
        while i < params.len() {
            let p = &params[i];
            if p.name == TOKEN_EMBEDDING && p.shape.len() == 2 {
                out.push(Bf16Param::Table {
                    rows: p.value.clone(),
                    elem,
                    head: OnceLock::new(),
                });
            } else if kept_f32(p) {
                out.push(Bf16Param::F32(p.value.clone()));
            } else if is_gate_up_pair(params, i) {
                let (nb, f, k) = blocks(&p.shape);
                let up = &params[i + 1].value;
                let pairs = (0..nb)
                    .map(|e| {
                        let r = e * f * k..(e + 1) * f * k;
                        PackedMat::swiglu_as(elem, &p.value[r.clone()], &up[r], f, k)
                    })
                    .collect();
                out.push(Bf16Param::Packed(pairs));
                out.push(Bf16Param::InGate);
                i += 2;
                continue;
            } else {
                let (nb, n, k) = blocks(&p.shape);
                let mats = (0..nb)
                    .map(|e| PackedMat::new_as(elem, &p.value[e * n * k..(e + 1) * n * k], n, k))
                    .collect();
                out.push(Bf16Param::Packed(mats));
            }
            i += 1;
        }
        Bf16Params { params: out }
    }

    /// The parameters as the tape takes them (indexed by `ParamId`).
    pub fn values(&self) -> Vec<&Bf16Param> {
        self.params.iter().collect()
    }

    /// Bytes held by the weights.
    pub fn bytes(&self) -> usize {
        self.params.iter().map(Bf16Param::bytes).sum()
    }
}
