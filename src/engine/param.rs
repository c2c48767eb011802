//! A model parameter as every engine sees it on the host: name, shape, fp32
//! values and gradient, learning-rate group and weight-decay choice. The CPU
//! engine computes on these directly; a device engine uploads them into its
//! parameter arena and downloads them back (checkpoints, evaluation).
//!
//! Weight decay policy: only matrices decay (rank >= 2), except embedding tables.
//! Norm gains, biases, the shared-expert gate vector and embeddings are kept
//! undecayed, as BERT/LLaMA recipes do.

use thiserror::Error;

/// One named tensor of a model with its gradient (llm.c convention: grads `+=`).
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
    /// Learning-rate group: 0 = embeddings, 1..=L = transformer layers, L+1 = head.
    pub group: usize,
    /// Whether AdamW's decoupled weight decay applies (see module docs).
    pub decay: bool,
}

#[derive(Debug, Error)]
pub enum ParamError {
    #[error("parameter `{name}`: shape {shape:?} holds {expected} values but {got} were given")]
    ShapeMismatch {
        name: String,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
}

impl Param {
    /// A parameter with zeroed gradient and the default decay policy.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        value: Vec<f32>,
        group: usize,
    ) -> Result<Param, ParamError> {
        let name = name.into();
        let expected: usize = shape.iter().product();
        if expected != value.len() {
            return Err(ParamError::ShapeMismatch {
                name,
                shape,
                expected,
                got: value.len(),
            });
        }
        let decay = default_decay(&name, &shape);
        Ok(Param {
            grad: vec![0.0; value.len()],
            name,
            shape,
            value,
            group,
            decay,
        })
    }

    pub fn numel(&self) -> usize {
        self.value.len()
    }

    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }
}

/// Matrices decay; vectors (norms, biases, gates) and embedding tables do not.
/// The shared expert's gate is stored `[1, d]` (a one-row product), but it is
/// a gate vector, so it is named here: by rank alone it decayed.
pub fn default_decay(name: &str, shape: &[usize]) -> bool {
    shape.len() >= 2 && !name.contains("embed") && !name.ends_with("moe.shared_gate")
}

/// Whether `params[i]` and `params[i + 1]` are a SwiGLU FFN's gate and up
/// projections (an MoE layer's experts or shared expert, or the dense twin's
/// FFN), which an engine may pack into one `[2f, d]` matrix per block: the
/// gate named `…w_gate`, the up `…w_up` beside it, alike in shape, group and decay.
pub fn is_gate_up_pair(params: &[Param], i: usize) -> bool {
    let (Some(a), Some(b)) = (params.get(i), params.get(i + 1)) else {
        return false;
    };
    (a.name.contains(".moe.") || a.name.contains(".ffn."))
        && a.name.ends_with("w_gate")
        && b.name == a.name.replace("w_gate", "w_up")
        && a.shape == b.shape
        && a.group == b.group
        && a.decay == b.decay
}
