//! Masked mean pooling over the sequence: `out[b] = mean of x[b,s] where mask[b,s]`.

use crate::engine::float::Float;

pub fn mean_fwd<F: Float>(x: &[F], mask: &[u8], b: usize, s: usize, d: usize, out: &mut [F]) {
    for bi in 0..b {
        let o = &mut out[bi * d..(bi + 1) * d];
        o.iter_mut().for_each(|v| *v = F::ZERO);
        let n = mask[bi * s..(bi + 1) * s]
            .iter()
            .filter(|&&m| m != 0)
            .count();
        if n == 0 {
            continue;
        }
        for si in 0..s {
            if mask[bi * s + si] != 0 {
                let row = &x[(bi * s + si) * d..(bi * s + si + 1) * d];
                for (ov, &xv) in o.iter_mut().zip(row) {
                    *ov += xv;
                }
            }
        }
        let inv = F::ONE / F::from_usize(n);
        o.iter_mut().for_each(|v| *v *= inv);
    }
}

/// `dx` is overwritten (zero at masked positions).
pub fn mean_bwd<F: Float>(dout: &[F], mask: &[u8], b: usize, s: usize, d: usize, dx: &mut [F]) {
    for bi in 0..b {
        let n = mask[bi * s..(bi + 1) * s]
            .iter()
            .filter(|&&m| m != 0)
            .count();
        let inv = if n == 0 {
            F::ZERO
        } else {
            F::ONE / F::from_usize(n)
        };
        for si in 0..s {
            let row = &mut dx[(bi * s + si) * d..(bi * s + si + 1) * d];
            if mask[bi * s + si] != 0 {
                for (r, &g) in row.iter_mut().zip(&dout[bi * d..(bi + 1) * d]) {
                    *r = g * inv;
                }
            } else {
                row.iter_mut().for_each(|v| *v = F::ZERO);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn pools_valid_positions_only() {
        let (b, s, d) = (2, 3, 2);
        let x = vals(b * s * d, 1);
        let mask = [1u8, 1, 0, 1, 0, 0];
        let mut o = vec![0.0; b * d];
        mean_fwd(&x, &mask, b, s, d, &mut o);
        assert!((o[0] - (x[0] + x[2]) / 2.0).abs() < 1e-12);
        assert_eq!(o[2], x[6]);
        let dout = vals(b * d, 2);
        let mut dx = vec![0.0; x.len()];
        mean_bwd(&dout, &mask, b, s, d, &mut dx);
        check_grad(
            &x,
            &dx,
            |p| {
                let mut o = vec![0.0; b * d];
                mean_fwd(p, &mask, b, s, d, &mut o);
                dot(&o, &dout)
            },
            "dx",
        );
    }
}
