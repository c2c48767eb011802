//! cuda/swiglu.cu against backend::cpu::swiglu (f64, same bf16 inputs): dense
//! matrices on the 16-byte path (cols % 8 == 0) and the scalar path, row-strided
//! views (the gate and up halves of one fused buffer), a misaligned view
//! (scalar fallback with cols % 8 == 0), and in-place backward.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use traffic_moe::backend::cpu::swiglu;
use traffic_moe::backend::gpu::ops::swiglu::{self as gpu_swiglu, Rows};
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};
use traffic_moe::backend::gpu::{Buf, Executor};

// Scalar: 45, 300, 1. 16-byte path: 1024 (whole trips), 64 with 1000 rows
// (several blocks, a partial last trip), 8.
const SHAPES: [(usize, usize); 6] = [(7, 45), (33, 300), (97, 1), (9, 1024), (1000, 64), (40, 8)];

struct Inputs {
    g: Vec<bf16>,
    u: Vec<bf16>,
    d: Vec<bf16>,
    out: Vec<f64>,
    dg: Vec<f64>,
    du: Vec<f64>,
}

fn inputs(rng: &mut rand::rngs::StdRng, n: usize) -> Inputs {
    let (g, gf) = bf16_input(rng, n, 6.0);
    let (u, uf) = bf16_input(rng, n, 2.0);
    let (d, df) = bf16_input(rng, n, 1.0);
    let mut out = vec![0.0f64; n];
    swiglu::fwd(&gf, &uf, &mut out);
    let (mut dg, mut du) = (vec![0.0f64; n], vec![0.0f64; n]);
    swiglu::bwd(&gf, &uf, &df, &mut dg, &mut du);
    Inputs {
        g,
        u,
        d,
        out,
        dg,
        du,
    }
}

fn check(what: &str, got: &[bf16], want: &[f64]) -> anyhow::Result<()> {
    assert_close(what, &bf_f64(got), want, 1e-5, BF16_RTOL)?;
    Ok(())
}

#[test]
fn swiglu_fwd_bwd_match_reference() {
    run_on_executors("swiglu", |ex| {
        let mut rng = rng(12);
        for (rows, cols) in SHAPES {
            let n = rows * cols;
            let what = format!("rows {rows} cols {cols}");
            let r = inputs(&mut rng, n);
            let (gb, ub, db) = (ex.upload(&r.g)?, ex.upload(&r.u)?, ex.upload(&r.d)?);
            let ob = ex.alloc_zeroed::<bf16>(n)?;
            gpu_swiglu::fwd(ex, &gb, &ub, &ob, rows, cols)?;
            check(&format!("swiglu out ({what})"), &ex.download(&ob)?, &r.out)?;

            let (dgb, dub) = (ex.alloc_zeroed::<bf16>(n)?, ex.alloc_zeroed::<bf16>(n)?);
            gpu_swiglu::bwd(ex, &gb, &ub, &db, &dgb, &dub, rows, cols)?;
            check(
                &format!("swiglu dgate ({what})"),
                &ex.download(&dgb)?,
                &r.dg,
            )?;
            check(&format!("swiglu dup ({what})"), &ex.download(&dub)?, &r.du)?;

            // In place (the backward overwrites gate and up): same result.
            gpu_swiglu::bwd(ex, &gb, &ub, &db, &gb, &ub, rows, cols)?;
            anyhow::ensure!(
                ex.download(&gb)? == ex.download(&dgb)?,
                "in-place dgate differs ({what})"
            );
            anyhow::ensure!(
                ex.download(&ub)? == ex.download(&dub)?,
                "in-place dup differs ({what})"
            );
        }
        Ok(())
    });
}

/// `m` ([rows, cols]) written into a zeroed buffer of `len` at `offset`, row stride `ld`.
fn place(m: &[bf16], cols: usize, offset: usize, ld: usize, buf: &mut [bf16]) {
    for (r, row) in m.chunks(cols).enumerate() {
        buf[offset + r * ld..offset + r * ld + cols].copy_from_slice(row);
    }
}
fn extract(buf: &[bf16], rows: usize, cols: usize, offset: usize, ld: usize) -> Vec<bf16> {
    (0..rows)
        .flat_map(|r| buf[offset + r * ld..offset + r * ld + cols].iter().copied())
        .collect()
}

/// gate = columns [0, cols) and up = [cols + shift, 2 cols + shift) of rows of
/// `ld` elements in one buffer starting at `base`; outputs likewise in a second
/// buffer; backward in place on the fused buffer.
fn strided_case(
    ex: &Executor,
    rng: &mut rand::rngs::StdRng,
    rows: usize,
    cols: usize,
    base: usize,
    shift: usize,
) -> anyhow::Result<()> {
    let ld = 2 * cols + shift + 8;
    let len = base + rows * ld;
    let what = format!("strided rows {rows} cols {cols} base {base} shift {shift}");
    let r = inputs(rng, rows * cols);
    let (og, ou) = (base, base + cols + shift);
    let mut fused = vec![bf16::ZERO; len];
    place(&r.g, cols, og, ld, &mut fused);
    place(&r.u, cols, ou, ld, &mut fused);
    let mut dbuf = vec![bf16::ZERO; len];
    place(&r.d, cols, og, ld, &mut dbuf);
    let fb: Buf<bf16> = ex.upload(&fused)?;
    let db = ex.upload(&dbuf)?;
    let outb = ex.alloc_zeroed::<bf16>(len)?;
    let v = |buf, offset| Rows { buf, offset, ld };
    gpu_swiglu::fwd_strided(ex, v(&fb, og), v(&fb, ou), v(&outb, ou), rows, cols)?;
    let out = ex.download(&outb)?;
    check(
        &format!("swiglu out ({what})"),
        &extract(&out, rows, cols, ou, ld),
        &r.out,
    )?;
    anyhow::ensure!(
        extract(&out, rows, cols, og, ld)
            .iter()
            .all(|x| *x == bf16::ZERO),
        "swiglu fwd wrote outside its view ({what})"
    );
    gpu_swiglu::bwd_strided(
        ex,
        v(&fb, og),
        v(&fb, ou),
        v(&db, og),
        v(&fb, og),
        v(&fb, ou),
        rows,
        cols,
    )?;
    let f = ex.download(&fb)?;
    check(
        &format!("swiglu dgate ({what})"),
        &extract(&f, rows, cols, og, ld),
        &r.dg,
    )?;
    check(
        &format!("swiglu dup ({what})"),
        &extract(&f, rows, cols, ou, ld),
        &r.du,
    )?;
    Ok(())
}

#[test]
fn swiglu_strided_views_match_reference() {
    run_on_executors("swiglu_strided", |ex| {
        let mut rng = rng(13);
        // 16-byte path (offsets and ld multiples of 8), scalar path (odd cols),
        // and misaligned views with cols % 8 == 0 (base 3; shift 1).
        strided_case(ex, &mut rng, 21, 64, 0, 0)?;
        strided_case(ex, &mut rng, 5, 45, 0, 0)?;
        strided_case(ex, &mut rng, 13, 64, 3, 0)?;
        strided_case(ex, &mut rng, 13, 64, 0, 1)?;
        Ok(())
    });
}

#[test]
fn swiglu_rejects_views_out_of_range() {
    let ex = Executor::sim();
    let b = ex.alloc_zeroed::<bf16>(100).unwrap();
    let ok = Rows {
        buf: &b,
        offset: 0,
        ld: 10,
    };
    let bad = Rows {
        buf: &b,
        offset: 5,
        ld: 10,
    };
    assert!(gpu_swiglu::fwd_strided(&ex, ok, ok, ok, 10, 10).is_ok());
    let err = gpu_swiglu::fwd_strided(&ex, ok, bad, ok, 10, 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("swiglu up"), "{err}");
}
