//! The Traffic-MoE network and its dense twin: a pre-norm decoder
//! (RMSNorm -> causal MHA with RoPE -> residual; RMSNorm -> MoE or dense
//! SwiGLU FFN -> residual), a final RMSNorm, then either
//! - the LM head, tied to the token embedding (saves V·d parameters; the
//!   usual choice for small decoders), for next-token pretraining, or
//! - masked mean pooling of the last layer -> MLP head (Linear, GELU,
//!   Linear) for classification.
//!
//! Parameter groups for layer-wise lr decay: 0 = embedding, l+1 = block l,
//! L+1 = final norm and classifier head.

use super::config::{FfnKind, ModelConfig};
use super::init::Init;
use crate::autograd::{FfnParams, MoeParams, ParamId, Tape, TensorId};
use crate::engine::{AttnDims, Backend, FfnDims, Float, MoeDims, OpResult, Param};

/// Marks a target the loss ignores.
pub const IGNORE: u32 = u32::MAX;

#[derive(Clone, Debug)]
enum FfnIds {
    Moe(MoeParams),
    Dense(FfnParams),
}

#[derive(Clone, Debug)]
struct BlockIds {
    attn_norm: ParamId,
    wqkv: ParamId,
    wo: ParamId,
    ffn_norm: ParamId,
    ffn: FfnIds,
}

#[derive(Clone, Debug)]
struct HeadIds {
    w1: ParamId,
    b1: ParamId,
    w2: ParamId,
    b2: ParamId,
}

/// The architecture: shapes, names and where each parameter sits in the list.
#[derive(Clone, Debug)]
pub struct Model {
    pub cfg: ModelConfig,
    embed: ParamId,
    blocks: Vec<BlockIds>,
    norm_f: ParamId,
    head: Option<HeadIds>,
}

/// A batch of sequences `[B, S]` with their padding mask (1 = real token).
pub struct Inputs<'a> {
    pub ids: &'a [u32],
    pub mask: &'a [u8],
    pub b: usize,
    pub s: usize,
}

/// What a forward pass produced.
pub struct Forward<F> {
    /// The total loss (task loss + weighted aux), as a scalar tensor to backpropagate.
    pub loss: TensorId,
    /// Task loss alone (cross entropy).
    pub task_loss: F,
    /// Mean load-balancing loss over layers (0 for the dense twin, and on an
    /// inference tape, which does not read it back).
    pub aux: F,
    /// Classifier logits `[B, C]`; for the LM, the final hidden states
    /// `[B·S, d]` (vocabulary logits are never formed whole).
    pub logits: TensorId,
}

/// A parameter before it has values: the shapes are known (and can be
/// checked against a checkpoint's) before anything is allocated.
struct Spec {
    name: String,
    shape: Vec<usize>,
    group: usize,
    /// Normal init with this std; None: ones for norm gains, else zeros.
    std: Option<f32>,
}

impl Spec {
    fn materialize(self, init: &mut Init) -> Param {
        let n: usize = self.shape.iter().product();
        let value = match self.std {
            Some(s) => init.normal(n, s),
            None if self.name.contains("norm") => vec![1.0; n],
            None => vec![0.0; n],
        };
        Param::new(self.name, self.shape, value, self.group).expect("shape matches value")
    }
}

struct Builder {
    specs: Vec<Spec>,
}

impl Builder {
    fn add(&mut self, name: String, shape: Vec<usize>, group: usize, std: Option<f32>) -> ParamId {
        self.specs.push(Spec {
            name,
            shape,
            group,
            std,
        });
        self.specs.len() - 1
    }
}

impl Model {
    /// The architecture and freshly initialised parameters (seeded).
    pub fn new(cfg: ModelConfig, seed: u64) -> anyhow::Result<(Model, Vec<Param>)> {
        let (model, specs) = Model::layout(cfg)?;
        let mut init = Init::new(seed);
        // In layout order: the seed gives the same values as ever.
        let params = specs
            .into_iter()
            .map(|s| s.materialize(&mut init))
            .collect();
        Ok((model, params))
    }

    /// The architecture with every parameter zero, for a checkpoint that
    /// sets each one ([`super::checkpoint::load_classifier`]): no random
    /// draws, which are wasted there and took a second per 100 M values
    /// (every `classify`, `eval` and `tmoe_open` of a large model paid them).
    pub fn zeroed(cfg: ModelConfig) -> anyhow::Result<(Model, Vec<Param>)> {
        let (model, specs) = Model::layout(cfg)?;
        let params = specs
            .into_iter()
            .map(|s| {
                let n = s.shape.iter().product();
                Param::new(s.name, s.shape, vec![0.0; n], s.group).expect("shape matches value")
            })
            .collect();
        Ok((model, params))
    }

    /// Each parameter's name and shape for `cfg`, nothing allocated: what a
    /// checkpoint's tensors must match before a model is built for them.
    pub fn param_shapes(cfg: &ModelConfig) -> anyhow::Result<Vec<(String, Vec<usize>)>> {
        let (_, specs) = Model::layout(cfg.clone())?;
        Ok(specs.into_iter().map(|s| (s.name, s.shape)).collect())
    }

    /// The architecture and its parameters' specs.
    fn layout(cfg: ModelConfig) -> anyhow::Result<(Model, Vec<Spec>)> {
        cfg.validate()?;
        let mut b = Builder { specs: Vec::new() };
        let (d, l) = (cfg.d, cfg.layers);
        let std = 0.02f32;
        // Residual-branch outputs shrink with depth (GPT-2).
        let out_std = std / (2.0 * l as f32).sqrt();
        let embed = b.add("tok_embed".into(), vec![cfg.vocab, d], 0, Some(std));
        let mut blocks = Vec::new();
        for i in 0..l {
            let g = i + 1;
            let p = |s: &str| format!("layers.{i}.{s}");
            let attn_norm = b.add(p("attn_norm"), vec![d], g, None);
            let wqkv = b.add(p("attn.wqkv"), vec![3 * d, d], g, Some(std));
            let wo = b.add(p("attn.wo"), vec![d, d], g, Some(out_std));
            let ffn_norm = b.add(p("ffn_norm"), vec![d], g, None);
            let ffn = match cfg.ffn {
                FfnKind::Moe => {
                    let (n, sf, f) = (cfg.n_experts, cfg.shared_ff, cfg.expert_ff());
                    FfnIds::Moe(MoeParams {
                        router: b.add(p("moe.router"), vec![n, d], g, Some(std)),
                        shared_gate: b.add(p("moe.shared_gate"), vec![1, d], g, Some(std)),
                        s_gate: b.add(p("moe.shared.w_gate"), vec![sf, d], g, Some(std)),
                        s_up: b.add(p("moe.shared.w_up"), vec![sf, d], g, Some(std)),
                        s_down: b.add(p("moe.shared.w_down"), vec![d, sf], g, Some(out_std)),
                        e_gate: b.add(p("moe.experts.w_gate"), vec![n, f, d], g, Some(std)),
                        e_up: b.add(p("moe.experts.w_up"), vec![n, f, d], g, Some(std)),
                        e_down: b.add(p("moe.experts.w_down"), vec![n, d, f], g, Some(out_std)),
                    })
                }
                FfnKind::Dense => {
                    let ff = cfg.dense_ff();
                    FfnIds::Dense(FfnParams {
                        w_gate: b.add(p("ffn.w_gate"), vec![ff, d], g, Some(std)),
                        w_up: b.add(p("ffn.w_up"), vec![ff, d], g, Some(std)),
                        w_down: b.add(p("ffn.w_down"), vec![d, ff], g, Some(out_std)),
                    })
                }
            };
            blocks.push(BlockIds {
                attn_norm,
                wqkv,
                wo,
                ffn_norm,
                ffn,
            });
        }
        let top = l + 1;
        let norm_f = b.add("norm_f".into(), vec![d], top, None);
        let head = (cfg.n_classes > 0).then(|| HeadIds {
            w1: b.add("head.w1".into(), vec![d, d], top, Some(std)),
            b1: b.add("head.b1".into(), vec![d], top, None),
            w2: b.add("head.w2".into(), vec![cfg.n_classes, d], top, Some(std)),
            b2: b.add("head.b2".into(), vec![cfg.n_classes], top, None),
        });
        Ok((
            Model {
                cfg,
                embed,
                blocks,
                norm_f,
                head,
            },
            b.specs,
        ))
    }

    /// Embedding -> blocks -> final norm: `[B·S, d]`, and the mean aux loss
    /// (0 on an inference tape).
    /// On an inference tape each activation is released after its last use.
    pub fn backbone<F: Float, B: Backend<F>>(
        &self,
        tape: &mut Tape<F, B>,
        p: &[&B::Param],
        x: &Inputs,
        aux_weight: F,
    ) -> OpResult<(TensorId, F)> {
        let c = &self.cfg;
        let d = c.d;
        let t = x.b * x.s;
        if x.ids.len() != t || x.mask.len() != t {
            return Err(crate::engine::OpError::msg(
                "model",
                format!(
                    "a batch of {} x {} needs {t} ids and mask entries, got {} and {}",
                    x.b,
                    x.s,
                    x.ids.len(),
                    x.mask.len()
                ),
            ));
        }
        tape.stage_batch(x.ids, x.mask)?;
        let layer_aux_w = aux_weight / F::from_usize(c.layers);
        let mut h = tape.embedding(p, self.embed, x.ids, d)?;
        for blk in &self.blocks {
            let z = tape.rmsnorm(p, h, blk.attn_norm, d)?;
            let qkv = tape.linear(p, z, blk.wqkv, None, d, 3 * d)?;
            tape.release(&[z]);
            let dims = AttnDims {
                b: x.b,
                h: c.heads,
                s: x.s,
                hd: c.head_dim(),
            };
            let a = tape.attention(qkv, x.mask, dims, c.rope_theta)?;
            tape.release(&[qkv]);
            let o = tape.linear(p, a, blk.wo, None, d, d)?;
            tape.release(&[a]);
            let h1 = tape.add(h, o)?;
            tape.release(&[h, o]);
            h = h1;
            let z = tape.rmsnorm(p, h, blk.ffn_norm, d)?;
            let h1 = match &blk.ffn {
                FfnIds::Moe(mp) => {
                    let dims = MoeDims {
                        t,
                        d,
                        n: c.n_experts,
                        k: c.top_k,
                        shared_ff: c.shared_ff,
                        expert_ff: c.expert_ff(),
                    };
                    tape.moe(p, z, h, x.mask, *mp, dims, layer_aux_w)?
                }
                FfnIds::Dense(fp) => {
                    let dims = FfnDims {
                        t,
                        d,
                        ff: c.dense_ff(),
                    };
                    tape.ffn(p, z, h, *fp, dims)?
                }
            };
            tape.release(&[z, h]);
            h = h1;
        }
        let out = tape.rmsnorm(p, h, self.norm_f, d)?;
        tape.release(&[h]);
        // Every layer's aux loss is read once, at the end of the forward (an
        // inference tape and the dense twin have none: nothing is read).
        let v = tape.aux_losses()?;
        let aux = v.iter().fold(F::ZERO, |a, &x| a + x) / F::from_usize(v.len().max(1));
        Ok((out, aux))
    }

    /// Next-token loss (targets: the following real token of the same sequence) + aux.
    pub fn lm_forward<F: Float, B: Backend<F>>(
        &self,
        tape: &mut Tape<F, B>,
        p: &[&B::Param],
        x: &Inputs,
        aux_weight: F,
    ) -> OpResult<Forward<F>> {
        let (h, aux) = self.backbone(tape, p, x, aux_weight)?;
        let targets = next_token_targets(x);
        let (loss, task_loss) =
            tape.lm_head_xent(p, h, self.embed, self.cfg.d, &targets, IGNORE)?;
        Ok(Forward {
            loss,
            task_loss,
            aux,
            logits: h,
        })
    }

    /// The encoder's flow representation: the final hidden states, mean-pooled
    /// over real tokens, `[B, d]` (what the classifier head reads; a linear
    /// probe reads it from a pretrained model, which has no head), and the
    /// mean aux loss.
    pub fn pooled<F: Float, B: Backend<F>>(
        &self,
        tape: &mut Tape<F, B>,
        p: &[&B::Param],
        x: &Inputs,
        aux_weight: F,
    ) -> OpResult<(TensorId, F)> {
        let (h, aux) = self.backbone(tape, p, x, aux_weight)?;
        let pooled = tape.mean_pool(h, x.mask, x.b, x.s, self.cfg.d)?;
        tape.release(&[h]);
        Ok((pooled, aux))
    }

    /// The classifier's logits `[B, n_classes]`: masked mean pooling -> MLP
    /// head, and the backbone's aux loss (0 on an inference tape).
    pub fn cls_logits<F: Float, B: Backend<F>>(
        &self,
        tape: &mut Tape<F, B>,
        p: &[&B::Param],
        x: &Inputs,
        aux_weight: F,
    ) -> anyhow::Result<(TensorId, F)> {
        self.head_ids()?; // a model without a head fails before the backbone runs
        let (pooled, aux) = self.pooled(tape, p, x, aux_weight)?;
        let logits = self.head_logits(tape, p, pooled)?;
        Ok((logits, aux))
    }

    /// The classifier head alone: pooled features `[rows, d]` -> Linear,
    /// GELU, Linear -> logits `[rows, n_classes]` (`pooled` is released on
    /// an inference tape).
    pub fn head_logits<F: Float, B: Backend<F>>(
        &self,
        tape: &mut Tape<F, B>,
        p: &[&B::Param],
        pooled: TensorId,
    ) -> anyhow::Result<TensorId> {
        let [w1, b1, w2, b2] = self.head_ids()?;
        let d = self.cfg.d;
        let z = tape.linear(p, pooled, w1, Some(b1), d, d)?;
        tape.release(&[pooled]);
        let g = tape.gelu(z)?;
        tape.release(&[z]);
        let logits = tape.linear(p, g, w2, Some(b2), d, self.cfg.n_classes)?;
        tape.release(&[g]);
        Ok(logits)
    }

    /// The classifier head's parameters: `w1, b1, w2, b2`.
    pub fn head_ids(&self) -> anyhow::Result<[ParamId; 4]> {
        let h = self
            .head
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("model has no classification head (n_classes = 0)"))?;
        Ok([h.w1, h.b1, h.w2, h.b2])
    }

    /// Classification: [`Self::cls_logits`] -> cross entropy against
    /// `labels` (+ aux).
    pub fn cls_forward<F: Float, B: Backend<F>>(
        &self,
        tape: &mut Tape<F, B>,
        p: &[&B::Param],
        x: &Inputs,
        labels: &[u32],
        aux_weight: F,
    ) -> anyhow::Result<Forward<F>> {
        let (logits, aux) = self.cls_logits(tape, p, x, aux_weight)?;
        let (loss, task_loss) = tape.cross_entropy(logits, labels, IGNORE)?;
        Ok(Forward {
            loss,
            task_loss,
            aux,
            logits,
        })
    }
}

/// `targets[b,s] = ids[b,s+1]` when both positions are real tokens, else IGNORE.
pub fn next_token_targets(x: &Inputs) -> Vec<u32> {
    let mut t = vec![IGNORE; x.b * x.s];
    for b in 0..x.b {
        for s in 0..x.s.saturating_sub(1) {
            let i = b * x.s + s;
            if x.mask[i] != 0 && x.mask[i + 1] != 0 {
                t[i] = x.ids[i + 1];
            }
        }
    }
    t
}
