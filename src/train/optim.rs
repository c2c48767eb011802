//! Parameters and their optimiser: AdamW with decoupled weight decay, per-group
//! learning-rate multipliers (layer-wise lr decay) and global-norm clipping.
//!
//! Weight decay policy: only matrices decay (rank >= 2), except embedding tables.
//! Norm gains, biases, the shared-expert gate vector and embeddings are kept
//! undecayed, as BERT/LLaMA recipes do: shrinking a norm gain or an embedding
//! toward zero changes the scale of everything downstream rather than
//! regularising a projection. `Param::decay` holds the choice so a caller can
//! override it per tensor.

use rayon::prelude::*;
use thiserror::Error;

pub use crate::engine::param::{Param, ParamError, default_decay};

pub fn zero_grads(params: &mut [Param]) {
    params.par_iter_mut().for_each(Param::zero_grad);
}

/// Elements per parallel task in the optimizer's elementwise passes; fixed, so
/// sums run in the same order on any number of threads (deterministic).
const CHUNK: usize = 1 << 16;

/// Learning-rate multiplier of each group for layer-wise lr decay over `n_layers`
/// layers: group l in 0..=L gets `xi^(L-l)` (so embeddings, group 0, the lowest,
/// `xi^L`), and the head, group L+1, gets 1 like the top layer: lr_0 stays the
/// largest rate, as in the paper's lr_l = xi^(L-l) * lr_0.
pub fn llrd_multipliers(n_layers: usize, xi: f32) -> Vec<f32> {
    (0..=n_layers + 1)
        .map(|g| xi.powi(n_layers.saturating_sub(g) as i32))
        .collect()
}

/// Global L2 norm of all gradients, accumulated in f64.
pub fn global_grad_norm(params: &[Param]) -> f64 {
    let partial: Vec<f64> = params
        .par_iter()
        .flat_map(|p| p.grad.par_chunks(CHUNK))
        .map(crate::backend::cpu::adamw::sum_squares)
        .collect();
    partial.iter().sum::<f64>().sqrt()
}

/// Scales all gradients so their global norm is at most `max_norm`; returns the
/// norm before clipping (a non-finite norm leaves the gradients untouched, so the
/// caller can see and skip the step).
pub fn clip_grad_norm(params: &mut [Param], max_norm: f64) -> f64 {
    let norm = global_grad_norm(params);
    if let Some(scale) = clip_scale(norm, max_norm) {
        params
            .par_iter_mut()
            .flat_map(|p| p.grad.par_chunks_mut(CHUNK))
            .for_each(|c| c.iter_mut().for_each(|g| *g *= scale));
    }
    norm
}

/// The factor that brings gradients of global norm `norm` within
/// `max_norm`, or `None` when they are within it already (or the norm is not
/// finite: the caller sees it and skips the step).
pub fn clip_scale(norm: f64, max_norm: f64) -> Option<f32> {
    // Same small epsilon as torch.nn.utils.clip_grad_norm_.
    (norm.is_finite() && norm > max_norm).then(|| (max_norm / (norm + 1e-6)) as f32)
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// One AdamW update of one tensor (PyTorch's AdamW: decoupled decay, then the
/// bias-corrected Adam step; `step` is 1-based). The arithmetic is the CPU
/// reference op [`crate::backend::cpu::adamw::step`], the definition the CUDA
/// kernel is tested against, so training on either side updates alike.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
    cfg: &AdamWConfig,
    weight_decay: f32,
    step: u32,
    grad_scale: f32,
) {
    crate::backend::cpu::adamw::step(
        p,
        g,
        m,
        v,
        lr,
        cfg.beta1,
        cfg.beta2,
        cfg.eps,
        weight_decay,
        step,
        grad_scale,
    );
}

#[derive(Debug, Error)]
pub enum OptimError {
    #[error("optimizer state has {state} tensors but the model has {params}")]
    CountMismatch { state: usize, params: usize },
    #[error("optimizer state for `{name}` has {state} values but the parameter has {param}")]
    SizeMismatch {
        name: String,
        state: usize,
        param: usize,
    },
    #[error("parameter `{name}` is in lr group {group} but only {groups} multipliers are set")]
    NoGroup {
        name: String,
        group: usize,
        groups: usize,
    },
}

/// AdamW over a list of parameters, fp32 first and second moments.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Number of steps taken so far (the next step is `step + 1`).
    pub step: u32,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    /// Learning-rate multiplier per group (`Param::group` indexes it).
    pub group_lr: Vec<f32>,
}

impl AdamW {
    /// Zeroed state for `params`, every group at multiplier 1.
    pub fn new(cfg: AdamWConfig, params: &[Param]) -> AdamW {
        let groups = params.iter().map(|p| p.group + 1).max().unwrap_or(1);
        // Zeros written, not calloc'd: calloc's fresh pages map the shared
        // zero page, so the first step's read-then-write of m and v took a
        // copy-on-write fault and a TLB shootdown per page (about 2.5 s of
        // the small config's first step on the 2-core Xeon).
        let zeros = |p: &Param| crate::backend::cpu::alloc::zeros::<f32>(p.numel());
        AdamW {
            cfg,
            step: 0,
            m: params.iter().map(zeros).collect(),
            v: params.iter().map(zeros).collect(),
            group_lr: vec![1.0; groups],
        }
    }

    /// Sets the multipliers of [`llrd_multipliers`].
    pub fn with_layerwise_decay(mut self, n_layers: usize, xi: f32) -> AdamW {
        self.group_lr = llrd_multipliers(n_layers, xi);
        self
    }

    /// One update of every parameter with base learning rate `lr` (from the
    /// schedule); each parameter uses `lr * group_lr[group]`.
    pub fn step(&mut self, params: &mut [Param], lr: f32) -> Result<(), OptimError> {
        self.step_scaled(params, lr, 1.0)
    }

    /// [`AdamW::step`] on every gradient times `grad_scale` ([`clip_scale`]'s
    /// factor): the update [`clip_grad_norm`] then [`AdamW::step`] make, bit
    /// for bit, in one pass over the gradients instead of two (the gradients
    /// themselves stay unscaled).
    pub fn step_scaled(
        &mut self,
        params: &mut [Param],
        lr: f32,
        grad_scale: f32,
    ) -> Result<(), OptimError> {
        self.check(params)?;
        self.step += 1;
        let (cfg, step, group_lr) = (&self.cfg, self.step, &self.group_lr);
        params
            .par_iter_mut()
            .zip(self.m.par_iter_mut())
            .zip(self.v.par_iter_mut())
            .for_each(|((p, m), v)| {
                let lr_p = lr * group_lr[p.group];
                let wd = if p.decay { cfg.weight_decay } else { 0.0 };
                p.value
                    .par_chunks_mut(CHUNK)
                    .zip(p.grad.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK))
                    .zip(v.par_chunks_mut(CHUNK))
                    .for_each(|(((pc, gc), mc), vc)| {
                        adamw_update(pc, gc, mc, vc, lr_p, cfg, wd, step, grad_scale)
                    });
            });
        Ok(())
    }

    /// The state matches `params` one to one (after a resume, for instance).
    pub fn check(&self, params: &[Param]) -> Result<(), OptimError> {
        if self.m.len() != params.len() || self.v.len() != params.len() {
            return Err(OptimError::CountMismatch {
                state: self.m.len(),
                params: params.len(),
            });
        }
        for (i, p) in params.iter().enumerate() {
            for state in [&self.m[i], &self.v[i]] {
                if state.len() != p.numel() {
                    return Err(OptimError::SizeMismatch {
                        name: p.name.clone(),
                        state: state.len(),
                        param: p.numel(),
                    });
                }
            }
            if p.group >= self.group_lr.len() {
                return Err(OptimError::NoGroup {
                    name: p.name.clone(),
                    group: p.group,
                    groups: self.group_lr.len(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_wrong_size() {
        let e = Param::new("w", vec![2, 3], vec![0.0; 5], 1).unwrap_err();
        assert!(e.to_string().contains("`w`"), "{e}");
    }

    /// PyTorch's AdamW in f64, as the optimizer's ground truth.
    #[test]
    fn step_matches_pytorch_adamw() {
        let cfg = AdamWConfig::default();
        let mut params = vec![Param::new("w", vec![2, 2], vec![0.5, -1.0, 2.0, 0.1], 0).unwrap()];
        let mut opt = AdamW::new(cfg, &params);
        let mut want: Vec<f64> = params[0].value.iter().map(|&x| x as f64).collect();
        let (mut m, mut v) = (vec![0f64; 4], vec![0f64; 4]);
        let (b1, b2, lr, wd) = (0.9f64, 0.999f64, 0.01f64, 0.01f64);
        for t in 1..=3 {
            let g = [0.3f32 * t as f32, -0.2, 0.05, 1.0];
            params[0].grad.copy_from_slice(&g);
            opt.step(&mut params, lr as f32).unwrap();
            for i in 0..4 {
                let gi = g[i] as f64;
                want[i] *= 1.0 - lr * wd;
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                let mh = m[i] / (1.0 - b1.powi(t));
                let vh = v[i] / (1.0 - b2.powi(t));
                want[i] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        for (got, want) in params[0].value.iter().zip(&want) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    /// Clipping folded into AdamW's pass updates exactly as clipping the
    /// gradients first: weights and both moments, bit for bit, over steps
    /// that clip and a step that does not.
    #[test]
    fn step_scaled_equals_clipping_then_stepping() {
        let mk = || {
            vec![
                Param::new(
                    "a.w",
                    vec![3, 7],
                    (0..21).map(|i| i as f32 * 0.1).collect(),
                    0,
                )
                .unwrap(),
                Param::new("b", vec![5], vec![0.3; 5], 0).unwrap(),
            ]
        };
        let (mut clipped, mut fused) = (mk(), mk());
        let mut o1 = AdamW::new(AdamWConfig::default(), &clipped);
        let mut o2 = o1.clone();
        for (t, max_norm) in [(1, 0.5), (2, 1.0), (3, 1e9)] {
            for (ps, seed) in [(&mut clipped, t), (&mut fused, t)] {
                for (j, p) in ps.iter_mut().enumerate() {
                    for (i, g) in p.grad.iter_mut().enumerate() {
                        *g = ((i * 7 + j * 3 + seed) % 11) as f32 * 0.37 - 1.7;
                    }
                }
            }
            let n1 = clip_grad_norm(&mut clipped, max_norm);
            o1.step(&mut clipped, 0.01).unwrap();
            let n2 = global_grad_norm(&fused);
            let scale = clip_scale(n2, max_norm);
            assert_eq!(scale.is_some(), max_norm < 1e9, "step {t} clips");
            o2.step_scaled(&mut fused, 0.01, scale.unwrap_or(1.0))
                .unwrap();
            assert_eq!(n1, n2);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for (i, (a, b)) in clipped.iter().zip(&fused).enumerate() {
                assert_eq!(bits(&a.value), bits(&b.value), "step {t}: {}", a.name);
                assert_eq!(bits(&o1.m[i]), bits(&o2.m[i]), "step {t}: m");
                assert_eq!(bits(&o1.v[i]), bits(&o2.v[i]), "step {t}: v");
            }
        }
    }

    #[test]
    fn decay_policy() {
        assert!(default_decay("layers.0.attn.wq", &[4, 4]));
        assert!(!default_decay("layers.0.attn_norm", &[4]));
        assert!(!default_decay("tok_embed", &[10, 4]));
        assert!(!default_decay("layers.0.moe.shared_gate", &[1, 4]));
        assert!(default_decay("layers.0.moe.router", &[4, 4]));
    }
}
