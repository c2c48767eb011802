//! AdamW update (decoupled weight decay, bias-corrected moments).

/// One step on a parameter slice; `step` is 1-based.
#[allow(clippy::too_many_arguments)]
pub fn step(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step: u32,
) {
    let bc1 = 1.0 - beta1.powi(step as i32);
    let bc2 = 1.0 - beta2.powi(step as i32);
    for i in 0..p.len() {
        m[i] = beta1 * m[i] + (1.0 - beta1) * g[i];
        v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
        let mh = m[i] / bc1;
        let vh = v[i] / bc2;
        p[i] -= lr * (mh / (vh.sqrt() + eps) + weight_decay * p[i]);
    }
}

/// Global L2 norm of several gradient slices (f64 accumulation).
pub fn grad_norm(grads: &[&[f32]]) -> f32 {
    grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| x as f64 * x as f64)
        .sum::<f64>()
        .sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_lr_in_gradient_sign() {
        let mut p = [1.0f32, -2.0];
        let g = [0.5f32, -3.0];
        let (mut m, mut v) = ([0.0f32; 2], [0.0f32; 2]);
        step(&mut p, &g, &mut m, &mut v, 0.1, 0.9, 0.999, 1e-8, 0.0, 1);
        // bias-corrected first step is lr * sign(g)
        assert!((p[0] - 0.9).abs() < 1e-5 && (p[1] + 1.9).abs() < 1e-5);
        let mut q = [1.0f32];
        step(
            &mut q,
            &[0.0],
            &mut [0.0],
            &mut [0.0],
            0.1,
            0.9,
            0.999,
            1e-8,
            0.5,
            1,
        );
        assert!((q[0] - 0.95).abs() < 1e-6, "decoupled decay");
        assert!((grad_norm(&[&[3.0], &[4.0]]) - 5.0).abs() < 1e-6);
    }
}
