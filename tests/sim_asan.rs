//! AddressSanitizer demonstration (tools/sim-asan.sh): with the simulator built
//! with TMOE_SIM_ASAN=1, a kernel that reads one element past its input must
//! abort the process with an ASan report. In normal builds the demo kernel is
//! not compiled and this test only says so.

mod kernel_util;
use kernel_util::{Io, launch};
use traffic_moe::backend::gpu::Executor;
use traffic_moe::backend::gpu::registry::SIM_ASAN;

#[test]
fn asan_catches_out_of_bounds_kernel() {
    if !SIM_ASAN || std::env::var("TMOE_ASAN_DEMO").is_err() {
        traffic_moe::testing::skip("the ASan demo runs only under tools/sim-asan.sh");
        return;
    }
    let ex = Executor::sim();
    let n = 100usize;
    let io = Io::new(&ex, &vec![1.0; n], &[0], 1, 1);
    // Expected to die inside: ASan reports a heap-buffer-overflow in simt_asan_oob.
    let _ = launch(&ex, "simt_asan_oob", 1, 128, 0, io.params(n as i32, 0));
    panic!("the out-of-bounds read was not caught");
}
