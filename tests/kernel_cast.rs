//! cuda/cast.cu (`cast_f32_bf16`) against `half::bf16::from_f32`, bit for bit,
//! on every available executor: the special values (±0, subnormals of f32
//! and of bf16, NaNs with payloads and signs, ±inf, the largest finite
//! values, ties to even in both directions, just above and below a tie), then
//! random values; lengths that are not multiples of 8 (the vector path's
//! tail) and a view off 16-byte alignment (the scalar path). Then the GPU
//! engine's parameter upload, whose bf16 copy this kernel now makes.

mod kernel_util;

use std::sync::Arc;

use half::bf16;
use kernel_util::*;
use traffic_moe::autograd::ParamStore;
use traffic_moe::backend::gpu::engine::GpuParams;
use traffic_moe::backend::gpu::ops::cast;
use traffic_moe::backend::gpu::testing::run_on_executors;
use traffic_moe::backend::gpu::{Buf, Executor};
use traffic_moe::engine::Param;

fn specials() -> Vec<f32> {
    let bits: [u32; 30] = [
        0x0000_0000, // +0
        0x8000_0000, // -0
        0x0000_0001, // smallest f32 subnormal (rounds to 0)
        0x8000_0001,
        0x0000_8000, // subnormal tie, even below: -> 0
        0x0001_8000, // subnormal tie, odd below: -> up
        0x0001_0000, // smallest bf16 subnormal
        0x007F_FFFF, // largest f32 subnormal: rounds up to the smallest normal
        0x807F_FFFF,
        0x0080_0000, // smallest normal
        0x7F80_0000, // +inf
        0xFF80_0000, // -inf
        0x7FC0_0000, // quiet NaN
        0xFFC0_0000, // negative quiet NaN
        0x7F80_0001, // signalling NaN, payload in the low bits only
        0x7FA0_0000, // signalling NaN, payload in the kept bits
        0xFF81_2345, // negative NaN with payload
        0x7FFF_FFFF, // all-ones NaN
        0x7F7F_FFFF, // largest finite: rounds to +inf
        0xFF7F_FFFF,
        0x7F7F_7FFF, // just below the tie: stays finite
        0x3F80_8000, // 1 + 2^-8: tie, even below -> down
        0x3F81_8000, // tie, odd below -> up
        0x3F80_8001, // just above a tie -> up
        0x3F80_7FFF, // just below a tie -> down
        0xBF81_8000, // negative tie, odd -> up in magnitude
        0xBF80_8000,
        0x4049_0FDB, // pi
        0x3F80_0000, // 1
        0x4B7F_FFFF,
    ];
    bits.iter().map(|&b| f32::from_bits(b)).collect()
}

fn check(what: &str, input: &[f32], got: &[bf16]) -> anyhow::Result<()> {
    anyhow::ensure!(got.len() == input.len(), "{what}: length");
    for (i, (&x, g)) in input.iter().zip(got).enumerate() {
        let want = bf16::from_f32(x);
        anyhow::ensure!(
            g.to_bits() == want.to_bits(),
            "{what}[{i}]: {x:e} ({:#010x}) -> {:#06x}, from_f32 gives {:#06x}",
            x.to_bits(),
            g.to_bits(),
            want.to_bits()
        );
    }
    Ok(())
}

fn cast_on(ex: &Executor, input: &[f32], off: usize) -> anyhow::Result<Vec<bf16>> {
    let mut padded = vec![0f32; off];
    padded.extend_from_slice(input);
    let full = Arc::new(ex.upload(&padded)?);
    let src = Buf::view(&full, off, input.len()).expect("in range");
    let out_full = Arc::new(ex.upload(&vec![bf16::from_bits(0xDEAD); input.len() + off])?);
    let out = Buf::view(&out_full, off, input.len()).expect("in range");
    cast::f32_to_bf16(ex, &src, &out, input.len())?;
    let all = ex.download(&out_full)?;
    anyhow::ensure!(
        all[..off].iter().all(|v| v.to_bits() == 0xDEAD),
        "wrote before the view"
    );
    Ok(all[off..].to_vec())
}

#[test]
fn cast_f32_bf16_matches_half() {
    run_on_executors("cast_f32_bf16", |ex| {
        let mut rng = rng(5);
        let sp = specials();
        // Every special value at every position of an 8-element item.
        let mut input = Vec::new();
        for shift in 0..8 {
            input.extend(sp.iter().cycle().skip(shift).take(sp.len()));
        }
        for off in [0, 1] {
            check(
                &format!("specials (off {off})"),
                &input,
                &cast_on(ex, &input, off)?,
            )?;
        }
        for n in [1, 7, 8, 9, 1000, 4099, 70_001] {
            // Random magnitudes over the whole exponent range, both signs.
            let v: Vec<f32> = uniform(&mut rng, n, 1.0)
                .iter()
                .enumerate()
                .map(|(i, &x)| x * 2f32.powi((i % 250) as i32 - 125))
                .collect();
            for off in [0, 1] {
                check(
                    &format!("random n {n} off {off}"),
                    &v,
                    &cast_on(ex, &v, off)?,
                )?;
            }
        }
        Ok(())
    });
}

/// GpuParams::upload_as makes the bf16 copy on the device: the same bits as
/// converting on the host (specials included, in every region of the arena).
#[test]
fn gpu_params_bf16_copy_matches_host() {
    run_on_executors("gpu_params_bf16", |ex| {
        let sp = specials();
        let param = |name: &str, value: Vec<f32>| Param {
            name: name.into(),
            shape: vec![value.len()],
            grad: vec![0.0; value.len()],
            value,
            group: 0,
            decay: false,
        };
        let params = vec![
            param("a", sp.clone()),
            param("b", sp[3..].to_vec()),
            param("c", uniform(&mut rng(3), 1001, 3.0)),
        ];
        for training in [false, true] {
            let store = if training {
                GpuParams::upload(ex, &params)?
            } else {
                GpuParams::upload_inference(ex, &params)?
            };
            for (p, g) in params.iter().zip(store.values()) {
                let got = ex.download(g.w16.as_ref().expect("values have a bf16 copy"))?;
                check(
                    &format!("param {} (training {training})", p.name),
                    &p.value,
                    &got,
                )?;
            }
            if !training {
                // Inference stores round on the host (bit for bit the
                // kernel's rounding, checked above) and keep no fp32 arena.
                anyhow::ensure!(
                    store.refresh_bf16().is_err(),
                    "refresh_bf16 on an inference store must be refused"
                );
                continue;
            }
            store.refresh_bf16()?;
            let got = ex.download(store.values()[2].w16.as_ref().expect("bf16"))?;
            check("after refresh_bf16", &params[2].value, &got)?;
        }
        Ok(())
    });
}
