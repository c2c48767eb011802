//! Zero-length inputs (no rows, no tokens, no elements) to every launch
//! wrapper: a documented no-op, or a refusal that names the op
//! (`GpuError::Invalid`), never a launch (a grid of 0 blocks is a CUDA
//! error, and the simulator's refusal of one would not say which op asked).

use half::bf16;
use traffic_moe::backend::gpu::ops::attention::{self, AttnShape, Rows};
use traffic_moe::backend::gpu::ops::gemm::{self, Mat};
use traffic_moe::backend::gpu::ops::moe_route::{self, Routing};
use traffic_moe::backend::gpu::ops::pool::{self, PoolShape};
use traffic_moe::backend::gpu::ops::rope::{self, RopeShape};
use traffic_moe::backend::gpu::ops::{
    adamw, bias_grad, cast, elementwise, embed, grad_norm, moe_combine, rmsnorm, rowdot, swiglu,
    xent,
};
use traffic_moe::backend::gpu::{Executor, GpuError};

/// `r` is a refusal naming `op` (not a simulator launch error).
fn refused(r: Result<(), GpuError>, op: &str) {
    match r {
        Err(GpuError::Invalid(msg)) => assert!(msg.contains(op), "{op}: {msg}"),
        other => panic!("{op}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn zero_length_inputs_are_refused_or_no_ops() {
    let ex = Executor::sim();
    let b16 = ex.alloc_zeroed::<bf16>(64).unwrap();
    let f32s = ex.alloc_zeroed::<f32>(64).unwrap();
    let u32s = ex.alloc_zeroed::<u32>(64).unwrap();
    let u8s = ex.alloc_zeroed::<u8>(64).unwrap();

    refused(
        rmsnorm::fwd(&ex, &b16, &f32s, &b16, &f32s, 0, 8, 1e-6),
        "rmsnorm",
    );
    refused(
        rmsnorm::bwd(&ex, &b16, &f32s, &f32s, &b16, &b16, &f32s, &f32s, 0, 8),
        "rmsnorm",
    );
    refused(
        xent::fwd_bwd(&ex, &b16, &u32s, 0, &f32s, None, 0, 8, 8),
        "xent",
    );
    refused(xent::mean(&ex, &f32s, &u32s, 0, &f32s, 0), "xent");
    refused(elementwise::add_fwd(&ex, &b16, &b16, &b16, 0), "add_fwd");
    refused(elementwise::gelu_fwd(&ex, &b16, &b16, 0), "gelu_fwd");
    refused(elementwise::gelu_bwd(&ex, &b16, &b16, &b16, 0), "gelu_bwd");
    refused(swiglu::fwd(&ex, &b16, &b16, &b16, 0, 8), "swiglu");
    refused(
        swiglu::bwd(&ex, &b16, &b16, &b16, &b16, &b16, 0, 8),
        "swiglu",
    );
    refused(
        rowdot::fwd(&ex, &b16, &f32s, &f32s, 0, 8, 1, false),
        "rowdot_fwd",
    );
    refused(
        rowdot::bwd_dz(&ex, &f32s, None, &f32s, &b16, 0, 8, 1, false),
        "rowdot_bwd_dz",
    );
    refused(
        rowdot::bwd_dw(&ex, &f32s, None, &b16, &f32s, &f32s, 0, 8, 1),
        "rowdot_bwd_dw",
    );
    refused(embed::fwd(&ex, &u32s, &f32s, &b16, 0, 8, 4), "embedding");
    refused(
        embed::fwd_bf16(&ex, &u32s, &b16, &b16, 0, 8, 4),
        "embedding",
    );
    assert!(embed::EmbedBwdScratch::alloc(&ex, 0, 8, 4).is_err());
    let ps = PoolShape {
        batch: 0,
        seq: 4,
        d: 8,
    };
    refused(pool::mean_fwd(&ex, &b16, &u8s, &b16, &ps), "pool");
    refused(pool::mean_bwd(&ex, &b16, &u8s, &b16, &ps), "pool");
    let rs = RopeShape {
        batch: 1,
        seq: 0,
        heads: 1,
        head_dim: 8,
        theta: 10000.0,
    };
    refused(rope::fwd(&ex, &b16, &b16, &rs), "rope");
    refused(rope::bwd(&ex, &b16, &b16, &rs), "rope");
    let at = AttnShape {
        batch: 1,
        seq: 0,
        heads: 1,
        head_dim: 32,
    };
    let v = Rows {
        buf: &b16,
        offset: 0,
        ld: 32,
    };
    refused(
        attention::fwd(&ex, v, v, v, &u8s, v, &f32s, &at),
        "attention",
    );
    let r = Routing {
        tokens: 0,
        n_experts: 4,
        k: 2,
    };
    refused(
        moe_route::router_fwd(&ex, &f32s, &f32s, &u32s, &f32s, None, None, &r),
        "moe routing",
    );
    refused(
        moe_route::router_bwd(&ex, &f32s, &u32s, None, &u32s, None, 1.0, &f32s, &r),
        "moe routing",
    );
    assert!(moe_permute_alloc_refused(&ex, r));
    refused(
        moe_combine::bwd_tokens(&ex, &b16, &b16, None, &b16, None, 0, 8),
        "moe combine",
    );
    let m = |b| Mat::dense(b, 8);
    refused(
        gemm::fwd(&ex, m(&b16), m(&b16), None, m(&b16), 0, 8, 8),
        "gemm",
    );
    refused(
        gemm::bwd_dx(&ex, m(&b16), m(&b16), m(&b16), 0, 8, 8),
        "gemm",
    );
    refused(
        gemm::bwd_dw(
            &ex,
            m(&b16),
            m(&b16),
            Mat::dense(&f32s, 8),
            true,
            None,
            0,
            8,
            8,
        ),
        "gemm",
    );
    assert!(grad_norm::GradNorm::new(&ex, 0).is_err());
    assert!(adamw::ArenaLayout::new(&ex, &[0, 0], &[1e-3; 2], &[0.0; 2]).is_err());

    // Documented no-ops: a cast of nothing; a bias gradient over no rows
    // (db += nothing, or db = 0).
    cast::f32_to_bf16(&ex, &f32s, &b16, 0).unwrap();
    let db = ex.upload(&[1.5f32; 8]).unwrap();
    bias_grad::run(&ex, &b16, 8, 0, 8, &db, true, None).unwrap();
    assert_eq!(ex.download(&db).unwrap(), [1.5; 8]);
    bias_grad::run(&ex, &b16, 8, 0, 8, &db, false, None).unwrap();
    assert_eq!(ex.download(&db).unwrap(), [0.0; 8]);
}

fn moe_permute_alloc_refused(ex: &Executor, r: Routing) -> bool {
    use traffic_moe::backend::gpu::ops::moe_permute::MoePlan;
    matches!(MoePlan::alloc(ex, r, 64), Err(GpuError::Invalid(m)) if m.contains("moe routing"))
}
