//! cuda/elementwise.cu against f64 references on the same bf16 inputs
//! (backend::cpu::act for GELU): the 16-byte path (n % 8 == 0), the scalar
//! path (odd n), several blocks with a partial last trip, and in-place calls.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use traffic_moe::backend::cpu::act;
use traffic_moe::backend::gpu::ops::elementwise as ew;
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

// 16-byte path: 8, 1000, 9000 (several blocks, partial trip); scalar: 1, 1001, 8999.
const SIZES: [usize; 6] = [8, 1000, 9000, 1, 1001, 8999];

#[test]
fn add_matches_reference_and_in_place() {
    run_on_executors("add_fwd", |ex| {
        let mut rng = rng(21);
        for n in SIZES {
            let (a, af) = bf16_input(&mut rng, n, 4.0);
            let (b, bf) = bf16_input(&mut rng, n, 1.0);
            let want: Vec<f64> = af.iter().zip(&bf).map(|(x, y)| x + y).collect();
            let (ab, bb) = (ex.upload(&a)?, ex.upload(&b)?);
            let out = ex.alloc_zeroed::<bf16>(n)?;
            ew::add_fwd(ex, &ab, &bb, &out, n)?;
            let got = ex.download(&out)?;
            // One rounding of the sum: fp32 holds the sum of two bf16 exactly
            // unless their exponents differ by more than 16 (not in these
            // seeded inputs), so the result is bit-exact.
            let exact: Vec<bf16> = want.iter().map(|&v| bf16::from_f64(v)).collect();
            anyhow::ensure!(got == exact, "add_fwd n {n}: not the rounded exact sum");
            // out aliasing a, then b.
            ew::add_fwd(ex, &ab, &bb, &ab, n)?;
            anyhow::ensure!(ex.download(&ab)? == got, "add_fwd in place (a) n {n}");
            let ab2 = ex.upload(&a)?;
            ew::add_fwd(ex, &ab2, &bb, &bb, n)?;
            anyhow::ensure!(ex.download(&bb)? == got, "add_fwd in place (b) n {n}");
        }
        Ok(())
    });
}

#[test]
fn gelu_fwd_bwd_match_reference() {
    run_on_executors("gelu", |ex| {
        let mut rng = rng(22);
        for n in SIZES {
            let (x, xf) = bf16_input(&mut rng, n, 6.0);
            let (dy, dyf) = bf16_input(&mut rng, n, 1.0);
            let (mut y_ref, mut dx_ref) = (vec![0.0f64; n], vec![0.0f64; n]);
            act::gelu_fwd(&xf, &mut y_ref);
            act::gelu_bwd(&xf, &dyf, &mut dx_ref);

            let (xb, dyb) = (ex.upload(&x)?, ex.upload(&dy)?);
            let (yb, dxb) = (ex.alloc_zeroed::<bf16>(n)?, ex.alloc_zeroed::<bf16>(n)?);
            ew::gelu_fwd(ex, &xb, &yb, n)?;
            let y = ex.download(&yb)?;
            assert_close(
                &format!("gelu y n {n}"),
                &bf_f64(&y),
                &y_ref,
                1e-5,
                BF16_RTOL,
            )?;
            ew::gelu_bwd(ex, &xb, &dyb, &dxb, n)?;
            let dx = ex.download(&dxb)?;
            assert_close(
                &format!("gelu dx n {n}"),
                &bf_f64(&dx),
                &dx_ref,
                1e-5,
                BF16_RTOL,
            )?;

            // In place: dx over dy, then y over x.
            ew::gelu_bwd(ex, &xb, &dyb, &dyb, n)?;
            anyhow::ensure!(ex.download(&dyb)? == dx, "gelu_bwd in place n {n}");
            ew::gelu_fwd(ex, &xb, &xb, n)?;
            anyhow::ensure!(ex.download(&xb)? == y, "gelu_fwd in place n {n}");
        }
        Ok(())
    });
}
