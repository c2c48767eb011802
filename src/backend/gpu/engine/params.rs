//! Parameters on the device, in one arena: fp32 master weights, their
//! gradients, AdamW's m and v, and the bf16 copy the GEMMs read, each one
//! flat buffer with every tensor at the same offset. One launch updates them
//! all (`adamw_step`, which also refreshes the bf16 copy; on upload
//! `refresh_bf16` makes it with the `cast_f32_bf16` kernel), one computes the
//! global gradient norm. Loaded for inference, it keeps the bf16 copy and
//! fp32 only for the small tensors the forward reads in fp32 (norms, router,
//! biases): the GEMM weights' and the embedding table's fp32 masters are
//! training state.
//!
//! The fused SwiGLU GEMM reads an FFN's gate and up projections as one
//! `[2f, d]` matrix per expert (gate rows, then up rows). The checkpoint
//! keeps `w_gate` and `w_up` apart (`[N, f, d]` each, PyTorch's layout), so
//! the arena *packs* each pair on upload (expert e: its gate rows, then its
//! up rows; the shared expert and the dense twin's FFN are one block) and
//! unpacks it on download: checkpoints stay the same files on every engine,
//! and no format version or loader for old files is needed.

use std::sync::Arc;

use half::bf16;

use crate::autograd::ParamStore;
use crate::backend::gpu::ops::adamw::{self, AdamwArenas, AdamwHyper, ArenaLayout};
use crate::backend::gpu::ops::cast;
use crate::backend::gpu::ops::grad_norm::GradNorm;
use crate::backend::gpu::{Buf, Executor, GpuError};
use crate::engine::Param;
use crate::engine::param::is_gate_up_pair;

type Result<T> = std::result::Result<T, GpuError>;

/// AdamW's first and second moments per parameter, and the steps taken.
pub type Moments = (Vec<Vec<f32>>, Vec<Vec<f32>>, u32);

/// How a parameter sits in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Its own contiguous region.
    Own,
    /// The gate of a packed gate|up pair: the view is the whole pair,
    /// `[blocks, 2f, d]` (blocks = experts, or 1 for the shared expert).
    PairGate,
    /// The up half of a pair: the view is the pair too (ops read it through
    /// the gate; its gradient arrives with the gate's).
    PairUp,
}

/// A parameter (or its gradient) as the ops see it: views into the arena.
pub struct GpuParam {
    /// fp32 values or gradient (the whole pair for `PairGate`/`PairUp`).
    pub w: Buf<f32>,
    /// The bf16 copy of the values (None for gradients).
    pub w16: Option<Buf<bf16>>,
    pub role: Role,
    /// Elements of the tensor itself: the views can be longer, by rows of
    /// zeros (`padded_rows`: the embedding table's vocabulary padded to a
    /// multiple of 8).
    pub used: usize,
}

impl GpuParam {
    /// The bf16 copy, or an error naming `op` (gradients have none).
    pub fn bf16(&self, op: &'static str) -> crate::engine::OpResult<&Buf<bf16>> {
        self.w16
            .as_ref()
            .ok_or_else(|| crate::engine::OpError::msg(op, "parameter has no bf16 copy"))
    }
}

/// One region of the arena: a tensor, or a packed pair of two.
#[derive(Clone, Debug)]
struct Region {
    offset: usize,
    len: usize,
    /// Elements the members hold (`len` less the rows of zeros after them).
    used: usize,
    /// Model parameter indices: one, or (gate, up) with `blocks` experts.
    members: Vec<usize>,
    blocks: usize,
    group: usize,
    decay: bool,
}

/// Every parameter of a model on one device.
pub struct GpuParams {
    ex: Executor,
    /// Loaded for training (every arena); else for inference (bf16 copies,
    /// and fp32 only where the forward reads fp32).
    training: bool,
    regions: Vec<Region>,
    /// Host-side description (names, shapes, groups) for downloads.
    meta: Vec<Param>,
    w: Arc<Buf<f32>>,
    g: Arc<Buf<f32>>,
    w16: Arc<Buf<bf16>>,
    m: Buf<f32>,
    v: Buf<f32>,
    values: Vec<GpuParam>,
    grads: Vec<GpuParam>,
    /// AdamW tables per region (built on the first step, for its lrs).
    layout: Option<(Vec<f32>, ArenaLayout)>,
    norm: Option<GradNorm>,
    step: u32,
}

/// Packs (`pack = true`) `[blocks, f·d]` gate and up into `[blocks, 2, f·d]`,
/// or unpacks.
fn pack_pair(gate: &mut [f32], up: &mut [f32], pair: &mut [f32], blocks: usize, pack: bool) {
    let per = gate.len() / blocks;
    for e in 0..blocks {
        let (pg, pu) = pair[e * 2 * per..(e + 1) * 2 * per].split_at_mut(per);
        let (g, u) = (
            &mut gate[e * per..(e + 1) * per],
            &mut up[e * per..(e + 1) * per],
        );
        if pack {
            pg.copy_from_slice(g);
            pu.copy_from_slice(u);
        } else {
            g.copy_from_slice(pg);
            u.copy_from_slice(pu);
        }
    }
}

/// The arena image of per-parameter host vectors.
fn pack_vecs(regions: &[Region], total: usize, vals: &[&[f32]]) -> Vec<f32> {
    let mut host = vec![0f32; total];
    for r in regions {
        let dst = &mut host[r.offset..r.offset + r.len];
        match r.members[..] {
            [a] => dst[..r.used].copy_from_slice(vals[a]),
            [a, b] => {
                let (mut g, mut u) = (vals[a].to_vec(), vals[b].to_vec());
                pack_pair(&mut g, &mut u, dst, r.blocks, true);
            }
            _ => unreachable!("regions hold one or two tensors"),
        }
    }
    host
}

/// Per-parameter host vectors from an arena image.
fn unpack_vecs(regions: &[Region], host: &[f32], n: usize) -> Vec<Vec<f32>> {
    let mut out = vec![Vec::new(); n];
    for r in regions {
        let src = &host[r.offset..r.offset + r.len];
        match r.members[..] {
            [a] => out[a] = src[..r.used].to_vec(),
            [a, b] => {
                let (mut g, mut u) = (vec![0f32; r.len / 2], vec![0f32; r.len / 2]);
                let mut pair = src.to_vec();
                pack_pair(&mut g, &mut u, &mut pair, r.blocks, false);
                out[a] = g;
                out[b] = u;
            }
            _ => unreachable!("regions hold one or two tensors"),
        }
    }
    out
}

/// Rows of zeros the arena keeps after a parameter: the embedding table's
/// vocabulary is padded to a multiple of 8 rows, so that the tied LM head's
/// logits rows (`[T, V]`, V = 65,541 at base) start on 16-byte boundaries
/// and its three GEMMs take the 16-byte path, which an odd V refuses
/// (scalar loads, the small tile). The rows stay zero: their logits are 0,
/// the cross entropy skips them (`xent::fwd_bwd`), their gradient is 0,
/// and AdamW leaves a zero weight with a zero gradient at zero. Checkpoints
/// never see them (download drops them).
fn padded_rows(p: &Param, members: usize) -> usize {
    match p.shape[..] {
        [v, _] if members == 1 && p.name.ends_with("tok_embed") => v.next_multiple_of(8) - v,
        _ => 0,
    }
}

/// Whether an inference forward reads a parameter in fp32 (else only its
/// bf16 copy, as a GEMM's weight or the embedding gather's table). A tensor read in fp32 without its fp32 copy fails
/// with an error naming the op (the GPU-engine tests would show it).
fn forward_reads_f32(name: &str) -> bool {
    const BF16_ONLY: [&str; 8] = [
        // Gathered from the bf16 copy at inference (embed_fwd_bf16) and the
        // tied LM head's GEMM weight: the largest tensor (vocab x d) needs
        // no fp32 copy there.
        "tok_embed",
        "attn.wqkv",
        "attn.wo",
        ".w_gate",
        ".w_up",
        ".w_down",
        "head.w1",
        "head.w2",
    ];
    !BF16_ONLY.iter().any(|s| name.ends_with(s))
}

/// The inference arenas: bf16 for every tensor (rounded on the host, bit
/// for bit what `cast_f32_bf16` gives), and a compact fp32 arena of the
/// tensors the forward reads in fp32, with each region's offset in it.
type InferenceArenas = (Arc<Buf<f32>>, Arc<Buf<bf16>>, Vec<Option<usize>>);

fn inference_arenas(
    ex: &Executor,
    params: &[Param],
    regions: &[Region],
    host: &[f32],
) -> Result<InferenceArenas> {
    let host16: Vec<bf16> = host.iter().map(|&x| bf16::from_f32(x)).collect();
    let w16 = Arc::new(ex.upload(&host16)?);
    let mut compact = Vec::new();
    let mut at = Vec::with_capacity(regions.len());
    for r in regions {
        if r.members
            .iter()
            .all(|&i| forward_reads_f32(&params[i].name))
        {
            at.push(Some(compact.len()));
            compact.extend_from_slice(&host[r.offset..r.offset + r.len]);
            compact.resize(compact.len().div_ceil(8) * 8, 0.0);
        } else {
            at.push(None);
        }
    }
    compact.resize(compact.len().max(8), 0.0);
    Ok((Arc::new(ex.upload(&compact)?), w16, at))
}

impl GpuParams {
    /// Uploads the values of `params` for training (gradients and optimizer
    /// state start at zero).
    pub fn upload(ex: &Executor, params: &[Param]) -> Result<GpuParams> {
        Self::upload_as(ex, params, true)
    }

    /// Uploads the values for inference: the bf16 copies the GEMMs read, and
    /// fp32 only for the tensors the forward reads in fp32 (embedding, norms,
    /// biases, router, shared-expert gate); no gradient or optimizer arenas
    /// (a backward through this store is an error). At base that is 0.9 GB
    /// of weights instead of 2.2 GB.
    pub fn upload_inference(ex: &Executor, params: &[Param]) -> Result<GpuParams> {
        Self::upload_as(ex, params, false)
    }

    fn upload_as(ex: &Executor, params: &[Param], training: bool) -> Result<GpuParams> {
        let mut regions = Vec::new();
        let mut i = 0;
        let mut offset = 0;
        while i < params.len() {
            let p = &params[i];
            let (members, blocks, used) = if is_gate_up_pair(params, i) {
                let blocks = if p.shape.len() == 3 { p.shape[0] } else { 1 };
                (vec![i, i + 1], blocks, 2 * p.numel())
            } else {
                (vec![i], 1, p.numel())
            };
            let len = used + padded_rows(p, members.len()) * p.shape.last().copied().unwrap_or(0);
            i += members.len();
            // Regions start 16-byte aligned in both dtypes (8 elements), so
            // every view keeps the GEMMs' vector path.
            regions.push(Region {
                offset,
                len,
                used,
                members,
                blocks,
                group: p.group,
                decay: p.decay,
            });
            offset += len.div_ceil(8) * 8;
        }
        let total = offset.max(8);
        let host = pack_vecs(
            &regions,
            total,
            &params.iter().map(|p| &p.value[..]).collect::<Vec<_>>(),
        );
        // fp32 offsets per region (None: no fp32 copy on the device).
        let (w, w16, f32_at) = if training {
            let w = Arc::new(ex.upload(&host)?);
            // The bf16 copy is made on the device (`refresh_bf16`, below).
            let w16 = Arc::new(ex.alloc_zeroed::<bf16>(total)?);
            (w, w16, regions.iter().map(|r| Some(r.offset)).collect())
        } else {
            inference_arenas(ex, params, &regions, &host)?
        };
        let state = if training { total } else { 0 };
        let g = Arc::new(ex.alloc_zeroed::<f32>(state)?);
        let (m, v) = (ex.alloc_zeroed(state)?, ex.alloc_zeroed(state)?);
        let mut values: Vec<Option<GpuParam>> = params.iter().map(|_| None).collect();
        let mut grads: Vec<Option<GpuParam>> = params.iter().map(|_| None).collect();
        let view = |b: &Arc<Buf<f32>>, r: &Region| {
            Buf::view(b, r.offset, r.len).ok_or_else(|| GpuError::Invalid("arena view".into()))
        };
        for (r, at) in regions.iter().zip(&f32_at) {
            for (k, &idx) in r.members.iter().enumerate() {
                let role = match (r.members.len(), k) {
                    (1, _) => Role::Own,
                    (_, 0) => Role::PairGate,
                    _ => Role::PairUp,
                };
                // Without an fp32 copy: an empty view, which every kernel
                // wrapper refuses with an error naming its op.
                let w32 = match at {
                    Some(o) => Buf::view(&w, *o, r.len),
                    None => Buf::view(&w, 0, 0),
                }
                .ok_or_else(|| GpuError::Invalid("arena view".into()))?;
                values[idx] = Some(GpuParam {
                    w: w32,
                    w16: Some(
                        Buf::view(&w16, r.offset, r.len)
                            .ok_or_else(|| GpuError::Invalid("arena view".into()))?,
                    ),
                    role,
                    used: r.used,
                });
                if training {
                    grads[idx] = Some(GpuParam {
                        w: view(&g, r)?,
                        w16: None,
                        role,
                        used: r.used,
                    });
                }
            }
        }
        let meta = params
            .iter()
            .map(|p| Param {
                value: Vec::new(),
                grad: Vec::new(),
                ..p.clone()
            })
            .collect();
        let store = GpuParams {
            ex: ex.clone(),
            training,
            regions,
            meta,
            w,
            g,
            w16,
            m,
            v,
            values: values
                .into_iter()
                .map(|p| p.expect("every param"))
                .collect(),
            grads: grads.into_iter().flatten().collect(),
            layout: None,
            norm: None,
            step: 0,
        };
        if training {
            store.refresh_bf16()?;
        }
        Ok(store)
    }

    /// Recomputes the bf16 copy from the fp32 master on the device
    /// (`cast_f32_bf16`: round to nearest even, bit for bit `bf16::from_f32`).
    /// `adamw_step` refreshes it itself; this is for values written otherwise.
    pub fn refresh_bf16(&self) -> Result<()> {
        if !self.training {
            return Err(GpuError::Invalid(
                "weights loaded for inference have no full fp32 arena to cast".into(),
            ));
        }
        cast::f32_to_bf16(&self.ex, &self.w, &self.w16, self.w.len())
    }

    /// Elements in the arena (with alignment padding).
    pub fn arena_len(&self) -> usize {
        self.w.len()
    }

    /// Bytes the parameters take on the device: fp32 weights and the bf16
    /// copy, plus grads, m and v when training.
    pub fn device_bytes(&self) -> usize {
        (self.w.len() + self.g.len() + self.m.len() + self.v.len()) * 4 + self.w16.len() * 2
    }

    /// The values back on the host, as the model's parameter list (unpacked).
    pub fn download(&self) -> Result<Vec<Param>> {
        if !self.training {
            return Err(GpuError::Invalid(
                "weights loaded for inference keep no fp32 copy of the GEMM weights: \
                 load them for training to download them"
                    .into(),
            ));
        }
        self.unpack(&self.ex.download(&self.w)?, false)
    }

    /// The gradients on the host (in `Param::grad`; values left empty).
    pub fn download_grads(&self) -> Result<Vec<Param>> {
        self.unpack(&self.ex.download(&self.g)?, true)
    }

    fn unpack(&self, host: &[f32], into_grad: bool) -> Result<Vec<Param>> {
        let mut out: Vec<Param> = self.meta.clone();
        for (p, part) in out
            .iter_mut()
            .zip(unpack_vecs(&self.regions, host, self.meta.len()))
        {
            if into_grad {
                p.grad = part;
            } else {
                p.grad = vec![0.0; part.len()];
                p.value = part;
            }
        }
        Ok(out)
    }

    /// AdamW's moments per parameter (unpacked, the checkpoint's layout) and
    /// the steps taken.
    pub fn download_state(&self) -> Result<Moments> {
        let n = self.meta.len();
        Ok((
            unpack_vecs(&self.regions, &self.ex.download(&self.m)?, n),
            unpack_vecs(&self.regions, &self.ex.download(&self.v)?, n),
            self.step,
        ))
    }

    /// Restores AdamW's moments and step count (a resumed run).
    pub fn upload_state(&mut self, m: &[Vec<f32>], v: &[Vec<f32>], step: u32) -> Result<()> {
        let total = self.w.len();
        for (src, dst) in [(m, &mut self.m), (v, &mut self.v)] {
            if src.len() != self.meta.len()
                || src
                    .iter()
                    .zip(&self.meta)
                    .any(|(s, p)| s.len() != p.shape.iter().product::<usize>())
            {
                return Err(GpuError::Invalid(
                    "optimizer state does not match the parameters".into(),
                ));
            }
            let refs: Vec<&[f32]> = src.iter().map(|x| &x[..]).collect();
            self.ex
                .write(dst, &pack_vecs(&self.regions, total, &refs))?;
        }
        self.step = step;
        Ok(())
    }

    /// Zeroes every gradient (one memset).
    pub fn zero_grads(&self) -> Result<()> {
        self.ex.zero_range(&self.g, 0, self.g.len())
    }

    /// Global L2 norm of the gradients, on the device (`[1]`).
    pub fn grad_norm(&mut self) -> Result<&Buf<f64>> {
        if self.norm.is_none() {
            self.norm = Some(GradNorm::new(&self.ex, self.g.len())?);
        }
        let norm = self.norm.as_ref().expect("set above");
        norm.compute(&self.ex, &self.g)?;
        Ok(&norm.out)
    }

    /// One AdamW step over the whole arena: parameter group `g` uses
    /// `lr * group_lr[g]`, matrices decay by `weight_decay`; gradients are
    /// clipped to `max_norm` (global norm, computed on the device). Also
    /// refreshes the bf16 copy. Returns the norm before clipping (one read);
    /// when it is not finite nothing is updated and no step is counted.
    pub fn adamw_step(
        &mut self,
        cfg: &crate::train::optim::AdamWConfig,
        group_lr: &[f32],
        lr: f32,
        max_norm: f32,
    ) -> Result<f64> {
        let rebuild = !matches!(&self.layout, Some((g, _)) if g == group_lr);
        if rebuild {
            let sizes: Vec<usize> = self
                .regions
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    // Alignment padding belongs to the region before it.
                    let end = self.regions.get(i + 1).map_or(self.w.len(), |n| n.offset);
                    end - r.offset
                })
                .collect();
            let lrs: Vec<f32> = self
                .regions
                .iter()
                .map(|r| group_lr.get(r.group).copied().unwrap_or(1.0))
                .collect();
            let wds: Vec<f32> = self
                .regions
                .iter()
                .map(|r| if r.decay { cfg.weight_decay } else { 0.0 })
                .collect();
            self.layout = Some((
                group_lr.to_vec(),
                ArenaLayout::new(&self.ex, &sizes, &lrs, &wds)?,
            ));
        }
        self.grad_norm()?;
        self.step += 1;
        let (_, layout) = self.layout.as_ref().expect("built above");
        let norm = &self.norm.as_ref().expect("computed above").out;
        adamw::step(
            &self.ex,
            layout,
            &AdamwArenas {
                param: &self.w,
                grad: &self.g,
                m: &self.m,
                v: &self.v,
                param_bf16: Some(&self.w16),
            },
            &AdamwHyper {
                lr_scale: lr,
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.eps,
                step: self.step,
                max_grad_norm: max_norm,
            },
            Some(norm),
        )?;
        let norm = self.ex.download(norm)?[0];
        // The kernel updated nothing (see adamw.cu): the step was not taken.
        if !norm.is_finite() {
            self.step -= 1;
        }
        Ok(norm)
    }
}

impl ParamStore<GpuParam> for GpuParams {
    fn values(&self) -> Vec<&GpuParam> {
        self.values.iter().collect()
    }
    fn split(&mut self) -> (Vec<&GpuParam>, Vec<&mut GpuParam>) {
        (
            self.values.iter().collect(),
            self.grads.iter_mut().collect(),
        )
    }
}
