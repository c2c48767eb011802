//! AddressSanitizer demonstrations (tools/sim-asan.sh): with the simulator built
//! with TMOE_SIM_ASAN=1, a kernel that reads one element past its global input,
//! or writes one past the end of a static or dynamic shared array, must abort
//! the process with an ASan report, and a 16-byte load off a 16-byte boundary
//! with UBSan's (a GPU faults on it). TMOE_ASAN_DEMO names the one to run (each
//! aborts the process); in normal builds the demo kernels are not compiled and
//! these tests only say so.

mod kernel_util;
use kernel_util::{Io, launch};
use traffic_moe::backend::gpu::Executor;
use traffic_moe::backend::gpu::registry::SIM_ASAN;

/// Runs `kernel` (1 block of 128 threads, p.n = `n`, `smem` bytes) when
/// TMOE_ASAN_DEMO is `demo`; expected to die inside with an ASan report.
fn demo(demo: &str, kernel: &'static str, n: usize, smem: u32) {
    if !SIM_ASAN || std::env::var("TMOE_ASAN_DEMO").as_deref() != Ok(demo) {
        traffic_moe::testing::skip(format!(
            "the ASan demo {demo} runs only under tools/sim-asan.sh"
        ));
        return;
    }
    let ex = Executor::sim();
    let io = Io::new(&ex, &vec![1.0; n], &[0], n.max(1), 1);
    let _ = launch(&ex, kernel, 1, 128, smem, io.params(n as i32, 0));
    panic!("the out-of-bounds access in {kernel} was not caught");
}

#[test]
fn asan_catches_out_of_bounds_global_read() {
    demo("global", "simt_asan_oob", 100, 0);
}

#[test]
fn asan_catches_out_of_bounds_static_shared_write() {
    demo("static_smem", "simt_asan_static_smem_oob", 64, 0);
}

#[test]
fn asan_catches_out_of_bounds_dynamic_shared_write() {
    demo("dyn_smem", "simt_asan_dyn_smem_oob", 64, 64 * 4);
}

#[test]
fn ubsan_catches_a_misaligned_vector_load() {
    demo("misaligned", "simt_asan_misaligned", 64, 0);
}
