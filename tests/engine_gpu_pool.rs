//! The GPU engine's caching pool under batches of changing shapes, as
//! inference meets them (each batch as long as its longest flow, and the
//! stream's partial batches): the cache stays within the most bytes the run
//! ever had in use at once, and evicting never changes a result. On the
//! simulator (exact sizes: every new shape evicts) and on a GPU when there
//! is one (where a buffer up to an eighth larger serves); through the fake CUDA driver, with a device too
//! small to keep the cache, in `tests/cuda_fake_driver.rs`.

mod common;

use traffic_moe::backend::gpu::engine::{Gpu, GpuParams};
use traffic_moe::backend::gpu::testing::executors;
use traffic_moe::eval::predict::{Weights, class_logits};
use traffic_moe::model::batch::Batch;
use traffic_moe::model::{FfnKind, Model};

/// `b` flows of `s` tokens, the last one shorter (padding).
fn batch(b: usize, s: usize, seed: u32) -> Batch {
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for r in 0..b {
        let len = if r + 1 == b { s.div_ceil(2) } else { s };
        for i in 0..s {
            let id = (7 + seed * 31 + r as u32 * 13 + i as u32 * 5) % 512;
            ids.push(if i < len { id } else { 0 });
            mask.push(u8::from(i < len));
        }
    }
    let n_tokens = mask.iter().filter(|&&m| m != 0).count();
    Batch {
        ids,
        mask,
        labels: vec![u32::MAX; b],
        b,
        s,
        n_tokens,
    }
}

#[test]
fn inference_over_changing_shapes_keeps_the_cache_bounded() {
    for (ffn, ex) in [FfnKind::Moe, FfnKind::Dense].into_iter().flat_map(|f| {
        executors("engine_gpu_pool")
            .into_iter()
            .map(move |ex| (f, ex))
    }) {
        let (model, params) = Model::new(common::micro_config(ffn, 3), 5).unwrap();
        let gpu = Gpu::new(&ex);
        let store = GpuParams::upload_inference(gpu.executor(), &params).unwrap();
        let logits = |b: &Batch| {
            let (l, _) = class_logits(&model, Weights::Gpu(&gpu, &store), &b.inputs(), false)
                .unwrap_or_else(|e| panic!("{ffn:?} on {} at {} x {}: {e:#}", ex.name(), b.b, b.s));
            l.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let first = logits(&batch(4, 32, 0));
        let mut seed = 1;
        for b in [1, 3, 5] {
            for s in (4..32).step_by(5) {
                logits(&batch(b, s, seed));
                seed += 1;
            }
        }
        let st = gpu.executor().pool_stats().expect("the engine pools");
        let ctx = format!("{ffn:?} on {}: {st:?}", ex.name());
        // Exact sizes: 18 shapes cannot all stay cached.
        assert!(ex.is_gpu() || st.freed > 0, "{ctx}: nothing evicted");
        assert!(
            st.reserved <= 2 * st.peak_in_use && st.cached <= st.peak_in_use,
            "{ctx}: the cache outgrew the most ever in use"
        );
        assert_eq!(
            logits(&batch(4, 32, 0)),
            first,
            "{ctx}: evictions changed a result"
        );
    }
}
