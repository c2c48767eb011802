//! cuda/rope.cu against backend::cpu::rope (f64, same bf16 inputs), on every
//! available executor. Odd head counts / lengths leave partial blocks; the long
//! sequences check the angle accuracy at large positions (2048: angles up
//! to 2047 rad, reduced to [-pi, pi] before the hardware sin/cos on the GPU).

mod kernel_util;

use half::bf16;
use kernel_util::*;
use traffic_moe::backend::cpu::rope;
use traffic_moe::backend::gpu::ops::rope::{self as gpu_rope, RopeShape};
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

// (batch, seq, heads, head_dim)
// hd 16 and 64 take the 8-pairs-per-thread path, hd 8 and 6 the scalar one.
// fwd and bwd are one kernel body (RopeParams) with the angle's sign flipped.
const SHAPES: [(usize, usize, usize, usize); 5] = [
    (2, 5, 3, 8),
    (1, 37, 2, 6),
    (1, 300, 1, 64),
    (3, 7, 5, 16),
    (1, 2048, 2, 16),
];

#[test]
fn rope_fwd_bwd_match_reference() {
    run_on_executors("rope", |ex| {
        let mut rng = rng(11);
        for (b, s, h, hd) in SHAPES {
            let n = b * s * h * hd;
            let shape = RopeShape {
                batch: b,
                seq: s,
                heads: h,
                head_dim: hd,
                theta: 10000.0,
            };
            let what = format!("B {b} S {s} H {h} hd {hd}");
            let (x, xf) = bf16_input(&mut rng, n, 2.0);
            let mut want = vec![0.0f64; n];
            rope::fwd(&xf, &mut want, b, s, h, hd, 10000.0);
            let xb = ex.upload(&x)?;
            let yb = ex.alloc_zeroed::<bf16>(n)?;
            gpu_rope::fwd(ex, &xb, &yb, &shape)?;
            assert_close(
                &format!("rope fwd ({what})"),
                &bf_f64(&ex.download(&yb)?),
                &want,
                1e-4,
                BF16_RTOL,
            )?;

            let (dy, dyf) = bf16_input(&mut rng, n, 1.0);
            rope::bwd(&dyf, &mut want, b, s, h, hd, 10000.0);
            // In place: dx written over dy.
            let db = ex.upload(&dy)?;
            gpu_rope::bwd(ex, &db, &db, &shape)?;
            assert_close(
                &format!("rope bwd ({what})"),
                &bf_f64(&ex.download(&db)?),
                &want,
                1e-4,
                BF16_RTOL,
            )?;
        }
        Ok(())
    });
}

#[test]
fn rope_rejects_odd_head_dim() {
    let ex = traffic_moe::backend::gpu::Executor::sim();
    let x = ex.alloc_zeroed::<bf16>(10).unwrap();
    let shape = RopeShape {
        batch: 1,
        seq: 2,
        heads: 1,
        head_dim: 5,
        theta: 10000.0,
    };
    let err = gpu_rope::fwd(&ex, &x, &x, &shape).unwrap_err().to_string();
    assert!(err.contains("head_dim must be even"), "{err}");
}

/// A config's rope_theta is an f64 checked finite; past f32's range it
/// becomes an infinite f32 theta, with which every angle of pair 0 is
/// 0 * inf = NaN: refused, as are NaN and non-positive thetas.
#[test]
fn rope_rejects_a_theta_that_is_not_finite_and_positive() {
    let ex = traffic_moe::backend::gpu::Executor::sim();
    let x = ex.alloc_zeroed::<bf16>(8).unwrap();
    for theta in [1e39f64 as f32, f32::NAN, 0.0, -1.0] {
        let shape = RopeShape {
            batch: 1,
            seq: 2,
            heads: 1,
            head_dim: 4,
            theta,
        };
        let err = gpu_rope::fwd(&ex, &x, &x, &shape).unwrap_err().to_string();
        assert!(err.contains("rope: bad shape"), "theta {theta}: {err}");
    }
}

/// The longest sequence the CLI allows (MAX_SEQ = 65536 positions), on the
/// 16-byte path (hd 16) and the scalar one (hd 6): angles up to 65535 rad.
/// The angles must be as exact as the reference's f64 ones to stay within one
/// bf16 rounding (frequencies in float were off by ~1e-7 relatively, which at
/// these positions turned outputs by up to 2 bf16 roundings).
#[test]
fn rope_at_the_longest_sequence() {
    run_on_executors("rope_long", |ex| {
        let mut rng = rng(12);
        let s = traffic_moe::cli::args::MAX_SEQ;
        for hd in [16usize, 6] {
            let n = s * hd;
            let shape = RopeShape {
                batch: 1,
                seq: s,
                heads: 1,
                head_dim: hd,
                theta: 10000.0,
            };
            let (x, xf) = bf16_input(&mut rng, n, 2.0);
            let mut want = vec![0.0f64; n];
            rope::fwd(&xf, &mut want, 1, s, 1, hd, 10000.0);
            let xb = ex.upload(&x)?;
            gpu_rope::fwd(ex, &xb, &xb, &shape)?;
            let what = format!("S {s} hd {hd}");
            let got = bf_f64(&ex.download(&xb)?);
            assert_close(&format!("rope fwd ({what})"), &got, &want, 1e-4, BF16_RTOL)?;
            rope::bwd(&xf, &mut want, 1, s, 1, hd, 10000.0);
            let xb = ex.upload(&x)?;
            gpu_rope::bwd(ex, &xb, &xb, &shape)?;
            let got = bf_f64(&ex.download(&xb)?);
            assert_close(&format!("rope bwd ({what})"), &got, &want, 1e-4, BF16_RTOL)?;
        }
        Ok(())
    });
}
