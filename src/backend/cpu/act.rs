//! Elementwise activations used by the classifier head and the shared-expert gate.

use crate::engine::float::{Float, sigmoid};

/// GELU, tanh approximation.
pub fn gelu_fwd<F: Float>(x: &[F], y: &mut [F]) {
    let c = F::from_f64((2.0 / std::f64::consts::PI).sqrt());
    let a = F::from_f64(0.044715);
    let half = F::from_f64(0.5);
    for (o, &v) in y.iter_mut().zip(x) {
        *o = half * v * (F::ONE + (c * (v + a * v * v * v)).tanh());
    }
}

/// `dx` overwritten.
pub fn gelu_bwd<F: Float>(x: &[F], dy: &[F], dx: &mut [F]) {
    let c = F::from_f64((2.0 / std::f64::consts::PI).sqrt());
    let a = F::from_f64(0.044715);
    let half = F::from_f64(0.5);
    let three = F::from_f64(3.0);
    for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        let th = (c * (v + a * v * v * v)).tanh();
        let dth = (F::ONE - th * th) * c * (F::ONE + three * a * v * v);
        *o = g * half * ((F::ONE + th) + v * dth);
    }
}

pub fn sigmoid_fwd<F: Float>(x: &[F], y: &mut [F]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = sigmoid(v);
    }
}

/// From the output: `dx = dy * y * (1 - y)` (=).
pub fn sigmoid_bwd<F: Float>(y: &[F], dy: &[F], dx: &mut [F]) {
    for ((o, &v), &g) in dx.iter_mut().zip(y).zip(dy) {
        *o = g * v * (F::ONE - v);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn gradients_match_finite_differences() {
        let x: Vec<f64> = vals(9, 1).iter().map(|v| v * 3.0).collect();
        let dy = vals(9, 2);
        let mut dx = vec![0.0; 9];
        gelu_bwd(&x, &dy, &mut dx);
        check_grad(
            &x,
            &dx,
            |p| {
                let mut y = vec![0.0; 9];
                gelu_fwd(p, &mut y);
                dot(&y, &dy)
            },
            "gelu",
        );
        let mut y = vec![0.0; 9];
        sigmoid_fwd(&x, &mut y);
        sigmoid_bwd(&y, &dy, &mut dx);
        check_grad(
            &x,
            &dx,
            |p| {
                let mut y = vec![0.0; 9];
                sigmoid_fwd(p, &mut y);
                dot(&y, &dy)
            },
            "sigmoid",
        );
    }
}
